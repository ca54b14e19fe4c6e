//! keras-vis's losses, with its formulas (keras-vis 0.5, `vis/losses.py`,
//! `vis/regularizers.py`).

use actmax_tensor::{Tape, Var};

use crate::{Loss, LossContext, LossError, Result};

/// Where a layer's channels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelAxis {
    /// `[N, C, ...]` (actmax's own layout; Dense outputs `[N, units]` too).
    #[default]
    First,
    /// `[N, ..., C]` (TensorFlow layout).
    Last,
}

impl ChannelAxis {
    fn index(self, rank: usize) -> usize {
        match self {
            Self::First => 1,
            Self::Last => rank - 1,
        }
    }
}

/// `x[..., idx, ...]` along `axis`, restricted to sample `b` when given.
fn take_channel(tape: &mut Tape, x: Var, axis: usize, idx: usize, b: Option<usize>) -> Result<Var> {
    let shape = tape.shape(x)?.to_vec();
    let mut ranges: Vec<(usize, usize)> = shape.iter().map(|&d| (0, d)).collect();
    ranges[axis] = (idx, idx + 1);
    if let Some(b) = b {
        ranges[0] = (b, b + 1);
    }
    Ok(tape.slice(x, &ranges)?)
}

/// Drives filters of a layer up: `Σ_idx −mean(out[:, idx, ...])` over batch and positions
/// (Dense: `−mean(out[:, idx])`); no index → `−mean` of the whole output. The per-sample
/// form gives sample `b` its own filters and returns one value per sample.
#[derive(Debug, Clone)]
pub struct ActivationMaximization {
    layer: String,
    filters: Option<Vec<usize>>,
    per_sample: Option<Vec<Vec<usize>>>,
    axis: ChannelAxis,
}

impl ActivationMaximization {
    /// Maximize the sum of these filters' mean activations (keras-vis `filter_indices`).
    pub fn new(layer: impl Into<String>, filters: Vec<usize>) -> Self {
        Self { layer: layer.into(), filters: Some(filters), per_sample: None, axis: ChannelAxis::First }
    }
    /// Maximize the mean of the whole output (keras-vis `filter_indices=None`).
    pub fn whole(layer: impl Into<String>) -> Self {
        Self { layer: layer.into(), filters: None, per_sample: None, axis: ChannelAxis::First }
    }
    /// One target list per sample of the batch; the loss is a `[B]` vector. A batch of
    /// `k·B` rows is `k` views of each image, view-major, and each image's loss is the
    /// mean over its views.
    pub fn per_sample(layer: impl Into<String>, targets: Vec<Vec<usize>>) -> Self {
        Self { layer: layer.into(), filters: None, per_sample: Some(targets), axis: ChannelAxis::First }
    }
    /// The layer's channels are last (`[N, H, W, C]`).
    pub fn channels_last(mut self) -> Self {
        self.axis = ChannelAxis::Last;
        self
    }

    fn check(&self, idx: usize, count: usize) -> Result<()> {
        if idx >= count {
            return Err(LossError::FilterOutOfRange { layer: self.layer.clone(), index: idx, count });
        }
        Ok(())
    }
}

impl Loss for ActivationMaximization {
    fn name(&self) -> String {
        match (&self.filters, &self.per_sample) {
            (_, Some(t)) => format!("ActivationMaximization({}, per sample {t:?})", self.layer),
            (Some(f), _) => format!("ActivationMaximization({}, {f:?})", self.layer),
            _ => format!("ActivationMaximization({})", self.layer),
        }
    }

    fn layers(&self) -> Vec<String> {
        vec![self.layer.clone()]
    }

    fn build(&self, tape: &mut Tape, ctx: &LossContext<'_>) -> Result<Var> {
        let x = ctx.activation(&self.layer)?;
        let shape = tape.shape(x)?.to_vec();
        if shape.len() < 2 {
            return Err(LossError::Param(format!("layer `{}` output {shape:?} has no channel axis", self.layer)));
        }
        let axis = self.axis.index(shape.len());
        let count = shape[axis];
        let sum_of = |tape: &mut Tape, filters: &[usize], b: Option<usize>| -> Result<Var> {
            let mut acc: Option<Var> = None;
            for &idx in filters {
                self.check(idx, count)?;
                let ch = take_channel(tape, x, axis, idx, b)?;
                let m = tape.mean_all(ch)?;
                acc = Some(match acc {
                    Some(a) => tape.add(a, m)?,
                    None => m,
                });
            }
            let acc = acc.ok_or_else(|| LossError::Param(format!("no filter index given for `{}`", self.layer)))?;
            Ok(tape.neg(acc)?)
        };
        match (&self.filters, &self.per_sample) {
            (_, Some(targets)) => {
                // A batch of views (e.g. random crops) holds `views` rows per image,
                // view-major: row v·B + b is a view of image b; its loss is their mean.
                let b_count = targets.len();
                if b_count == 0 || !shape[0].is_multiple_of(b_count) {
                    return Err(LossError::Param(format!(
                        "{b_count} per-sample targets for a batch of {} (it must be a multiple)",
                        shape[0]
                    )));
                }
                let views = shape[0] / b_count;
                let mut parts = Vec::with_capacity(b_count);
                for (b, t) in targets.iter().enumerate() {
                    let mut acc = sum_of(tape, t, Some(b))?;
                    for v in 1..views {
                        let more = sum_of(tape, t, Some(v * b_count + b))?;
                        acc = tape.add(acc, more)?;
                    }
                    let mean = tape.mul_scalar(acc, 1.0 / views as f32)?;
                    parts.push(tape.reshape(mean, &[1])?);
                }
                Ok(tape.concat(&parts, 0)?)
            }
            (Some(f), None) => sum_of(tape, f, None),
            (None, None) => {
                let m = tape.mean_all(x)?;
                Ok(tape.neg(m)?)
            }
        }
    }
}

