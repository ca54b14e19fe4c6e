//! Backprop modifiers: how ReLU-family ops pass gradients backwards.
//!
//! Guided backprop, deconvnet-style rectification and user hooks all act at one place:
//! the backward of every ReLU-family op ([`ReluKind`]) asks the tape's [`BackpropMode`].

use std::fmt;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use crate::elementwise::{map1, map2, map3, mask_by_bits, rectify, zip_in_place};
use crate::scratch::ScratchPool;

/// Where a ReLU, ReLU6 or clip passes its gradient, as a function of its output `y`:
/// `lo < y`, and `y < hi` where there is an upper bound (never for a NaN). The plain
/// gradient masks of [`BackpropMode`] in one place, as the pass bits a tape keeps for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassBand {
    /// Exclusive lower bound.
    pub lo: f32,
    /// Exclusive upper bound, if any (none for a ReLU: `y = ∞` passes).
    pub hi: Option<f32>,
}

impl PassBand {
    /// Whether the gradient passes at output `y`.
    #[inline(always)]
    pub fn passes(self, y: f32) -> bool {
        y > self.lo && self.hi.is_none_or(|hi| y < hi)
    }
}

/// The ReLU family: piecewise activations whose gradient a backprop modifier may reshape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReluKind {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `min(max(x, lo), hi)`.
    Clip {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
    /// `x` for `x > 0`, else `alpha·x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `x` for `x > 0`, else `alpha·(eˣ − 1)`.
    Elu {
        /// Scale of the negative part.
        alpha: f32,
    },
}

impl ReluKind {
    /// The activation's value at `x`.
    pub fn forward(self, x: f32) -> f32 {
        match self {
            Self::Relu => x.max(0.0),
            Self::Relu6 => x.clamp(0.0, 6.0),
            Self::Clip { lo, hi } => x.max(lo).min(hi),
            Self::LeakyRelu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Self::Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
        }
    }

    /// The range outside which the output is flat (ReLU `(0, ∞)`, ReLU6 `(0, 6)`, clip
    /// `(lo, hi)`); `None` for the kinds with a slope everywhere.
    pub fn bounds(self) -> Option<(f32, f32)> {
        match self {
            Self::Relu => Some((0.0, f32::INFINITY)),
            Self::Relu6 => Some((0.0, 6.0)),
            Self::Clip { lo, hi } => Some((lo, hi)),
            Self::LeakyRelu { .. } | Self::Elu { .. } => None,
        }
    }

    /// Where the plain gradient passes, as a function of the output: ReLU `y > 0` (∞
    /// too), ReLU6 and clips strictly inside their bounds; `None` for the kinds with a
    /// slope everywhere.
    pub fn pass_band(self) -> Option<PassBand> {
        match self {
            Self::Relu => Some(PassBand { lo: 0.0, hi: None }),
            kind => kind.bounds().map(|(lo, hi)| PassBand { lo, hi: Some(hi) }),
        }
    }

    /// The true derivative at input `x` with output `y` (0 at the kinks, as PyTorch).
    pub fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Self::Relu | Self::Relu6 | Self::Clip { .. } => {
                let (lo, hi) = self.bounds().expect("bounded kinds");
                if x > lo && x < hi {
                    1.0
                } else {
                    0.0
                }
            }
            Self::LeakyRelu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    alpha
                }
            }
            Self::Elu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    y + alpha
                }
            }
        }
    }
}

/// What a custom backprop hook sees: the op, the gradient arriving from above, and the op's
/// input and output.
pub struct ReluGrad<'a> {
    /// Which activation this is.
    pub kind: ReluKind,
    /// dL/d(output).
    pub grad: ArrayViewD<'a, f32>,
    /// The op's input.
    pub input: ArrayViewD<'a, f32>,
    /// The op's output.
    pub output: ArrayViewD<'a, f32>,
}

