//! # actmax-modifiers
//!
//! What happens around and inside each optimization step:
//!
//! - [`InputModifier`]s change the image before a step and undo it after (keras-vis's
//!   `Jitter`, whose `post` really undoes the shift — keras-vis forgot, and the shifts
//!   piled up).
//! - [`Transform`]s are lucid's robustness transforms, applied *inside* the graph each
//!   step (so gradients flow through them): jitter, scale, rotate, pad, and
//!   [`TransformSet::lucid_standard`].
//! - [`RandomCrops`] are MaCo's: several random crops of each image per step, resized to
//!   the model's input and noised, evaluated as one batch.
//! - [`GradModifier`]s reshape dL/dinput (`negate` turns maximization into minimization).
//! - [`backprop_mode`] names the tensor core's backprop modes (`guided`, `rectified`, ...).
//!
//! Randomness always comes from RNGs the caller passes: same seed, same run. A batch's
//! draws come from one stream shared by its images, or from one stream per image — then
//! what image `b` gets depends on its own stream alone, never on the batch it is in (an
//! atlas renders any tile byte-identically in any batch).

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
