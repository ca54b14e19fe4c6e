//! Real 2-D FFTs over the last two axes, with numpy's `"ortho"` scaling (both directions
//! divide by `√(H·W)`, so the pair is unitary on the half spectrum's free values).
//!
//! A spectrum is stored as `[..., H, W/2 + 1, 2]`: the trailing axis holds (re, im). The
//! transforms are `realfft` (rows, real ↔ half complex) and `rustfft` (columns, complex),
//! planned per call — plans are cheap next to a transform of an image, and a plan cache
//! would be hidden state.
//!
//! The adjoints used by the tape follow from the real-linear maps:
//! `irfft2ᵀ(g) = D ⊙ rfft2(g)` and `rfft2ᵀ(G) = irfft2(D⁻¹ ⊙ G)`, where `D` is 2 on the
//! columns that stand for a conjugate pair (0 < k < W/2) and 1 on the DC and Nyquist
//! columns.

use rayon::prelude::*;
use realfft::num_complex::Complex32;
use realfft::RealFftPlanner;
use rustfft::FftPlanner;

/// Columns of the half spectrum of a width-`w` signal.
pub fn half_width(w: usize) -> usize {
    w / 2 + 1
}

/// Whether column `k` of a width-`w` half spectrum stands for a conjugate pair (counted
/// twice by the inverse), rather than the self-conjugate DC or Nyquist column.
pub(crate) fn is_pair_column(k: usize, w: usize) -> bool {
    k > 0 && !(w.is_multiple_of(2) && k == w / 2)
}

/// `rfft2` of `planes` real `h × w` planes (row-major, back to back): `planes × h × (w/2+1)`
/// complex values as (re, im) pairs.
pub fn rfft2(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let wc = half_width(w);
    let mut out = vec![0.0f32; planes * h * wc * 2];
    if planes == 0 || h == 0 || w == 0 {
        return out;
    }
    let rows = RealFftPlanner::<f32>::new().plan_fft_forward(w);
    let cols = FftPlanner::<f32>::new().plan_fft_forward(h);
    let scale = 1.0 / ((h * w) as f32).sqrt();
    out.par_chunks_mut(h * wc * 2).zip(x.par_chunks(h * w)).for_each(|(o, plane)| {
        let mut spec = vec![Complex32::new(0.0, 0.0); h * wc];
        let mut row_in = rows.make_input_vec();
        let mut row_scratch = rows.make_scratch_vec();
        for (r, s) in plane.chunks_exact(w).zip(spec.chunks_exact_mut(wc)) {
            row_in.copy_from_slice(r);
            rows.process_with_scratch(&mut row_in, s, &mut row_scratch).expect("sized by the plan");
        }
        columns(&spec, h, wc, &*cols, scale, o);
    });
    out
}

/// The inverse of [`rfft2`]: `planes × h × (w/2+1)` (re, im) pairs to real `h × w` planes.
/// As numpy does, the imaginary parts of the DC (and, for even `w`, Nyquist) column are
/// ignored after the column transform.
pub fn irfft2(z: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let wc = half_width(w);
    let mut out = vec![0.0f32; planes * h * w];
    if planes == 0 || h == 0 || w == 0 {
        return out;
    }
    let rows = RealFftPlanner::<f32>::new().plan_fft_inverse(w);
    let cols = FftPlanner::<f32>::new().plan_fft_inverse(h);
    let scale = 1.0 / ((h * w) as f32).sqrt();
    out.par_chunks_mut(h * w).zip(z.par_chunks(h * wc * 2)).for_each(|(o, zp)| {
        let spec: Vec<Complex32> = zp.chunks_exact(2).map(|p| Complex32::new(p[0], p[1])).collect();
        let mut mixed = vec![0.0f32; h * wc * 2];
        columns(&spec, h, wc, &*cols, scale, &mut mixed);
        let mut row_in = rows.make_input_vec();
        let mut row_scratch = rows.make_scratch_vec();
        for (r, orow) in mixed.chunks_exact(wc * 2).zip(o.chunks_exact_mut(w)) {
            for (c, p) in row_in.iter_mut().zip(r.chunks_exact(2)) {
                *c = Complex32::new(p[0], p[1]);
            }
            // A real signal's DC and Nyquist bins are real: drop what cannot be represented.
            row_in[0].im = 0.0;
            if w.is_multiple_of(2) {
                row_in[wc - 1].im = 0.0;
            }
            rows.process_with_scratch(&mut row_in, orow, &mut row_scratch).expect("imaginary parts cleared");
        }
    });
    out
}

/// Transforms every column of an `h × wc` complex array with `plan`, scales, and writes
/// (re, im) pairs in row-major order.
fn columns(spec: &[Complex32], h: usize, wc: usize, plan: &dyn rustfft::Fft<f32>, scale: f32, out: &mut [f32]) {
    let mut col = vec![Complex32::new(0.0, 0.0); h];
    let mut scratch = vec![Complex32::new(0.0, 0.0); plan.get_inplace_scratch_len()];
    for k in 0..wc {
        for (r, c) in col.iter_mut().enumerate() {
            *c = spec[r * wc + k];
        }
        plan.process_with_scratch(&mut col, &mut scratch);
        for (r, c) in col.iter().enumerate() {
            let i = (r * wc + k) * 2;
            out[i] = c.re * scale;
            out[i + 1] = c.im * scale;
        }
    }
}

/// Multiplies each conjugate-pair column of a half spectrum by `factor` (the `D` of the
/// module docs, or its inverse).
pub(crate) fn scale_pair_columns(z: &mut [f32], w: usize, factor: f32) {
    let wc = half_width(w);
    for (i, pair) in z.chunks_exact_mut(2).enumerate() {
        if is_pair_column(i % wc, w) {
            pair[0] *= factor;
            pair[1] *= factor;
        }
    }
}
