//! lucid's objectives, as losses to minimize (see the crate docs for the sign convention),
//! for NCHW activations.

use actmax_tensor::{ReluKind, Tape, Tensor, Var};

use crate::{ActivationMaximization, Loss, LossError, Objective, Result};

fn width(tape: &Tape, x: Var, layer: &str, n: usize) -> Result<Vec<usize>> {
    let s = tape.shape(x)?.to_vec();
    let count = s.get(1).copied().unwrap_or(0);
    if n >= count {
        return Err(LossError::FilterOutOfRange { layer: layer.into(), index: n, count });
    }
    Ok(s)
}

/// `−mean(layer[:, n])`: a channel's mean activation, maximized.
pub fn channel(layer: &str, n: usize) -> Objective {
    let am = ActivationMaximization::new(layer, vec![n]);
    let layer = layer.to_string();
    Objective::new(format!("channel({layer}, {n})"), vec![layer], move |tape, ctx| am.build(tape, ctx))
}

/// `−mean_b layer[b, n, y, x]`: one neuron, at the centre unless `at = Some((y, x))`.
pub fn neuron(layer: &str, n: usize, at: Option<(usize, usize)>) -> Objective {
    let l = layer.to_string();
    let name = match at {
        Some((y, x)) => format!("neuron({l}, {n}, y={y}, x={x})"),
        None => format!("neuron({l}, {n})"),
    };
    Objective::new(name, vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let s = width(tape, x, &l, n)?;
        if s.len() != 4 {
            return Err(LossError::Param(format!("neuron needs an NCHW layer, `{l}` gives {s:?}")));
        }
        let (y, xx) = at.unwrap_or((s[2] / 2, s[3] / 2));
        if y >= s[2] || xx >= s[3] {
            return Err(LossError::Param(format!("neuron position ({y}, {xx}) is outside `{l}` ({}×{})", s[2], s[3])));
        }
        let v = tape.slice(x, &[(0, s[0]), (n, n + 1), (y, y + 1), (xx, xx + 1)])?;
        let m = tape.mean_all(v)?;
        Ok(tape.neg(m)?)
    })
}

/// `−mean(⟨layer[:, :, y, x], v⟩ · max(cos, 0.1)^cossim_pow)` over batch and positions: a
/// direction in channel space (lucid's `direction` / `direction_cossim`).
pub fn direction(layer: &str, vec: Vec<f32>, cossim_pow: f32) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("direction({l}, pow={cossim_pow})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let s = tape.shape(x)?.to_vec();
        if s.len() < 2 || s[1] != vec.len() {
            return Err(LossError::Param(format!("direction has {} components, `{l}` has shape {s:?}", vec.len())));
        }
        let mut vshape = vec![1; s.len()];
        vshape[1] = vec.len();
        let v = tape.constant(Tensor::from_shape_vec(vshape, vec.clone()).expect("sized"));
        let xv = tape.mul(x, v)?;
        let dot = tape.sum(xv, &[1], false)?;
        let value = if cossim_pow == 0.0 {
            dot
        } else {
            const EPS: f32 = 1e-4;
            let x2 = tape.mul(x, x)?;
            let x2 = tape.sum(x2, &[1], false)?;
            let xm = tape.sqrt(x2)?;
            let xm = tape.add_scalar(xm, EPS)?;
            let vm = vec.iter().map(|a| a * a).sum::<f32>().sqrt() + EPS;
            let cos = tape.div(dot, xm)?;
            let cos = tape.mul_scalar(cos, 1.0 / vm)?;
            let floored = tape.relu_family(cos, ReluKind::Clip { lo: 0.1, hi: f32::INFINITY })?;
            let w = tape.powf(floored, cossim_pow)?;
            tape.mul(dot, w)?
        };
        let m = tape.mean_all(value)?;
        Ok(tape.neg(m)?)
    })
}

/// `+Σ_{a≠b} cos(vec G_a, vec G_b) / B` over the batch's per-sample Gram matrices of
/// `layer`: minimizing it makes the images of a batch differ (lucid's `diversity`). With
/// several views per image (a batch of `k·B` rows, view-major, `B` the input's batch),
/// only views of different images are compared: a crop need not differ from its sibling.
pub fn diversity(layer: &str) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("diversity({l})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let s = tape.shape(x)?.to_vec();
        if s.len() < 3 || s[0] < 2 {
            return Err(LossError::Param(format!("diversity needs a batch of >= 2 feature maps, `{l}` gives {s:?}")));
        }
        let (rows, c, pos) = (s[0], s[1], s[2..].iter().product::<usize>());
        let images =
            tape.shape(ctx.input)?.first().copied().filter(|&b| b > 1 && rows.is_multiple_of(b)).unwrap_or(rows);
        let mut grams = Vec::with_capacity(rows);
        for i in 0..rows {
            let xi = tape.slice(x, &[(i, i + 1)])?;
            let f = tape.reshape(xi, &[c, pos])?;
            let g = tape.matmul(f, f, true)?;
            let g = tape.reshape(g, &[c * c])?;
            let n2 = tape.mul(g, g)?;
            let n2 = tape.sum_all(n2)?;
            let n2 = tape.add_scalar(n2, 1e-20)?;
            let n = tape.sqrt(n2)?;
            grams.push(tape.div(g, n)?);
        }
        let mut total: Option<Var> = None;
        for i in 0..rows {
            for j in 0..rows {
                if i % images == j % images {
                    continue;
                }
                let p = tape.mul(grams[i], grams[j])?;
                let cos = tape.sum_all(p)?;
                total = Some(match total {
                    Some(t) => tape.add(t, cos)?,
                    None => cos,
                });
            }
        }
        Ok(tape.mul_scalar(total.expect("rows >= 2 images"), 1.0 / rows as f32)?)
    })
}

