//! Reverse mode: one match over the ops. Each arm turns the output gradient `g` into the
//! gradients of the op's inputs, skipping any input that needs none.

use ndarray::{ArrayD, Axis, IxDyn, Slice, Zip};

use crate::backprop_modes::{BackpropMode, ReluKind};
use crate::conv::{
    conv2d_backward_bias, conv2d_backward_input_masked, conv2d_backward_input_prepacked, conv2d_backward_weight,
    ConvPlan, PackDirection,
};
use crate::elementwise::{map1, map2, map2_runs, map3, map_channels};
use crate::error::{param_err, Result};
use crate::op::{Node, Op, PadMode, Unary, Var};
use crate::ops::{pad_source, roll_tensor, sum_to_shape};
use crate::pool::{avg_pool2d_backward, max_pool2d_backward};
use crate::tape::Tape;
use crate::tensor::{recycle, Tensor};

fn slice(t: &Tensor) -> &[f32] {
    t.as_slice().expect("tape values are in standard layout")
}

/// The gradient of a sum into `out` (a buffer of `shape`'s size): `g`, in the sum's kept
/// shape, spread over `shape` and scaled. Where the summed axes are trailing (a loss over
/// whole images or channels) each value of `g` fills one contiguous run; otherwise the
/// broadcast goes through `Zip` — never ndarray's per-element index iterator, which cost a
/// tenth of a batch-8 step.
pub(crate) fn spread_sum_grad(mut out: Vec<f32>, g: &Tensor, shape: &[usize], scale: f32) -> Vec<f32> {
    let kept = g.shape();
    let lead = kept.iter().zip(shape).take_while(|(k, d)| k == d).count();
    match g.as_slice() {
        Some(gs) if kept[lead..].iter().all(|&k| k == 1) => {
            let run = shape[lead..].iter().product::<usize>().max(1);
            for (chunk, &v) in out.chunks_exact_mut(run).zip(gs) {
                chunk.fill(v * scale);
            }
        }
        _ => {
            let view = ndarray::ArrayViewMut::from_shape(IxDyn(shape), &mut out).expect("out has shape's size");
            Zip::from(view).and_broadcast(g).for_each(|o, &v| *o = v * scale);
        }
    }
    out
}

fn from_vec(shape: &[usize], v: Vec<f32>) -> Tensor {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("gradient has the operand's size")
}

