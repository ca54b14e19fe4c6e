//! Slice and Split: channel splits (ShuffleNet's `chunk`) on image values, and the
//! shape arithmetic exporters do on constant shapes.

use super::ops::{flat_read, i64_const, Converter, Ctx, Inputs};
use super::{Const, Value};
use crate::error::Result;
use crate::layer::Layer;

/// ONNX's start/end rule for one axis of length `dim`: negatives count from the end,
/// both are clamped to `0..=dim` (exporters write `i64::MAX` for "to the end").
fn clamp_bound(v: i64, dim: usize) -> usize {
    let d = dim as i64;
    (if v < 0 { v.saturating_add(d) } else { v }).clamp(0, d) as usize
}

impl Converter {
    /// Slice: `starts`, `ends`, `axes`, `steps` as inputs (opset ≥ 10) or attributes.
    pub(super) fn slice(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let list = |k: usize, attr: &str| -> Result<Option<Vec<i64>>> {
            if ctx.opset < 10 {
                return Ok(ctx.ints(attr));
            }
            ins.get(k).map(|v| i64_const(ctx, v, attr).map(<[i64]>::to_vec)).transpose()
        };
        let starts = list(1, "starts")?.ok_or_else(|| ctx.err("no starts"))?;
        let ends = list(2, "ends")?.ok_or_else(|| ctx.err("no ends"))?;
        let (shape, layer) = match ins.get(0) {
            Some(Value::Layer(i)) => (self.shape(*i), Some(*i)),
            Some(Value::Const(c)) => (c.shape().to_vec(), None),
            Some(Value::Flat(_)) => return Err(flat_read(ctx)),
            None => return Err(ctx.err("no data")),
        };
        let rank = shape.len() as i64;
        let axes = list(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = list(4, "steps")?.unwrap_or_else(|| vec![1; starts.len()]);
        if [ends.len(), axes.len(), steps.len()].iter().any(|&n| n != starts.len()) {
            return Err(ctx.err("starts, ends, axes and steps differ in length"));
        }
        let mut cuts = Vec::with_capacity(axes.len());
        for k in 0..axes.len() {
            let a = axes[k];
            if a < -rank || a >= rank {
                return Err(ctx.err(format!("axis {a} of a rank-{rank} tensor")));
            }
            let a = a.rem_euclid(rank) as usize;
            if steps[k] != 1 {
                return Err(ctx.unsupported(format!("Slice with step {} (only 1)", steps[k])));
            }
            let (s, e) = (clamp_bound(starts[k], shape[a]), clamp_bound(ends[k], shape[a]));
            if s >= e {
                return Err(ctx.unsupported(format!("an empty Slice ({s}..{e} of axis {a})")));
            }
            cuts.push((a, s, e));
        }
        match layer {
            None => slice_const(ctx, ins.get(0), &cuts),
            Some(x) => self.slice_layers(ctx, x, &shape, &cuts),
        }
    }

    /// One Slice layer per axis actually cut; the last is named after the node.
    fn slice_layers(&mut self, ctx: &Ctx, x: usize, shape: &[usize], cuts: &[(usize, usize, usize)]) -> Result<Value> {
        let cuts: Vec<_> = cuts.iter().filter(|&&(a, s, e)| (s, e) != (0, shape[a])).collect();
        if cuts.iter().any(|&&(a, ..)| a == 0) {
            return Err(ctx.unsupported("a Slice of the batch axis"));
        }
        let Some((last, rest)) = cuts.split_last() else {
            return self.add(&ctx.name, Layer::Identity, &[x]);
        };
        let mut cur = x;
        for &&(axis, start, end) in rest {
            cur = self.node_index(&format!("{}.axis{axis}", ctx.name), Layer::Slice { axis, start, end }, &[cur])?;
        }
        let &&(axis, start, end) = last;
        self.add(&ctx.name, Layer::Slice { axis, start, end }, &[cur])
    }

    /// Split into `outputs` parts along `axis`: sizes from the `split` input (opset ≥ 13)
    /// or attribute, else equal parts (`num_outputs` from opset 18, the last one smaller).
    pub(super) fn split(&mut self, ctx: &Ctx, ins: &Inputs, outputs: usize) -> Result<Vec<Value>> {
        let x = ins.layer(ctx)?;
        let shape = self.shape(x);
        let rank = shape.len() as i64;
        let axis = ctx.int("axis", 0);
        if axis < -rank || axis >= rank || axis.rem_euclid(rank) == 0 {
            return Err(ctx.unsupported(format!("Split along axis {axis} of a rank-{rank} tensor")));
        }
        let axis = axis.rem_euclid(rank) as usize;
        let dim = shape[axis];
        let listed = match ins.get(1) {
            Some(v) => Some(i64_const(ctx, v, "split")?.to_vec()),
            None => ctx.ints("split"),
        };
        let sizes: Vec<usize> = match listed {
            Some(l) if l.iter().any(|&v| v < 0) => return Err(ctx.err(format!("split sizes {l:?}"))),
            Some(l) => l.iter().map(|&v| v as usize).collect(),
            None => {
                let n = usize::try_from(ctx.int("num_outputs", outputs as i64)).unwrap_or(0).max(1);
                let part = dim.div_ceil(n);
                (0..n).map(|k| part.min(dim.saturating_sub(k * part))).collect()
            }
        };
        if sizes.iter().sum::<usize>() != dim || sizes.len() != outputs || sizes.contains(&0) {
            return Err(ctx.err(format!("split sizes {sizes:?} for {outputs} outputs of an axis of {dim}")));
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(outputs);
        for (k, &n) in sizes.iter().enumerate() {
            let layer = Layer::Slice { axis, start, end: start + n };
            out.push(self.add(&format!("{}.{k}", ctx.name), layer, &[x])?);
            start += n;
        }
        Ok(out)
    }
}

/// A Slice of a constant: 1-D integer shapes (exporters' `shape[2:]`), or float tensors.
fn slice_const(ctx: &Ctx, v: Option<&Value>, cuts: &[(usize, usize, usize)]) -> Result<Value> {
    match v {
        Some(Value::Const(Const::I64(d, s))) if s.len() == 1 => {
            let (lo, hi) = cuts.iter().fold((0, d.len()), |_, &(_, s, e)| (s, e));
            Ok(Value::Const(Const::I64(d[lo..hi].to_vec(), vec![hi - lo])))
        }
        Some(Value::Const(Const::F32(t))) => {
            let mut view = t.view();
            for &(a, s, e) in cuts {
                view.slice_axis_inplace(ndarray::Axis(a), ndarray::Slice::from(s..e));
            }
            Ok(Value::Const(Const::F32(view.to_owned())))
        }
        _ => Err(ctx.unsupported("a Slice of a constant that is neither 1-D integers nor floats")),
    }
}
