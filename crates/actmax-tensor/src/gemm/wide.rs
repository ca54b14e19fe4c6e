//! The direct GEMM for few columns: C computed in tiles of a few columns with the vector
//! along M (the output channels) instead of along N (the pixels).
//!
//! Why: EfficientNet's 7×7 and 14×14 layers hold three quarters of its multiply-adds,
//! and their C has 49 or 196 columns. The row kernel's 32-wide vectors cover 49 columns
//! in 64 lanes and 196 in 224: a quarter and an eighth of its work is padding. Their
//! channel counts (192, 320, 480, 672, 1152, 1280) are multiples of 32, and the last
//! tile of a row is only as wide as the pixels left, so nothing is padded. The price is
//! the store: a tile's registers hold columns of C, which go out through an in-register
//! transpose — at K ≥ 80 (every such layer) a few percent of the tile's time. Where it
//! pays is measured per instruction set ([`max_cols`]).
//!
//! AVX-512: tiles of 32 rows × 14 columns (28 of the 32 registers accumulate; 49 = 14 +
//! 14 + 14 + 7). AVX2 + FMA: 16 rows × 6 columns (12 of 16). The portable kernel keeps
//! the row layout ([`pays`]).

use super::direct::{threads_for, Block, Epilogue, Isa, OutMat, PackedA};
use super::{for_each_index, SendPtr};

/// Rows of C per tile (two vectors): A is packed in panels this tall.
pub(super) fn rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 32,
        _ => 16,
    }
}

/// Columns of C per tile.
fn cols(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 14,
        _ => 6,
    }
}

/// The widest C the wide kernel takes. Measured (`pointwise_gflops`,
/// Zen 4, one thread, row kernel → wide): AVX-512 wins at 49 columns (86.5–88.1 →
/// 109–117 GFLOP/s) and at 196 (93–98 → 100–106; two threads 141–184 → 155–193, where
/// the row kernel's 10 row blocks split unevenly), once its tile leaves through an
/// in-register transpose: with the transpose on the stack it lost at 196 where M
/// exceeds K (the expand convs: 90–96 against 97–98). AVX2 wins at both (87–109
/// against 75–99).
pub(super) fn max_cols(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 | Isa::Avx2 => 256,
        Isa::Generic => 0,
    }
}

/// Whether a product with `m` rows and `n` columns runs on the wide kernel here: few enough
/// columns, which the row kernel's blocks would pad, and rows for at least one panel.
pub(super) fn pays(isa: Isa, m: usize, n: usize) -> bool {
    n <= max_cols(isa) && m >= rows(isa) && !n.is_multiple_of(isa.block().1)
}

/// `C = A·B` then the epilogue, for `a` packed wide.
///
/// # Safety
/// As [`super::direct::sgemm_direct`].
pub(super) unsafe fn sgemm(a: &PackedA, n: usize, b: *const f32, ldb: usize, c: OutMat, ep: &Epilogue, parallel: bool) {
    debug_assert!(a.wide && pays(a.isa, a.m, n));
    let isa = a.isa;
    let bp = SendPtr(b as *mut f32);
    for_each_unit(a, n, c, parallel, |p, j0, cols, c| {
        let tile = a.block(p, j0, cols, bp.get(), ldb, c, ep);
        // Safety: each unit is its own rows × columns of C; the caller checked the ISA.
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::avx512_tile(&tile),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2_tile(&tile),
            _ => unreachable!("`pays` admits vector ISAs only"),
        }
    });
}

