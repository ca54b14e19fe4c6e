//! GEMMs: a front door to `matrixmultiply::sgemm` with a rayon-parallel split (weight
//! gradients, matmul), and [`direct`], the packing-free conv GEMM with a fused store.
//!
//! matrixmultiply's own threading stays off: every parallel loop in actmax runs on rayon's
//! one pool, so nested parallelism composes instead of oversubscribing the 2 cores.

use rayon::prelude::*;

pub mod direct;
pub mod skinny;
pub(crate) mod wide;

/// A raw pointer that may cross threads. Users promise the regions written through it by
/// different tasks are disjoint (each use says why).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer. A method, so closures capture the whole `SendPtr` (which is `Send`)
    /// rather than its raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `f(i)` for every `i < n`: spread over rayon's pool when `parallel`, else in
/// order on this thread (a kernel whose tasks split their own work inside).
pub(crate) fn for_each_index(n: usize, parallel: bool, f: impl Fn(usize) + Send + Sync) {
    if parallel && n > 1 {
        (0..n).into_par_iter().for_each(f);
    } else {
        (0..n).for_each(f);
    }
}

/// `C = A·B` for row-major `a` (`m × k`), `b` (`k × n`) and `c` (`m × n`, overwritten),
/// split over rayon's pool when `parallel`: the checked door to the crate's GEMMs (slices
/// of the wrong length are an error, not undefined behaviour).
pub fn matmul(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    parallel: bool,
) -> Result<(), crate::TensorError> {
    check_len("matmul", "A", a.len(), m, k)?;
    check_len("matmul", "B", b.len(), k, n)?;
    check_len("matmul", "C", c.len(), m, n)?;
    let (a, b) = (Mat::row_major(a, m, k), Mat::row_major(b, k, n));
    // Safety: the three lengths were checked above; `c` is a unique borrow.
    unsafe {
        if parallel {
            sgemm_par(m, k, n, 1.0, a, b, 0.0, c.as_mut_ptr(), n);
        } else {
            sgemm(m, k, n, 1.0, a, b, 0.0, c.as_mut_ptr(), n);
        }
    }
    Ok(())
}

/// A typed error unless a slice holds exactly `rows × cols` floats.
pub(crate) fn check_len(
    op: &'static str,
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
) -> Result<(), crate::TensorError> {
    match rows.checked_mul(cols) {
        Some(n) if n == len => Ok(()),
        _ => Err(crate::TensorError::Param {
            op,
            msg: format!("{what} holds {len} floats, a {rows} × {cols} matrix needs {}", rows.saturating_mul(cols)),
        }),
    }
}

/// A strided matrix operand: element `(i, j)` is `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat {
    /// Base pointer.
    pub ptr: *const f32,
    /// Row stride in elements.
    pub rs: isize,
    /// Column stride in elements.
    pub cs: isize,
}
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// A row-major `rows × cols` view of a slice (checked).
    pub fn row_major(data: &[f32], rows: usize, cols: usize) -> Self {
        assert!(rows.checked_mul(cols).is_some_and(|n| data.len() >= n), "Mat::row_major: slice too short");
        Self { ptr: data.as_ptr(), rs: cols as isize, cs: 1 }
    }
    /// The transpose of this view (no copy).
    pub fn t(self) -> Self {
        Self { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
    /// The view offset by `rows` rows and `cols` columns.
    ///
    /// # Safety
    /// The offset must stay inside the underlying allocation.
    pub(crate) unsafe fn offset(self, rows: usize, cols: usize) -> Self {
        Self { ptr: self.ptr.offset(rows as isize * self.rs + cols as isize * self.cs), ..self }
    }
}

/// `C = alpha·A·B + beta·C` for an `m × k` A, `k × n` B and `m × n` C (C row stride `rsc`,
/// column stride 1).
///
/// # Safety
/// All three views must be valid for the given sizes; C must not alias A or B.
#[allow(clippy::too_many_arguments)] // BLAS-shaped on purpose
pub(crate) unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Mat,
    b: Mat,
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    matrixmultiply::sgemm(m, k, n, alpha, a.ptr, a.rs, a.cs, b.ptr, b.rs, b.cs, beta, c, rsc as isize, 1);
}

/// The number of column blocks a parallel GEMM cuts `n` into: about two per thread, and
/// none narrower than 256 columns (narrower blocks re-pack A too often).
fn col_blocks(n: usize, threads: usize) -> usize {
    (2 * threads).min(n.div_ceil(256)).max(1)
}

/// [`sgemm`] split over rows (when `m` is large) or columns across rayon's pool.
///
/// # Safety
/// As [`sgemm`].
#[allow(clippy::too_many_arguments)] // BLAS-shaped on purpose
pub(crate) unsafe fn sgemm_par(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: Mat,
    b: Mat,
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    let threads = rayon::current_num_threads();
    let cp = SendPtr(c);
    if threads <= 1 || (m * n * k) < 64 * 64 * 64 {
        return sgemm(m, k, n, alpha, a, b, beta, c, rsc);
    }
    if m >= 64 * threads && n < 512 * threads {
        // Few columns: split rows, in multiples of 16 (the widest microkernel).
        let chunk = (m.div_ceil(threads)).div_ceil(16) * 16;
        (0..m.div_ceil(chunk)).into_par_iter().for_each(|i| {
            let r0 = i * chunk;
            let rows = chunk.min(m - r0);
            // Safety: each task owns rows [r0, r0 + rows) of C.
            sgemm(rows, k, n, alpha, a.offset(r0, 0), b, beta, cp.get().add(r0 * rsc), rsc);
        });
    } else {
        let blocks = col_blocks(n, threads);
        let chunk = n.div_ceil(blocks).div_ceil(16) * 16;
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|i| {
            let c0 = i * chunk;
            let cols = chunk.min(n - c0);
            // Safety: each task owns columns [c0, c0 + cols) of C.
            sgemm(m, k, cols, alpha, a, b.offset(0, c0), beta, cp.get().add(c0), rsc);
        });
    }
}

/// Safe row-major `C = A·B` (`A: m×k`, `B: k×n`) on rayon's pool; for benches and tests.
pub fn matmul_row_major(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    let fits = |len: usize, r: usize, c: usize| r.checked_mul(c).is_some_and(|need| len >= need);
    assert!(fits(a.len(), m, k) && fits(b.len(), k, n) && fits(c.len(), m, n), "matmul_row_major: slices too short");
    // Safety: the asserts above bound every access.
    unsafe { sgemm_par(m, k, n, 1.0, Mat::row_major(a, m, k), Mat::row_major(b, k, n), 0.0, c.as_mut_ptr(), n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn parallel_split_matches_naive() {
        for &(m, k, n) in &[(3, 5, 7), (130, 70, 90), (200, 33, 1500), (20, 300, 2000)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
            let mut c = vec![0.0; m * n];
            matmul_row_major(&a, &b, &mut c, m, k, n);
            let r = naive(&a, &b, m, k, n);
            for (x, y) in c.iter().zip(&r) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{k}x{n}: {x} vs {y}");
            }
        }
    }
}