impl Tape {
    pub(crate) fn backward_op(&self, node: &Node, g: Tensor, grads: &mut [Option<Tensor>]) -> Result<()> {
        // The output gradient goes back to the pool once this op is done with it (unless
        // an arm moves it on), so the next iteration's backward allocates nothing.
        let g = Pooled::new(g, &self.scratch);
        let y = &*node.value;
        let needs = |v: Var| self.nodes[v.index].requires_grad;
        match &node.op {
            Op::Leaf => {}
            Op::Add(a, b) => {
                if needs(*b) {
                    self.accumulate(grads, *b, sum_to_shape(g.clone(), self.dims(*b)));
                }
                self.accumulate(grads, *a, sum_to_shape(g.take(), self.dims(*a)));
            }
            Op::Sub(a, b) => {
                if needs(*b) {
                    self.accumulate(grads, *b, sum_to_shape(-&*g, self.dims(*b)));
                }
                self.accumulate(grads, *a, sum_to_shape(g.take(), self.dims(*a)));
            }
            Op::Mul(a, b) => {
                let (av, bv) = (self.val(*a), self.val(*b));
                let times = |o: &Tensor| {
                    if o.shape() == g.shape() {
                        map2(&self.scratch, &g, o, |g, o| g * o)
                    } else {
                        map2_runs(&self.scratch, &g, o, |g, o| g * o).unwrap_or_else(|| &*g * o)
                    }
                };
                if needs(*a) {
                    self.accumulate(grads, *a, sum_to_shape(times(bv), av.shape()));
                }
                if needs(*b) {
                    self.accumulate(grads, *b, sum_to_shape(times(av), bv.shape()));
                }
            }
            Op::Div(a, b) => {
                let (av, bv) = (self.val(*a), self.val(*b));
                if needs(*a) {
                    self.accumulate(grads, *a, sum_to_shape(&*g / bv, av.shape()));
                }
                if needs(*b) {
                    // d(a/b)/db = −a/b² = −y/b.
                    let gb = Zip::from(&*g)
                        .and(y)
                        .and(&bv.broadcast(y.raw_dim()).expect("forward broadcast"))
                        .map_collect(|&g, &y, &b| -g * y / b);
                    self.accumulate(grads, *b, sum_to_shape(gb, bv.shape()));
                }
            }
            Op::AddScalar(x) => self.accumulate(grads, *x, g.take()),
            Op::MulScalar(x, c) => self.accumulate(grads, *x, map1(&self.scratch, &g, |v| v * c)),
            Op::ChannelAffine { x, scale } => {
                self.accumulate(grads, *x, map_channels(&self.scratch, &g, |ch, v| v * scale[ch]))
            }
            Op::Unary(x, u) => {
                let xv = self.val(*x);
                let d: fn(f32, f32, f32) -> f32 = match u {
                    Unary::Abs => |x, _, _| {
                        if x > 0.0 {
                            1.0
                        } else if x < 0.0 {
                            -1.0
                        } else {
                            0.0
                        }
                    },
                    Unary::Sqrt => |_, y, _| 0.5 / y,
                    Unary::Exp => |_, y, _| y,
                    Unary::Log => |x, _, _| 1.0 / x,
                    Unary::Sigmoid => |_, y, _| y * (1.0 - y),
                    Unary::Tanh => |_, y, _| 1.0 - y * y,
                    Unary::Powf(_) => |x, _, p| p * x.powf(p - 1.0),
                    Unary::Sin => |x, _, _| x.cos(),
                    Unary::Cos => |x, _, _| -x.sin(),
                    Unary::Erf => |x, _, _| std::f32::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
                };
                let p = if let Unary::Powf(p) = u { *p } else { 0.0 };
                let gx = map3(&self.scratch, &g, xv, y, |g, x, y| g * d(x, y, p));
                self.accumulate(grads, *x, gx);
            }
            Op::Relu(x, kind) => {
                let xv = self.val(*x);
                let mut gx = g.take();
                if !self.mode.input_grad_in_place(*kind, &mut gx, xv) {
                    let general = self.mode.input_grad_pooled(&self.scratch, *kind, &gx, xv, y);
                    recycle(&self.scratch, std::mem::replace(&mut gx, general));
                }
                if gx.shape() != xv.shape() {
                    return Err(param_err(
                        "backprop hook",
                        format!("returned shape {:?}, expected the input's {:?}", gx.shape(), xv.shape()),
                    ));
                }
                self.accumulate(grads, *x, gx);
            }
            Op::Sum { x, kept, scale } => {
                let gk = g.take().into_shape_with_order(IxDyn(kept)).expect("kept shape has the output's size");
                let xs = self.dims(*x);
                let gx = spread_sum_grad(self.scratch.take(xs.iter().product()), &gk, xs, *scale);
                self.accumulate(grads, *x, from_vec(xs, gx));
            }
            Op::Softmax { x, axis } => {
                // dx = y · (g − Σ g·y)
                let mut gx = &*g * y;
                let s = gx.sum_axis(Axis(*axis)).insert_axis(Axis(*axis));
                Zip::from(&mut gx)
                    .and(y)
                    .and(&s.broadcast(y.raw_dim()).expect("kept axis"))
                    .for_each(|gx, &y, &s| *gx -= y * s);
                self.accumulate(grads, *x, gx);
            }
            Op::LogSoftmax { x, axis } => {
                // dx = g − softmax · Σ g
                let s = g.sum_axis(Axis(*axis)).insert_axis(Axis(*axis));
                let gx = Zip::from(&*g)
                    .and(y)
                    .and(&s.broadcast(y.raw_dim()).expect("kept axis"))
                    .map_collect(|&g, &y, &s| g - y.exp() * s);
                self.accumulate(grads, *x, gx);
            }
            Op::CrossEntropy { logits, targets, probs } => {
                let scale = g.iter().next().copied().unwrap_or(0.0) / targets.len() as f32;
                let mut gx = probs.clone();
                for (b, &t) in targets.iter().enumerate() {
                    gx[[b, t]] -= 1.0;
                }
                gx.mapv_inplace(|v| v * scale);
                self.accumulate(grads, *logits, gx);
            }
            Op::MatMul { a, b, trans_b } => {
                let g2 = g.view().into_dimensionality::<ndarray::Ix2>().expect("2-D output");
                let av = self.val(*a).view().into_dimensionality::<ndarray::Ix2>().expect("2-D");
                let bv = self.val(*b).view().into_dimensionality::<ndarray::Ix2>().expect("2-D");
                let bm = if *trans_b { bv.t() } else { bv };
                if needs(*a) {
                    let (m, n) = (g2.nrows(), g2.ncols());
                    let ga = if *trans_b && m <= crate::gemm::skinny::SKINNY_ROWS {
                        // A dense layer's input gradient for a few images: no packing.
                        let k = bv.ncols();
                        let mut ga = vec![0.0; m * k];
                        crate::gemm::skinny::matmul_nn(slice(&g), slice(self.val(*b)), &mut ga, m, n, k);
                        from_vec(&[m, k], ga)
                    } else {
                        g2.dot(&bm.t()).into_dyn()
                    };
                    self.accumulate(grads, *a, ga);
                }
                if needs(*b) {
                    let gb = av.t().dot(&g2);
                    let gb = if *trans_b { gb.reversed_axes().as_standard_layout().into_owned() } else { gb };
                    self.accumulate(grads, *b, gb.into_dyn());
                }
            }
            Op::Conv2d { x, w, b, g: geo, act } => {
                if let Some(bounds) = self.masks_in_kernel(node) {
                    let (plan, ws) = (ConvPlan::choose(geo), slice(self.val(*w)));
                    if let Some(dx) =
                        conv2d_backward_input_masked(plan, slice(&g), slice(y), bounds, ws, geo, &self.scratch)?
                    {
                        self.accumulate(grads, *x, from_vec(self.dims(*x), dx));
                        return Ok(());
                    }
                }
                // A fused activation first: its gradient depends on the output alone (on its
                // pass bits where the forward kept them: the output is cold by now, or
                // given back).
                let g = match act {
                    Some(kind) => {
                        let mut gy = g.take();
                        let by_bits = self.mode.input_grad_by_bits(*kind, &mut gy, node.pass_bits.as_deref());
                        if !by_bits && node.released_dim.is_some() {
                            // `backward_reads` said the bits would do: a bug, reported.
                            return Err(param_err(
                                "backward",
                                "a conv's output was given back but its gradient reads it",
                            ));
                        }
                        if !by_bits && !self.mode.input_grad_in_place(*kind, &mut gy, y) {
                            let gx = self.mode.input_grad_pooled(&self.scratch, *kind, &gy, y, y);
                            recycle(&self.scratch, std::mem::replace(&mut gy, gx));
                        }
                        Pooled::new(gy, &self.scratch)
                    }
                    None => g,
                };
                let gs = slice(&g);
                if needs(*x) {
                    let plan = ConvPlan::choose(geo);
                    let ws = slice(self.val(*w));
                    let pack = self.packs.for_weight(self, *w, geo, PackDirection::BackwardInput)?;
                    // Fully overwritten by the kernel.
                    let mut dx = self.scratch.take(geo.n * geo.c_in * geo.in_len());
                    conv2d_backward_input_prepacked(plan, gs, ws, &pack, geo, &mut dx, &self.scratch)?;
                    self.accumulate(grads, *x, from_vec(self.dims(*x), dx));
                }
                if needs(*w) {
                    let mut dw = vec![0.0; geo.c_out * geo.k_col()];
                    conv2d_backward_weight(slice(self.val(*x)), gs, geo, &mut dw, &self.scratch)?;
                    self.accumulate(grads, *w, from_vec(self.val(*w).shape(), dw));
                }
                if let Some(b) = b.filter(|&b| needs(b)) {
                    let mut db = vec![0.0; geo.c_out];
                    conv2d_backward_bias(gs, geo, &mut db)?;
                    self.accumulate(grads, b, from_vec(&[geo.c_out], db));
                }
            }
            Op::MaxPool2d { x, g: geo, arg } => {
                let dx = max_pool2d_backward(slice(&g), arg, geo)?;
                self.accumulate(grads, *x, from_vec(self.dims(*x), dx));
            }
            Op::AvgPool2d { x, g: geo } => {
                let dx = avg_pool2d_backward(slice(&g), geo)?;
                self.accumulate(grads, *x, from_vec(self.dims(*x), dx));
            }
            Op::BatchNorm { x, gamma, beta, mean, var, eps } => {
                self.batch_norm_backward(&g, [*x, *gamma, *beta, *mean, *var], *eps, grads)
            }
            Op::Pad { x, pads, mode } => {
                let mut gx = g.take();
                for (axis, &(before, after)) in pads.iter().enumerate().rev() {
                    if before > 0 || after > 0 {
                        gx = unpad_axis(&gx, axis, before, after, *mode);
                    }
                }
                self.accumulate(grads, *x, gx);
            }
            Op::Slice { x, ranges } => {
                let mut gx = Tensor::zeros(IxDyn(self.dims(*x)));
                gx.slice_each_axis_mut(|ax| Slice::from(ranges[ax.axis.index()].0..ranges[ax.axis.index()].1))
                    .assign(&g);
                self.accumulate(grads, *x, gx);
            }
            Op::Reshape(x) => {
                let gx = g.take().into_shape_with_order(IxDyn(self.dims(*x))).expect("same size");
                self.accumulate(grads, *x, gx);
            }
            Op::Concat { xs, axis } => {
                let mut start = 0;
                for &v in xs {
                    let len = self.dims(v)[*axis];
                    if needs(v) {
                        let part = g.slice_axis(Axis(*axis), Slice::from(start..start + len)).to_owned();
                        self.accumulate(grads, v, part);
                    }
                    start += len;
                }
            }
            Op::Permute { x, perm } => {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                let gx = g.take().permuted_axes(IxDyn(&inv)).as_standard_layout().into_owned();
                self.accumulate(grads, *x, gx);
            }
            Op::TotalVariation { x, axes, beta } => {
                let xv = self.val(*x);
                let mut gx = self.scratch.take(xv.len());
                crate::smoothness::total_variation_backward(
                    slice(xv),
                    xv.shape(),
                    axes,
                    *beta,
                    g.first().copied().unwrap_or(0.0),
                    &mut gx,
                );
                self.accumulate(grads, *x, from_vec(xv.shape(), gx));
            }
            Op::LpNorm { x, p, sum } => {
                let xv = self.val(*x);
                let mut gx = self.scratch.take(xv.len());
                crate::smoothness::lp_norm_backward(slice(xv), *p, *sum, g.first().copied().unwrap_or(0.0), &mut gx);
                self.accumulate(grads, *x, from_vec(xv.shape(), gx));
            }
            Op::AffineWarp { x, taps } => {
                let dx = crate::warp::warp_backward(slice(&g), self.dims(*x), taps);
                self.accumulate(grads, *x, from_vec(self.dims(*x), dx));
            }
            Op::Rfft2 { x, w } => {
                // rfft2ᵀ(G) = irfft2(D⁻¹ ⊙ G) (see fft.rs).
                let xs = self.dims(*x);
                let (r, h) = (xs.len(), xs[xs.len() - 2]);
                let mut gz = slice(&g).to_vec();
                crate::fft::scale_pair_columns(&mut gz, *w, 0.5);
                let planes = xs[..r - 2].iter().product();
                let dx = crate::fft::irfft2(&gz, planes, h, *w);
                self.accumulate(grads, *x, from_vec(xs, dx));
            }
            Op::Irfft2 { z, w } => {
                // irfft2ᵀ(g) = D ⊙ rfft2(g).
                let zs = self.dims(*z);
                let (r, h) = (zs.len(), zs[zs.len() - 3]);
                let planes = zs[..r - 3].iter().product();
                let mut dz = crate::fft::rfft2(slice(&g), planes, h, *w);
                crate::fft::scale_pair_columns(&mut dz, *w, 2.0);
                self.accumulate(grads, *z, from_vec(zs, dz));
            }
            Op::Roll { x, shifts } => {
                let back: Vec<isize> = shifts.iter().map(|s| -s).collect();
                self.accumulate(grads, *x, roll_tensor(&g, &back));
            }
        }
        Ok(())
    }

