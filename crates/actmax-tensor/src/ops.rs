//! Forward ops: each checks its operands, computes its value and records what its
//! backward (in `backward.rs`) needs.

use ndarray::{concatenate, ArrayD, Axis, IxDyn, Slice, Zip};
use rayon::prelude::*;

use crate::backprop_modes::PassBand;
use crate::backprop_modes::ReluKind;
use crate::conv::fused::{self, FusedConv};
use crate::conv::{conv2d_forward_prepacked, ConvPlan, PackDirection};
use crate::elementwise::{activation_bits, map1, map2, map2_runs, map_channels};
use crate::error::{param_err, shape_err, Result, TensorError};
use crate::geometry::{checked_elems, Conv2dParams, ConvGeometry, Pool2dParams};
use crate::op::{Op, PadMode, Unary, Var};
use crate::pool::{avg_pool2d_forward, max_pool2d_forward, PoolGeometry};
use crate::shapes::{self, check_axis};
use crate::tape::Tape;
use crate::tensor::Tensor;

pub use crate::shapes::broadcast as broadcast_shape;

/// Sums a broadcast gradient back to the operand's shape (the adjoint of broadcasting).
pub(crate) fn sum_to_shape(g: Tensor, shape: &[usize]) -> Tensor {
    if g.shape() == shape {
        return g;
    }
    let mut g = g;
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[i] != 1 {
            g = g.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    g
}

/// Numerically stable softmax along `axis`.
pub(crate) fn softmax_along(x: &Tensor, axis: usize) -> Tensor {
    let mut y = x.clone();
    for mut lane in y.lanes_mut(Axis(axis)) {
        let m = lane.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        lane.mapv_inplace(|v| (v - m).exp());
        let s = lane.sum();
        lane.mapv_inplace(|v| v / s);
    }
    y
}

impl Tape {
    fn binary(
        &mut self,
        op: &'static str,
        a: Var,
        b: Var,
        f: impl Fn(f32, f32) -> f32 + Sync,
        mk: fn(Var, Var) -> Op,
    ) -> Result<Var> {
        let (av, bv) = (self.value(a)?, self.value(b)?);
        let shape = broadcast_shape(op, av.shape(), bv.shape())?;
        // One side broadcast to the other's shape: by runs, in vectors (`map2_runs`); both
        // broadcast (or empty): ndarray's.
        let runs = || {
            if av.shape() == shape.as_slice() {
                map2_runs(&self.scratch, av, bv, &f)
            } else if bv.shape() == shape.as_slice() {
                map2_runs(&self.scratch, bv, av, |y, x| f(x, y))
            } else {
                None
            }
        };
        let out = if av.shape() == bv.shape() {
            map2(&self.scratch, av, bv, &f)
        } else if let Some(out) = runs() {
            out
        } else {
            let (av, bv) =
                (av.broadcast(IxDyn(&shape)).expect("checked"), bv.broadcast(IxDyn(&shape)).expect("checked"));
            Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y))
        };
        Ok(self.push(out, mk(a, b), &[a, b]))
    }

    /// `a + b` with numpy broadcasting.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary("add", a, b, |x, y| x + y, Op::Add)
    }
    /// `a − b` with numpy broadcasting.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary("sub", a, b, |x, y| x - y, Op::Sub)
    }
    /// `a · b` element-wise, with numpy broadcasting.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary("mul", a, b, |x, y| x * y, Op::Mul)
    }
    /// `a / b` element-wise, with numpy broadcasting.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary("div", a, b, |x, y| x / y, Op::Div)
    }

    /// `x + c`.
    pub fn add_scalar(&mut self, x: Var, c: f32) -> Result<Var> {
        let y = map1(&self.scratch, self.value(x)?, |v| v + c);
        Ok(self.push(y, Op::AddScalar(x), &[x]))
    }
    /// `x · c`.
    pub fn mul_scalar(&mut self, x: Var, c: f32) -> Result<Var> {
        let y = map1(&self.scratch, self.value(x)?, |v| v * c);
        Ok(self.push(y, Op::MulScalar(x, c), &[x]))
    }
    /// `(x − shift[c]) · scale[c]` over the channels (axis 1) of `x`: a model's input
    /// normalization, `(image − mean) / std`, in one pass instead of a subtraction and a
    /// multiplication, with their bits (the difference is rounded before the product,
    /// never fused into one FMA). `shift` and `scale` hold one value per channel.
    pub fn channel_affine(&mut self, x: Var, shift: &[f32], scale: &[f32]) -> Result<Var> {
        let s = self.shape(x)?;
        if s.len() < 2 || shift.len() != s[1] || scale.len() != s[1] {
            return Err(shape_err(
                "channel_affine",
                format!("needs a shift and a scale per channel (axis 1), got {} and {}", shift.len(), scale.len()),
                s,
            ));
        }
        let y = map_channels(&self.scratch, self.val(x), |ch, v| (v - shift[ch]) * scale[ch]);
        Ok(self.push(y, Op::ChannelAffine { x, scale: scale.to_vec() }, &[x]))
    }

    /// `−x`.
    pub fn neg(&mut self, x: Var) -> Result<Var> {
        self.mul_scalar(x, -1.0)
    }

    fn unary(&mut self, x: Var, u: Unary) -> Result<Var> {
        let f: fn(f32, f32) -> f32 = match u {
            Unary::Abs => |v, _| v.abs(),
            Unary::Sqrt => |v, _| v.sqrt(),
            Unary::Exp => |v, _| v.exp(),
            Unary::Log => |v, _| v.ln(),
            Unary::Sigmoid => |v, _| 1.0 / (1.0 + (-v).exp()),
            Unary::Tanh => |v, _| v.tanh(),
            Unary::Powf(_) => |v, p| v.powf(p),
            Unary::Sin => |v, _| v.sin(),
            Unary::Cos => |v, _| v.cos(),
            Unary::Erf => |v, _| libm::erff(v),
        };
        let p = if let Unary::Powf(p) = u { p } else { 0.0 };
        let y = map1(&self.scratch, self.value(x)?, |v| f(v, p));
        Ok(self.push(y, Op::Unary(x, u), &[x]))
    }
    /// `sin x`.
    pub fn sin(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Sin)
    }
    /// `cos x`.
    pub fn cos(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Cos)
    }
    /// `|x|`.
    pub fn abs(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Abs)
    }
    /// `√x`.
    pub fn sqrt(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Sqrt)
    }
    /// `eˣ`.
    pub fn exp(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Exp)
    }
    /// `ln x`.
    pub fn log(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Log)
    }
    /// `1 / (1 + e⁻ˣ)`.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Sigmoid)
    }
    /// `tanh x`.
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Tanh)
    }
    /// `erf x` (the Gauss error function; GELU is `x · ½(1 + erf(x/√2))`).
    pub fn erf(&mut self, x: Var) -> Result<Var> {
        self.unary(x, Unary::Erf)
    }
    /// `xᵖ` element-wise.
    pub fn powf(&mut self, x: Var, p: f32) -> Result<Var> {
        self.unary(x, Unary::Powf(p))
    }

    /// Any ReLU-family activation; its backward follows the tape's backprop mode.
    pub fn relu_family(&mut self, x: Var, kind: ReluKind) -> Result<Var> {
        if let ReluKind::Clip { lo, hi } = kind {
            if lo.is_nan() || hi.is_nan() || lo > hi {
                return Err(param_err("clip", format!("needs lo <= hi, got lo = {lo}, hi = {hi}")));
            }
        }
        let xv = self.value(x)?;
        // One monomorphic loop per kind, so each vectorizes (a `match` per element would not).
        let y = match kind {
            ReluKind::Relu => map1(&self.scratch, xv, |v| v.max(0.0)),
            ReluKind::Relu6 => map1(&self.scratch, xv, |v| v.clamp(0.0, 6.0)),
            ReluKind::Clip { lo, hi } => map1(&self.scratch, xv, |v| v.max(lo).min(hi)),
            _ => map1(&self.scratch, xv, |v| kind.forward(v)),
        };
        Ok(self.push(y, Op::Relu(x, kind), &[x]))
    }
    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        self.relu_family(x, ReluKind::Relu)
    }
    /// `min(max(x, 0), 6)`.
    pub fn relu6(&mut self, x: Var) -> Result<Var> {
        self.relu_family(x, ReluKind::Relu6)
    }
    /// `min(max(x, lo), hi)`.
    pub fn clip(&mut self, x: Var, lo: f32, hi: f32) -> Result<Var> {
        self.relu_family(x, ReluKind::Clip { lo, hi })
    }
    /// Leaky ReLU with slope `alpha` below zero.
    pub fn leaky_relu(&mut self, x: Var, alpha: f32) -> Result<Var> {
        self.relu_family(x, ReluKind::LeakyRelu { alpha })
    }
    /// ELU with scale `alpha`.
    pub fn elu(&mut self, x: Var, alpha: f32) -> Result<Var> {
        self.relu_family(x, ReluKind::Elu { alpha })
    }

    /// Sum over `axes` (each once), optionally keeping them as size 1.
    pub fn sum(&mut self, x: Var, axes: &[usize], keepdims: bool) -> Result<Var> {
        self.reduce("sum", x, axes, keepdims, false)
    }
    /// Mean over `axes`.
    pub fn mean(&mut self, x: Var, axes: &[usize], keepdims: bool) -> Result<Var> {
        self.reduce("mean", x, axes, keepdims, true)
    }
    /// Sum of every element, as a 1-element tensor of shape `[]`.
    pub fn sum_all(&mut self, x: Var) -> Result<Var> {
        let axes: Vec<usize> = (0..self.shape(x)?.len()).collect();
        self.sum(x, &axes, false)
    }
    /// Mean of every element, shape `[]`.
    pub fn mean_all(&mut self, x: Var) -> Result<Var> {
        let axes: Vec<usize> = (0..self.shape(x)?.len()).collect();
        self.mean(x, &axes, false)
    }

    fn reduce(&mut self, op: &'static str, x: Var, axes: &[usize], keepdims: bool, mean: bool) -> Result<Var> {
        let xv = self.value(x)?;
        let shape = xv.shape().to_vec();
        shapes::reduce(op, &shape, axes, keepdims)?;
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        let count: usize = sorted.iter().map(|&a| shape[a]).product();
        if mean && count == 0 {
            return Err(shape_err(op, "cannot average over an empty axis", &shape));
        }
        let scale = if mean { 1.0 / count as f32 } else { 1.0 };
        let trailing = sorted.iter().rev().zip((0..shape.len()).rev()).all(|(&a, d)| a == d);
        let mut y = match xv.as_slice() {
            // A global pooling's case: contiguous blocks, summed in one pass.
            Some(flat) if trailing && !sorted.is_empty() && !flat.is_empty() => Tensor::from_shape_vec(
                IxDyn(&shape[..shape.len() - sorted.len()]),
                sum_trailing(flat, &shape, sorted.len()),
            )
            .expect("the leading axes' size"),
            _ => {
                // The first reduction reads the value in place (no copy of a large tensor).
                let mut axes_rev = sorted.iter().rev();
                let mut y = match axes_rev.next() {
                    Some(&a) => xv.sum_axis(Axis(a)),
                    None => xv.clone(),
                };
                for &a in axes_rev {
                    y = y.sum_axis(Axis(a));
                }
                y
            }
        };
        let mut kept = shape.clone();
        for &a in &sorted {
            kept[a] = 1;
        }
        if mean {
            y.mapv_inplace(|v| v * scale);
        }
        let y = if keepdims { y.into_shape_with_order(IxDyn(&kept)).expect("same size") } else { y };
        Ok(self.push(y, Op::Sum { x, kept, scale }, &[x]))
    }

    /// Softmax along `axis`.
    pub fn softmax(&mut self, x: Var, axis: usize) -> Result<Var> {
        check_axis("softmax", axis, self.shape(x)?)?;
        let y = softmax_along(self.val(x), axis);
        Ok(self.push(y, Op::Softmax { x, axis }, &[x]))
    }

    /// log-softmax along `axis` (stable).
    pub fn log_softmax(&mut self, x: Var, axis: usize) -> Result<Var> {
        check_axis("log_softmax", axis, self.shape(x)?)?;
        let mut y = self.val(x).clone();
        for mut lane in y.lanes_mut(Axis(axis)) {
            let m = lane.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = m + lane.iter().map(|&v| (v - m).exp()).sum::<f32>().ln();
            lane.mapv_inplace(|v| v - lse);
        }
        Ok(self.push(y, Op::LogSoftmax { x, axis }, &[x]))
    }

    /// Mean cross-entropy of `[B, C]` logits against one class index per row.
    pub fn cross_entropy(&mut self, logits: Var, targets: &[usize]) -> Result<Var> {
        let s = self.shape(logits)?;
        if s.len() != 2 || s[0] != targets.len() || s[0] == 0 {
            return Err(shape_err(
                "cross_entropy",
                format!("expects [B, C] logits with B = {} targets", targets.len()),
                s,
            ));
        }
        if let Some(&t) = targets.iter().find(|&&t| t >= s[1]) {
            return Err(param_err("cross_entropy", format!("target class {t} is out of range 0..{}", s[1])));
        }
        let probs = softmax_along(self.val(logits), 1);
        let loss: f32 =
            targets.iter().enumerate().map(|(b, &t)| -probs[[b, t]].max(f32::MIN_POSITIVE).ln()).sum::<f32>()
                / targets.len() as f32;
        let y = ArrayD::from_elem(IxDyn(&[]), loss);
        Ok(self.push(y, Op::CrossEntropy { logits, targets: targets.to_vec(), probs }, &[logits]))
    }

    /// `a · b` (or `a · bᵀ` with `trans_b`) of 2-D operands, through sgemm.
    pub fn matmul(&mut self, a: Var, b: Var, trans_b: bool) -> Result<Var> {
        let (sa, sb) = (self.shape(a)?, self.shape(b)?);
        let (bk, bn) = if sb.len() == 2 {
            if trans_b {
                (sb[1], sb[0])
            } else {
                (sb[0], sb[1])
            }
        } else {
            (0, 0)
        };
        if sa.len() != 2 || sb.len() != 2 || sa[1] != bk {
            return Err(TensorError::Shape {
                op: "matmul",
                msg: format!("inner dimensions differ: lhs {sa:?} · rhs {sb:?}{}", if trans_b { "ᵀ" } else { "" }),
                shape: sb.to_vec(),
            });
        }
        let (m, k, n) = (sa[0], sa[1], bn);
        let mut y = vec![0.0; checked_elems("matmul", &[m, n])?];
        let (av, bv) = (self.val(a), self.val(b));
        if trans_b && m <= crate::gemm::skinny::SKINNY_ROWS {
            let (xs, ws) = (av.as_slice().expect("standard layout"), bv.as_slice().expect("standard layout"));
            crate::gemm::skinny::matmul_nt(xs, ws, &mut y, m, k, n);
            let y = ArrayD::from_shape_vec(IxDyn(&[m, n]), y).expect("m·n elements");
            return Ok(self.push(y, Op::MatMul { a, b, trans_b }, &[a, b]));
        }
        let am = crate::gemm::Mat::row_major(av.as_slice().expect("standard layout"), m, k);
        let bm = crate::gemm::Mat::row_major(bv.as_slice().expect("standard layout"), sb[0], sb[1]);
        let bm = if trans_b { bm.t() } else { bm };
        // Safety: the views cover exactly the checked shapes.
        unsafe { crate::gemm::sgemm_par(m, k, n, 1.0, am, bm, 0.0, y.as_mut_ptr(), n) };
        let y = ArrayD::from_shape_vec(IxDyn(&[m, n]), y).expect("m·n elements");
        Ok(self.push(y, Op::MatMul { a, b, trans_b }, &[a, b]))
    }

    /// A dense layer with PyTorch's weight layout: `x · wᵀ + b` for `x: [B, in]`,
    /// `w: [out, in]`, `b: [out]`.
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let bias = b.map(|b| self.shape(b)).transpose()?;
        shapes::linear(self.shape(x)?, self.shape(w)?, bias)?;
        let y = self.matmul(x, w, true)?;
        match b {
            Some(b) => self.add(y, b),
            None => Ok(y),
        }
    }

    /// 2-D convolution of an NCHW input with OIHW weights and an optional bias `[c_out]`.
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams) -> Result<Var> {
        self.conv2d_op(x, w, b, p, None)
    }

    /// [`Tape::conv2d`] followed by a ReLU or ReLU6, computed in one pass (the kernel's
    /// store clamps). The same values and gradients as the two ops, in every backprop mode
    /// (each decides from the output alone); under [`crate::BackpropMode::Custom`], whose
    /// hook may read the pre-activation, it records the two ops.
    pub fn conv2d_activated(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams, kind: ReluKind) -> Result<Var> {
        if !in_store(Some(kind)) {
            return Err(param_err("conv2d_activated", format!("fuses ReLU and ReLU6 only, not {kind:?}")));
        }
        if matches!(self.mode, crate::BackpropMode::Custom(_)) {
            let y = self.conv2d(x, w, b, p)?;
            return self.relu_family(y, kind);
        }
        self.conv2d_op(x, w, b, p, Some(kind))
    }

    /// A conv and the conv reading its output, each followed by its activation (ReLU or
    /// ReLU6, or none): the inverted-residual pair of a pointwise expand conv and a
    /// depthwise conv. Where the pair fuses ([`crate::conv::fused`]) it runs a block of
    /// channels at a time. With no operand requiring a gradient the result is a constant
    /// and the first conv's output is never kept; with only `x` requiring one (a
    /// visualization) the two convs are recorded as [`Tape::conv2d_activated`] records
    /// them, the first one's activation with its pass bits ([`crate::PassBand`]), which
    /// the backward reads instead of its output. Otherwise it records the two convs
    /// (giving the first one's output back to the pool at once when no gradient runs).
    /// Same values either way.
    pub fn conv2d_pair(&mut self, x: Var, first: ConvStage, second: ConvStage) -> Result<Var> {
        let weights = [Some(first.w), first.b, Some(second.w), second.b];
        let weights_grad = weights.into_iter().flatten().any(|v| self.requires_grad(v));
        let no_grad = !weights_grad && !self.requires_grad(x);
        if !weights_grad {
            match self.pair_plan(x, &first, &second)? {
                Some(plan) if !no_grad && plan.keeps => return self.fused_pair_keeping(x, (&first, &second), plan),
                Some(plan) if no_grad => {
                    let y = self.fused_pair(x, (&first, &second), &plan, None)?;
                    let y = ArrayD::from_shape_vec(IxDyn(&plan.g2.out_shape()), y).expect("sized by geometry");
                    return Ok(self.constant(y));
                }
                _ => {}
            }
        }
        let mid = self.conv2d_stage(x, &first)?;
        let y = self.conv2d_stage(mid, &second)?;
        // Nobody but the second conv reads the first one's output: unless a gradient
        // will, its buffer can serve the next op.
        self.release_unneeded(mid)?;
        Ok(y)
    }

    /// An inverted-residual block's three convs — a pointwise expand conv, the depthwise
    /// conv reading it, the pointwise project conv reading that — each followed by its
    /// activation (ReLU, ReLU6 or none), and, given a `residual` of the output's shape
    /// (the block's input), the sum of the two. With no operand requiring a gradient and
    /// shapes that fuse ([`fused::fuses_three`]: AVX-512, 7×7 and 14×14 images) the three
    /// run pixel-major between them, the residual is added in the last store, and only
    /// the result is made; otherwise [`Tape::conv2d_pair`], the third conv, then
    /// [`Tape::add`]. Same values either way.
    pub fn conv2d_triple(
        &mut self,
        x: Var,
        first: ConvStage,
        second: ConvStage,
        third: ConvStage,
        residual: Option<Var>,
    ) -> Result<Var> {
        let operands = [Some(x), Some(first.w), first.b, Some(second.w), second.b, Some(third.w), third.b, residual];
        let no_grad = !operands.into_iter().flatten().any(|v| self.requires_grad(v));
        if no_grad {
            if let Some(y) = self.fused_three(x, (&first, &second, &third), residual)? {
                return Ok(self.constant(y));
            }
        }
        let mid = self.conv2d_pair(x, first, second)?;
        let y = self.conv2d_stage(mid, &third)?;
        self.release_unneeded(mid)?;
        let Some(r) = residual else { return Ok(y) };
        let sum = self.add(y, r)?;
        self.release_unneeded(y)?;
        Ok(sum)
    }

    /// The three convs' output (plus the residual) where they fuse pixel-major, else
    /// `None`.
    fn fused_three(
        &self,
        x: Var,
        (first, second, third): (&ConvStage, &ConvStage, &ConvStage),
        residual: Option<Var>,
    ) -> Result<Option<Tensor>> {
        let Some(plan) = self.pair_plan(x, first, second)?.filter(|p| !p.keeps && in_store(third.act)) else {
            return Ok(None);
        };
        let g3 = ConvGeometry::new("conv2d_triple", &plan.g2.out_shape(), self.shape(third.w)?, third.p)?;
        self.check_conv_bias(third.b, &g3)?;
        let pack3 = self.packs.for_weight(self, third.w, &g3, PackDirection::Forward)?;
        let res = residual.map(|r| self.val(r));
        let fits = res.is_none_or(|r| r.shape() == g3.out_shape().as_slice());
        if !fits || !fused::fuses_three(&plan.g1, &plan.pack, &plan.g2, &g3, &pack3) {
            return Ok(None);
        }
        let res = res.map(|r| r.as_slice().expect("standard"));
        let (xs, dw_w) = (self.val(x).as_slice().expect("standard"), self.val(second.w).as_slice().expect("standard"));
        let mut y = self.scratch.take(g3.out_elems());
        let (s1, s2, s3) =
            (self.fused_conv(&plan.g1, first), self.fused_conv(&plan.g2, second), self.fused_conv(&g3, third));
        let scratch = &self.scratch;
        fused::pointwise_depthwise_pointwise_forward(xs, &plan.pack, s1, dw_w, s2, &pack3, s3, res, &mut y, scratch)?;
        Ok(Some(ArrayD::from_shape_vec(IxDyn(&g3.out_shape()), y).expect("sized by geometry")))
    }

    fn conv2d_stage(&mut self, x: Var, s: &ConvStage) -> Result<Var> {
        match s.act {
            Some(kind) => self.conv2d_activated(x, s.w, s.b, s.p, kind),
            None => self.conv2d(x, s.w, s.b, s.p),
        }
    }

    /// The fused pair's geometries and the first conv's forward pack, where the shapes
    /// and activations fuse (row-kernel or pixel-major).
    fn pair_plan(&self, x: Var, first: &ConvStage, second: &ConvStage) -> Result<Option<PairPlan>> {
        if !in_store(first.act) || !in_store(second.act) {
            return Ok(None);
        }
        let g1 = ConvGeometry::new("conv2d_pair", self.shape(x)?, self.shape(first.w)?, first.p)?;
        let g2 = ConvGeometry::new("conv2d_pair", &g1.out_shape(), self.shape(second.w)?, second.p)?;
        for (s, g) in [(first, &g1), (second, &g2)] {
            self.check_conv_bias(s.b, g)?;
        }
        let pack = self.packs.for_weight(self, first.w, &g1, PackDirection::Forward)?;
        let keeps = fused::fuses(&g1, &pack, &g2);
        Ok((keeps || fused::fuses_pixel_major(&g1, &pack, &g2)).then_some(PairPlan { g1, g2, pack, keeps }))
    }

    /// The fused pair's output (of `plan.g2`'s output shape); with `keep`, the first
    /// conv's output and pass bits go there.
    fn fused_pair(
        &self,
        x: Var,
        (first, second): (&ConvStage, &ConvStage),
        plan: &PairPlan,
        keep: Option<fused::KeptMid>,
    ) -> Result<Vec<f32>> {
        let PairPlan { g1, g2, pack, .. } = plan;
        let (xs, dw_w) = (self.val(x).as_slice().expect("standard"), self.val(second.w).as_slice().expect("standard"));
        let (s1, s2) = (self.fused_conv(g1, first), self.fused_conv(g2, second));
        let mut y = self.scratch.take(g2.out_elems());
        match keep {
            None => fused::pointwise_depthwise_forward(xs, pack, s1, dw_w, s2, &mut y, &self.scratch)?,
            Some(k) => fused::pointwise_depthwise_forward_keeping(xs, pack, s1, dw_w, s2, k, &mut y, &self.scratch)?,
        }
        Ok(y)
    }

    /// A stage's bias and clamp as the fused kernels take them, for geometry `g`.
    fn fused_conv<'a>(&'a self, g: &'a ConvGeometry, s: &ConvStage) -> FusedConv<'a> {
        let bias = s.b.map(|b| self.val(b).as_slice().expect("standard"));
        FusedConv { g, bias, clamp: s.act.and_then(ReluKind::bounds) }
    }

    /// The fused pair for a gradient to `x` alone: both convs on the tape as
    /// [`Tape::conv2d_activated`] records them, the first with its pass bits where its
    /// planes are multiples of 16 pixels.
    fn fused_pair_keeping(&mut self, x: Var, (first, second): (&ConvStage, &ConvStage), plan: PairPlan) -> Result<Var> {
        let g1 = plan.g1;
        // The kernel fills the bits a block of planes at a time: planes of whole words.
        let bit_plan = self.bit_plan(first.act, g1.out_elems()).filter(|_| g1.out_len().is_multiple_of(16));
        let mut mid = self.scratch.take(g1.out_elems());
        let mut bits = bit_plan.map(|(_, words)| self.take_bits(words));
        let keep = fused::KeptMid { mid: &mut mid, bits: bits.as_deref_mut().zip(bit_plan.map(|(band, _)| band)) };
        let y = self.fused_pair(x, (first, second), &plan, Some(keep))?;
        let y_bits = self.activation_bits_of(&y, second.act);
        let m = self.push_conv(mid, x, first, g1, bits);
        let y = self.push_conv(y, m, second, plan.g2, y_bits);
        // Only the depthwise conv read the first conv's output.
        self.release_unneeded(m)?;
        Ok(y)
    }

    /// The band and the words of the pass bits a conv's fused activation keeps for `len`
    /// outputs, where this tape's backward reads them instead of the output (which can then
    /// be given back): as many planes as [`crate::BackpropMode::bit_planes`] says, 16 outputs a
    /// word.
    fn bit_plan(&self, act: Option<ReluKind>, len: usize) -> Option<(PassBand, usize)> {
        let kind = act?;
        let planes = self.mode.bit_planes(kind)?;
        Some((kind.pass_band()?, planes * len / 16)).filter(|_| len.is_multiple_of(16))
    }

    /// The pass bits of a conv's output `y` where its backward will read them
    /// ([`Tape::bit_plan`]), computed now while `y` is in cache.
    fn activation_bits_of(&mut self, y: &[f32], act: Option<ReluKind>) -> Option<Vec<u16>> {
        let (band, words) = self.bit_plan(act, y.len())?;
        let mut bits = self.take_bits(words);
        activation_bits(y, band, &mut bits);
        Some(bits)
    }

    fn conv2d_op(&mut self, x: Var, w: Var, b: Option<Var>, p: Conv2dParams, act: Option<ReluKind>) -> Result<Var> {
        let g = ConvGeometry::new("conv2d", self.shape(x)?, self.shape(w)?, p)?;
        self.check_conv_bias(b, &g)?;
        let plan = ConvPlan::choose(&g);
        // Constant weights are packed once per tape; trained ones change every step.
        let pack = self.packs.for_weight(self, w, &g, PackDirection::Forward)?;
        // Every element is written by the kernel: a recycled buffer needs no zeroing.
        let mut y = self.scratch.take(g.n * g.c_out * g.out_len());
        let (xs, ws) = (self.val(x).as_slice().expect("standard"), self.val(w).as_slice().expect("standard"));
        let bs = b.map(|b| self.val(b).as_slice().expect("standard"));
        let clamp = act.and_then(ReluKind::bounds);
        conv2d_forward_prepacked(plan, xs, ws, &pack, bs, clamp, &g, &mut y, &self.scratch)?;
        // Pass bits where a backward will mask a gradient to `x` alone with them.
        let weights_grad = self.requires_grad(w) || b.is_some_and(|b| self.requires_grad(b));
        let bits = if self.requires_grad(x) && !weights_grad { self.activation_bits_of(&y, act) } else { None };
        Ok(self.push_conv(y, x, &ConvStage { w, b, p, act }, g, bits))
    }

    /// A conv's bias, if any, is one value per output channel.
    fn check_conv_bias(&self, b: Option<Var>, g: &ConvGeometry) -> Result<()> {
        match b.map(|b| self.shape(b)).transpose()? {
            Some(sb) if sb != [g.c_out] => Err(shape_err("conv2d", format!("bias must have shape [{}]", g.c_out), sb)),
            _ => Ok(()),
        }
    }

    /// A conv's output `y` (of `g`'s output shape) on the tape, reading `x` and `s`'s
    /// weight and bias, with its activation's pass bits if kept.
    fn push_conv(&mut self, y: Vec<f32>, x: Var, s: &ConvStage, g: ConvGeometry, bits: Option<Vec<u16>>) -> Var {
        let value = ArrayD::from_shape_vec(IxDyn(&g.out_shape()), y).expect("sized by geometry");
        let mut inputs = vec![x, s.w];
        inputs.extend(s.b);
        let v = self.push(value, Op::Conv2d { x, w: s.w, b: s.b, g, act: s.act }, &inputs);
        if let Some(bits) = bits {
            self.set_pass_bits(v, bits);
        }
        v
    }

    fn pool_geometry(&self, op: &'static str, x: Var, p: Pool2dParams) -> Result<PoolGeometry> {
        PoolGeometry::new(op, self.shape(x)?, p)
    }

    /// Max pooling of an NCHW input (padding never wins).
    pub fn max_pool2d(&mut self, x: Var, p: Pool2dParams) -> Result<Var> {
        let g = self.pool_geometry("max_pool2d", x, p)?;
        let s = self.shape(x)?;
        let shape = [s[0], s[1], g.out_hw[0], g.out_hw[1]];
        let (y, arg) = max_pool2d_forward(self.val(x).as_slice().expect("standard"), &g)?;
        let y = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("sized");
        Ok(self.push(y, Op::MaxPool2d { x, g, arg }, &[x]))
    }

    /// Average pooling of an NCHW input.
    pub fn avg_pool2d(&mut self, x: Var, p: Pool2dParams) -> Result<Var> {
        let g = self.pool_geometry("avg_pool2d", x, p)?;
        let s = self.shape(x)?;
        let shape = [s[0], s[1], g.out_hw[0], g.out_hw[1]];
        let y = avg_pool2d_forward(self.val(x).as_slice().expect("standard"), &g)?;
        let y = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("sized");
        Ok(self.push(y, Op::AvgPool2d { x, g }, &[x]))
    }

    /// Mean over the spatial axes: `[N, C, H, W] → [N, C]` (Keras GlobalAveragePooling2D).
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x)?;
        if s.len() != 4 {
            return Err(shape_err("global_avg_pool", "expects a 4-D NCHW input", s));
        }
        self.mean(x, &[2, 3], false)
    }

    /// Inference batch norm over axis 1: `(x − mean) / √(var + eps) · gamma + beta`.
    pub fn batch_norm(&mut self, x: Var, gamma: Var, beta: Var, mean: Var, var: Var, eps: f32) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        if s.len() < 2 {
            return Err(shape_err("batch_norm", "expects at least [N, C]", &s));
        }
        for v in [gamma, beta, mean, var] {
            let sv = self.shape(v)?;
            if sv != [s[1]] {
                return Err(shape_err(
                    "batch_norm",
                    format!("each parameter must have shape [{}] (the channels)", s[1]),
                    sv,
                ));
            }
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(param_err("batch_norm", format!("eps must be >= 0, got {eps}")));
        }
        let c = s[1];
        let scale: Vec<f32> = (0..c).map(|i| self.val(gamma)[i] / (self.val(var)[i] + eps).sqrt()).collect();
        let shift: Vec<f32> = (0..c).map(|i| self.val(beta)[i] - self.val(mean)[i] * scale[i]).collect();
        let y = map_channels(&self.scratch, self.val(x), |ch, v| v * scale[ch] + shift[ch]);
        Ok(self.push(y, Op::BatchNorm { x, gamma, beta, mean, var, eps }, &[x, gamma, beta, mean, var]))
    }

    /// Pads each axis by `(before, after)`; `pads` may be shorter than the rank, and then
    /// applies to the trailing axes.
    pub fn pad(&mut self, x: Var, pads: &[(usize, usize)], mode: PadMode) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        shapes::pad(&s, pads)?;
        let mut full = vec![(0, 0); s.len() - pads.len()];
        full.extend_from_slice(pads);
        if mode == PadMode::Reflect {
            if let Some(i) =
                (0..s.len()).find(|&i| (full[i].0 > 0 || full[i].1 > 0) && (full[i].0 >= s[i] || full[i].1 >= s[i]))
            {
                return Err(shape_err(
                    "pad",
                    format!("reflect padding {:?} on axis {i} must be smaller than its size {}", full[i], s[i]),
                    &s,
                ));
            }
        }
        let mut y = self.val(x).clone();
        for (axis, &(b, a)) in full.iter().enumerate() {
            if b > 0 || a > 0 {
                y = pad_axis(&y, axis, b, a, mode);
            }
        }
        Ok(self.push(y, Op::Pad { x, pads: full, mode }, &[x]))
    }

    /// Keeps `[start, end)` of each axis (a crop); `ranges` may cover only leading axes.
    pub fn slice(&mut self, x: Var, ranges: &[(usize, usize)]) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        shapes::slice(&s, ranges)?;
        let mut full: Vec<(usize, usize)> = s.iter().map(|&d| (0, d)).collect();
        full[..ranges.len()].copy_from_slice(ranges);
        let y =
            self.val(x).slice_each_axis(|ax| Slice::from(full[ax.axis.index()].0..full[ax.axis.index()].1)).to_owned();
        Ok(self.push(y, Op::Slice { x, ranges: full }, &[x]))
    }

    /// Same elements, new shape (row-major order).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let xv = self.value(x)?;
        shapes::reshape(xv.shape(), shape)?;
        let y = xv.clone().into_shape_with_order(IxDyn(shape)).expect("checked size");
        Ok(self.push(y, Op::Reshape(x), &[x]))
    }

    /// `[N, ...] → [N, prod(...)]`.
    pub fn flatten(&mut self, x: Var) -> Result<Var> {
        let shape = shapes::flatten(self.shape(x)?)?;
        self.reshape(x, &shape)
    }

    /// Joins tensors along `axis`; all other axes must agree.
    pub fn concat(&mut self, xs: &[Var], axis: usize) -> Result<Var> {
        let all = xs.iter().map(|&v| self.shape(v)).collect::<Result<Vec<_>>>()?;
        shapes::concat(&all, axis)?;
        let views: Vec<_> = xs.iter().map(|&v| self.val(v).view()).collect();
        let y = concatenate(Axis(axis), &views).expect("checked shapes");
        Ok(self.push(y, Op::Concat { xs: xs.to_vec(), axis }, xs))
    }

    /// Reorders axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&mut self, x: Var, perm: &[usize]) -> Result<Var> {
        shapes::permute(self.shape(x)?, perm)?;
        let y = self.val(x).clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned();
        Ok(self.push(y, Op::Permute { x, perm: perm.to_vec() }, &[x]))
    }

    /// Resamples each image of an NCHW batch through its affine map (bilinear), e.g. a
    /// random rotation and scale. `maps` holds one map per output image: as many as the
    /// batch, or `k` times as many for `k` views of each image (output `i` reads image
    /// `i mod N`, view-major).
    pub fn affine_warp(
        &mut self,
        x: Var,
        maps: &[crate::warp::Affine],
        out_hw: [usize; 2],
        border: crate::warp::WarpBorder,
    ) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        if s.len() != 4 || s.contains(&0) || maps.is_empty() || !maps.len().is_multiple_of(s[0]) || out_hw.contains(&0)
        {
            return Err(shape_err(
                "affine_warp",
                format!(
                    "expects a non-empty NCHW input, a multiple of its batch in maps ({} maps) and a non-empty output",
                    maps.len()
                ),
                &s,
            ));
        }
        if maps.iter().any(|m| m.row.iter().chain(&m.col).chain(&m.shift).any(|v| !v.is_finite())) {
            return Err(param_err("affine_warp", "maps must be finite"));
        }
        if s[2].checked_mul(s[3]).is_none_or(|px| px > u32::MAX as usize) {
            return Err(shape_err("affine_warp", "an image of over 2³² pixels", &s));
        }
        let shape = [maps.len(), s[1], out_hw[0], out_hw[1]];
        checked_elems("affine_warp", &shape)?;
        let taps = crate::warp::WarpTaps::new([s[2], s[3]], maps, out_hw, border);
        let y = crate::warp::warp_forward(self.val(x), &taps);
        let y = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("sized");
        Ok(self.push(y, Op::AffineWarp { x, taps: std::sync::Arc::new(taps) }, &[x]))
    }

    /// The 2-D FFT of a real tensor over its last two axes `[..., H, W]`, numpy's
    /// `rfft2(x, norm="ortho")`: `[..., H, W/2 + 1, 2]`, (re, im) on the last axis.
    pub fn rfft2(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        if s.len() < 2 || s[s.len() - 2..].contains(&0) {
            return Err(shape_err("rfft2", "expects at least two non-empty axes [..., H, W]", &s));
        }
        let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
        let mut shape = s.clone();
        *shape.last_mut().expect("rank >= 2") = crate::fft::half_width(w);
        shape.push(2);
        checked_elems("rfft2", &shape)?;
        let planes = s[..s.len() - 2].iter().product();
        let y = crate::fft::rfft2(self.val(x).as_slice().expect("standard layout"), planes, h, w);
        let y = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("sized");
        Ok(self.push(y, Op::Rfft2 { x, w }, &[x]))
    }

    /// The inverse of [`Tape::rfft2`]: a half spectrum `[..., H, W/2 + 1, 2]` to the real
    /// `[..., H, W]` (numpy's `irfft2(z, s=(H, W), norm="ortho")`); `w` picks between the
    /// two widths a half spectrum can stand for.
    pub fn irfft2(&mut self, z: Var, w: usize) -> Result<Var> {
        let s = self.shape(z)?.to_vec();
        let r = s.len();
        if r < 3 || s[r - 1] != 2 || s[r - 3] == 0 || w == 0 || s[r - 2] != crate::fft::half_width(w) {
            return Err(shape_err(
                "irfft2",
                format!("expects a half spectrum [..., H, {}, 2] for width {w}", crate::fft::half_width(w)),
                &s,
            ));
        }
        let h = s[r - 3];
        let mut shape = s[..r - 1].to_vec();
        shape[r - 2] = w;
        checked_elems("irfft2", &shape)?;
        let planes = s[..r - 3].iter().product();
        let y = crate::fft::irfft2(self.val(z).as_slice().expect("standard layout"), planes, h, w);
        let y = ArrayD::from_shape_vec(IxDyn(&shape), y).expect("sized");
        Ok(self.push(y, Op::Irfft2 { z, w }, &[z]))
    }

    /// keras-vis's total variation as one op: `Σ (Σ_{a∈axes} (x[i + e_a] − x[i])²)^(β/2)`
    /// over the `[:-1]` crop of each axis in `axes` (shape `[]`). The same value as the
    /// slices, differences and powers it replaces, without their intermediates on the
    /// tape; where a neighbourhood is flat and `β < 2` its slope is 0, not NaN.
    pub fn total_variation(&mut self, x: Var, axes: &[usize], beta: f32) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        if !(beta.is_finite() && beta > 0.0) {
            return Err(param_err("total_variation", format!("needs a finite beta > 0, got {beta}")));
        }
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.is_empty() || sorted.len() != axes.len() {
            return Err(param_err("total_variation", format!("needs distinct axes, at least one, got {axes:?}")));
        }
        for &a in &sorted {
            check_axis("total_variation", a, &s)?;
            if s[a] < 2 {
                return Err(shape_err("total_variation", format!("axis {a} needs a size of at least 2"), &s));
            }
        }
        let xs = self.val(x).as_slice().expect("standard layout");
        let v = crate::smoothness::total_variation(xs, &s, &sorted, beta) as f32;
        let y = ArrayD::from_elem(IxDyn(&[]), v);
        Ok(self.push(y, Op::TotalVariation { x, axes: sorted, beta }, &[x]))
    }

    /// The Lp norm `(Σ|x|^p)^(1/p)` of every element, as one op (shape `[]`); `p ≥ 1`
    /// and finite. Its gradient at the zero tensor is 0.
    pub fn lp_norm(&mut self, x: Var, p: f32) -> Result<Var> {
        if !(p.is_finite() && p >= 1.0) {
            return Err(param_err("lp_norm", format!("needs a finite p >= 1, got {p}")));
        }
        let sum = crate::smoothness::lp_sum(self.value(x)?.as_slice().expect("standard layout"), p);
        let y = ArrayD::from_elem(IxDyn(&[]), sum.powf(1.0 / p as f64) as f32);
        Ok(self.push(y, Op::LpNorm { x, p, sum }, &[x]))
    }

    /// Circular shift: element `i` of an axis moves to `i + shift` (mod size), per axis;
    /// `shifts` may cover only leading axes.
    pub fn roll(&mut self, x: Var, shifts: &[isize]) -> Result<Var> {
        let s = self.shape(x)?.to_vec();
        if shifts.len() > s.len() {
            return Err(shape_err("roll", format!("{} shifts for a rank-{} tensor", shifts.len(), s.len()), &s));
        }
        // Shifts reduced mod each axis size, so the backward's negation cannot overflow.
        let mut full: Vec<isize> =
            shifts.iter().zip(&s).map(|(&sh, &n)| if n == 0 { 0 } else { sh.rem_euclid(n as isize) }).collect();
        full.resize(s.len(), 0);
        let y = roll_tensor(self.val(x), &full);
        Ok(self.push(y, Op::Roll { x, shifts: full }, &[x]))
    }
}

