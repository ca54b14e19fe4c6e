//! Affine warps with bilinear sampling: the differentiable rotate/scale/translate behind
//! lucid-style robustness transforms.

use rayon::prelude::*;

use crate::tensor::Tensor;

/// What a sample outside the image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarpBorder {
    /// Zero.
    Zeros,
    /// The mirror image (numpy "reflect": the edge is not repeated).
    Reflect,
}

/// An affine map from output pixel `(row, col)` to input position: with `(r, c)` measured
/// from the output centre, the source is `centre_in + [[a, b], [d, e]]·(r, c) + (ty, tx)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    /// Row of the 2×2 matrix for the source row: `(a, b)`.
    pub row: [f32; 2],
    /// Row of the 2×2 matrix for the source column: `(d, e)`.
    pub col: [f32; 2],
    /// Translation `(ty, tx)` in input pixels.
    pub shift: [f32; 2],
}

impl Affine {
    /// The identity map.
    pub fn identity() -> Self {
        Self { row: [1.0, 0.0], col: [0.0, 1.0], shift: [0.0, 0.0] }
    }
    /// Rotation of the content by `degrees` (counter-clockwise) and scaling by `scale`
    /// about the centre: each output pixel samples the inverse map.
    pub fn rotate_scale(degrees: f32, scale: f32) -> Self {
        let (s, c) = degrees.to_radians().sin_cos();
        let k = 1.0 / scale;
        Self { row: [c * k, s * k], col: [-s * k, c * k], shift: [0.0, 0.0] }
    }
}

/// `v.floor()` without the call into libm that the baseline x86-64 target makes of it
/// (rounding instructions came with SSE4.1): a sample's taps are computed per output
/// pixel, and the call was a fifth of the warp. Equal to `floor` on every finite value
/// (from 2²³ on, every f32 is an integer); NaN gives 0, whose tap weights are NaN anyway.
#[inline(always)]
fn floor(v: f32) -> f32 {
    if v.abs() < 8_388_608.0 {
        let t = v as i32 as f32;
        if t > v {
            t - 1.0
        } else {
            t
        }
    } else if v.is_nan() {
        0.0
    } else {
        v
    }
}

