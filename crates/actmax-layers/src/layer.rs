//! The layers: what each computes on the tape, its output shape and its parameters.

use std::sync::Arc;

use actmax_tensor::pool::PoolGeometry;
use actmax_tensor::shapes;

use crate::train::Binding;
use actmax_tensor::{
    Conv2dParams, ConvGeometry, ConvStage, Padding2d, Pool2dParams, ReluKind, Tape, Tensor, TensorError, Var,
};

/// Element-wise activations (fused into Conv/Dense, or a layer of their own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// Identity.
    Linear,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// Leaky ReLU with the given negative slope.
    LeakyRelu(f32),
    /// ELU with the given scale.
    Elu(f32),
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax over the channel axis (axis 1).
    Softmax,
    /// `min(max(x, lo), hi)` (ONNX Clip; ReLU6 is `Clip(0, 6)`).
    Clip(f32, f32),
    /// GELU with the exact normal CDF, `x · ½(1 + erf(x/√2))` (PyTorch's default).
    Gelu,
    /// GELU's tanh approximation, `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
    GeluTanh,
    /// Swish / SiLU, `x · sigmoid(x)` (EfficientNet).
    Swish,
}

impl Activation {
    /// Applies the activation on the tape.
    pub fn apply(self, tape: &mut Tape, x: Var) -> Result<Var, TensorError> {
        match self {
            Self::Linear => Ok(x),
            Self::Relu => tape.relu(x),
            Self::Relu6 => tape.relu6(x),
            Self::LeakyRelu(a) => tape.relu_family(x, ReluKind::LeakyRelu { alpha: a }),
            Self::Elu(a) => tape.relu_family(x, ReluKind::Elu { alpha: a }),
            Self::Sigmoid => tape.sigmoid(x),
            Self::Tanh => tape.tanh(x),
            Self::Softmax => tape.softmax(x, 1),
            Self::Clip(lo, hi) => tape.clip(x, lo, hi),
            Self::Gelu => {
                let z = tape.mul_scalar(x, std::f32::consts::FRAC_1_SQRT_2)?;
                let e = tape.erf(z)?;
                let half_one_plus = tape.add_scalar(e, 1.0)?;
                let cdf = tape.mul_scalar(half_one_plus, 0.5)?;
                tape.mul(x, cdf)
            }
            Self::Swish => {
                let s = tape.sigmoid(x)?;
                tape.mul(x, s)
            }
            Self::GeluTanh => {
                // √(2/π) = 2/√π · 1/√2.
                let k = std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
                let cube = tape.powf(x, 3.0)?;
                let c = tape.mul_scalar(cube, 0.044_715)?;
                let inner = tape.add(x, c)?;
                let z = tape.mul_scalar(inner, k)?;
                let t = tape.tanh(z)?;
                let one_plus = tape.add_scalar(t, 1.0)?;
                let half = tape.mul_scalar(one_plus, 0.5)?;
                tape.mul(x, half)
            }
        }
    }

    /// The ReLU-family kind a conv can apply in its own store, if this is one.
    pub fn fusable(self) -> Option<ReluKind> {
        match self {
            Self::Relu => Some(ReluKind::Relu),
            Self::Relu6 => Some(ReluKind::Relu6),
            // ONNX spells ReLU6 as Clip(0, 6).
            Self::Clip(lo, hi) if lo == 0.0 && hi == 6.0 => Some(ReluKind::Relu6),
            _ => None,
        }
    }

    /// Short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Relu => "relu",
            Self::Relu6 => "relu6",
            Self::LeakyRelu(_) => "leaky_relu",
            Self::Elu(_) => "elu",
            Self::Sigmoid => "sigmoid",
            Self::Tanh => "tanh",
            Self::Softmax => "softmax",
            Self::Clip(..) => "clip",
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_tanh",
            Self::Swish => "swish",
        }
    }
}

/// How a window layer pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPadding {
    /// No padding (Keras "valid").
    Valid,
    /// TensorFlow/Keras "same": `ceil(in / stride)` outputs, the odd pixel bottom/right.
    Same,
    /// Explicit, possibly asymmetric padding (PyTorch, ONNX).
    Explicit(Padding2d),
}

impl WindowPadding {
    fn resolve(self, in_hw: [usize; 2], k: [usize; 2], stride: [usize; 2], dilation: [usize; 2]) -> Padding2d {
        match self {
            Self::Valid => Padding2d::default(),
            Self::Same => Padding2d::tf_same(in_hw, k, stride, dilation),
            Self::Explicit(p) => p,
        }
    }
}

/// A 2-D convolution's weights and settings (weights OIHW).
#[derive(Debug, Clone)]
pub struct Conv {
    /// `[c_out, c_in / groups, kh, kw]`.
    pub weight: Arc<Tensor>,
    /// `[c_out]`, if any.
    pub bias: Option<Arc<Tensor>>,
    /// Step, (rows, cols).
    pub stride: [usize; 2],
    /// Padding rule.
    pub padding: WindowPadding,
    /// Tap spacing.
    pub dilation: [usize; 2],
    /// Channel groups.
    pub groups: usize,
}

impl Conv {
    /// A conv with zero weights of the given shape, stride 1, no bias, one group.
    pub fn zeros(c_out: usize, c_in_per_group: usize, k: usize) -> Self {
        Self {
            weight: Arc::new(Tensor::zeros(vec![c_out, c_in_per_group, k, k])),
            bias: None,
            stride: [1, 1],
            padding: WindowPadding::Valid,
            dilation: [1, 1],
            groups: 1,
        }
    }

