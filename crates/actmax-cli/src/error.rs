//! The CLI's one error type: every library error converts into it with `?`, and `main`
//! prints it as the one line `actmax: …`.

/// Anything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A request the CLI itself refuses (a bad flag value, a missing argument).
    #[error("{0}")]
    Message(String),
    /// The optimization, the images or the model.
    #[error(transparent)]
    Actmax(#[from] actmax::Error),
    /// A model file or a layer lookup.
    #[error(transparent)]
    Layers(#[from] actmax_layers::LayerError),
    /// An atlas, its merge or its gallery.
    #[error(transparent)]
    Atlas(#[from] actmax_atlas::AtlasError),
    /// A modifier name or setting.
    #[error(transparent)]
    Modifier(#[from] actmax_modifiers::ModifierError),
}

impl From<String> for CliError {
    fn from(msg: String) -> Self {
        Self::Message(msg)
    }
}

impl From<&str> for CliError {
    fn from(msg: &str) -> Self {
        Self::Message(msg.to_string())
    }
}

/// `Result` with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;