/// keras-vis's total variation of an image (any number of spatial axes):
/// `Σ (Σ_axes (x[.., i+1, ..] − x[.., i, ..])²)^(β/2)` over the `[:-1, ..., :-1]` crop, all
/// samples and channels, divided by `C·H·W`. Smooth images have a small value.
#[derive(Debug, Clone)]
pub struct TotalVariation {
    /// β: 2 is the squared form; smaller values favour patches of constant colour.
    pub beta: f32,
    /// The layer (normally `"input"`).
    pub layer: String,
    /// Where its channels are.
    pub axis: ChannelAxis,
}

impl Default for TotalVariation {
    fn default() -> Self {
        Self { beta: 2.0, layer: "input".into(), axis: ChannelAxis::First }
    }
}

impl TotalVariation {
    /// keras-vis's `TotalVariation(img, beta)` on the input image.
    pub fn new(beta: f32) -> Self {
        Self { beta, ..Self::default() }
    }
}

/// Spatial axes of a `[N, C, ...]` or `[N, ..., C]` tensor.
fn spatial_axes(rank: usize, axis: ChannelAxis) -> Vec<usize> {
    match axis {
        ChannelAxis::First => (2..rank).collect(),
        ChannelAxis::Last => (1..rank - 1).collect(),
    }
}

impl Loss for TotalVariation {
    fn name(&self) -> String {
        format!("TotalVariation(beta={})", self.beta)
    }

    fn layers(&self) -> Vec<String> {
        vec![self.layer.clone()]
    }

    fn build(&self, tape: &mut Tape, ctx: &LossContext<'_>) -> Result<Var> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(LossError::Param(format!("TotalVariation needs beta > 0, got {}", self.beta)));
        }
        let x = ctx.activation(&self.layer)?;
        let shape = tape.shape(x)?.to_vec();
        let spatial = spatial_axes(shape.len(), self.axis);
        if shape.len() < 3 || spatial.iter().any(|&a| shape[a] < 2) {
            return Err(LossError::Param(format!("TotalVariation needs spatial axes of size >= 2, got {shape:?}")));
        }
        let tv = tape.total_variation(x, &spatial, self.beta)?;
        let norm: usize = shape[1..].iter().product();
        Ok(tape.mul_scalar(tv, 1.0 / norm as f32)?)
    }
}

/// keras-vis's Lp norm of an image: `(Σ|x|^p)^(1/p) / (C·H·W)`; `p = ∞` is `max|x|`.
/// Keeps pixel values small where they do not help the objective.
#[derive(Debug, Clone)]
pub struct LpNorm {
    p: f32,
    layer: String,
}

impl LpNorm {
    /// An Lp norm of the input image; `p < 1` is not a norm and is refused.
    pub fn new(p: f32) -> Result<Self> {
        if p.is_nan() || p < 1.0 {
            return Err(LossError::Param(format!("LPNorm needs p >= 1 (p = inf for the max norm), got {p}")));
        }
        Ok(Self { p, layer: "input".into() })
    }

    /// keras-vis's default, p = 6.
    pub fn keras_default() -> Self {
        Self { p: 6.0, layer: "input".into() }
    }
}

impl Loss for LpNorm {
    fn name(&self) -> String {
        format!("LPNorm(p={})", self.p)
    }

    fn layers(&self) -> Vec<String> {
        vec![self.layer.clone()]
    }

    fn build(&self, tape: &mut Tape, ctx: &LossContext<'_>) -> Result<Var> {
        let x = ctx.activation(&self.layer)?;
        let shape = tape.shape(x)?.to_vec();
        let norm: usize = shape.iter().skip(1).product::<usize>().max(1);
        let value = if self.p.is_infinite() {
            // max|x|: the gradient flows to the (first) largest element only.
            let xv = tape.value(x)?;
            let at = xv
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |b, (i, v)| if v.abs() > b.1 { (i, v.abs()) } else { b })
                .0;
            let mut rem = at;
            let mut ranges = vec![(0, 0); shape.len()];
            for d in (0..shape.len()).rev() {
                ranges[d] = (rem % shape[d], rem % shape[d] + 1);
                rem /= shape[d];
            }
            let e = tape.slice(x, &ranges)?;
            let a = tape.abs(e)?;
            tape.sum_all(a)?
        } else {
            tape.lp_norm(x, self.p)?
        };
        Ok(tape.mul_scalar(value, 1.0 / norm as f32)?)
    }
}