    fn params(&self, x: &[usize]) -> Result<Conv2dParams, TensorError> {
        if x.len() != 4 {
            return Err(TensorError::Shape { op: "conv2d", msg: "expects an NCHW input".into(), shape: x.to_vec() });
        }
        let w = self.weight.shape();
        let padding = self.padding.resolve([x[2], x[3]], [w[2], w[3]], self.stride, self.dilation);
        Ok(Conv2dParams { stride: self.stride, padding, dilation: self.dilation, groups: self.groups })
    }

    /// `names` are the parameter names `params_mut` gives the weight and the bias.
    fn forward(&self, tape: &mut Tape, x: Var, bind: &mut Binding, names: [&str; 2]) -> Result<Var, TensorError> {
        self.forward_then(tape, x, bind, names, Activation::Linear)
    }

    /// The conv then `act`; a ReLU or ReLU6 runs inside the conv's store
    /// ([`Tape::conv2d_activated`]), any other activation as its own op.
    pub(crate) fn forward_then(
        &self,
        tape: &mut Tape,
        x: Var,
        bind: &mut Binding,
        names: [&str; 2],
        act: Activation,
    ) -> Result<Var, TensorError> {
        let p = self.params(tape.shape(x)?)?;
        let w = bind.param(tape, names[0], &self.weight);
        let b = self.bias.as_ref().map(|b| bind.param(tape, names[1], b));
        match act.fusable() {
            Some(kind) => tape.conv2d_activated(x, w, b, p, kind),
            None => {
                let y = tape.conv2d(x, w, b, p)?;
                act.apply(tape, y)
            }
        }
    }

    /// This conv then `act`, and `next` (which reads only its output) then `next_act`, as
    /// one tape op ([`Tape::conv2d_pair`]: block by block where no gradient runs through
    /// them); with `then`, a third conv reading only `next`'s output, its activation and
    /// a residual value added to its output ([`Tape::conv2d_triple`]). The activations
    /// must be ReLU, ReLU6 or linear (they run in the stores).
    #[allow(clippy::too_many_arguments)] // up to three convs and their activations
    pub(crate) fn pair_then(
        &self,
        tape: &mut Tape,
        x: Var,
        bind: &mut Binding,
        act: Activation,
        next: &Conv,
        next_act: Activation,
        then: Option<(&Conv, Activation, Option<Var>)>,
    ) -> Result<Var, TensorError> {
        let shape = tape.shape(x)?.to_vec();
        let mid = self.output_shape(&shape)?;
        let mut stage = |c: &Conv, p: Conv2dParams, act: Activation| ConvStage {
            w: bind.param(tape, "weight", &c.weight),
            b: c.bias.as_ref().map(|b| bind.param(tape, "bias", b)),
            p,
            act: act.fusable(),
        };
        let first = stage(self, self.params(&shape)?, act);
        let second = stage(next, next.params(&mid)?, next_act);
        match then {
            Some((third, third_act, residual)) => {
                let out = next.output_shape(&mid)?;
                let third = stage(third, third.params(&out)?, third_act);
                tape.conv2d_triple(x, first, second, third, residual)
            }
            None => tape.conv2d_pair(x, first, second),
        }
    }

    fn output_shape(&self, x: &[usize]) -> Result<Vec<usize>, TensorError> {
        let g = ConvGeometry::new("conv2d", x, self.weight.shape(), self.params(x)?)?;
        if let Some(b) = &self.bias {
            if b.shape() != [self.weight.shape()[0]] {
                return Err(TensorError::Shape {
                    op: "conv2d",
                    msg: format!("the bias must be [{}] (one per output channel)", self.weight.shape()[0]),
                    shape: b.shape().to_vec(),
                });
            }
        }
        Ok(g.out_shape().to_vec())
    }
}

/// A pooling window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool {
    /// Window rows and columns.
    pub kernel: [usize; 2],
    /// Step.
    pub stride: [usize; 2],
    /// Padding rule.
    pub padding: WindowPadding,
    /// Average pooling: count padded pixels (PyTorch) or not (Keras).
    pub count_include_pad: bool,
    /// Round the output size up (PyTorch/ONNX `ceil_mode`): a last, partial window is
    /// kept when it starts inside the input or its left/top padding.
    pub ceil_mode: bool,
}

impl Pool {
    /// A `k × k` window with stride `s`, no padding.
    pub fn new(k: usize, s: usize) -> Self {
        Self {
            kernel: [k, k],
            stride: [s, s],
            padding: WindowPadding::Valid,
            count_include_pad: false,
            ceil_mode: false,
        }
    }

    /// The parameters without ceil mode's extra padding.
    fn params_floor(&self, x: &[usize]) -> Pool2dParams {
        Self { ceil_mode: false, ..*self }.params(x)
    }