/// `C = A·B` then the epilogue, for `a` packed wide, with B pixel-major
/// ([`PixelMajor`]'s blocks, unpadded: 16 rows of B a block, `16·n` floats, column `j`
/// of the block's rows at `16·j`) — a depthwise conv's output as its channel blocks
/// leave it, read without being transposed into rows first — and `residual` (laid out
/// as C) added last. AVX-512 only, K a multiple of 16 (checked).
///
/// # Safety
/// `b` valid for `k·n` floats, C (and `residual`) for `m` rows of `n` at stride `c.ld`;
/// the CPU must have AVX-512F.
#[allow(clippy::too_many_arguments)] // a GEMM's operands, spelled out
pub(crate) unsafe fn sgemm_b_pixel_major(
    a: &PackedA,
    n: usize,
    b: *const f32,
    c: OutMat,
    ep: &Epilogue,
    residual: Option<*const f32>,
    parallel: bool,
) {
    assert!(a.wide && a.isa == Isa::Avx512 && a.k > 0 && a.k.is_multiple_of(16) && n > 0);
    assert!(ep.bias.is_none_or(|b| b.len() >= a.m));
    let (bp, rp) = (SendPtr(b as *mut f32), SendPtr(residual.unwrap_or(std::ptr::null()) as *mut f32));
    let mr = rows(a.isa);
    for_each_unit(a, n, c, parallel, |p, j0, cols, c| {
        let mut tile = a.block(p, j0, cols, bp.get(), 16 * n, c, ep);
        tile.b = bp.get().add(16 * j0);
        if !rp.get().is_null() {
            tile.residual = rp.get().add(p * mr * c.ld + j0);
        }
        // Safety: each unit is its own rows × columns of C; AVX-512 checked above.
        #[cfg(target_arch = "x86_64")]
        x86::avx512_tile_b_pixel_major(&tile);
    });
}

/// Calls `f(panel, first column, columns, C)` for every tile of C: the (panel, tile)
/// pairs in order, cut into one contiguous run per thread. A run reads its panels of A
/// once (consecutive tiles share one), and the split is even to a tile — a split by
/// whole panels would leave a thread idle on 6 panels (M = 192).
fn for_each_unit(a: &PackedA, n: usize, c: OutMat, parallel: bool, f: impl Fn(usize, usize, usize, OutMat) + Sync) {
    let (mr, nr) = (rows(a.isa), cols(a.isa));
    let (panels, tiles) = (a.m.div_ceil(mr), n.div_ceil(nr));
    let threads = threads_for(parallel, a.m, a.k, n);
    let units = panels * tiles;
    let per_task = units.div_ceil(threads);
    let cp = SendPtr(c.ptr);
    let task = |t: usize| {
        for u in t * per_task..((t + 1) * per_task).min(units) {
            let (p, j0) = (u / tiles, (u % tiles) * nr);
            f(p, j0, nr.min(n - j0), OutMat { ptr: cp.get(), ld: c.ld });
        }
    };
    for_each_index(units.div_ceil(per_task), threads > 1, task);
}

/// Where [`panel_pixel_major`] writes a panel of C: pixel-major blocks of 16 rows (a
/// vector of 16 channels per pixel), the layout a depthwise conv reads 16 channels at a
/// time from (`conv::depthwise`'s channel blocks), rows of an image `width` pixels wide
/// spaced `pitch` pixels apart.
#[derive(Clone, Copy)]
pub(crate) struct PixelMajor {
    /// Pixel (0, 0) of the panel's first 16 rows.
    pub(crate) ptr: *mut f32,
    /// The image's width: column `q` of C is pixel (`q / width`, `q % width`).
    pub(crate) width: usize,
    /// Pixels from one image row to the next.
    pub(crate) pitch: usize,
    /// Floats from one block of 16 rows to the next.
    pub(crate) block: usize,
}