/// Pads one axis.
pub(crate) fn pad_axis(x: &Tensor, axis: usize, before: usize, after: usize, mode: PadMode) -> Tensor {
    let n = x.shape()[axis];
    let mut shape = x.shape().to_vec();
    shape[axis] = n + before + after;
    let fill = if let PadMode::Constant(c) = mode { c } else { 0.0 };
    let mut y = ArrayD::from_elem(IxDyn(&shape), fill);
    Zip::from(y.lanes_mut(Axis(axis))).and(x.lanes(Axis(axis))).for_each(|mut out, inp| {
        for (i, o) in out.iter_mut().enumerate() {
            if let Some(src) = pad_source(i, before, n, mode) {
                *o = inp[src];
            }
        }
    });
    y
}

/// Which input index fills padded position `i` (None: the constant).
pub(crate) fn pad_source(i: usize, before: usize, n: usize, mode: PadMode) -> Option<usize> {
    let j = i as isize - before as isize;
    if j >= 0 && (j as usize) < n {
        return Some(j as usize);
    }
    match mode {
        PadMode::Constant(_) => None,
        PadMode::Reflect => {
            let last = n as isize - 1;
            Some(if j < 0 { -j } else { 2 * last - j } as usize)
        }
    }
}

pub(crate) fn roll_tensor(x: &Tensor, shifts: &[isize]) -> Tensor {
    let x = x.as_standard_layout();
    // One copy per rolled axis, between two buffers; the first reads `x` itself.
    let (mut rolled, mut spare): (Option<Vec<f32>>, Vec<f32>) = (None, Vec::new());
    for (axis, &s) in shifts.iter().enumerate() {
        let n = x.shape()[axis];
        if n == 0 || s.rem_euclid(n as isize) == 0 {
            continue;
        }
        // Row-major, the tensor is `outer` blocks of `n` runs of `inner` values along the
        // axis: rolling moves two contiguous pieces per block (no per-element indexing,
        // which on a strided lane cost a tenth of a jittered step).
        let s = s.rem_euclid(n as isize) as usize;
        let inner: usize = x.shape()[axis + 1..].iter().product();
        let src = rolled.as_deref().unwrap_or_else(|| x.as_slice().expect("standard layout"));
        spare.resize(src.len(), 0.0);
        for (o, i) in spare.chunks_exact_mut(n * inner).zip(src.chunks_exact(n * inner)) {
            o[s * inner..].copy_from_slice(&i[..(n - s) * inner]);
            o[..s * inner].copy_from_slice(&i[(n - s) * inner..]);
        }
        spare = rolled.replace(spare).unwrap_or_default();
    }
    match rolled {
        Some(v) => Tensor::from_shape_vec(x.raw_dim(), v).expect("x's size"),
        None => x.into_owned(),
    }
}