    /// The window's parameters on input `x`. Ceil mode becomes extra bottom/right padding
    /// that the pooling kernels skip (max) or leave uncounted (average).
    fn params(&self, x: &[usize]) -> Pool2dParams {
        let in_hw = if x.len() == 4 { [x[2], x[3]] } else { [0, 0] };
        let mut padding = self.padding.resolve(in_hw, self.kernel, self.stride, [1, 1]);
        if self.ceil_mode {
            let [bottom, right] = [0, 1].map(|a| {
                let (lo, hi) = if a == 0 { (padding.top, padding.bottom) } else { (padding.left, padding.right) };
                ceil_overhang(in_hw[a], lo, hi, self.kernel[a], self.stride[a])
            });
            padding.bottom += bottom;
            padding.right += right;
        }
        Pool2dParams { kernel: self.kernel, stride: self.stride, padding, count_include_pad: self.count_include_pad }
    }
}

/// How far ceil mode's last window reaches past the padded input (PyTorch's rule: round
/// up, but drop a last window that would start in the bottom/right padding).
fn ceil_overhang(len: usize, lo: usize, hi: usize, k: usize, s: usize) -> usize {
    let padded = len + lo + hi;
    if padded < k || s == 0 {
        return 0;
    }
    let mut out = (padded - k).div_ceil(s) + 1;
    if (out - 1) * s >= len + lo {
        out -= 1;
    }
    ((out - 1) * s + k).saturating_sub(padded)
}

/// A broadcasting element-wise operation of two tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
    /// `a / b`.
    Div,
}

impl BinaryOp {
    fn apply(self, tape: &mut Tape, a: Var, b: Var) -> Result<Var, TensorError> {
        match self {
            Self::Add => tape.add(a, b),
            Self::Sub => tape.sub(a, b),
            Self::Mul => tape.mul(a, b),
            Self::Div => tape.div(a, b),
        }
    }

    fn name_lower(self) -> &'static str {
        match self {
            Self::Add => "add",
            Self::Sub => "sub",
            Self::Mul => "mul",
            Self::Div => "div",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Add => "Add",
            Self::Sub => "Sub",
            Self::Mul => "Mul",
            Self::Div => "Div",
        }
    }
}

/// An element-wise function of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `−x`.
    Neg,
    /// `|x|`.
    Abs,
    /// `√x`.
    Sqrt,
    /// `1 / x`.
    Reciprocal,
    /// `eˣ`.
    Exp,
    /// `ln x`.
    Log,
    /// The Gauss error function.
    Erf,
    /// `xᵖ` with a constant exponent (ONNX Pow by a scalar).
    Pow(f32),
}

impl UnaryOp {
    fn apply(self, tape: &mut Tape, x: Var) -> Result<Var, TensorError> {
        match self {
            Self::Neg => tape.neg(x),
            Self::Abs => tape.abs(x),
            Self::Sqrt => tape.sqrt(x),
            Self::Reciprocal => tape.powf(x, -1.0),
            Self::Exp => tape.exp(x),
            Self::Log => tape.log(x),
            Self::Erf => tape.erf(x),
            // Squares are the common case (LayerNorm's variance): a product keeps x < 0 exact.
            Self::Pow(2.0) => tape.mul(x, x),
            Self::Pow(1.0) => Ok(x),
            Self::Pow(p) => tape.powf(x, p),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Neg => "Neg",
            Self::Abs => "Abs",
            Self::Sqrt => "Sqrt",
            Self::Reciprocal => "Reciprocal",
            Self::Exp => "Exp",
            Self::Log => "Log",
            Self::Erf => "Erf",
            Self::Pow(_) => "Pow",
        }
    }
}

/// A reduction over some axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// The mean.
    Mean,
    /// The sum.
    Sum,
}