/// Panel `p` of `C = A·B` (all `n` columns, on the calling thread) with the epilogue,
/// stored pixel-major (`out`): no transpose, every lane of a tile's sums goes out as it
/// is. AVX-512 only, whole panels of 32 rows (checked).
///
/// # Safety
/// `b` as for [`super::direct::sgemm_direct`]; `out` valid for the panel's two blocks
/// of `n` pixels at their places; the CPU must have AVX-512F.
pub(crate) unsafe fn panel_pixel_major(
    a: &PackedA,
    p: usize,
    n: usize,
    b: *const f32,
    ldb: usize,
    out: &PixelMajor,
    ep: &Epilogue,
) {
    assert!(a.wide && a.isa == Isa::Avx512 && a.m.is_multiple_of(32) && p < a.m / 32 && a.k > 0);
    assert!(ep.bias.is_none_or(|b| b.len() >= a.m) && out.width > 0 && out.pitch >= out.width);
    let nr = cols(a.isa);
    let c = OutMat { ptr: std::ptr::null_mut(), ld: 0 };
    for j0 in (0..n).step_by(nr) {
        let tile = a.block(p, j0, nr.min(n - j0), b, ldb, c, ep);
        #[cfg(target_arch = "x86_64")]
        x86::avx512_tile_pixel_major(&tile, out, j0);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Block;
    use crate::simd::avx2::{lanes, transpose8};
    use crate::simd::avx512::{lanes as lanes16, transpose16};
    use std::mem::MaybeUninit;

    /// How many k steps ahead a tile prefetches its panel of A (and, near a panel's end,
    /// the next panel's start). `pointwise_gflops --cold`, Zen 4, one thread, 49 columns,
    /// A streamed from memory: 81–96 → 94–104 GFLOP/s (AVX2 61–76 → 79–83; in cache unchanged);
    /// 12, 24, 32 and 48 steps within 2 % of each other.
    const A_AHEAD: usize = 32;

    /// `$call` with the const `$J` set to the tile's width `$cols` (1 to 14): one
    /// monomorphized kernel per width, chosen at run time.
    macro_rules! by_width {
        ($cols:expr, $J:ident => $call:expr, $($j:literal)*) => {
            match $cols {
                $($j => {
                    const $J: usize = $j;
                    $call
                })*
                _ => unreachable!("a tile is 1 to 14 columns wide"),
            }
        };
    }

    /// An AVX-512 tile (≤ 14 columns).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512_tile(p: &Block) {
        by_width!(p.cols, J => avx512_tile_j::<J, false>(p), 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }

    /// An AVX-512 tile (≤ 14 columns) whose B is pixel-major (`sgemm_b_pixel_major`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512_tile_b_pixel_major(p: &Block) {
        by_width!(p.cols, J => avx512_tile_j::<J, true>(p), 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }

    /// An AVX2 tile (≤ 6 columns).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2_tile(p: &Block) {
        by_width!(p.cols, J => avx2_tile_j::<J>(p), 1 2 3 4 5 6)
    }

    /// An AVX-512 tile (≤ 14 columns) stored pixel-major, `j0` its first column.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512_tile_pixel_major(p: &Block, o: &super::PixelMajor, j0: usize) {
        by_width!(p.cols, J => avx512_tile_pixel_major_j::<J>(p, o, j0), 1 2 3 4 5 6 7 8 9 10 11 12 13 14)
    }

    /// The sums of a `32 × J` tile: per k, two rows of A's panel times `J` broadcast
    /// elements of B's row k — a row of C's columns (`p.ldb` apart), or with
    /// `B_PIXEL_MAJOR` lane k % 16 of a block's column vectors (16 floats apart, `p.ldb`
    /// from block to block). Inlined into one function per width and store (never one
    /// holding all 14), so each width's registers are allocated on their own: 28
    /// accumulators and 3 operands fill 31 of the 32.
    #[inline(always)]
    unsafe fn avx512_sums<const J: usize, const B_PIXEL_MAJOR: bool>(p: &Block) -> [[__m512; J]; 2] {
        // K ≥ 1 (`sgemm_direct`): the accumulators need no zeroed copy on the stack.
        std::hint::assert_unchecked(p.k >= 1);
        // One array per half of the tile: with the halves interleaved in one array, an
        // unrelated change elsewhere in the crate once made LLVM keep it on the stack as
        // well (a store after every FMA: every 14×14 and 7×7 layer at half speed).
        let (mut acc0, mut acc1) = ([_mm512_setzero_ps(); J], [_mm512_setzero_ps(); J]);
        let col = if B_PIXEL_MAJOR { 16 } else { 1 };
        let mut a = p.a;
        for k in 0..p.k {
            // A's panel comes from memory on a layer's first tile: ask for it ahead.
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_AHEAD * 32) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_AHEAD * 32 + 16) as *const i8);
            let (a0, a1) = (_mm512_loadu_ps(a), _mm512_loadu_ps(a.add(16)));
            let b = if B_PIXEL_MAJOR { p.b.add(k / 16 * p.ldb + k % 16) } else { p.b.add(k * p.ldb) };
            for j in 0..J {
                let bj = _mm512_set1_ps(*b.add(col * j));
                acc0[j] = _mm512_fmadd_ps(a0, bj, acc0[j]);
                acc1[j] = _mm512_fmadd_ps(a1, bj, acc1[j]);
            }
            a = a.add(32);
        }
        [acc0, acc1]
    }

    /// The epilogue along the vector of each half of a tile (one bias per row of C):
    /// `f(half, column, value)` for every sum.
    #[inline(always)]
    unsafe fn avx512_epilogue<const J: usize>(
        p: &Block,
        acc: &[[__m512; J]; 2],
        mut f: impl FnMut(usize, usize, __m512),
    ) {
        let (m0, m1) = (lanes16(p.rows), lanes16(p.rows.saturating_sub(16)));
        let bias = if p.bias.is_null() {
            [_mm512_setzero_ps(); 2]
        } else {
            [_mm512_maskz_loadu_ps(m0, p.bias), _mm512_maskz_loadu_ps(m1, p.bias.wrapping_add(16))]
        };
        let (lo, hi) = p.clamp.unwrap_or((0.0, 0.0));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for h in 0..2 {
            for (j, &acc) in acc[h].iter().enumerate() {
                let mut v = _mm512_add_ps(acc, bias[h]);
                if p.clamp.is_some() {
                    // max/min return their second operand when one is NaN: NaN survives.
                    v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                }
                f(h, j, v);
            }
        }
    }

    /// `32 × J` of C into its rows (the tile's columns transposed on the way out); B
    /// pixel-major where `B_PIXEL_MAJOR`.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_tile_j<const J: usize, const B_PIXEL_MAJOR: bool>(p: &Block) {
        // The tile's rows of C, fetched while it computes: written a few columns at a
        // time, rows a C row apart, they are no stream the hardware prefetcher follows.
        for i in 0..p.rows {
            let row = p.c.add(i * p.ldc);
            _mm_prefetch::<_MM_HINT_ET0>(row as *const i8);
            _mm_prefetch::<_MM_HINT_ET0>(row.add(J - 1) as *const i8);
        }
        let acc = avx512_sums::<J, B_PIXEL_MAJOR>(p);
        // Each half of the tile (16 rows) goes out through an in-register 16 × 16
        // transpose, a row of C per vector, stored masked to the tile's columns. Rows
        // past J are masked out of the stores (zeros, never read). Only those are zeroed
        // first: zeroing all 32 vectors was a 2 KB memset per tile.
        let mut v = [[MaybeUninit::<__m512>::uninit(); 16]; 2];
        for half in v.iter_mut() {
            half[J..].fill(MaybeUninit::new(_mm512_setzero_ps()));
        }
        avx512_epilogue(p, &acc, |h, j, s| v[h][j] = MaybeUninit::new(s));
        // Safety: the epilogue wrote every column below J of both halves, the rest is zero.
        let v = std::mem::transmute::<[[MaybeUninit<__m512>; 16]; 2], [[__m512; 16]; 2]>(v);
        let cols = lanes16(J);
        for (h, v) in v.iter().enumerate() {
            let rows = transpose16(v);
            for (i, row) in rows.iter().enumerate().take(p.rows.saturating_sub(16 * h)) {
                let at = (16 * h + i) * p.ldc;
                let row = if p.residual.is_null() {
                    *row
                } else {
                    _mm512_add_ps(*row, _mm512_maskz_loadu_ps(cols, p.residual.add(at)))
                };
                _mm512_mask_storeu_ps(p.c.add(at), cols, row);
            }
        }
    }

    /// The first `J` (≤ 6) lanes of `v` to `at`, in plain 4-, 2- and 1-lane stores: a
    /// masked store (`vmaskmovps`) is microcoded on AMD's cores and made this tile's
    /// store slower than a scalar one (`pointwise_gflops`, Zen 4, AVX2, one thread:
    /// 480 × 80 × 196 at 79 GFLOP/s against 104).
    #[inline(always)]
    unsafe fn store_first<const J: usize>(at: *mut f32, v: __m256) {
        let low = _mm256_castps256_ps128(v);
        let (rest, at_rest) = if J >= 4 {
            _mm_storeu_ps(at, low);
            (_mm256_extractf128_ps::<1>(v), at.add(4))
        } else {
            (low, at)
        };
        if J % 4 >= 2 {
            _mm_store_sd(at_rest.cast(), _mm_castps_pd(rest));
        }
        if J % 2 == 1 {
            let last = if J % 4 >= 2 { _mm_movehl_ps(rest, rest) } else { rest };
            _mm_store_ss(at_rest.add(J % 4 - 1), last);
        }
    }

    /// `32 × J` of C stored pixel-major: a vector per column and half, as computed.
    #[inline(never)]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_tile_pixel_major_j<const J: usize>(p: &Block, o: &super::PixelMajor, j0: usize) {
        let acc = avx512_sums::<J, false>(p);
        let at: [usize; J] = std::array::from_fn(|j| ((j0 + j) / o.width * o.pitch + (j0 + j) % o.width) * 16);
        avx512_epilogue(p, &acc, |h, j, v| _mm512_storeu_ps(o.ptr.add(h * o.block + at[j]), v));
    }

    /// `16 × J` of C, as [`avx512_tile_j`] in 8-lane vectors (not inlined either).
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_tile_j<const J: usize>(p: &Block) {
        // K ≥ 1 (`sgemm_direct`): the accumulators need no zeroed copy on the stack.
        std::hint::assert_unchecked(p.k >= 1);
        let mut acc = [[_mm256_setzero_ps(); 2]; J];
        let (mut a, mut b) = (p.a, p.b);
        for _ in 0..p.k {
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(A_AHEAD * 16) as *const i8);
            let (a0, a1) = (_mm256_loadu_ps(a), _mm256_loadu_ps(a.add(8)));
            for acc in acc.iter_mut() {
                let bj = _mm256_broadcast_ss(&*b);
                acc[0] = _mm256_fmadd_ps(a0, bj, acc[0]);
                acc[1] = _mm256_fmadd_ps(a1, bj, acc[1]);
                b = b.add(1);
            }
            a = a.add(16);
            b = b.wrapping_add(p.ldb - J);
        }
        let bias = if p.bias.is_null() {
            [_mm256_setzero_ps(); 2]
        } else {
            let (m0, m1) = (lanes(p.rows), lanes(p.rows.saturating_sub(8)));
            [_mm256_maskload_ps(p.bias, m0), _mm256_maskload_ps(p.bias.wrapping_add(8), m1)]
        };
        let (lo, hi) = p.clamp.unwrap_or((0.0, 0.0));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        // Each half of the tile (8 rows) goes out through an in-register 8 × 8
        // transpose, a row of C per vector, its first J lanes stored (the columns past
        // J are zeros, never stored).
        for h in 0..2 {
            let mut v = [_mm256_setzero_ps(); 8];
            for (v, acc) in v.iter_mut().zip(&acc) {
                *v = _mm256_add_ps(acc[h], bias[h]);
                if p.clamp.is_some() {
                    // max/min return their second operand when one is NaN: NaN survives.
                    *v = _mm256_min_ps(hi, _mm256_max_ps(lo, *v));
                }
            }
            for (i, row) in transpose8(&v).iter().enumerate().take(p.rows.saturating_sub(8 * h)) {
                store_first::<J>(p.c.add((8 * h + i) * p.ldc), *row);
            }
        }
    }
}
