//! Pooling kernels (NCHW), parallel over channel planes, with naive references. Every
//! public kernel checks its slices against the [`PoolGeometry`] and returns a typed error
//! rather than indexing out of bounds.

use rayon::prelude::*;

use crate::error::{param_err, Result};
use crate::geometry::{checked_elems, Pool2dParams};

/// A typed error unless `what` holds exactly `want` floats.
fn check_len(op: &'static str, what: &str, len: usize, want: usize) -> Result<()> {
    match len == want {
        true => Ok(()),
        false => Err(param_err(op, format!("{what} holds {len} values, the pooling geometry needs {want}"))),
    }
}

/// Sizes a pooling kernel needs; made only by [`PoolGeometry::new`], so they agree.
#[derive(Debug, Clone, Copy)]
pub struct PoolGeometry {
    pub(crate) planes: usize,
    pub(crate) in_hw: [usize; 2],
    pub(crate) out_hw: [usize; 2],
    pub(crate) p: Pool2dParams,
}

impl PoolGeometry {
    /// Checks an NCHW input shape against the window.
    pub fn new(op: &'static str, x: &[usize], p: Pool2dParams) -> Result<Self> {
        let out_hw = p.out_hw(op, x)?;
        checked_elems(op, x)?;
        Ok(Self { planes: x[0] * x[1], in_hw: [x[2], x[3]], out_hw, p })
    }
    /// Elements of the input.
    pub fn in_elems(&self) -> usize {
        self.planes * self.in_hw[0] * self.in_hw[1]
    }
    /// Elements of the output.
    pub fn out_elems(&self) -> usize {
        self.planes * self.out_hw[0] * self.out_hw[1]
    }
    /// Output rows and columns.
    pub fn out_hw(&self) -> [usize; 2] {
        self.out_hw
    }
}

/// Input row (or column) range a window starting at output index `o` covers.
#[inline]
fn window(o: usize, s: usize, pad: usize, k: usize, len: usize) -> (usize, usize) {
    let start = (o * s) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + k as isize).max(0) as usize).min(len);
    (lo, hi.max(lo))
}

/// Max pooling; returns the output and, per output element, the flat in-plane index of the
/// winning input (the first maximum, as PyTorch).
pub fn max_pool2d_forward(x: &[f32], g: &PoolGeometry) -> Result<(Vec<f32>, Vec<u32>)> {
    check_len("max_pool2d", "the input", x.len(), g.in_elems())?;
    let (il, ol) = (g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]);
    let mut y = vec![0.0; g.planes * ol];
    let mut arg = vec![0u32; g.planes * ol];
    let pairs = g.p.kernel == [2, 2] && g.p.stride == [2, 2] && g.p.padding == Default::default();
    y.par_chunks_mut(ol).zip(arg.par_chunks_mut(ol)).enumerate().for_each(|(i, (yp, ap))| {
        let xp = &x[i * il..(i + 1) * il];
        if pairs {
            return max_pool_2x2(xp, g, yp, ap);
        }
        for oh in 0..g.out_hw[0] {
            let (h0, h1) = window(oh, g.p.stride[0], g.p.padding.top, g.p.kernel[0], g.in_hw[0]);
            for ow in 0..g.out_hw[1] {
                let (w0, w1) = window(ow, g.p.stride[1], g.p.padding.left, g.p.kernel[1], g.in_hw[1]);
                let (mut best, mut at) = (f32::NEG_INFINITY, h0 * g.in_hw[1] + w0);
                for ih in h0..h1 {
                    for iw in w0..w1 {
                        let v = xp[ih * g.in_hw[1] + iw];
                        // `!(v <= best)` also lets a NaN win, so NaNs propagate.
                        if v > best || (v.is_nan() && !best.is_nan()) {
                            best = v;
                            at = ih * g.in_hw[1] + iw;
                        }
                    }
                }
                yp[oh * g.out_hw[1] + ow] = best;
                ap[oh * g.out_hw[1] + ow] = at as u32;
            }
        }
    });
    Ok((y, arg))
}

