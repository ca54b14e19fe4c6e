use std::path::PathBuf;

use thiserror::Error;

/// Everything a visualization can fail on, each with what to do about it.
#[derive(Debug, Error)]
pub enum Error {
    /// The model or a layer lookup failed.
    #[error(transparent)]
    Layer(#[from] actmax_layers::LayerError),
    /// A loss refused its inputs (bad filter index, unknown layer, ...).
    #[error(transparent)]
    Loss(#[from] actmax_losses::LossError),
    /// A modifier refused its inputs.
    #[error(transparent)]
    Modifier(#[from] actmax_modifiers::ModifierError),
    /// An op refused its operands.
    #[error(transparent)]
    Tensor(#[from] actmax_tensor::TensorError),
    /// The loss became NaN or infinite.
    #[error("step {step}: the loss term `{term}` is {value}; lower the learning rate or the weights, or check the seed image")]
    NonFinite {
        /// The optimization step.
        step: usize,
        /// The named term that went bad (or `total`).
        term: String,
        /// Its value.
        value: f32,
    },
    /// An option that cannot work.
    #[error("{0}")]
    Options(String),
    /// An image that cannot be read or written.
    #[error("{path}: {msg}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
}

/// Result alias of the facade.
pub type Result<T, E = Error> = std::result::Result<T, E>;