    /// Whether the backward of node `at` reads the value of node `v` — one of its
    /// operands, or itself (`v == at`) — rather than at most its shape. Kept beside
    /// `backward_op`, whose arms it mirrors: a value it calls unread may be given back
    /// before the backward ([`Tape::release_unneeded`]). A node needing no gradient runs
    /// no backward.
    pub(crate) fn backward_reads(&self, at: usize, v: usize) -> bool {
        let node = &self.nodes[at];
        if !node.requires_grad {
            return false;
        }
        if at == v {
            return match &node.op {
                Op::Div(..) | Op::Unary(..) | Op::Relu(..) | Op::Softmax { .. } | Op::LogSoftmax { .. } => true,
                Op::Conv2d { .. } => self.conv_reads_output(node),
                _ => false,
            };
        }
        if !node.op.has_input(v) {
            return false;
        }
        match &node.op {
            Op::Mul(..)
            | Op::Div(..)
            | Op::Unary(..)
            | Op::Relu(..)
            | Op::MatMul { .. }
            | Op::BatchNorm { .. }
            | Op::TotalVariation { .. }
            | Op::LpNorm { .. } => true,
            // The input only for the weights' gradient; the weights themselves.
            Op::Conv2d { x, w, .. } => x.index != v || self.nodes[w.index].requires_grad,
            // Shapes only.
            _ => false,
        }
    }

