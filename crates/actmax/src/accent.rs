//! Feature accentuation (Hamblin, Fel et al. 2024, "Feature Accentuation: Revealing 'What'
//! Features Respond to in Natural Images"): start from a photo, push a class or filter up
//! (or down), and keep the image close to the photo *in the model's own activations* at a
//! chosen layer, under the same random views as the objective.
//!
//! The distance is faccent's `l2_compare`: at every position of the accent layer, the L2
//! norm over channels of the difference between the image's and the photo's activations,
//! averaged over positions and views. Its gradient has about the same size however far the
//! image has moved (a norm, not a squared norm), which is what lets one weight, fixed after
//! the first step, balance it against the objective for the whole run.

use actmax_layers::Model;
use actmax_tensor::{Tape, Var};

use crate::{Error, Result};

/// The default multiplier of the balanced weight ([`Accentuation::balance`]): the
/// distance's gradient is scaled to the size of the objective's (their L1 norms over the
/// parameters, measured after the first step, as faccent measures them before the first),
/// times this. Chosen on the shipped photos (`cargo xtask accentuate --balance B`,
/// README): 0.5 drifts further from the photo for the same held-out success; 1.5–2 holds
/// some images so close that the held-out model stops reading the class (5/6 top-5).
pub const AUTO_BALANCE: f32 = 1.0;

/// Where the accent layer sits by default: this fraction of the way from the input to the
/// target, among the feature maps. Chosen on the shipped photos (`cargo xtask accentuate
/// --depth D`, README): 0.3 (EfficientNet-Lite0: `_blocks.5._expand_conv`, mid-level
/// textures and parts) kept all six targets top-1 on the held-out model with mean SSIM
/// 0.63 to the photo; 0.5 and 0.7 drift further (0.54, 0.47) for no held-out gain, and
/// 0.2 (nearer the pixels) drops one to rank 2 (p 0.09) for 0.03 more SSIM.
pub const DEFAULT_DEPTH: f32 = 0.3;

/// Feature accentuation settings ([`crate::Options::accent`]); needs a seed image.
#[derive(Debug, Clone, PartialEq)]
pub struct Accentuation {
    /// The layer whose activations stay close to the photo's; default: the feature map at
    /// `depth` of the way to the target ([`feature_map_at_depth`]).
    pub layer: Option<String>,
    /// Where the default layer sits, from 0 (the first feature map) to 1 (the target's);
    /// [`DEFAULT_DEPTH`] unless set. Unused when `layer` is given.
    pub depth: f32,
    /// Weight of the distance as given; default: balanced against the objective's
    /// gradient after the first step, times `balance`.
    pub weight: Option<f32>,
    /// The multiplier of the balanced weight (faccent's `reg_alpha`), when `weight` is
    /// not given.
    pub balance: f32,
}

impl Default for Accentuation {
    /// The layer at [`DEFAULT_DEPTH`], the balanced weight × [`AUTO_BALANCE`].
    fn default() -> Self {
        Self { layer: None, depth: DEFAULT_DEPTH, weight: None, balance: AUTO_BALANCE }
    }
}

impl Accentuation {
    /// Checks the settings that do not need the model.
    pub(crate) fn validate(&self) -> Result<()> {
        match (self.weight, self.balance) {
            (Some(w), _) if !(w.is_finite() && w >= 0.0) => {
                Err(Error::Options(format!("the accent weight must be a finite number >= 0, got {w}")))
            }
            (_, b) if !(b.is_finite() && b >= 0.0) => {
                Err(Error::Options(format!("the accent balance must be a finite number >= 0, got {b}")))
            }
            _ if !(0.0..=1.0).contains(&self.depth) => {
                Err(Error::Options(format!("the accent depth is a fraction from 0 to 1, got {}", self.depth)))
            }
            _ => Ok(()),
        }
    }

    /// The accent layer's index in `model`, for a run whose deepest loss layer is `target`.
    pub(crate) fn layer_index(&self, model: &Model, target: usize) -> Result<usize> {
        if let Some(name) = &self.layer {
            let idx = model.find(name.as_str())?;
            if idx == 0 {
                return Err(Error::Options(
                    "the accent layer is the input: pick a layer inside the model (see `actmax layers`)".into(),
                ));
            }
            return Ok(idx);
        }
        Ok(feature_map_at_depth(model, target, self.depth))
    }
}

/// The feature map (4-D output) `depth` of the way through those from the input to layer
/// `target` (0: the first, 1: the last at or before `target`); `target` itself when the
/// model has none (a dense network).
pub fn feature_map_at_depth(model: &Model, target: usize, depth: f32) -> usize {
    let maps: Vec<usize> = (1..=target).filter(|&i| model.nodes()[i].output_shape.len() == 4).collect();
    match maps.len() {
        0 => target,
        n => maps[((n as f32 * depth.clamp(0.0, 1.0)) as usize).min(n - 1)],
    }
}

/// faccent's distance between the activations `x` of the image's views and `reference`
/// (the photo's, same views) at one layer: per sample `[B]`, the mean over views and
/// positions of the channel-wise L2 norm of `x − reference`. Rows are view-major (row
/// `v·B + b` is a view of image `b`).
pub fn feature_distance(tape: &mut Tape, x: Var, reference: Var, batch: usize) -> Result<Var> {
    let shape = tape.shape(x)?.to_vec();
    if tape.shape(reference)? != shape.as_slice() {
        return Err(Error::Options(format!(
            "accentuation: the photo's activations {:?} and the image's {shape:?} differ",
            tape.shape(reference)?
        )));
    }
    if shape.len() < 2 || batch == 0 || !shape[0].is_multiple_of(batch) {
        return Err(Error::Options(format!("accentuation: a layer output {shape:?} for a batch of {batch}")));
    }
    let d = tape.sub(x, reference)?;
    let sq = tape.mul(d, d)?;
    let per_position = tape.sum(sq, &[1], false)?;
    // The floor keeps the square root differentiable where the image equals the photo.
    let floored = tape.add_scalar(per_position, 1e-12)?;
    let norm = tape.sqrt(floored)?;
    let rank = tape.shape(norm)?.len();
    let per_row = match rank {
        1 => norm,
        _ => tape.mean(norm, &(1..rank).collect::<Vec<_>>(), false)?,
    };
    let views = shape[0] / batch;
    let grid = tape.reshape(per_row, &[views, batch])?;
    Ok(tape.mean(grid, &[0], false)?)
}
