//! Image regularizers as single ops: keras-vis's total variation and the Lp norm.
//!
//! Why fused: written with slices, differences, squares and powers, each regularizer
//! keeps 5–10 image-sized intermediates on the tape, and as many gradients in the
//! backward — at a batch of 20 images that was more memory than the model's graphs.
//! Here each is one pass forward (a scalar) and one pass backward (the input's
//! gradient), with sums in f64.

/// The crop `[:-1]` along every axis in `axes`, as runs along the last axis:
/// `f(offset, len)` for each run, `offset` in the standard-layout tensor of `shape`
/// (whose row-major `strides` are given).
fn crop_runs(shape: &[usize], strides: &[usize], axes: &[usize], mut f: impl FnMut(usize, usize)) {
    let Some((&last, outer)) = shape.split_last() else { return };
    let limit = |d: usize, n: usize| if axes.contains(&d) { n.saturating_sub(1) } else { n };
    let limits: Vec<usize> = outer.iter().enumerate().map(|(d, &n)| limit(d, n)).collect();
    let run = limit(outer.len(), last);
    if run == 0 || limits.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; outer.len()];
    loop {
        f(idx.iter().zip(strides).map(|(i, s)| i * s).sum(), run);
        // The odometer over the outer axes.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < limits[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Row-major strides of `shape`, and the step along each axis in `axes`, in elements.
fn strides_and_steps(shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let steps = axes.iter().map(|&a| strides[a]).collect();
    (strides, steps)
}

/// Squared forward differences at `o`: `Σ_a (x[o + stride_a] − x[o])²`.
#[inline(always)]
fn squared_step(x: &[f32], o: usize, steps: &[usize]) -> f32 {
    steps.iter().map(|&s| (x[o + s] - x[o]).powi(2)).sum()
}

/// `(v)^(β/2)` and its derivative `β/2 · v^(β/2 − 1)`. The derivative at `v = 0` with
/// `β < 2` (a flat neighbourhood, where the slope is unbounded) is taken as 0: a
/// subgradient of the minimum, instead of the `∞ · 0 = NaN` of the composed ops.
#[inline(always)]
fn tv_power(v: f32, beta: f32) -> (f32, f32) {
    if beta == 2.0 {
        return (v, 1.0);
    }
    let h = beta / 2.0;
    if v == 0.0 {
        return (0.0, 0.0);
    }
    let p = v.powf(h - 1.0);
    (p * v, h * p)
}

/// keras-vis's total variation: `Σ (Σ_{a∈axes} (x[i + e_a] − x[i])²)^(β/2)` over the
/// `[:-1]` crop of every axis in `axes` (the other axes whole).
pub(crate) fn total_variation(x: &[f32], shape: &[usize], axes: &[usize], beta: f32) -> f64 {
    let (strides, steps) = strides_and_steps(shape, axes);
    let mut total = 0.0f64;
    crop_runs(shape, &strides, axes, |o, len| {
        let run: f64 = (o..o + len).map(|i| tv_power(squared_step(x, i, &steps), beta).0 as f64).sum();
        total += run;
    });
    total
}

/// The gradient of [`total_variation`] times `g`, into `dx` (overwritten).
pub(crate) fn total_variation_backward(x: &[f32], shape: &[usize], axes: &[usize], beta: f32, g: f32, dx: &mut [f32]) {
    dx.fill(0.0);
    let (strides, steps) = strides_and_steps(shape, axes);
    crop_runs(shape, &strides, axes, |o, len| {
        for i in o..o + len {
            let c = 2.0 * g * tv_power(squared_step(x, i, &steps), beta).1;
            if c == 0.0 {
                continue;
            }
            for &s in &steps {
                let d = c * (x[i + s] - x[i]);
                dx[i + s] += d;
                dx[i] -= d;
            }
        }
    });
}

/// `|v|^p` in f64 (integer powers by multiplication: keras-vis's p = 6 is the common one).
#[inline(always)]
fn abs_pow(v: f32, p: f64) -> f64 {
    let a = (v as f64).abs();
    if p.fract() == 0.0 && (0.0..=32.0).contains(&p) {
        powi_by_squaring(a, p as u32)
    } else {
        a.powf(p)
    }
}

/// `a^n` by repeated squaring, multiplied in the order of `__powidf2` (compiler-rt's and
/// libgcc's), which `f64::powi` calls for an exponent known only at run time: the same
/// bits, but inline, so a loop over it vectorizes (the call was 1.1 % of a keras-vis
/// step).
#[inline(always)]
fn powi_by_squaring(mut a: f64, mut n: u32) -> f64 {
    let mut y = if n % 2 == 1 { a } else { 1.0 };
    n >>= 1;
    while n > 0 {
        a *= a;
        if n % 2 == 1 {
            y *= a;
        }
        n >>= 1;
    }
    y
}

/// `Σ|x|^p`, the Lp norm's inner sum, in f64.
pub(crate) fn lp_sum(x: &[f32], p: f32) -> f64 {
    x.iter().map(|&v| abs_pow(v, p as f64)).sum()
}

/// The gradient of `(Σ|x|^p)^(1/p)` times `g`, into `dx` (overwritten), given the inner
/// sum `s`: `g · s^(1/p − 1) · |x|^(p−1) · sign(x)`. Zero where the norm is zero (its
/// minimum, where the composed ops gave NaN).
pub(crate) fn lp_norm_backward(x: &[f32], p: f32, s: f64, g: f32, dx: &mut [f32]) {
    if s == 0.0 || !s.is_finite() {
        dx.fill(0.0);
        return;
    }
    let p = p as f64;
    let scale = g as f64 * s.powf(1.0 / p - 1.0);
    for (d, &v) in dx.iter_mut().zip(x) {
        let sign = if v > 0.0 {
            1.0
        } else if v < 0.0 {
            -1.0
        } else {
            0.0
        };
        let slope = if p == 1.0 { 1.0 } else { abs_pow(v, p - 1.0) };
        *d = (scale * slope * sign) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Powers by squaring give `f64::powi`'s bits (its runtime-exponent call), for every
    /// exponent an integer p up to 32 takes and values across the range.
    #[test]
    fn powers_by_squaring_keep_powis_bits() {
        let values = [0.0, 1.0, 0.5, 1.5, 3.0e-5, 7.25, 255.0, 1.0e10, 1.0e-200, f64::INFINITY, f64::NAN];
        let more = (0..200).map(|i| (i as f64 * 0.7391).sin().abs() * 10f64.powi(i % 9 - 4));
        for n in 0..=32u32 {
            // A runtime exponent, as abs_pow's: the call the compiler makes.
            let e = std::hint::black_box(n as i32);
            for a in values.into_iter().chain(more.clone()) {
                let (got, want) = (powi_by_squaring(a, n), a.powi(e));
                assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{a}^{n}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn crop_runs_cover_the_crop_once() {
        // [2, 3, 4] cropped along axes 1 and 2: 2 · 2 runs of 3.
        let mut seen = Vec::new();
        crop_runs(&[2, 3, 4], &[12, 4, 1], &[1, 2], |o, len| seen.push((o, len)));
        assert_eq!(seen, vec![(0, 3), (4, 3), (12, 3), (16, 3)]);
        // Along the first axis only: the last axis whole.
        let mut seen = Vec::new();
        crop_runs(&[2, 2], &[2, 1], &[0], |o, len| seen.push((o, len)));
        assert_eq!(seen, vec![(0, 2)]);
        // An axis of size 1 leaves nothing.
        crop_runs(&[3, 1], &[1, 1], &[1], |_, _| panic!("empty crop"));
    }

    #[test]
    fn flat_images_have_zero_slope_not_nan() {
        let x = [1.0f32; 9];
        let mut dx = [7.0f32; 9];
        total_variation_backward(&x, &[1, 3, 3], &[1, 2], 1.0, 1.0, &mut dx);
        assert!(dx.iter().all(|&d| d == 0.0), "{dx:?}");
        lp_norm_backward(&[0.0; 4], 6.0, 0.0, 1.0, &mut dx[..4]);
        assert!(dx[..4].iter().all(|&d| d == 0.0));
    }
}