/// The usual 2×2, stride-2, unpadded max pool of one plane: the same winner as the
/// general loop (first maximum, NaN wins), without its per-window bounds.
fn max_pool_2x2(xp: &[f32], g: &PoolGeometry, yp: &mut [f32], ap: &mut [u32]) {
    let (w, [oh_n, ow_n]) = (g.in_hw[1], g.out_hw);
    for oh in 0..oh_n {
        let (r0, r1) = (&xp[2 * oh * w..][..w], &xp[(2 * oh + 1) * w..][..w]);
        let (y, a) = (&mut yp[oh * ow_n..][..ow_n], &mut ap[oh * ow_n..][..ow_n]);
        for ow in 0..ow_n {
            let c = 2 * ow;
            let (mut best, mut at) = (f32::NEG_INFINITY, 2 * oh * w + c);
            for (v, idx) in [
                (r0[c], 2 * oh * w + c),
                (r0[c + 1], 2 * oh * w + c + 1),
                (r1[c], (2 * oh + 1) * w + c),
                (r1[c + 1], (2 * oh + 1) * w + c + 1),
            ] {
                if v > best || (v.is_nan() && !best.is_nan()) {
                    best = v;
                    at = idx;
                }
            }
            y[ow] = best;
            a[ow] = at as u32;
        }
    }
}

/// Gradient of max pooling: each output's gradient goes to its winning input (`arg`, as
/// [`max_pool2d_forward`] returns it).
pub fn max_pool2d_backward(dy: &[f32], arg: &[u32], g: &PoolGeometry) -> Result<Vec<f32>> {
    let (il, ol) = (g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]);
    check_len("max_pool2d_backward", "the output gradient", dy.len(), g.out_elems())?;
    check_len("max_pool2d_backward", "the winners", arg.len(), g.out_elems())?;
    if let Some(bad) = arg.iter().find(|&&a| a as usize >= il) {
        return Err(param_err("max_pool2d_backward", format!("winner {bad} lies outside a {il}-element plane")));
    }
    let mut dx = vec![0.0; g.planes * il];
    dx.par_chunks_mut(il).enumerate().for_each(|(i, dxp)| {
        for (d, &a) in dy[i * ol..(i + 1) * ol].iter().zip(&arg[i * ol..(i + 1) * ol]) {
            dxp[a as usize] += d;
        }
    });
    Ok(dx)
}

fn avg_divisor(g: &PoolGeometry, h: (usize, usize), w: (usize, usize)) -> f32 {
    if g.p.count_include_pad {
        (g.p.kernel[0] * g.p.kernel[1]) as f32
    } else {
        ((h.1 - h.0) * (w.1 - w.0)).max(1) as f32
    }
}

/// Average pooling.
pub fn avg_pool2d_forward(x: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
    check_len("avg_pool2d", "the input", x.len(), g.in_elems())?;
    let (il, ol) = (g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]);
    let mut y = vec![0.0; g.planes * ol];
    y.par_chunks_mut(ol).enumerate().for_each(|(i, yp)| {
        let xp = &x[i * il..(i + 1) * il];
        for oh in 0..g.out_hw[0] {
            let hr = window(oh, g.p.stride[0], g.p.padding.top, g.p.kernel[0], g.in_hw[0]);
            for ow in 0..g.out_hw[1] {
                let wr = window(ow, g.p.stride[1], g.p.padding.left, g.p.kernel[1], g.in_hw[1]);
                let s: f32 =
                    (hr.0..hr.1).map(|ih| xp[ih * g.in_hw[1] + wr.0..ih * g.in_hw[1] + wr.1].iter().sum::<f32>()).sum();
                yp[oh * g.out_hw[1] + ow] = s / avg_divisor(g, hr, wr);
            }
        }
    });
    Ok(y)
}

