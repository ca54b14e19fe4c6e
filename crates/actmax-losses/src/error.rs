use actmax_tensor::TensorError;
use thiserror::Error;

/// What a loss can refuse.
#[derive(Debug, Error)]
pub enum LossError {
    /// An op refused its operands.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The loss reads a layer nobody computed.
    #[error("no activation for layer `{layer}`; available: {}", if .known.is_empty() { "only \"input\"".to_string() } else { .known.join(", ") })]
    UnknownLayer {
        /// The layer asked for.
        layer: String,
        /// Layers whose activations exist.
        known: Vec<String>,
    },
    /// A filter (channel or unit) index past the layer's width.
    #[error("filter {index} is out of range for layer `{layer}`: valid filters are 0..={}", .count.saturating_sub(1))]
    FilterOutOfRange {
        /// The layer.
        layer: String,
        /// The index asked for.
        index: usize,
        /// The layer's filter count.
        count: usize,
    },
    /// A parameter that cannot work (`p < 1`, a batch size that does not match, ...).
    #[error("{0}")]
    Param(String),
}
