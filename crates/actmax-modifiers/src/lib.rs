#![doc = include_str!("../README.md")]

mod crops;
mod grad;
mod input;
mod transform;

pub use crops::{resize_to, standard_normal, RandomCrops};
pub use grad::{backprop_mode, GradModifier, BACKPROP_MODIFIERS, GRAD_MODIFIERS};
pub use input::{InputModifier, Jitter};
pub use transform::{Transform, TransformSet};

use thiserror::Error;

/// The stream image `b` draws from: `rngs` holds one for the whole batch or one per image.
fn stream<R>(rngs: &mut [R], b: usize) -> &mut R {
    let n = rngs.len();
    &mut rngs[b % n]
}

/// One stream for the batch, or one per image; anything else is a caller's mistake.
fn check_streams(streams: usize, images: usize) -> Result<(), ModifierError> {
    if streams == 1 || streams == images {
        return Ok(());
    }
    Err(ModifierError::Param(format!(
        "{streams} random streams for a batch of {images}: pass one for the batch or one per image"
    )))
}

/// What a modifier can refuse.
#[derive(Debug, Error)]
pub enum ModifierError {
    /// A name no modifier has.
    #[error("unknown {kind} `{name}`; valid: {}", .valid.join(", "))]
    UnknownName {
        /// `gradient modifier` or `backprop modifier`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The valid names.
        valid: Vec<&'static str>,
    },
    /// A parameter that cannot work.
    #[error("{0}")]
    Param(String),
    /// An op refused its operands.
    #[error(transparent)]
    Tensor(#[from] actmax_tensor::TensorError),
}
