//! What the tape records: [`Var`] handles, and per node the [`Op`] that made it with what
//! its backward needs. The forward ops (`ops.rs`) push them; reverse mode
//! (`backward.rs`) reads them in one match.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backprop_modes::ReluKind;
use crate::geometry::ConvGeometry;
use crate::pool::PoolGeometry;
use crate::tensor::Tensor;

/// A handle to a value on a [`Tape`](crate::Tape). Cheap to copy; only meaningful for the tape that
/// made it, until that tape is reset — using it elsewhere is an
/// [`TensorError::UnknownVar`](crate::TensorError::UnknownVar), never a silently wrong value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var {
    pub(crate) index: usize,
    pub(crate) epoch: u64,
}

impl Var {
    /// Position on the tape (creation order).
    pub fn index(self) -> usize {
        self.index
    }
}

/// Source of tape epochs: each new or reset tape takes a fresh one, so a `Var` can tell
/// which tape and which iteration it belongs to. Only an identity counter, no shared data.
static NEXT_EPOCH: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_epoch() -> u64 {
    NEXT_EPOCH.fetch_add(1, Ordering::Relaxed)
}

/// Element-wise functions with a closed-form derivative.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Unary {
    Abs,
    Sqrt,
    Exp,
    Log,
    Sigmoid,
    Tanh,
    /// `x^p`.
    Powf(f32),
    Sin,
    Cos,
    /// The Gauss error function.
    Erf,
}

/// Padding modes of [`Tape::pad`](crate::Tape::pad).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadMode {
    /// Fill with a constant.
    Constant(f32),
    /// Mirror without repeating the edge (numpy/PyTorch "reflect").
    Reflect,
}

/// What produced a node, with what its backward needs.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Leaf,
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Div(Var, Var),
    AddScalar(Var),
    MulScalar(Var, f32),
    /// `(x − shift[c]) · scale[c]` per channel; the backward needs the scales only.
    ChannelAffine {
        x: Var,
        scale: Vec<f32>,
    },
    Unary(Var, Unary),
    Relu(Var, ReluKind),
    /// Sum over `axes`; `kept` is the output shape with the reduced axes kept as 1.
    Sum {
        x: Var,
        kept: Vec<usize>,
        scale: f32,
    },
    Softmax {
        x: Var,
        axis: usize,
    },
    LogSoftmax {
        x: Var,
        axis: usize,
    },
    /// Mean cross-entropy of `[B, C]` logits against class indices; keeps the softmax.
    CrossEntropy {
        logits: Var,
        targets: Vec<usize>,
        probs: Tensor,
    },
    /// `a · b` or `a · bᵀ` of 2-D operands.
    MatMul {
        a: Var,
        b: Var,
        trans_b: bool,
    },
    /// A conv, its bias, and (when fused) a ReLU or ReLU6 applied in the same store.
    Conv2d {
        x: Var,
        w: Var,
        b: Option<Var>,
        g: ConvGeometry,
        act: Option<ReluKind>,
    },
    MaxPool2d {
        x: Var,
        g: PoolGeometry,
        arg: Vec<u32>,
    },
    AvgPool2d {
        x: Var,
        g: PoolGeometry,
    },
    BatchNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Var,
        var: Var,
        eps: f32,
    },
    Pad {
        x: Var,
        pads: Vec<(usize, usize)>,
        mode: PadMode,
    },
    Slice {
        x: Var,
        ranges: Vec<(usize, usize)>,
    },
    Reshape(Var),
    Concat {
        xs: Vec<Var>,
        axis: usize,
    },
    Permute {
        x: Var,
        perm: Vec<usize>,
    },
    Roll {
        x: Var,
        shifts: Vec<isize>,
    },
    /// `rfft2` over the last two axes; `w` is the input width.
    Rfft2 {
        x: Var,
        w: usize,
    },
    /// `irfft2` over the spectrum axes `[..., H, W/2+1, 2]`; `w` is the output width.
    Irfft2 {
        z: Var,
        w: usize,
    },
    /// keras-vis's total variation over `axes` (one scalar); see `smoothness.rs`.
    TotalVariation {
        x: Var,
        axes: Vec<usize>,
        beta: f32,
    },
    /// `(Σ|x|^p)^(1/p)`; `sum` is the inner sum, which the backward reuses.
    LpNorm {
        x: Var,
        p: f32,
        sum: f64,
    },
    /// An affine warp with the taps its forward sampled through (the backward's too).
    AffineWarp {
        x: Var,
        taps: Arc<crate::warp::WarpTaps>,
    },
}

impl Op {
    /// Whether node `v` is one of this op's operands.
    pub(crate) fn has_input(&self, v: usize) -> bool {
        let is = |x: &Var| x.index == v;
        match self {
            Op::Leaf => false,
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) | Op::MatMul { a, b, .. } => is(a) || is(b),
            Op::AddScalar(x)
            | Op::MulScalar(x, _)
            | Op::ChannelAffine { x, .. }
            | Op::Unary(x, _)
            | Op::Relu(x, _)
            | Op::Sum { x, .. }
            | Op::Softmax { x, .. }
            | Op::LogSoftmax { x, .. }
            | Op::CrossEntropy { logits: x, .. }
            | Op::MaxPool2d { x, .. }
            | Op::AvgPool2d { x, .. }
            | Op::Pad { x, .. }
            | Op::Slice { x, .. }
            | Op::Reshape(x)
            | Op::Permute { x, .. }
            | Op::Roll { x, .. }
            | Op::Rfft2 { x, .. }
            | Op::Irfft2 { z: x, .. }
            | Op::TotalVariation { x, .. }
            | Op::LpNorm { x, .. }
            | Op::AffineWarp { x, .. } => is(x),
            Op::Conv2d { x, w, b, .. } => is(x) || is(w) || b.as_ref().is_some_and(is),
            Op::BatchNorm { x, gamma, beta, mean, var, .. } => [x, gamma, beta, mean, var].into_iter().any(is),
            Op::Concat { xs, .. } => xs.iter().any(is),
        }
    }
}

impl Node {
    /// The shape of its value, also once given back.
    pub(crate) fn dims(&self) -> &[usize] {
        use ndarray::Dimension;
        self.released_dim.as_ref().map_or(self.value.shape(), |d| d.slice())
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) value: Arc<Tensor>,
    pub(crate) op: Op,
    pub(crate) requires_grad: bool,
    /// For a conv with a fused ReLU or ReLU6 (a fused pair's first conv): where its
    /// activation passes a gradient, one bit per element of `value`
    /// ([`crate::PassBand`]); the plain backward reads these instead of the value.
    pub(crate) pass_bits: Option<Vec<u16>>,
    /// Set when the value was given back ([`Tape::release_unneeded`], `Tape::release`):
    /// its shape, which the backward still needs of the values it does not read.
    ///
    /// [`Tape::release_unneeded`]: crate::Tape::release_unneeded
    pub(crate) released_dim: Option<ndarray::IxDyn>,
}