/// A user-supplied rule: returns dL/d(input), shaped like the input.
pub type BackpropHook = Arc<dyn Fn(&ReluGrad<'_>) -> ArrayD<f32> + Send + Sync>;

/// How ReLU-family ops pass gradients backwards.
#[derive(Clone, Default)]
pub enum BackpropMode {
    /// The true derivative.
    #[default]
    Plain,
    /// Guided backprop: `g·[g > 0]·[x > 0]`.
    Guided,
    /// Deconvnet-style rectification: `g·[g > 0]`.
    Rectified,
    /// lucid's redirected ReLU (`relu_gradient_override`): the true derivative, except
    /// for a sample whose gradient would be zero everywhere — a dead unit that no step
    /// could revive. There the gradient passes as through the identity, but never where it
    /// would push an input further into a flat side (below the lower kink, or above
    /// ReLU6's/Clip's upper one). Activation maximization starts from a flat grey image,
    /// where a deep ReLU6 channel is often dead; this lets it come alive.
    Redirected,
    /// A user closure.
    Custom(BackpropHook),
}

impl fmt::Debug for BackpropMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain => f.write_str("Plain"),
            Self::Guided => f.write_str("Guided"),
            Self::Rectified => f.write_str("Rectified"),
            Self::Redirected => f.write_str("Redirected"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl BackpropMode {
    /// dL/d(input) of a ReLU-family op under this mode.
    pub fn input_grad(&self, kind: ReluKind, g: &ArrayD<f32>, x: &ArrayD<f32>, y: &ArrayD<f32>) -> ArrayD<f32> {
        self.input_grad_pooled(&ScratchPool::new(), kind, g, x, y)
    }

    /// [`BackpropMode::input_grad`] written over `g` itself, where this mode and kind
    /// allow it (plain and guided ReLU, ReLU6 and clips: a mask); false, with `g`
    /// untouched, where they need the general path.
    pub(crate) fn input_grad_in_place(&self, kind: ReluKind, g: &mut ArrayD<f32>, x: &ArrayD<f32>) -> bool {
        if g.shape() != x.shape() || !g.is_standard_layout() || !x.is_standard_layout() {
            return false;
        }
        match (self, kind) {
            (Self::Plain, ReluKind::Relu) => zip_in_place(g, x, |g, x| if x > 0.0 { g } else { 0.0 }),
            (Self::Plain, ReluKind::Relu6) => zip_in_place(g, x, |g, x| if x > 0.0 && x < 6.0 { g } else { 0.0 }),
            (Self::Plain, ReluKind::Clip { lo, hi }) => {
                zip_in_place(g, x, |g, x| if x > lo && x < hi { g } else { 0.0 })
            }
            (Self::Guided, _) => zip_in_place(g, x, |g, x| if g > 0.0 && x > 0.0 { g } else { 0.0 }),
            _ => return false,
        }
        true
    }

    /// [`BackpropMode::input_grad`] with its output drawn from a tape's pool.
    pub(crate) fn input_grad_pooled(
        &self,
        pool: &ScratchPool,
        kind: ReluKind,
        g: &ArrayD<f32>,
        x: &ArrayD<f32>,
        y: &ArrayD<f32>,
    ) -> ArrayD<f32> {
        match self {
            // One monomorphic loop per kind, so the common ones vectorize.
            Self::Plain => match kind {
                ReluKind::Relu => map2(pool, g, x, |g, x| if x > 0.0 { g } else { 0.0 }),
                ReluKind::Relu6 => map2(pool, g, x, |g, x| if x > 0.0 && x < 6.0 { g } else { 0.0 }),
                ReluKind::Clip { lo, hi } => map2(pool, g, x, |g, x| if x > lo && x < hi { g } else { 0.0 }),
                _ => map3(pool, g, x, y, |g, x, y| g * kind.derivative(x, y)),
            },
            Self::Guided => map2(pool, g, x, |g, x| if g > 0.0 && x > 0.0 { g } else { 0.0 }),
            Self::Rectified => map1(pool, g, |g| if g > 0.0 { g } else { 0.0 }),
            Self::Redirected => redirected(pool, kind, g, x, y),
            Self::Custom(hook) => hook(&ReluGrad { kind, grad: g.view(), input: x.view(), output: y.view() }),
        }
    }

    /// How many planes of bits this mode's backward reads for an activation of `kind`
    /// instead of its output: the pass plane, and where a flat element's side matters
    /// (redirected, guided) and the band has an upper bound, the plane of `y > lo` (a
    /// ReLU's pass plane says it). `None` where bits do not serve: guided backprop from a
    /// lower bound other than 0, a custom hook, rectification (it needs nothing).
    pub(crate) fn bit_planes(&self, kind: ReluKind) -> Option<usize> {
        let (lo, hi) = kind.bounds()?;
        let sides = if hi == f32::INFINITY { 1 } else { 2 };
        match self {
            Self::Plain => Some(1),
            Self::Redirected => Some(sides),
            Self::Guided if lo == 0.0 => Some(sides),
            _ => None,
        }
    }

    /// How the input gradient of an activation of `kind` whose output has `shape` is
    /// computed without its output, from its pass bits of `words` words (if kept):
    /// [`Self::input_grad_by_bits`]; `None` where the output is needed (other modes and
    /// kinds, bits that do not line up or are missing).
    pub(crate) fn by_bits(&self, kind: ReluKind, shape: &[usize], words: Option<usize>) -> Option<ByBits> {
        if matches!(self, Self::Rectified) {
            // `g·[g > 0]`: nothing of the forward.
            return Some(ByBits::Rectify);
        }
        let (lo, hi) = kind.bounds()?;
        let len: usize = shape.iter().product();
        if !len.is_multiple_of(16) {
            return None;
        }
        let side = match words? {
            w if w == len / 16 => false,
            w if w == len / 8 => true,
            _ => return None,
        };
        // Without an upper kink, passing is being above the lower one.
        let above_known = side || hi == f32::INFINITY;
        let per = per_sample(shape);
        match self {
            Self::Plain => Some(ByBits::Mask),
            Self::Redirected if above_known && per > 0 && per.is_multiple_of(16) => Some(ByBits::Redirect),
            // `g·[g > 0]·[y > 0]`: the plane above a lower bound of 0.
            Self::Guided if lo == 0.0 && above_known => Some(ByBits::Guide),
            _ => None,
        }
    }

    /// The input gradient of a ReLU, ReLU6 or clip, written over `g`, from the
    /// activation's pass bits ([`PassBand`], one per element of its output, and for the
    /// redirected and guided modes a second plane after them where the band has an upper
    /// bound: where the output is above the lower bound), never from the output: the
    /// plain mode's mask; the redirected mode's (per sample, the plain gradient unless it
    /// is all zero, then the side of each flat element); guided backprop's (`y > 0`);
    /// rectification's (no bits). The same bits as [`Self::input_grad_pooled`]. False,
    /// with `g` untouched, where [`Self::by_bits`] says the bits do not serve.
    pub(crate) fn input_grad_by_bits(&self, kind: ReluKind, g: &mut ArrayD<f32>, bits: Option<&[u16]>) -> bool {
        let Some(plan) = self.by_bits(kind, g.shape(), bits.map(<[u16]>::len)) else { return false };
        let per = per_sample(g.shape());
        let Some(gs) = g.as_slice_mut() else { return false };
        // The planes: where the gradient passes, and (when kept) where the output is above
        // the lower bound. `by_bits` asked for them wherever the plan reads them.
        let (pass, side) = bits.map_or((&[][..], &[][..]), |b| b.split_at((gs.len() / 16).min(b.len())));
        match plan {
            ByBits::Rectify => rectify(gs, None),
            ByBits::Mask => mask_by_bits(gs, pass),
            ByBits::Guide => rectify(gs, Some(if side.is_empty() { pass } else { side })),
            ByBits::Redirect => {
                let side = (!side.is_empty()).then_some(side);
                for (s, (g, b)) in gs.chunks_mut(per).zip(pass.chunks(per / 16)).enumerate() {
                    if passes_any(g, b) {
                        mask_by_bits(g, b);
                    } else {
                        let above = side.map_or(b, |a| &a[s * per / 16..][..per / 16]);
                        redirect_by_bits(g, b, above);
                    }
                }
            }
        }
        true
    }
}

/// How [`BackpropMode::input_grad_by_bits`] uses an activation's pass bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByBits {
    /// The plain mask.
    Mask,
    /// Redirected, the side of each flat element from the bits.
    Redirect,
    /// Guided: the gradient where it is positive and the output above 0.
    Guide,
    /// Rectified: the gradient where it is positive; no bits.
    Rectify,
}

/// Elements per sample: along axis 0 of a rank ≥ 2 tensor, else the whole.
fn per_sample(shape: &[usize]) -> usize {
    let len: usize = shape.iter().product();
    if shape.len() < 2 {
        len
    } else {
        len / shape[0].max(1)
    }
}

/// Whether a plain gradient `g` masked by `bits` has a nonzero element.
fn passes_any(g: &[f32], bits: &[u16]) -> bool {
    g.iter().enumerate().any(|(i, &v)| bits[i / 16] >> (i % 16) & 1 == 1 && v != 0.0)
}

/// [`redirect`] over a sample from its bits: `pass` (inside the bounds) and `above`
/// (above the lower bound): below it is `!above`, at or above the upper `above && !pass`.
fn redirect_by_bits(g: &mut [f32], pass: &[u16], above: &[u16]) {
    for (i, g) in g.iter_mut().enumerate() {
        let (p, a) = (pass[i / 16] >> (i % 16) & 1 == 1, above[i / 16] >> (i % 16) & 1 == 1);
        let deeper = (!a && *g > 0.0) || (a && !p && *g < 0.0);
        if deeper {
            *g = 0.0;
        }
    }
}

/// lucid's redirected gradient where the plain one is all zero: `g`, unless it would push
/// the output `y` deeper past the bound it is already at (the loss is minimized: `g > 0`
/// pushes down, `g < 0` up).
#[inline(always)]
fn redirect(g: f32, y: f32, (lo, hi): (f32, f32)) -> f32 {
    // "Below" is "not above", so that a NaN output counts as below here as in the bits.
    let above = y > lo;
    let deeper = (!above && g > 0.0) || (y >= hi && g < 0.0);
    if deeper {
        0.0
    } else {
        g
    }
}

/// [`BackpropMode::Redirected`]: per sample (axis 0 of a rank ≥ 2 tensor), the plain
/// gradient, or the redirected one where the plain one is all zero. The loss is minimized, so `g > 0` pushes the
/// input down and `g < 0` pushes it up.
fn redirected(pool: &ScratchPool, kind: ReluKind, g: &ArrayD<f32>, x: &ArrayD<f32>, y: &ArrayD<f32>) -> ArrayD<f32> {
    let mut out = BackpropMode::Plain.input_grad_pooled(pool, kind, g, x, y);
    // Leaky ReLU and ELU pass some gradient everywhere: nothing to redirect.
    let Some((lo, hi)) = kind.bounds() else { return out };
    let redirect = |o: ndarray::ArrayViewMutD<'_, f32>, g: ArrayViewD<'_, f32>, x: ArrayViewD<'_, f32>| {
        if o.iter().any(|&v| v != 0.0) {
            return;
        }
        ndarray::Zip::from(o).and(g).and(x).for_each(|o, &g, &x| *o = redirect(g, x, (lo, hi)));
    };
    // A tensor of rank < 2 has no batch axis: it is one sample.
    if out.ndim() < 2 {
        redirect(out.view_mut(), g.view(), x.view());
        return out;
    }
    for i in 0..out.shape()[0] {
        let ax = ndarray::Axis(0);
        redirect(out.index_axis_mut(ax, i), g.index_axis(ax, i), x.index_axis(ax, i));
    }
    out
}
