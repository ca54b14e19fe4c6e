//! Resize (opset 10+) and Upsample: nearest and linear interpolation of H and W with the
//! coordinate rules exporters write, as [`Layer::Resize`]'s two interpolation matrices.

use std::sync::Arc;

use actmax_tensor::Tensor;

use super::ops::{Converter, Ctx, Inputs};
use super::{Const, Value};
use crate::error::Result;
use crate::layer::Layer;

/// How an output coordinate maps back to the input (ONNX `coordinate_transformation_mode`).
#[derive(Clone, Copy)]
enum Coordinates {
    HalfPixel,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

/// ONNX `mode` with, for nearest, its rounding (`nearest_mode`).
#[derive(Clone, Copy)]
enum Interpolation {
    Nearest(Rounding),
    Linear,
}

#[derive(Clone, Copy)]
enum Rounding {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

impl Coordinates {
    fn source(self, x: usize, scale: f64, len_in: usize, len_out: usize) -> f64 {
        let x = x as f64;
        match self {
            Self::HalfPixel => (x + 0.5) / scale - 0.5,
            Self::PytorchHalfPixel if len_out > 1 => (x + 0.5) / scale - 0.5,
            Self::PytorchHalfPixel => 0.0,
            Self::AlignCorners if len_out > 1 => x * (len_in as f64 - 1.0) / (len_out as f64 - 1.0),
            Self::AlignCorners => 0.0,
            Self::Asymmetric => x / scale,
            Self::TfHalfPixelForNn => (x + 0.5) / scale,
        }
    }
}

/// The `[len_out, len_in]` matrix whose row `o` mixes the inputs output `o` reads.
fn interpolation_matrix(len_in: usize, len_out: usize, scale: f64, c: Coordinates, i: Interpolation) -> Tensor {
    let mut m = Tensor::zeros(vec![len_out, len_in]);
    let last = len_in as f64 - 1.0;
    for o in 0..len_out {
        let x = c.source(o, scale, len_in, len_out);
        match i {
            Interpolation::Nearest(r) => {
                let k = match r {
                    Rounding::PreferFloor if x.fract().abs() == 0.5 => x.floor(),
                    Rounding::PreferCeil if x.fract().abs() == 0.5 => x.ceil(),
                    Rounding::PreferFloor | Rounding::PreferCeil => x.round(),
                    Rounding::Floor => x.floor(),
                    Rounding::Ceil => x.ceil(),
                };
                m[[o, k.clamp(0.0, last) as usize]] = 1.0;
            }
            Interpolation::Linear => {
                // onnxruntime clamps the source coordinate into the input first.
                let x = x.clamp(0.0, last);
                let (lo, frac) = (x.floor() as usize, x - x.floor());
                let hi = (lo + 1).min(len_in - 1);
                m[[o, lo]] += (1.0 - frac) as f32;
                m[[o, hi]] += frac as f32;
            }
        }
    }
    m
}

impl Converter {
    /// Resize / Upsample of an NCHW image value by `scales` or to `sizes`.
    pub(super) fn resize(&mut self, ctx: &Ctx, op: &str, ins: &Inputs) -> Result<Value> {
        let x = ins.layer(ctx)?;
        let shape = self.shape(x);
        if shape.len() != 4 {
            return Err(ctx.unsupported(format!("{op} of a {shape:?} tensor (NCHW only)")));
        }
        let interpolation = match ctx.string("mode").as_deref().unwrap_or("nearest") {
            "nearest" => Interpolation::Nearest(match ctx.string("nearest_mode").as_deref() {
                None | Some("round_prefer_floor") => Rounding::PreferFloor,
                Some("round_prefer_ceil") => Rounding::PreferCeil,
                Some("floor") => Rounding::Floor,
                Some("ceil") => Rounding::Ceil,
                Some(other) => return Err(ctx.err(format!("nearest_mode `{other}`"))),
            }),
            "linear" | "bilinear" => Interpolation::Linear,
            other => return Err(ctx.unsupported(format!("mode `{other}` (nearest or linear)"))),
        };
        // Before opset 11 there was no choice: asymmetric.
        let default_rule = if op == "Upsample" || ctx.opset < 11 { "asymmetric" } else { "half_pixel" };
        let coordinates = match ctx.string("coordinate_transformation_mode").as_deref().unwrap_or(default_rule) {
            "half_pixel" => Coordinates::HalfPixel,
            "pytorch_half_pixel" => Coordinates::PytorchHalfPixel,
            "align_corners" => Coordinates::AlignCorners,
            "asymmetric" => Coordinates::Asymmetric,
            "tf_half_pixel_for_nn" => Coordinates::TfHalfPixelForNn,
            other => return Err(ctx.unsupported(format!("coordinate_transformation_mode `{other}`"))),
        };
        if ctx.int("antialias", 0) != 0 || ctx.ints("axes").is_some_and(|a| a != [2, 3] && a != [-2, -1]) {
            return Err(ctx.unsupported("antialias, or axes other than H, W"));
        }
        let (scales, sizes) = match (op, ctx.opset) {
            ("Upsample", o) if o < 9 => (ctx.attr("scales").map(|a| a.floats.clone()), None),
            ("Upsample", _) | (_, 10) => (floats(ins.get(1)), None),
            _ => (floats(ins.get(2)).filter(|s| !s.is_empty()), ints(ins.get(3)).filter(|s| !s.is_empty())),
        };
        let [h, w] = [shape[2], shape[3]];
        let (out, scale): ([usize; 2], [f64; 2]) = match (sizes, scales) {
            (Some(s), _) if s.len() == 4 && s[1] == shape[1] as i64 => {
                let out = [s[2].max(1) as usize, s[3].max(1) as usize];
                (out, [out[0] as f64 / h as f64, out[1] as f64 / w as f64])
            }
            (None, Some(s)) if s.len() == 4 && s[0] == 1.0 && s[1] == 1.0 && s[2] > 0.0 && s[3] > 0.0 => {
                let out = [(h as f64 * s[2] as f64).floor() as usize, (w as f64 * s[3] as f64).floor() as usize];
                (out, [s[2] as f64, s[3] as f64])
            }
            _ => return Err(ctx.unsupported("scales or sizes that are not constants resizing H, W only")),
        };
        if out.contains(&0) || out.iter().any(|&n| n > 1 << 16) {
            return Err(ctx.err(format!("an output of {out:?}")));
        }
        let rows = interpolation_matrix(h, out[0], scale[0], coordinates, interpolation);
        let cols = interpolation_matrix(w, out[1], scale[1], coordinates, interpolation);
        self.add(&ctx.name, Layer::Resize { rows: Arc::new(rows), cols: Arc::new(cols) }, &[x])
    }
}

fn floats(v: Option<&Value>) -> Option<Vec<f32>> {
    match v {
        Some(Value::Const(Const::F32(t))) => Some(t.iter().copied().collect()),
        _ => None,
    }
}

fn ints(v: Option<&Value>) -> Option<Vec<i64>> {
    match v {
        Some(Value::Const(Const::I64(d, _))) => Some(d.clone()),
        _ => None,
    }
}
