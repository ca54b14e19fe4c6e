//! The direct GEMM for few columns: C computed as tiles of `ROWS` rows × `COLS` columns
//! with the vector along M (the output channels) instead of along N (the pixels).
//!
//! Why: EfficientNet's 7×7 and 14×14 layers hold three quarters of its multiply-adds,
//! and their C has 49 or 196 columns. The row kernel's 32-wide vectors cover 49 columns
//! in 64 lanes and 196 in 224: a quarter and an eighth of its work is padding. Their
//! channel counts (192, 320, 480, 672, 1152, 1280) are multiples of 32, and 49 and 196
//! of 7, so tiles of 32 channels × 7 pixels have no padding at all. The price is the
//! store: a tile's registers hold columns of C, which go out through a small transpose
//! on the stack — at K ≥ 80 (every such layer) a few percent of the tile's time.
//!
//! AVX-512 only (32 registers: 14 accumulators, two rows of A, a broadcast); other
//! instruction sets keep the row kernel ([`pays`]).

use super::direct::{Epilogue, Isa, OutMat, PackedA};
use super::{for_each_index, SendPtr};

/// Rows of C per tile (two 16-lane vectors): A is packed in panels this tall.
pub(super) const ROWS: usize = 32;

/// Columns of C per tile.
const COLS: usize = 7;

/// The widest C this kernel takes: past it the row kernel's padding is under 10 %.
pub(super) const MAX_COLS: usize = 256;

/// Whether an `m × n` C runs on the wide kernel here.
pub(super) fn pays(isa: Isa, m: usize, n: usize) -> bool {
    isa == Isa::Avx512 && n <= MAX_COLS && m >= ROWS && !n.is_multiple_of(32)
}

/// Multiply-adds below which a GEMM stays on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 19;

/// `C = A·B` then the epilogue, for `a` packed wide.
///
/// # Safety
/// As [`super::direct::sgemm_direct`].
pub(super) unsafe fn sgemm(a: &PackedA, n: usize, b: *const f32, ldb: usize, c: OutMat, ep: &Epilogue, parallel: bool) {
    debug_assert!(a.wide && a.isa == Isa::Avx512);
    let (m, k) = (a.m, a.k);
    let (panels, tiles) = (m.div_ceil(ROWS), n.div_ceil(COLS));
    let threads = if parallel && m * n * k >= PARALLEL_MIN_FLOPS { rayon::current_num_threads() } else { 1 };
    // The (panel, tile) pairs in order, cut into one contiguous run per thread: a run
    // reads its panels of A once (consecutive tiles share one), and the split is even to
    // a tile — a split by whole panels would leave a thread idle on 6 panels (M = 192).
    let units = panels * tiles;
    let per_task = units.div_ceil(threads);
    let (bp, cp) = (SendPtr(b as *mut f32), SendPtr(c.ptr));
    let task = |t: usize| {
        for u in t * per_task..((t + 1) * per_task).min(units) {
            let (p, j0) = (u / tiles, (u % tiles) * COLS);
            let i0 = p * ROWS;
            let panel = Panel {
                k,
                a: a.data.as_ptr().add(p * k * ROWS),
                b: bp.get(),
                ldb,
                c: cp.get().add(i0 * c.ld),
                ldc: c.ld,
                rows: ROWS.min(m - i0),
                bias: ep.bias.map_or(std::ptr::null(), |b| b.as_ptr().add(i0)),
                clamp: ep.clamp,
            };
            // Safety: each unit is its own rows × columns of C; the caller checked the ISA.
            #[cfg(target_arch = "x86_64")]
            x86::tile_at(&panel, j0, COLS.min(n - j0));
        }
    };
    for_each_index(units.div_ceil(per_task), threads > 1, task);
}

/// One panel of A and where its rows of C go: `rows` (≤ [`ROWS`]) of them.
struct Panel {
    k: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    /// `rows` biases, or null.
    bias: *const f32,
    clamp: super::direct::Clamp,
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Panel, COLS, ROWS};

    /// The tile of `width` (≤ [`COLS`]) columns from `j0`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile_at(p: &Panel, j0: usize, width: usize) {
        match width {
            1 => tile::<1>(p, j0),
            2 => tile::<2>(p, j0),
            3 => tile::<3>(p, j0),
            4 => tile::<4>(p, j0),
            5 => tile::<5>(p, j0),
            6 => tile::<6>(p, j0),
            _ => tile::<COLS>(p, j0),
        }
    }

    /// `ROWS × J` of C from column `j0`: per k, two rows of A's panel times `J`
    /// broadcast elements of B's row k.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const J: usize>(p: &Panel, j0: usize) {
        let mut acc = [[_mm512_setzero_ps(); 2]; J];
        let (mut a, mut b) = (p.a, p.b.add(j0));
        for _ in 0..p.k {
            let (a0, a1) = (_mm512_loadu_ps(a), _mm512_loadu_ps(a.add(16)));
            for acc in acc.iter_mut() {
                let bj = _mm512_set1_ps(*b);
                acc[0] = _mm512_fmadd_ps(a0, bj, acc[0]);
                acc[1] = _mm512_fmadd_ps(a1, bj, acc[1]);
                b = b.add(1);
            }
            a = a.add(ROWS);
            b = b.add(p.ldb - J);
        }
        // Bias and clamp along the vector (one bias per row of C), then out through a
        // transpose on the stack.
        let mask = |rows: usize| -> __mmask16 {
            if rows >= 16 {
                0xFFFF
            } else {
                ((1u32 << rows) - 1) as u16
            }
        };
        let (m0, m1) = (mask(p.rows), mask(p.rows.saturating_sub(16)));
        let bias = if p.bias.is_null() {
            [_mm512_setzero_ps(); 2]
        } else {
            [_mm512_maskz_loadu_ps(m0, p.bias), _mm512_maskz_loadu_ps(m1, p.bias.add(16))]
        };
        let (lo, hi) = p.clamp.unwrap_or((0.0, 0.0));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let mut t = [[0.0f32; ROWS]; J];
        for (col, acc) in t.iter_mut().zip(&acc) {
            for h in 0..2 {
                let mut v = _mm512_add_ps(acc[h], bias[h]);
                if p.clamp.is_some() {
                    // max/min return their second operand when one is NaN: NaN survives.
                    v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                }
                _mm512_storeu_ps(col.as_mut_ptr().add(16 * h), v);
            }
        }
        for i in 0..p.rows {
            let row = p.c.add(i * p.ldc + j0);
            for (j, col) in t.iter().enumerate() {
                *row.add(j) = col[i];
            }
        }
    }
}