/// A layer of the zoo.
#[derive(Debug, Clone)]
pub enum Layer {
    /// The model's input (after the input spec's preprocessing).
    Input,
    /// 2-D convolution, then an activation.
    Conv2d(Conv, Activation),
    /// Depthwise convolution (groups = channels), then an activation.
    DepthwiseConv2d(Conv, Activation),
    /// Depthwise then pointwise convolution (Keras SeparableConv2D), then an activation.
    SeparableConv2d {
        /// The per-channel spatial conv.
        depthwise: Conv,
        /// The 1×1 channel mix (carries the bias).
        pointwise: Conv,
        /// Applied last.
        activation: Activation,
    },
    /// `x · Wᵀ + b` with `W: [out, in]`, then an activation.
    Dense {
        /// `[out, in]` (PyTorch layout).
        weight: Arc<Tensor>,
        /// `[out]`.
        bias: Option<Arc<Tensor>>,
        /// Applied last.
        activation: Activation,
    },
    /// Inference batch norm over the channel axis.
    BatchNorm {
        /// Scale.
        gamma: Arc<Tensor>,
        /// Shift.
        beta: Arc<Tensor>,
        /// Running mean.
        mean: Arc<Tensor>,
        /// Running variance.
        var: Arc<Tensor>,
        /// Added to the variance.
        eps: f32,
    },
    /// An activation of its own.
    Activation(Activation),
    /// Max pooling.
    MaxPool(Pool),
    /// Average pooling.
    AvgPool(Pool),
    /// Mean over the spatial axes: `[N, C, H, W] → [N, C]`.
    GlobalAvgPool,
    /// `[N, ...] → [N, prod(...)]`.
    Flatten,
    /// Identity at inference (the rate is kept for listings).
    Dropout(f32),
    /// Constant padding of the spatial axes with the given value (Keras ZeroPadding2D is
    /// value 0, ONNX Pad any).
    Pad(Padding2d, f32),
    /// `inputs[0] op inputs[1]`, broadcasting (ONNX Sub/Mul/Div of two tensors).
    Binary(BinaryOp),
    /// `x op c` (or `c op x` when `constant_first`) with a constant that broadcasts.
    BinaryConst {
        /// The operation.
        op: BinaryOp,
        /// The constant operand.
        constant: Arc<Tensor>,
        /// Whether the constant is the left operand.
        constant_first: bool,
    },
    /// Axis permutation of `[N, ...]`; `perm[0]` must be 0 (the batch stays first).
    Permute(Vec<usize>),
    /// Sum of all inputs.
    Add,
    /// Concatenation along an axis.
    Concat(usize),
    /// Reshape to `[N, shape...]`.
    Reshape(Vec<usize>),
    /// Passes its input through (a batch norm folded into the conv before it).
    Identity,
    /// An element-wise function (ONNX Sqrt, Erf, Pow by a constant, ...).
    Unary(UnaryOp),
    /// A mean or sum over non-batch axes (ONNX ReduceMean/ReduceSum).
    Reduce {
        /// Mean or sum.
        op: ReduceOp,
        /// The axes, ascending, none of them 0 (the batch).
        axes: Vec<usize>,
        /// Keep the reduced axes as size 1.
        keepdims: bool,
    },
    /// `start..end` along one non-batch axis (ONNX Slice and Split: channel splits).
    Slice {
        /// The axis (≥ 1).
        axis: usize,
        /// First index kept.
        start: usize,
        /// One past the last index kept.
        end: usize,
    },
    /// Layer normalization over the axes from `axis` to the last, then a scale and shift
    /// of those axes' shape (PyTorch `LayerNorm`, ONNX LayerNormalization).
    LayerNorm {
        /// The first normalized axis (≥ 1).
        axis: usize,
        /// Scale, shaped like the normalized axes.
        gamma: Arc<Tensor>,
        /// Shift, shaped like the normalized axes, if any.
        beta: Option<Arc<Tensor>>,
        /// Added to the variance.
        eps: f32,
    },
    /// PReLU: `max(x, 0) + slope · min(x, 0)`, the slope broadcasting against a per-image
    /// value (`[C, 1, 1]` per channel, `[1]` shared).
    PRelu(Arc<Tensor>),
    /// Spatial resizing of NCHW as two interpolation matrices (nearest or linear, any
    /// coordinate rule: each output row and column is a fixed mix of input ones), so the
    /// gradient is theirs transposed.
    Resize {
        /// `[H_out, H_in]`.
        rows: Arc<Tensor>,
        /// `[W_out, W_in]`.
        cols: Arc<Tensor>,
    },
}

