//! Helpers shared by the integration tests: seeded values and closeness checks.
#![allow(dead_code)]

use actmax_tensor::Tensor;

/// Deterministic values in [-1, 1) from a seed (SplitMix64).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A tensor of seeded values.
pub fn tensor(seed: u64, shape: &[usize]) -> Tensor {
    Tensor::from_shape_vec(shape.to_vec(), values(seed, shape.iter().product())).unwrap()
}

/// Distinct values (spacing `step`) in a seeded order: no ties, no near-ties.
pub fn distinct(seed: u64, n: usize, step: f32) -> Vec<f32> {
    let keys = values(seed, n);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
    let mut out = vec![0.0; n];
    for (rank, &i) in idx.iter().enumerate() {
        out[i] = (rank as f32 - n as f32 / 2.0) * step;
    }
    out
}

/// Asserts `got ≈ want` element-wise: `|g − w| ≤ atol + rtol·max|want|`.
pub fn assert_close(got: &[f32], want: &[f32], rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= rtol * scale, "{what}: element {i}: got {g}, want {w} (scale {scale})");
    }
}