fn reflect(i: isize, n: usize) -> Option<usize> {
    if n == 1 {
        return Some(0);
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    Some(if m < n as isize { m } else { period - m } as usize)
}

/// Where an output pixel samples its input: the map with both centres folded in.
struct Sampler {
    in_hw: [usize; 2],
    map: Affine,
    /// Input centre minus the map applied to the output centre.
    origin: [f32; 2],
    border: WarpBorder,
}

impl Sampler {
    fn new(in_hw: [usize; 2], out_hw: [usize; 2], map: &Affine, border: WarpBorder) -> Self {
        let (ci, cj) = ((in_hw[0] as f32 - 1.0) / 2.0, (in_hw[1] as f32 - 1.0) / 2.0);
        let (co, cp) = ((out_hw[0] as f32 - 1.0) / 2.0, (out_hw[1] as f32 - 1.0) / 2.0);
        let origin = [
            ci + map.shift[0] - map.row[0] * co - map.row[1] * cp,
            cj + map.shift[1] - map.col[0] * co - map.col[1] * cp,
        ];
        Self { in_hw, map: *map, origin, border }
    }

    /// The (up to) four input taps of output pixel `(i, j)` as (flat index, weight); taps
    /// outside a zero border get weight 0.
    #[inline]
    fn taps(&self, i: usize, j: usize) -> [(usize, f32); 4] {
        let [h, w] = self.in_hw;
        let (r, c) = (i as f32, j as f32);
        let sy = self.origin[0] + self.map.row[0] * r + self.map.row[1] * c;
        let sx = self.origin[1] + self.map.col[0] * r + self.map.col[1] * c;
        let (y0, x0) = (floor(sy), floor(sx));
        let (fy, fx) = (sy - y0, sx - x0);
        let mut t = [(0usize, 0.0f32); 4];
        for (k, (dy, dx, wgt)) in
            [(0, 0, (1.0 - fy) * (1.0 - fx)), (0, 1, (1.0 - fy) * fx), (1, 0, fy * (1.0 - fx)), (1, 1, fy * fx)]
                .into_iter()
                .enumerate()
        {
            let (yy, xx) = (y0 as isize + dy, x0 as isize + dx);
            let idx = match self.border {
                WarpBorder::Reflect => reflect(yy, h).zip(reflect(xx, w)),
                WarpBorder::Zeros => ((0..h as isize).contains(&yy) && (0..w as isize).contains(&xx))
                    .then_some((yy as usize, xx as usize)),
            };
            t[k] = match idx {
                Some((y, x)) if wgt.is_finite() => (y * w + x, wgt),
                _ => (0, 0.0),
            };
        }
        t
    }
}

/// Every output pixel's four taps for every map, computed once per warp: the forward
/// samples through them and the backward spreads its gradient through the same ones
/// (computing them is most of a warp's cost). `[(flat input index, weight); 4]` per
/// output pixel, map after map.
#[derive(Debug)]
pub(crate) struct WarpTaps {
    taps: Vec<[(u32, f32); 4]>,
    /// Output pixels per map.
    per_map: usize,
}

impl WarpTaps {
    /// The taps of `maps` from `in_hw` images into `out_hw` ones.
    pub(crate) fn new(in_hw: [usize; 2], maps: &[Affine], out_hw: [usize; 2], border: WarpBorder) -> Self {
        let ol = out_hw[0] * out_hw[1];
        let n = maps.len() * ol;
        if n == 0 {
            return Self { taps: Vec::new(), per_map: ol };
        }
        // Written once each, straight into new memory: zero-filling 4 views' taps first
        // (6 MB at 224²) was a third of building them.
        let mut taps = Vec::with_capacity(n);
        taps.spare_capacity_mut()[..n].par_chunks_mut(ol).zip(maps.par_iter()).for_each(|(t, map)| {
            let sampler = Sampler::new(in_hw, out_hw, map, border);
            for (i, row) in t.chunks_mut(out_hw[1]).enumerate() {
                for (j, t) in row.iter_mut().enumerate() {
                    // Input indices fit u32: `Tape::affine_warp` refuses larger images.
                    t.write(sampler.taps(i, j).map(|(i, w)| (i as u32, w)));
                }
            }
        });
        // Safety: the `maps.len()` chunks of `ol` cover the first `n` elements, and every
        // element of every chunk was written above.
        unsafe { taps.set_len(n) };
        Self { taps, per_map: ol }
    }

    /// How many maps (output images) the taps serve.
    fn maps(&self) -> usize {
        self.taps.len() / self.per_map
    }

    /// The taps of map `v`'s output pixels.
    fn of(&self, v: usize) -> &[[(u32, f32); 4]] {
        &self.taps[v * self.per_map..][..self.per_map]
    }
}

/// Warps the images of `x` (`[N, C, H, W]`): output image `i` is image `i mod N` through
/// map `i` of `taps` (so `k·N` maps make `k` views of each image, view-major). Output
/// images in parallel (each writes its own planes); each pixel's taps serve all channels.
pub(crate) fn warp_forward(x: &Tensor, taps: &WarpTaps) -> Vec<f32> {
    let s = x.shape();
    let (n, c, il, ol) = (s[0], s[1], s[2] * s[3], taps.per_map);
    let xs = x.as_slice().expect("standard layout");
    let mut y = vec![0.0; taps.maps() * c * ol];
    y.par_chunks_mut(c * ol).enumerate().for_each(|(i, yn)| {
        let xn = &xs[(i % n) * c * il..][..c * il];
        for (p, t) in taps.of(i).iter().enumerate() {
            for ch in 0..c {
                let plane = &xn[ch * il..][..il];
                yn[ch * ol + p] = t.iter().map(|&(i, w)| w * plane[i as usize]).sum();
            }
        }
    });
    y
}

/// The adjoint: each output gradient spreads back over its four taps. Source images in
/// parallel, each summing its views in order, so the result does not depend on threads.
pub(crate) fn warp_backward(g: &[f32], in_shape: &[usize], taps: &WarpTaps) -> Vec<f32> {
    let (n, c, il, ol) = (in_shape[0], in_shape[1], in_shape[2] * in_shape[3], taps.per_map);
    let mut dx = vec![0.0; n * c * il];
    dx.par_chunks_mut(c * il).enumerate().for_each(|(src, dn)| {
        for v in (src..taps.maps()).step_by(n) {
            let gn = &g[v * c * ol..][..c * ol];
            for (p, t) in taps.of(v).iter().enumerate() {
                for ch in 0..c {
                    let gv = gn[ch * ol + p];
                    let dp = &mut dn[ch * il..][..il];
                    for &(i, w) in t {
                        dp[i as usize] += w * gv;
                    }
                }
            }
        }
    });
    dx
}

#[cfg(test)]
mod floor_tests {
    #[test]
    fn floor_equals_f32_floor() {
        let mut v = -70_000.0f32;
        while v < 70_000.0 {
            assert_eq!(super::floor(v), v.floor(), "{v}");
            v += 0.37;
        }
        for v in
            [0.0, -0.0, 0.5, -0.5, -1.0, 1.0, 8_388_607.5, -8_388_607.5, 1e9, -1e9, f32::MAX, f32::MIN, f32::INFINITY]
        {
            assert_eq!(super::floor(v), v.floor(), "{v}");
        }
        assert_eq!(super::floor(f32::NAN), 0.0);
    }
}
