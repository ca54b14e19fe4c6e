//! Errors of the layer crate: graph building, layer lookup and weight loading.

use std::path::PathBuf;

use actmax_tensor::TensorError;
use thiserror::Error;

/// What can go wrong building, addressing or running a model.
#[derive(Debug, Error)]
pub enum LayerError {
    /// An op refused its operands.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// No layer has that name.
    #[error("no layer named `{name}`; closest: {}", .suggestions.join(", "))]
    UnknownLayer {
        /// The name asked for.
        name: String,
        /// The closest layer names (edit distance).
        suggestions: Vec<String>,
    },
    /// A layer index outside `-count..count`.
    #[error("layer index {index} is out of range: the model has {count} layers (valid: {} ..= {})", -(*.count as isize), *.count as isize - 1)]
    IndexOutOfRange {
        /// The index asked for.
        index: isize,
        /// Number of layers.
        count: usize,
    },
    /// Two layers with one name.
    #[error("a layer named `{0}` already exists")]
    DuplicateName(String),
    /// A layer that cannot take its inputs.
    #[error("layer `{layer}`: {msg}")]
    Build {
        /// The layer being added.
        layer: String,
        /// What is wrong.
        msg: String,
    },
    /// Weights that do not load.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// What can go wrong reading weights.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a valid file of that format (truncated, corrupt, hostile).
    #[error("{format}: {msg}")]
    Format {
        /// The format being read.
        format: &'static str,
        /// What is wrong, and where.
        msg: String,
    },
    /// A valid file that holds something actmax does not read.
    #[error("{format}: unsupported: {msg}")]
    Unsupported {
        /// The format being read.
        format: &'static str,
        /// What is not supported.
        msg: String,
    },
    /// A state dict that does not fit the model.
    #[error("weights do not fit the model:{}{}{}",
        fmt_list("\n  missing", .missing), fmt_list("\n  unexpected", .unexpected), fmt_list("\n  wrong shape", .misshaped))]
    Mismatch {
        /// Parameters the model needs that the file lacks.
        missing: Vec<String>,
        /// Tensors in the file the model has no place for.
        unexpected: Vec<String>,
        /// `name: file shape vs model shape`.
        misshaped: Vec<String>,
    },
}

fn fmt_list(title: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{title} ({}): {}", items.len(), items.join(", "))
    }
}

/// Shorthand for a format error.
pub(crate) fn format_err(format: &'static str, msg: impl Into<String>) -> LoadError {
    LoadError::Format { format, msg: msg.into() }
}

/// Result alias of the layer crate.
pub type Result<T, E = LayerError> = std::result::Result<T, E>;