/// Gradient of average pooling.
pub fn avg_pool2d_backward(dy: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
    check_len("avg_pool2d_backward", "the output gradient", dy.len(), g.out_elems())?;
    let (il, ol) = (g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]);
    let mut dx = vec![0.0; g.planes * il];
    dx.par_chunks_mut(il).enumerate().for_each(|(i, dxp)| {
        let dyp = &dy[i * ol..(i + 1) * ol];
        for oh in 0..g.out_hw[0] {
            let hr = window(oh, g.p.stride[0], g.p.padding.top, g.p.kernel[0], g.in_hw[0]);
            for ow in 0..g.out_hw[1] {
                let wr = window(ow, g.p.stride[1], g.p.padding.left, g.p.kernel[1], g.in_hw[1]);
                let d = dyp[oh * g.out_hw[1] + ow] / avg_divisor(g, hr, wr);
                for ih in hr.0..hr.1 {
                    dxp[ih * g.in_hw[1] + wr.0..ih * g.in_hw[1] + wr.1].iter_mut().for_each(|v| *v += d);
                }
            }
        }
    });
    Ok(dx)
}

/// Loop references with per-tap bounds checks, for tests.
pub mod naive {
    use super::{check_len, PoolGeometry};
    use crate::error::Result;

    fn for_windows(g: &PoolGeometry, mut f: impl FnMut(usize, &[usize], usize)) {
        let (il, ol) = (g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]);
        for pl in 0..g.planes {
            for oh in 0..g.out_hw[0] {
                for ow in 0..g.out_hw[1] {
                    let mut taps = Vec::new();
                    for kh in 0..g.p.kernel[0] {
                        for kw in 0..g.p.kernel[1] {
                            let ih = (oh * g.p.stride[0] + kh) as isize - g.p.padding.top as isize;
                            let iw = (ow * g.p.stride[1] + kw) as isize - g.p.padding.left as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < g.in_hw[0] && (iw as usize) < g.in_hw[1] {
                                taps.push(pl * il + ih as usize * g.in_hw[1] + iw as usize);
                            }
                        }
                    }
                    f(pl * ol + oh * g.out_hw[1] + ow, &taps, g.p.kernel[0] * g.p.kernel[1]);
                }
            }
        }
    }

    /// Reference max pooling.
    pub fn max_pool2d(x: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
        check_len("naive max_pool2d", "the input", x.len(), g.in_elems())?;
        let mut y = vec![0.0; g.planes * g.out_hw[0] * g.out_hw[1]];
        for_windows(g, |o, taps, _| y[o] = taps.iter().map(|&i| x[i]).fold(f32::NEG_INFINITY, f32::max));
        Ok(y)
    }

    /// Reference average pooling.
    pub fn avg_pool2d(x: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
        check_len("naive avg_pool2d", "the input", x.len(), g.in_elems())?;
        let mut y = vec![0.0; g.planes * g.out_hw[0] * g.out_hw[1]];
        for_windows(g, |o, taps, full| {
            let div = if g.p.count_include_pad { full } else { taps.len().max(1) };
            y[o] = taps.iter().map(|&i| x[i]).sum::<f32>() / div as f32;
        });
        Ok(y)
    }

    /// Reference max-pool gradient (ties: the first maximum in row-major window order).
    pub fn max_pool2d_backward(x: &[f32], dy: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
        check_len("naive max_pool2d_backward", "the input", x.len(), g.in_elems())?;
        check_len("naive max_pool2d_backward", "the output gradient", dy.len(), g.out_elems())?;
        let mut dx = vec![0.0; g.planes * g.in_hw[0] * g.in_hw[1]];
        for_windows(g, |o, taps, _| {
            // A window wholly in the padding has no tap and passes no gradient.
            let Some(&first) = taps.first() else { return };
            let mut best = first;
            for &i in taps {
                if x[i] > x[best] {
                    best = i;
                }
            }
            dx[best] += dy[o];
        });
        Ok(dx)
    }

    /// Reference average-pool gradient.
    pub fn avg_pool2d_backward(dy: &[f32], g: &PoolGeometry) -> Result<Vec<f32>> {
        check_len("naive avg_pool2d_backward", "the output gradient", dy.len(), g.out_elems())?;
        let mut dx = vec![0.0; g.planes * g.in_hw[0] * g.in_hw[1]];
        for_windows(g, |o, taps, full| {
            let div = if g.p.count_include_pad { full } else { taps.len().max(1) };
            for &i in taps {
                dx[i] += dy[o] / div as f32;
            }
        });
        Ok(dx)
    }
}