/// lucid's 3×3 blur of each plane, `conv(x) / conv(1)` so borders keep their level.
fn blur3(x: &Tensor) -> Tensor {
    let s = x.shape();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let k = [1.0f32, 2.0, 1.0];
    let mut out = x.clone();
    let xs = x.as_slice().expect("standard");
    for (o, plane) in out.as_slice_mut().expect("standard").chunks_exact_mut(h * w).zip(xs.chunks_exact(h * w)) {
        for i in 0..h {
            for j in 0..w {
                let (mut acc, mut norm) = (0.0, 0.0);
                for (di, ki) in k.iter().enumerate() {
                    for (dj, kj) in k.iter().enumerate() {
                        let (ii, jj) = (i as isize + di as isize - 1, j as isize + dj as isize - 1);
                        if ii >= 0 && jj >= 0 && (ii as usize) < h && (jj as usize) < w {
                            acc += ki * kj * plane[ii as usize * w + jj as usize];
                            norm += ki * kj;
                        }
                    }
                }
                o[i * w + j] = acc / norm;
            }
        }
    }
    out
}

/// `½·Σ(x − blur(x))²` with the blur held constant: its gradient pulls each pixel toward
/// its neighbours' average (lucid's `blur_input_each_step`).
pub fn blur(layer: &str) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("blur({l})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        if tape.shape(x)?.len() < 2 {
            return Err(LossError::Param(format!("blur needs a 2-D or larger `{l}`")));
        }
        let blurred = tape.constant(blur3(tape.value(x)?));
        let d = tape.sub(x, blurred)?;
        let sq = tape.mul(d, d)?;
        let s = tape.sum_all(sq)?;
        Ok(tape.mul_scalar(s, 0.5)?)
    })
}

/// `−mean(layer²)`: DeepDream's objective.
pub fn deepdream(layer: &str) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("deepdream({l})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let sq = tape.mul(x, x)?;
        let m = tape.mean_all(sq)?;
        Ok(tape.neg(m)?)
    })
}

/// `Σ|layer − constant|`.
pub fn l1(layer: &str, constant: f32) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("L1({l}, {constant})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let d = tape.add_scalar(x, -constant)?;
        let a = tape.abs(d)?;
        Ok(tape.sum_all(a)?)
    })
}

/// `√(ε + Σ(layer − constant)²)` with ε = 1e-6.
pub fn l2(layer: &str, constant: f32) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("L2({l}, {constant})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let d = tape.add_scalar(x, -constant)?;
        let sq = tape.mul(d, d)?;
        let s = tape.sum_all(sq)?;
        let s = tape.add_scalar(s, 1e-6)?;
        Ok(tape.sqrt(s)?)
    })
}

/// Anisotropic total variation, `Σ|x[i+1, j] − x[i, j]| + Σ|x[i, j+1] − x[i, j]|` over the
/// last two axes (tf.image.total_variation, as lucid and tf-keras-vis use it).
pub fn total_variation(layer: &str) -> Objective {
    let l = layer.to_string();
    Objective::new(format!("total_variation({l})"), vec![l.clone()], move |tape, ctx| {
        let x = ctx.activation(&l)?;
        let s = tape.shape(x)?.to_vec();
        let r = s.len();
        if r < 2 || s[r - 1] < 2 || s[r - 2] < 2 {
            return Err(LossError::Param(format!("total_variation needs the last two axes >= 2, `{l}` gives {s:?}")));
        }
        let full: Vec<(usize, usize)> = s.iter().map(|&d| (0, d)).collect();
        let mut total: Option<Var> = None;
        for a in [r - 2, r - 1] {
            let (mut lo, mut hi) = (full.clone(), full.clone());
            lo[a] = (0, s[a] - 1);
            hi[a] = (1, s[a]);
            let (p, q) = (tape.slice(x, &hi)?, tape.slice(x, &lo)?);
            let d = tape.sub(p, q)?;
            let ad = tape.abs(d)?;
            let sum = tape.sum_all(ad)?;
            total = Some(match total {
                Some(t) => tape.add(t, sum)?,
                None => sum,
            });
        }
        Ok(total.expect("two axes"))
    })
}
