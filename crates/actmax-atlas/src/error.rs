//! What an atlas can refuse, each error saying what to do.

use std::path::{Path, PathBuf};

/// An atlas error.
#[derive(Debug, thiserror::Error)]
pub enum AtlasError {
    /// A request that cannot work (unknown layer, bad shard, no tiles), refused before
    /// anything is written.
    #[error("{0}")]
    Request(String),
    /// A file or directory that cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A plan or manifest file that is not what an atlas writes.
    #[error("{path}: {msg}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Atlases (or an atlas and a request) that do not belong together.
    #[error("{0}")]
    Mismatch(String),
    /// The optimization or the model refused.
    #[error(transparent)]
    Actmax(#[from] actmax::Error),
}

impl AtlasError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

impl From<actmax_layers::LayerError> for AtlasError {
    fn from(e: actmax_layers::LayerError) -> Self {
        Self::Actmax(e.into())
    }
}

/// `Result` with [`AtlasError`].
pub type Result<T, E = AtlasError> = std::result::Result<T, E>;
