//! Products with a few rows on the left: a small batch of vectors through a dense layer.
//!
//! With `m` ≤ [`SKINNY_ROWS`], every weight is used `m` times at most; packing the weight
//! matrix for a GEMM (what matrixmultiply does on each call) costs as much as the product.
//! These loops read each weight once, in memory order, and split the weight's rows (or
//! columns) over the pool.

use rayon::prelude::*;

/// Left operands with at most this many rows take the skinny path.
pub const SKINNY_ROWS: usize = 8;

/// Weight rows (or columns) per parallel task.
const TASK: usize = 64;

/// Sixteen-lane dot product (lanes summed once at the end, so it vectorizes).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y = a · bᵀ` for `a: m × k`, `b: n × k`, `y: m × n` (a dense layer, `b` its weight).
pub fn matmul_nt(a: &[f32], b: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() >= m * k && b.len() >= n * k && y.len() >= m * n, "matmul_nt: slices too short");
    let mut yt = vec![0.0f32; n * m];
    // One task per block of weight rows: yt[o][i] = b_o · a_i.
    yt.par_chunks_mut(TASK * m.max(1)).enumerate().for_each(|(t, block)| {
        for (r, out) in block.chunks_mut(m.max(1)).enumerate() {
            let o = t * TASK + r;
            let w = &b[o * k..(o + 1) * k];
            for (i, v) in out.iter_mut().enumerate() {
                *v = dot(&a[i * k..(i + 1) * k], w);
            }
        }
    });
    for i in 0..m {
        for o in 0..n {
            y[i * n + o] = yt[o * m + i];
        }
    }
}

/// `y = g · b` for `g: m × n`, `b: n × k`, `y: m × k` (a dense layer's input gradient).
pub fn matmul_nn(g: &[f32], b: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(g.len() >= m * n && b.len() >= n * k && y.len() >= m * k, "matmul_nn: slices too short");
    // One task per block of columns: y[i][cols] = Σ_o g[i][o] · b[o][cols].
    let cols = (TASK * 4).min(k.max(1));
    let mut yt: Vec<Vec<f32>> = (0..k.div_ceil(cols))
        .into_par_iter()
        .map(|t| {
            let (c0, c1) = (t * cols, ((t + 1) * cols).min(k));
            let mut acc = vec![0.0f32; m * (c1 - c0)];
            for o in 0..n {
                let w = &b[o * k + c0..o * k + c1];
                for (i, row) in acc.chunks_mut(c1 - c0).enumerate() {
                    let gi = g[i * n + o];
                    if gi != 0.0 {
                        row.iter_mut().zip(w).for_each(|(r, &x)| *r += gi * x);
                    }
                }
            }
            acc
        })
        .collect();
    for (t, acc) in yt.iter_mut().enumerate() {
        let (c0, width) = (t * cols, acc.len() / m.max(1));
        for i in 0..m {
            y[i * k + c0..i * k + c0 + width].copy_from_slice(&acc[i * width..(i + 1) * width]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, b_rows_are_n: bool) -> Vec<f32> {
        // a: m × k; b: n × k (nt) or k × n (nn); y: m × n.
        let mut y = vec![0.0; m * n];
        for i in 0..m {
            for o in 0..n {
                y[i * n + o] =
                    (0..k).map(|p| a[i * k + p] * if b_rows_are_n { b[o * k + p] } else { b[p * n + o] }).sum();
            }
        }
        y
    }

    #[test]
    fn both_products_match_the_reference() {
        for &(m, k, n) in &[(1, 1, 1), (1, 1280, 1000), (3, 37, 129), (8, 300, 70), (2, 16, 5)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
            let mut y = vec![f32::NAN; m * n];
            matmul_nt(&a, &b, &mut y, m, k, n);
            for (x, r) in y.iter().zip(naive(&a, &b, m, k, n, true)) {
                assert!((x - r).abs() <= 1e-3 * (1.0 + r.abs()), "nt {m}x{k}x{n}: {x} vs {r}");
            }
            // nn: a (m × k here plays g: m × n' with n' = k) times b (k × n).
            let mut y = vec![f32::NAN; m * n];
            matmul_nn(&a, &b, &mut y, m, k, n);
            for (x, r) in y.iter().zip(naive(&a, &b, m, k, n, false)) {
                assert!((x - r).abs() <= 1e-3 * (1.0 + r.abs()), "nn {m}x{k}x{n}: {x} vs {r}");
            }
        }
    }
}