    /// The clamp bounds where a conv's backward masks the input gradient of its ReLU6 or
    /// clip as the kernel reads the output (a plain-mode stride-1 depthwise conv with only
    /// its input needing a gradient), else `None`.
    fn masks_in_kernel(&self, node: &Node) -> Option<(f32, f32)> {
        let Op::Conv2d { x, w, b, g, act } = &node.op else { return None };
        let needs = |v: &Var| self.nodes[v.index].requires_grad;
        match act {
            Some(kind @ (ReluKind::Relu6 | ReluKind::Clip { .. }))
                if matches!(self.mode, BackpropMode::Plain)
                    && node.pass_bits.is_none()
                    && needs(x)
                    && !needs(w)
                    && !b.as_ref().is_some_and(needs)
                    && crate::conv::masks_in_kernel(ConvPlan::choose(g), g) =>
            {
                kind.bounds()
            }
            _ => None,
        }
    }

    /// Whether a conv's backward reads its own output: for its fused activation's
    /// gradient, unless its pass bits serve alone.
    fn conv_reads_output(&self, node: &Node) -> bool {
        let Op::Conv2d { act: Some(kind), .. } = &node.op else { return false };
        if self.masks_in_kernel(node).is_some() {
            return true;
        }
        self.mode.by_bits(*kind, node.dims(), node.pass_bits.as_ref().map(Vec::len)).is_none()
    }