impl Layer {
    /// A short type name for listings.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Input => "Input",
            Self::Conv2d(..) => "Conv2D",
            Self::DepthwiseConv2d(..) => "DepthwiseConv2D",
            Self::SeparableConv2d { .. } => "SeparableConv2D",
            Self::Dense { .. } => "Dense",
            Self::BatchNorm { .. } => "BatchNorm",
            Self::Activation(_) => "Activation",
            Self::MaxPool(_) => "MaxPool",
            Self::AvgPool(_) => "AvgPool",
            Self::GlobalAvgPool => "GlobalAvgPool",
            Self::Flatten => "Flatten",
            Self::Dropout(_) => "Dropout",
            Self::Pad(_, v) if *v == 0.0 => "ZeroPadding",
            Self::Pad(..) => "Pad",
            Self::Binary(op) | Self::BinaryConst { op, .. } => op.name(),
            Self::Permute(_) => "Permute",
            Self::Add => "Add",
            Self::Concat(_) => "Concat",
            Self::Reshape(_) => "Reshape",
            Self::Identity => "Identity",
            Self::Unary(op) => op.name(),
            Self::Reduce { op: ReduceOp::Mean, .. } => "ReduceMean",
            Self::Reduce { op: ReduceOp::Sum, .. } => "ReduceSum",
            Self::Slice { .. } => "Slice",
            Self::LayerNorm { .. } => "LayerNorm",
            Self::PRelu(_) => "PReLU",
            Self::Resize { .. } => "Resize",
        }
    }

    /// The activation this layer ends with, if it has one that can be swapped.
    pub fn activation(&self) -> Option<Activation> {
        // A clone shares the weights (`Arc`s): one exhaustive match serves both doors.
        self.clone().activation_mut().copied()
    }

    /// Replaces the layer's activation (keras-vis's softmax → linear swap). Returns false
    /// when the layer has none.
    pub fn set_activation(&mut self, new: Activation) -> bool {
        match self.activation_mut() {
            Some(a) => {
                *a = new;
                true
            }
            None => false,
        }
    }

    /// The layer's own activation, every kind named (a new layer must say whether it has one).
    fn activation_mut(&mut self) -> Option<&mut Activation> {
        match self {
            Self::Conv2d(_, a) | Self::DepthwiseConv2d(_, a) | Self::Activation(a) => Some(a),
            Self::SeparableConv2d { activation, .. } | Self::Dense { activation, .. } => Some(activation),
            Self::Input
            | Self::BatchNorm { .. }
            | Self::MaxPool(_)
            | Self::AvgPool(_)
            | Self::GlobalAvgPool
            | Self::Flatten
            | Self::Dropout(_)
            | Self::Pad(..)
            | Self::Binary(_)
            | Self::BinaryConst { .. }
            | Self::Permute(_)
            | Self::Add
            | Self::Concat(_)
            | Self::Reshape(_)
            | Self::Identity
            | Self::Unary(_)
            | Self::Reduce { .. }
            | Self::Slice { .. }
            | Self::LayerNorm { .. }
            | Self::PRelu(_)
            | Self::Resize { .. } => None,
        }
    }

    /// Multiply-adds × 2 of one image through this layer, given its output shape.
    pub fn flops(&self, output_shape: &[usize]) -> f64 {
        let per_image: usize = output_shape.iter().skip(1).product();
        let conv = |c: &Conv| 2.0 * per_image as f64 * (c.weight.len() / c.weight.shape()[0]) as f64;
        match self {
            Self::Conv2d(c, _) | Self::DepthwiseConv2d(c, _) => conv(c),
            Self::SeparableConv2d { depthwise, pointwise, .. } => {
                let dw_out = per_image / pointwise.weight.shape()[0] * depthwise.weight.shape()[0];
                2.0 * dw_out as f64 * (depthwise.weight.len() / depthwise.weight.shape()[0]) as f64 + conv(pointwise)
            }
            // Per output row (a rank-4 input applies the weight at every position).
            Self::Dense { weight, .. } => 2.0 * (per_image / weight.shape()[0]).max(1) as f64 * weight.len() as f64,
            // Elementwise and data-movement layers: no multiply-adds worth counting.
            Self::BatchNorm { .. }
            | Self::Input
            | Self::Activation(_)
            | Self::MaxPool(_)
            | Self::AvgPool(_)
            | Self::GlobalAvgPool
            | Self::Flatten
            | Self::Dropout(_)
            | Self::Pad(..)
            | Self::Binary(_)
            | Self::BinaryConst { .. }
            | Self::Permute(_)
            | Self::Add
            | Self::Concat(_)
            | Self::Reshape(_)
            | Self::Identity
            | Self::Unary(_)
            | Self::Reduce { .. }
            | Self::Slice { .. }
            | Self::LayerNorm { .. }
            | Self::PRelu(_) => 0.0,
            // Two small matrix products per plane.
            Self::Resize { rows, cols } => {
                let (ho, hi, wo) = (rows.shape()[0], rows.shape()[1], cols.shape()[0]);
                let planes = per_image / (ho * wo).max(1);
                2.0 * planes as f64 * (hi * cols.len() + ho * wo * hi) as f64
            }
        }
    }

    /// Number of parameters: those [`Layer::params_mut`] lists (a clone shares the
    /// weights, so one exhaustive match says what a layer holds).
    pub fn param_count(&self) -> usize {
        self.clone().params_mut().iter().map(|(_, t)| t.len()).sum()
    }

    /// Filters (output channels or units) a loss can address, if the layer has them.
    pub fn filters(&self, output_shape: &[usize]) -> Option<usize> {
        match self {
            Self::Input => None,
            _ => output_shape.get(1).copied(),
        }
    }

    /// Parameters by local name (`weight`, `bias`, `running_mean`, ...), PyTorch style.
    pub fn params_mut(&mut self) -> Vec<(&'static str, &mut Arc<Tensor>)> {
        fn conv<'a>(prefix: &'static str, c: &'a mut Conv, out: &mut Vec<(&'static str, &'a mut Arc<Tensor>)>) {
            let (w, b) = match prefix {
                "depthwise" => ("depthwise.weight", "depthwise.bias"),
                "pointwise" => ("pointwise.weight", "pointwise.bias"),
                _ => ("weight", "bias"),
            };
            out.push((w, &mut c.weight));
            if let Some(bias) = c.bias.as_mut() {
                out.push((b, bias));
            }
        }
        let mut out = Vec::new();
        match self {
            Self::Conv2d(c, _) | Self::DepthwiseConv2d(c, _) => conv("", c, &mut out),
            Self::SeparableConv2d { depthwise, pointwise, .. } => {
                conv("depthwise", depthwise, &mut out);
                conv("pointwise", pointwise, &mut out);
            }
            Self::Dense { weight, bias, .. } => {
                out.push(("weight", weight));
                if let Some(b) = bias.as_mut() {
                    out.push(("bias", b));
                }
            }
            Self::BatchNorm { gamma, beta, mean, var, .. } => {
                out.extend([("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)]);
            }
            Self::LayerNorm { gamma, beta, .. } => {
                out.push(("weight", gamma));
                if let Some(b) = beta.as_mut() {
                    out.push(("bias", b));
                }
            }
            Self::PRelu(slope) => out.push(("weight", slope)),
            Self::Input
            | Self::Activation(_)
            | Self::MaxPool(_)
            | Self::AvgPool(_)
            | Self::GlobalAvgPool
            | Self::Flatten
            | Self::Dropout(_)
            | Self::Pad(..)
            | Self::Binary(_)
            | Self::BinaryConst { .. }
            | Self::Permute(_)
            | Self::Add
            | Self::Concat(_)
            | Self::Reshape(_)
            | Self::Identity
            | Self::Unary(_)
            | Self::Reduce { .. }
            | Self::Slice { .. }
            | Self::Resize { .. } => {}
        }
        out
    }

    /// How many inputs the layer takes: at least `.0`, at most `.1` (`None`: any number).
    pub fn arity(&self) -> (usize, Option<usize>) {
        match self {
            Self::Binary(_) => (2, Some(2)),
            Self::Add | Self::Concat(_) => (1, None),
            Self::Input
            | Self::Conv2d(..)
            | Self::DepthwiseConv2d(..)
            | Self::SeparableConv2d { .. }
            | Self::Dense { .. }
            | Self::BatchNorm { .. }
            | Self::Activation(_)
            | Self::MaxPool(_)
            | Self::AvgPool(_)
            | Self::GlobalAvgPool
            | Self::Flatten
            | Self::Dropout(_)
            | Self::Pad(..)
            | Self::BinaryConst { .. }
            | Self::Permute(_)
            | Self::Reshape(_)
            | Self::Identity
            | Self::Unary(_)
            | Self::Reduce { .. }
            | Self::Slice { .. }
            | Self::LayerNorm { .. }
            | Self::PRelu(_)
            | Self::Resize { .. } => (1, Some(1)),
        }
    }

    /// A typed error unless `n` inputs is what the layer takes.
    fn check_arity(&self, n: usize) -> Result<(), TensorError> {
        let (lo, hi) = self.arity();
        if n >= lo && hi.is_none_or(|hi| n <= hi) {
            return Ok(());
        }
        let wants = match hi {
            Some(hi) if hi == lo => format!("{lo}"),
            Some(hi) => format!("{lo} to {hi}"),
            None => format!("at least {lo}"),
        };
        Err(TensorError::Param {
            op: "layer",
            msg: format!("a {} layer takes {wants} input(s), got {n}", self.type_name()),
        })
    }

    /// The layer's output on the tape, parameters as constants (inference).
    pub fn forward(&self, tape: &mut Tape, inputs: &[Var]) -> Result<Var, TensorError> {
        self.forward_bound(tape, inputs, &mut Binding::Inference)
    }

    /// The conv of a conv layer (2-D or depthwise) with no activation of its own: one a
    /// following activation can be fused into.
    pub(crate) fn plain_conv(&self) -> Option<&Conv> {
        match self {
            Self::Conv2d(c, Activation::Linear) | Self::DepthwiseConv2d(c, Activation::Linear) => Some(c),
            _ => None,
        }
    }

    /// The layer's output on the tape, parameters and dropout as `bind` says.
    pub fn forward_bound(&self, tape: &mut Tape, inputs: &[Var], bind: &mut Binding) -> Result<Var, TensorError> {
        self.check_arity(inputs.len())?;
        let x = inputs[0];
        match self {
            Self::Input | Self::Identity => Ok(x),
            Self::Dropout(rate) => bind.dropout(tape, x, *rate),
            Self::Conv2d(c, a) | Self::DepthwiseConv2d(c, a) => c.forward_then(tape, x, bind, ["weight", "bias"], *a),
            Self::SeparableConv2d { depthwise, pointwise, activation } => {
                let y = depthwise.forward(tape, x, bind, ["depthwise.weight", "depthwise.bias"])?;
                let y = pointwise.forward(tape, y, bind, ["pointwise.weight", "pointwise.bias"])?;
                activation.apply(tape, y)
            }
            Self::Dense { weight, bias, activation } => {
                let w = bind.param(tape, "weight", weight);
                let b = bias.as_ref().map(|b| bind.param(tape, "bias", b));
                let y = dense_last_axis(tape, x, w, b)?;
                activation.apply(tape, y)
            }
            Self::BatchNorm { gamma, beta, mean, var, eps } => {
                // Running statistics stay constants even in training (no batch statistics).
                let g = bind.param(tape, "weight", gamma);
                let b = bind.param(tape, "bias", beta);
                let [m, v] = [mean, var].map(|t| tape.constant_shared(t.clone()));
                tape.batch_norm(x, g, b, m, v, *eps)
            }
            Self::Activation(a) => a.apply(tape, x),
            Self::MaxPool(p) => {
                let p = p.params(tape.shape(x)?);
                tape.max_pool2d(x, p)
            }
            Self::AvgPool(p) => {
                let p = p.params(tape.shape(x)?);
                tape.avg_pool2d(x, p)
            }
            Self::GlobalAvgPool => tape.global_avg_pool(x),
            Self::Flatten => tape.flatten(x),
            Self::Pad(p, v) => {
                tape.pad(x, &[(p.top, p.bottom), (p.left, p.right)], actmax_tensor::PadMode::Constant(*v))
            }
            Self::Binary(op) => op.apply(tape, x, inputs[1]),
            Self::BinaryConst { op, constant, constant_first } => {
                let c = tape.constant_shared(constant.clone());
                if *constant_first {
                    op.apply(tape, c, x)
                } else {
                    op.apply(tape, x, c)
                }
            }
            Self::Permute(perm) => tape.permute(x, perm),
            Self::Add => inputs[1..].iter().try_fold(x, |acc, &v| tape.add(acc, v)),
            Self::Concat(axis) => tape.concat(inputs, *axis),
            Self::Reshape(shape) => {
                let n = tape.shape(x)?[0];
                let full: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
                tape.reshape(x, &full)
            }
            Self::Unary(op) => op.apply(tape, x),
            Self::Reduce { op, axes, keepdims } => match op {
                ReduceOp::Mean => tape.mean(x, axes, *keepdims),
                ReduceOp::Sum => tape.sum(x, axes, *keepdims),
            },
            Self::Slice { axis, start, end } => {
                let ranges: Vec<(usize, usize)> = tape
                    .shape(x)?
                    .iter()
                    .enumerate()
                    .map(|(a, &d)| if a == *axis { (*start, *end) } else { (0, d) })
                    .collect();
                tape.slice(x, &ranges)
            }
            Self::LayerNorm { axis, gamma, beta, eps } => {
                let g = bind.param(tape, "weight", gamma);
                let b = beta.as_ref().map(|b| bind.param(tape, "bias", b));
                layer_norm(tape, x, *axis, g, b, *eps)
            }
            Self::Resize { rows, cols } => {
                let (r, c) = (tape.constant_shared(rows.clone()), tape.constant_shared(cols.clone()));
                resize(tape, x, r, c)
            }
            Self::PRelu(slope) => {
                // max(x, 0) − slope · max(−x, 0).
                let a = bind.param(tape, "weight", slope);
                let pos = tape.relu(x)?;
                let neg_x = tape.neg(x)?;
                let neg = tape.relu(neg_x)?;
                let scaled = tape.mul(neg, a)?;
                tape.sub(pos, scaled)
            }
        }
    }

    /// The output shape for the given input shapes (batch included), or why they do not fit.
    pub fn output_shape(&self, inputs: &[Vec<usize>]) -> Result<Vec<usize>, TensorError> {
        self.check_arity(inputs.len())?;
        let x = &inputs[0];
        let shape_err = |op: &'static str, msg: &str| TensorError::Shape { op, msg: msg.into(), shape: x.clone() };
        match self {
            Self::Dropout(rate) if !(0.0..1.0).contains(rate) => {
                Err(shape_err("dropout", &format!("the rate must be in [0, 1), got {rate}")))
            }
            Self::Input | Self::Dropout(_) | Self::Identity | Self::Activation(_) | Self::BatchNorm { .. } => {
                if let Self::BatchNorm { gamma, beta, mean, var, .. } = self {
                    if [beta, mean, var].iter().any(|t| t.shape() != gamma.shape()) || gamma.ndim() != 1 {
                        return Err(shape_err("batch_norm", "scale, shift, mean and variance must be [C] each"));
                    }
                    if x.get(1) != Some(&gamma.len()) {
                        return Err(shape_err("batch_norm", &format!("expects {} channels", gamma.len())));
                    }
                }
                Ok(x.clone())
            }
            Self::Conv2d(c, _) | Self::DepthwiseConv2d(c, _) => c.output_shape(x),
            Self::SeparableConv2d { depthwise, pointwise, .. } => pointwise.output_shape(&depthwise.output_shape(x)?),
            Self::Dense { weight, bias, .. } => shapes::linear(x, weight.shape(), bias.as_ref().map(|b| b.shape())),
            Self::MaxPool(p) | Self::AvgPool(p) => {
                let params = p.params(x);
                let overhangs = params.padding != p.params_floor(x).padding;
                if matches!(self, Self::AvgPool(_)) && p.count_include_pad && overhangs {
                    // The kernels divide by the whole window; PyTorch leaves the ceil overhang out.
                    return Err(shape_err(
                        "avg_pool",
                        "ceil_mode with count_include_pad, where the last window overhangs, is not supported",
                    ));
                }
                let g = PoolGeometry::new("pool", x, params)?;
                Ok(vec![x[0], x[1], g.out_hw()[0], g.out_hw()[1]])
            }
            Self::GlobalAvgPool if x.len() == 4 => Ok(vec![x[0], x[1]]),
            Self::GlobalAvgPool => Err(shape_err("global_avg_pool", "expects NCHW")),
            Self::Flatten => shapes::flatten(x),
            Self::Pad(p, _) if x.len() == 4 => shapes::pad(x, &[(p.top, p.bottom), (p.left, p.right)]),
            Self::Pad(..) => Err(shape_err("pad", "expects NCHW")),
            Self::Binary(op) => {
                let y = inputs.get(1).ok_or_else(|| shape_err("binary", "needs two inputs"))?;
                let out = actmax_tensor::broadcast_shape(op.name_lower(), x, y)?;
                // Both operands are per image: broadcasting over the batch would only hold at batch 1.
                if y.len() != x.len() || y[0] != x[0] || out.len() != x.len() {
                    return Err(shape_err(
                        op.name_lower(),
                        &format!("operands {x:?} and {y:?} differ in rank or batch"),
                    ));
                }
                Ok(out)
            }
            Self::BinaryConst { op, constant, .. } => {
                let y = actmax_tensor::broadcast_shape(op.name_lower(), x, constant.shape())?;
                if y.len() != x.len() || y[0] != x[0] {
                    return Err(shape_err(op.name_lower(), "the constant would change the batch axis"));
                }
                Ok(y)
            }
            Self::Permute(perm) if perm.first() != Some(&0) => {
                Err(shape_err("permute", &format!("{perm:?} must keep the batch axis first")))
            }
            Self::Permute(perm) => shapes::permute(x, perm),
            Self::Add => match inputs.iter().find(|s| *s != x) {
                Some(other) => Err(TensorError::Broadcast { op: "add", lhs: x.clone(), rhs: other.clone() }),
                None => Ok(x.clone()),
            },
            Self::Concat(axis) => shapes::concat(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>(), *axis),
            Self::Reshape(_) if x.is_empty() => Err(shape_err("reshape", "needs a batch axis")),
            Self::Reshape(shape) => {
                // Per image: the batch axis stays.
                shapes::reshape(x, &std::iter::once(x[0]).chain(shape.iter().copied()).collect::<Vec<_>>())
            }
            Self::Unary(_) => Ok(x.clone()),
            Self::Reduce { axes, keepdims, .. } => {
                // Per image, and in order (the kernels reduce the axes as listed).
                if axes.is_empty() || axes.windows(2).any(|w| w[0] >= w[1]) || axes[0] == 0 {
                    return Err(shape_err(
                        "reduce",
                        &format!("axes {axes:?}: ascending, distinct, not the batch axis"),
                    ));
                }
                shapes::reduce("reduce", x, axes, *keepdims)
            }
            Self::Slice { axis, start, end } => {
                if *axis == 0 || start >= end || *axis >= x.len() {
                    return Err(shape_err(
                        "slice",
                        &format!("{start}..{end} along axis {axis} of a rank-{} tensor", x.len()),
                    ));
                }
                let mut ranges: Vec<(usize, usize)> = x[..*axis].iter().map(|&d| (0, d)).collect();
                ranges.push((*start, *end));
                shapes::slice(x, &ranges)
            }
            Self::LayerNorm { axis, gamma, beta, eps } => {
                let normalized = x.get(*axis..).unwrap_or_default();
                if *axis == 0 || normalized.is_empty() || eps.is_nan() || *eps < 0.0 {
                    return Err(shape_err("layer_norm", &format!("axis {axis}, eps {eps}")));
                }
                if gamma.shape() != normalized || beta.as_ref().is_some_and(|b| b.shape() != normalized) {
                    return Err(shape_err("layer_norm", &format!("scale and shift must be {normalized:?}")));
                }
                Ok(x.clone())
            }
            Self::Resize { rows, cols } => {
                if x.len() != 4
                    || rows.ndim() != 2
                    || cols.ndim() != 2
                    || [rows.shape()[1], cols.shape()[1]] != [x[2], x[3]]
                {
                    return Err(shape_err(
                        "resize",
                        &format!("matrices {:?} and {:?} for an NCHW input", rows.shape(), cols.shape()),
                    ));
                }
                Ok(vec![x[0], x[1], rows.shape()[0], cols.shape()[0]])
            }
            Self::PRelu(slope) => {
                let y = actmax_tensor::broadcast_shape("prelu", x, slope.shape())?;
                if y != *x {
                    return Err(shape_err("prelu", &format!("the slope {:?} does not broadcast to it", slope.shape())));
                }
                Ok(y)
            }
        }
    }
}

/// `x · Wᵀ + b` over the last axis of a rank ≥ 2 value: rank 2 directly, higher ranks as
/// `[rows, in]` (ONNX MatMul of an NHWC tensor, as ConvNeXt's MLPs export).
fn dense_last_axis(tape: &mut Tape, x: Var, w: Var, b: Option<Var>) -> Result<Var, TensorError> {
    let shape = tape.shape(x)?.to_vec();
    if shape.len() == 2 {
        return tape.linear(x, w, b);
    }
    let inp = *shape.last().unwrap_or(&0);
    let rows = shape.iter().product::<usize>() / inp.max(1);
    let flat = tape.reshape(x, &[rows, inp])?;
    let y = tape.linear(flat, w, b)?;
    let mut out = shape;
    *out.last_mut().expect("rank > 2") = tape.shape(y)?[1];
    tape.reshape(y, &out)
}

/// `rows · X · colsᵀ` for every `[H, W]` plane of NCHW `x`: columns first on
/// `[N·C·H, W]`, then rows on the transposed `[N·C·W', H]`.
fn resize(tape: &mut Tape, x: Var, rows: Var, cols: Var) -> Result<Var, TensorError> {
    let s = tape.shape(x)?.to_vec();
    let (ho, wo) = (tape.shape(rows)?[0], tape.shape(cols)?[0]);
    let flat = tape.reshape(x, &[s[0] * s[1] * s[2], s[3]])?;
    let wide = tape.matmul(flat, cols, true)?;
    let planes = tape.reshape(wide, &[s[0], s[1], s[2], wo])?;
    let t = tape.permute(planes, &[0, 1, 3, 2])?;
    let t = tape.reshape(t, &[s[0] * s[1] * wo, s[2]])?;
    let tall = tape.matmul(t, rows, true)?;
    let t = tape.reshape(tall, &[s[0], s[1], wo, ho])?;
    tape.permute(t, &[0, 1, 3, 2])
}

/// `(x − mean) / √(var + eps) · γ + β`, the statistics over the axes from `axis` on.
fn layer_norm(tape: &mut Tape, x: Var, axis: usize, g: Var, b: Option<Var>, eps: f32) -> Result<Var, TensorError> {
    let axes: Vec<usize> = (axis..tape.shape(x)?.len()).collect();
    let mean = tape.mean(x, &axes, true)?;
    let centred = tape.sub(x, mean)?;
    let sq = tape.mul(centred, centred)?;
    let var = tape.mean(sq, &axes, true)?;
    let var_eps = tape.add_scalar(var, eps)?;
    let std = tape.sqrt(var_eps)?;
    let normed = tape.div(centred, std)?;
    let scaled = tape.mul(normed, g)?;
    match b {
        Some(b) => tape.add(scaled, b),
        None => Ok(scaled),
    }
}