/// Sums of the last `k` axes (none of length 0) of a row-major `x` of `shape`, one per
/// leading index, added in the order ndarray's `sum_axis` adds them (innermost axis
/// first, each lane by [`fold8`]): the same bits as the general path, without its
/// per-lane iterator machinery (a global average pool of 1280 7×7 planes took 60 µs).
fn sum_trailing(x: &[f32], shape: &[usize], k: usize) -> Vec<f32> {
    let len = shape[shape.len() - 1];
    // A large input's innermost lanes over the pool (a global pool runs next to
    // parallel convs); each lane is summed alone, so the bits do not change.
    let mut sums: Vec<f32> = if x.len() >= 1 << 15 {
        x.par_chunks_exact(len).with_min_len((4096 / len).max(1)).map(fold8).collect()
    } else {
        x.chunks_exact(len).map(fold8).collect()
    };
    for &len in shape[shape.len() - k..shape.len() - 1].iter().rev() {
        sums = sums.chunks_exact(len).map(fold8).collect();
    }
    sums
}

/// A sum in eight interleaved partial sums, then the tail in order: ndarray's
/// `unrolled_fold`, which its `sum` runs on a contiguous lane.
fn fold8(xs: &[f32]) -> f32 {
    if xs.len() < 8 {
        // The eight partial sums stay +0 and add +0 to the start: a plain fold from +0
        // (a 7×7 plane's rows), without those eight dependent additions.
        return xs.iter().fold(0.0, |acc, &v| acc + v);
    }
    let mut p = [0.0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (p, &v) in p.iter_mut().zip(c) {
            *p += v;
        }
    }
    let mut acc = 0.0f32;
    for i in 0..4 {
        acc += p[i] + p[i + 4];
    }
    chunks.remainder().iter().fold(acc, |acc, &v| acc + v)
}

/// Whether a fused conv's activation runs in its kernel's store: ReLU, ReLU6 or none.
fn in_store(act: Option<ReluKind>) -> bool {
    act.is_none_or(|k| matches!(k, ReluKind::Relu | ReluKind::Relu6))
}

/// How [`Tape::conv2d_pair`] runs a pair that fuses: both geometries and the first
/// conv's forward pack.
struct PairPlan {
    g1: ConvGeometry,
    g2: ConvGeometry,
    pack: std::sync::Arc<crate::conv::ConvPack>,
    /// Whether the fused pair can keep the first conv's output for a gradient
    /// ([`fused::fuses`]); the pixel-major pair runs at inference only.
    keeps: bool,
}

/// One conv of [`Tape::conv2d_pair`]: weights, bias, parameters and the activation after it.
#[derive(Debug, Clone, Copy)]
pub struct ConvStage {
    /// Weights, OIHW.
    pub w: Var,
    /// Bias, one per output channel.
    pub b: Option<Var>,
    /// Stride, padding, dilation, groups.
    pub p: Conv2dParams,
    /// A ReLU or ReLU6 after it, or none.
    pub act: Option<ReluKind>,
}