    fn batch_norm_backward(&self, g: &Tensor, vars: [Var; 5], eps: f32, grads: &mut [Option<Tensor>]) {
        let [x, gamma, beta, mean, var] = vars;
        let xv = self.val(x);
        let c = xv.shape()[1];
        let inner: usize = xv.shape()[2..].iter().product::<usize>().max(1);
        let (gm, mu, va) = (self.val(gamma), self.val(mean), self.val(var));
        let inv: Vec<f32> = (0..c).map(|i| 1.0 / (va[i] + eps).sqrt()).collect();
        // Per-channel Σg and Σg·(x − mean), accumulated in f64.
        let (mut sg, mut sgx) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (j, (gc, xc)) in slice(g).chunks_exact(inner).zip(slice(xv).chunks_exact(inner)).enumerate() {
            let ch = j % c;
            for (&gi, &xi) in gc.iter().zip(xc) {
                sg[ch] += gi as f64;
                sgx[ch] += (gi * (xi - mu[ch])) as f64;
            }
        }
        let param = |f: &dyn Fn(usize) -> f32| ArrayD::from_shape_fn(IxDyn(&[c]), |i| f(i[0]));
        if self.requires_grad(x) {
            let gx = map_channels(&self.scratch, g, |ch, v| v * gm[ch] * inv[ch]);
            self.accumulate(grads, x, gx);
        }
        self.accumulate(grads, gamma, param(&|i| (sgx[i] as f32) * inv[i]));
        self.accumulate(grads, beta, param(&|i| sg[i] as f32));
        self.accumulate(grads, mean, param(&|i| -(sg[i] as f32) * gm[i] * inv[i]));
        self.accumulate(grads, var, param(&|i| -0.5 * (sgx[i] as f32) * gm[i] * inv[i].powi(3)));
    }
}

/// The adjoint of padding one axis: each padded position's gradient goes back to the
/// input position that filled it.
fn unpad_axis(g: &Tensor, axis: usize, before: usize, after: usize, mode: PadMode) -> Tensor {
    let n = g.shape()[axis] - before - after;
    let mut shape = g.shape().to_vec();
    shape[axis] = n;
    let mut gx = Tensor::zeros(IxDyn(&shape));
    Zip::from(gx.lanes_mut(Axis(axis))).and(g.lanes(Axis(axis))).for_each(|mut out, inp| {
        for (i, v) in inp.iter().enumerate() {
            if let Some(src) = pad_source(i, before, n, mode) {
                out[src] += v;
            }
        }
    });
    gx
}

/// A gradient that returns its buffer to the tape's pool when dropped.
struct Pooled<'a> {
    t: Option<Tensor>,
    pool: &'a crate::scratch::ScratchPool,
}

impl<'a> Pooled<'a> {
    fn new(t: Tensor, pool: &'a crate::scratch::ScratchPool) -> Self {
        Self { t: Some(t), pool }
    }
    /// The tensor itself, moved on (no longer returned to the pool here).
    fn take(mut self) -> Tensor {
        self.t.take().expect("taken once")
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        self.t.as_ref().expect("not taken")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.t.take() {
            recycle(self.pool, t);
        }
    }
}
