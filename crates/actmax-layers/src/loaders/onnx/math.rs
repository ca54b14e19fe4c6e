//! Element-wise math, reductions and normalizations: the ops transformer-era CNNs
//! (ConvNeXt's LayerNorm and GELU) export, on image values as layers and on constants
//! folded at load time.

use std::sync::Arc;

use actmax_tensor::{Tape, Tensor};

use super::ops::{f32_const, flat_read, i64_const, Converter, Ctx, Inputs};
use super::{Const, Value};
use crate::error::Result;
use crate::layer::{Layer, Pool, ReduceOp, UnaryOp, WindowPadding};

impl Converter {
    /// Sqrt, Reciprocal, Erf, Exp, Log, Abs, Neg.
    pub(super) fn unary(&mut self, ctx: &Ctx, op: &str, ins: &Inputs) -> Result<Value> {
        let u = match op {
            "Sqrt" => UnaryOp::Sqrt,
            "Reciprocal" => UnaryOp::Reciprocal,
            "Erf" => UnaryOp::Erf,
            "Exp" => UnaryOp::Exp,
            "Log" => UnaryOp::Log,
            "Abs" => UnaryOp::Abs,
            _ => UnaryOp::Neg,
        };
        self.unary_on(ctx, ins.get(0), u)
    }

    fn unary_on(&mut self, ctx: &Ctx, x: Option<&Value>, u: UnaryOp) -> Result<Value> {
        match x {
            Some(Value::Layer(i)) => self.add(&ctx.name, Layer::Unary(u), &[*i]),
            Some(c @ Value::Const(_)) => {
                let t = f32_const(ctx, c, "the input")?;
                let mut tape = Tape::new();
                let v = tape.constant(t.clone());
                let y = Layer::Unary(u).forward(&mut tape, &[v])?;
                Ok(Value::Const(Const::F32(tape.value(y)?.clone())))
            }
            Some(Value::Flat(_)) => Err(flat_read(ctx)),
            None => Err(ctx.err("no input")),
        }
    }

    /// Pow by a constant scalar exponent (LayerNorm's square).
    pub(super) fn pow(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let p = match ins.get(1) {
            Some(Value::Const(Const::F32(t))) if t.len() == 1 => t.iter().next().copied().unwrap_or(1.0),
            Some(Value::Const(Const::I64(d, _))) if d.len() == 1 => d[0] as f32,
            Some(_) => return Err(ctx.unsupported("Pow with an exponent that is not a constant scalar")),
            None => return Err(ctx.err("no exponent")),
        };
        self.unary_on(ctx, ins.get(0), UnaryOp::Pow(p))
    }

    /// ReduceMean / ReduceSum over any non-batch axes; ReduceMax over H, W. A mean over
    /// exactly H, W of NCHW is a global average pool (squeeze-excite gates).
    pub(super) fn reduce(&mut self, ctx: &Ctx, op: &str, ins: &Inputs) -> Result<Value> {
        let x = ins.layer(ctx)?;
        let rank = self.shape(x).len() as i64;
        let listed = match ins.get(1) {
            Some(v) => i64_const(ctx, v, "axes")?.to_vec(),
            None => ctx.ints("axes").unwrap_or_default(),
        };
        if listed.is_empty() && ctx.int("noop_with_empty_axes", 0) != 0 {
            return self.add(&ctx.name, Layer::Identity, &[x]);
        }
        let mut axes: Vec<i64> = if listed.is_empty() { (0..rank).collect() } else { listed };
        for a in &mut axes {
            if *a < -rank || *a >= rank {
                return Err(ctx.err(format!("axis {a} of a rank-{rank} tensor")));
            }
            *a = a.rem_euclid(rank);
        }
        axes.sort_unstable();
        axes.dedup();
        if axes.first() == Some(&0) {
            return Err(ctx.unsupported(format!("{op} over the batch axis (axes {axes:?})")));
        }
        let keepdims = ctx.int("keepdims", 1) != 0;
        let spatial = rank == 4 && axes == [2, 3];
        match op {
            "ReduceMean" if spatial && keepdims => self.mean_keepdims(x, &format!("{}.mean", ctx.name), &ctx.name),
            "ReduceMean" if spatial => self.add(&ctx.name, Layer::GlobalAvgPool, &[x]),
            "ReduceMax" if spatial => self.global_max_pool(ctx, x, keepdims),
            "ReduceMax" => Err(ctx.unsupported(format!("ReduceMax over axes {axes:?} (only over H, W of NCHW)"))),
            _ => {
                let op = if op == "ReduceSum" { ReduceOp::Sum } else { ReduceOp::Mean };
                let axes = axes.iter().map(|&a| a as usize).collect();
                self.add(&ctx.name, Layer::Reduce { op, axes, keepdims }, &[x])
            }
        }
    }

    /// A max over the whole H × W plane: one max-pool window (`[N, C, 1, 1]`), then
    /// `[N, C]` unless `keepdims`.
    pub(super) fn global_max_pool(&mut self, ctx: &Ctx, x: usize, keepdims: bool) -> Result<Value> {
        let s = self.shape(x);
        if s.len() != 4 {
            return Err(ctx.unsupported(format!("a global max pool of a {s:?} tensor (NCHW only)")));
        }
        let pool = Pool {
            kernel: [s[2], s[3]],
            stride: [1, 1],
            padding: WindowPadding::Valid,
            count_include_pad: false,
            ceil_mode: false,
        };
        if keepdims {
            return self.add(&ctx.name, Layer::MaxPool(pool), &[x]);
        }
        let pooled = self.node_index(&format!("{}.max", ctx.name), Layer::MaxPool(pool), &[x])?;
        self.add(&ctx.name, Layer::Reshape(vec![s[1]]), &[pooled])
    }

    /// LayerNormalization (opset 17): over the axes from `axis` (default −1) on.
    pub(super) fn layer_norm(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let x = ins.layer(ctx)?;
        let shape = self.shape(x);
        let rank = shape.len() as i64;
        let axis = ctx.int("axis", -1);
        if axis < -rank || axis >= rank || axis.rem_euclid(rank) == 0 {
            return Err(ctx.unsupported(format!("LayerNormalization from axis {axis} of a rank-{rank} tensor")));
        }
        let axis = axis.rem_euclid(rank) as usize;
        let normalized = shape[axis..].to_vec();
        let param = |k: usize, what: &str| -> Result<Option<Arc<Tensor>>> {
            let Some(v) = ins.get(k) else { return Ok(None) };
            let t = f32_const(ctx, v, what)?;
            if t.len() != normalized.iter().product::<usize>() {
                return Err(ctx.unsupported(format!("{what} of shape {:?} for axes {normalized:?}", t.shape())));
            }
            let t = t.as_standard_layout().into_owned().into_shape_with_order(normalized.clone());
            Ok(Some(Arc::new(t.map_err(|e| ctx.err(e))?)))
        };
        let gamma = param(1, "the scale")?.ok_or_else(|| ctx.err("no scale"))?;
        let beta = param(2, "the bias")?;
        let eps = ctx.float("epsilon", 1e-5);
        self.add(&ctx.name, Layer::LayerNorm { axis, gamma, beta, eps }, &[x])
    }

    /// PRelu with a constant slope (per channel as PyTorch exports it, `[C, 1, 1]`).
    pub(super) fn prelu(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let x = ins.layer(ctx)?;
        let slope = f32_const(ctx, ins.get(1).ok_or_else(|| ctx.err("no slope"))?, "the slope")?;
        self.add(&ctx.name, Layer::PRelu(Arc::new(slope.as_standard_layout().into_owned())), &[x])
    }
}
