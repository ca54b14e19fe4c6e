//! Winograd F(m×m, 3×3) for 3×3, stride-1, undilated, ungrouped convs (VGG's every conv),
//! for tile sizes m = 2 ([`TileSize::F2`]) and m = 4 ([`TileSize::F4`]).
//!
//! Each m×m block of outputs ("tile") is computed from the α×α input patch around it
//! (α = m + 2) as `Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A`: the α² element-wise products,
//! summed over the input channels, are α² GEMMs `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]`:
//! `c_out × c_in`, the transformed weights, packed once; `V[ξ]`: `c_in × tiles`, the
//! transformed input). Per output, F(2×2) does 16/4 = 4 multiply-adds per channel pair
//! and F(4×4) 36/16 = 2.25, against 9 for a direct conv: 2.25× and 4× fewer, for input
//! and output transforms that are `O(c·tiles)`, small next to the `O(c_out·c_in·tiles)`
//! GEMMs once both channel counts reach 32 or so.
//!
//! Rounding: F(2×2)'s transforms hold only 0, ±1 and ±½, so it rounds like a direct conv.
//! F(4×4)'s hold up to 8 and 1/24 (points 0, ±1, ±2, ∞, Lavin & Gray 2016); its errors
//! are larger, yet within 1e-4 of the output's scale against the naive conv in the
//! tests (up to 256 channels × 9 taps per sum), far below what a visualization can see.
//!
//! Tiles are processed in blocks of about `BLOCK_VALUES` transformed values per
//! channel so `V` and `M` stay in the L2/L3 caches; blocks are the unit of parallelism
//! when there are enough of them, otherwise the GEMMs and the transforms split across
//! the pool. The output transform applies the bias and the clamp, like every other
//! forward kernel.
//!
//! The transforms vectorize over tiles: input rows are loaded *phase-split* (padded
//! column `m·tx + k` goes to phase `k mod m`, slot `tx + k / m`), so the α columns a
//! tile reads are α contiguous streams in `tx`, and every transform loop is a
//! straight-line body over contiguous loads and stores.
//!
//! The backward to the input of such a conv is itself one (the weights rotated by 180°
//! and their channel axes swapped, padding `2 − pad`), so it runs here too.

use rayon::prelude::*;

use super::Clamp;
use crate::gemm::direct::{clamp, sgemm_direct, Epilogue, Isa, OutMat, PackedA};
use crate::gemm::{for_each_index, Mat, SendPtr};
use crate::geometry::{Conv2dParams, ConvGeometry, Padding2d};
use crate::scratch::ScratchPool;

/// Transformed values per channel a block of tiles aims for: `V` and `M` of a block hold
/// `c · BLOCK_VALUES` floats each (256 F(2×2) tiles, 113 F(4×4) ones).
const BLOCK_VALUES: usize = 4096;

/// The output tile side of a Winograd variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TileSize {
    /// F(2×2, 3×3): 4×4 input tiles, 16 GEMMs.
    F2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 GEMMs.
    F4,
}

impl TileSize {
    /// Outputs along a tile's side (m).
    pub fn m(self) -> usize {
        match self {
            Self::F2 => 2,
            Self::F4 => 4,
        }
    }
    /// Input values along a tile's side (α = m + 2).
    pub fn alpha(self) -> usize {
        self.m() + 2
    }
}

/// One member of the family: its three 1-D transforms (the 2-D ones apply them along
/// columns, then rows). `A` is α, `M` is m.
trait Tile<const A: usize, const M: usize> {
    /// `G g`: a kernel row's 3 taps to α transformed taps.
    fn weight(g: [f32; 3]) -> [f32; A];
    /// `Bᵀ d`: α input values to α transformed values.
    fn input(d: [f32; A]) -> [f32; A];
    /// `Aᵀ p`: α products to m outputs.
    fn output(p: [f32; A]) -> [f32; M];
}

/// F(2×2, 3×3), points 0, ±1, ∞.
struct F2;

impl Tile<4, 2> for F2 {
    #[inline(always)]
    fn weight([a, b, c]: [f32; 3]) -> [f32; 4] {
        [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c]
    }
    #[inline(always)]
    fn input([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
        [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
    }
    #[inline(always)]
    fn output([p0, p1, p2, p3]: [f32; 4]) -> [f32; 2] {
        [p0 + p1 + p2, p1 - p2 - p3]
    }
}

/// F(4×4, 3×3), points 0, ±1, ±2, ∞ (Lavin & Gray's matrices).
struct F4;

impl Tile<6, 4> for F4 {
    #[inline(always)]
    fn weight([a, b, c]: [f32; 3]) -> [f32; 6] {
        let (s, d) = (a + c, b);
        let (q, h) = (a / 24.0 + c / 6.0, b / 12.0);
        [a / 4.0, -(s + d) / 6.0, -(s - d) / 6.0, q + h, q - h, c]
    }
    #[inline(always)]
    fn input([d0, d1, d2, d3, d4, d5]: [f32; 6]) -> [f32; 6] {
        let (p, q) = (d4 - 4.0 * d2, d3 - 4.0 * d1);
        let (r, s) = (d4 - d2, 2.0 * (d3 - d1));
        [4.0 * d0 - 5.0 * d2 + d4, p + q, p - q, r + s, r - s, 4.0 * d1 - 5.0 * d3 + d5]
    }
    #[inline(always)]
    fn output([p0, p1, p2, p3, p4, p5]: [f32; 6]) -> [f32; 4] {
        let (s12, d12, s34, d34) = (p1 + p2, p1 - p2, p3 + p4, p3 - p4);
        [p0 + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + p5]
    }
}

/// Whether Winograd runs this geometry (see the module docs for why these).
pub fn supports(g: &ConvGeometry) -> bool {
    let p = g.p.padding;
    g.k_hw == [3, 3]
        && g.p.stride == [1, 1]
        && g.p.dilation == [1, 1]
        && g.p.groups == 1
        && [p.top, p.bottom, p.left, p.right].iter().all(|&v| v <= 2)
}

/// Whether Winograd is also the faster kernel: enough channels on both sides that the
/// GEMMs dominate the transforms (measured with `cargo xtask bench vgg_` and the `winograd_vs_im2col` example).
pub fn pays(g: &ConvGeometry) -> bool {
    supports(g) && g.c_in >= 32 && g.c_out >= 32
}

/// The tile size that runs a geometry [`pays`] accepts faster. F(4×4) cuts the GEMMs by
/// a further 1.78× for dearer transforms (6-row input, 36-term output) and packs 2.25×
/// larger: with 64 or more channels on both sides it is 1.2-1.6× faster than F(2×2) on
/// every VGG16 conv (the `winograd_vs_im2col` example); below that F(2×2) stays, its
/// transforms being the larger share there.
pub fn best_tile(g: &ConvGeometry) -> TileSize {
    if g.c_in >= 64 && g.c_out >= 64 {
        TileSize::F4
    } else {
        TileSize::F2
    }
}

/// `U = G g Gᵀ` of one 3×3 kernel: `u[i][j]`.
fn weight_tile<T: Tile<A, M>, const A: usize, const M: usize>(k: &[f32]) -> [[f32; A]; A] {
    // g Gᵀ row by row, then G on each of its columns.
    let rows: [[f32; A]; 3] = std::array::from_fn(|r| T::weight([k[3 * r], k[3 * r + 1], k[3 * r + 2]]));
    let cols: [[f32; A]; A] = std::array::from_fn(|j| T::weight([rows[0][j], rows[1][j], rows[2][j]]));
    std::array::from_fn(|i| std::array::from_fn(|j| cols[j][i]))
}

/// The α² transformed weight matrices `U[ξ]` (`c_out × c_in`, `ξ = α·i + j`), packed for
/// the GEMM. `w` is OIHW with 3×3 kernels.
pub fn pack_weights(tile: TileSize, w: &[f32], c_out: usize, c_in: usize) -> Vec<PackedA> {
    match tile {
        TileSize::F2 => pack_weights_t::<F2, 4, 2>(w, c_out, c_in),
        TileSize::F4 => pack_weights_t::<F4, 6, 4>(w, c_out, c_in),
    }
}

fn pack_weights_t<T: Tile<A, M>, const A: usize, const M: usize>(w: &[f32], c_out: usize, c_in: usize) -> Vec<PackedA> {
    let plane = c_out * c_in;
    let mut u = vec![0.0f32; A * A * plane];
    // One output channel at a time, so each of the α² planes gets a contiguous row
    // (scattering single values over α² planes of a megabyte each thrashed the TLB).
    let mut row = vec![[[0.0f32; A]; A]; c_in];
    for o in 0..c_out {
        for (c, t) in row.iter_mut().enumerate() {
            *t = weight_tile::<T, A, M>(&w[(o * c_in + c) * 9..][..9]);
        }
        for xi in 0..A * A {
            let dst = &mut u[xi * plane + o * c_in..][..c_in];
            for (d, t) in dst.iter_mut().zip(&row) {
                *d = t[xi / A][xi % A];
            }
        }
    }
    let isa = Isa::detect();
    (0..A * A)
        .map(|xi| unsafe {
            // Safety: plane ξ holds c_out × c_in values.
            PackedA::new(isa, c_out, c_in, Mat::row_major(&u[xi * plane..], c_out, c_in))
        })
        .collect()
}

/// The pack for the backward to the input: the forward pack of the rotated, transposed
/// kernel (`W'[c][o] = rot180(W[o][c])`).
pub fn pack_weights_transposed(tile: TileSize, w: &[f32], c_out: usize, c_in: usize) -> Vec<PackedA> {
    let mut wt = vec![0.0f32; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            let (src, dst) = (&w[(o * c_in + c) * 9..][..9], &mut wt[(c * c_out + o) * 9..][..9]);
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    pack_weights(tile, &wt, c_in, c_out)
}

/// The conv whose forward is `g`'s backward to the input (see the module docs).
pub fn transposed_geometry(g: &ConvGeometry) -> ConvGeometry {
    let p = g.p.padding;
    let padding = Padding2d { top: 2 - p.top, bottom: 2 - p.bottom, left: 2 - p.left, right: 2 - p.right };
    let t = ConvGeometry::new(
        "conv2d_backward_input",
        &[g.n, g.c_out, g.out_hw[0], g.out_hw[1]],
        &[g.c_in, g.c_out, 3, 3],
        Conv2dParams { padding, ..g.p },
    )
    .expect("the transposed conv of a valid 3×3 stride-1 conv is valid");
    debug_assert_eq!(t.out_hw, g.in_hw);
    t
}

/// Forward conv of a geometry [`supports`] accepts, with `pack` from [`pack_weights`] of
/// the same `tile`; every output element is written.
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
pub(super) fn forward(
    tile: TileSize,
    x: &[f32],
    pack: &[PackedA],
    bias: Option<&[f32]>,
    clamp_to: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    match tile {
        TileSize::F2 => forward_t::<F2, 4, 2>(x, pack, bias, clamp_to, g, out, scratch),
        TileSize::F4 => forward_t::<F4, 6, 4>(x, pack, bias, clamp_to, g, out, scratch),
    }
}

/// Backward to the input of a geometry [`supports`] accepts, with `pack` from
/// [`pack_weights_transposed`] of the same `tile`: the transposed conv is a Winograd conv
/// too, on the rotated weights. `dx` is overwritten.
pub(super) fn backward_input(
    tile: TileSize,
    dy: &[f32],
    pack: &[PackedA],
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) {
    forward(tile, dy, pack, None, None, &transposed_geometry(g), dx, scratch)
}

#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
fn forward_t<T: Tile<A, M>, const A: usize, const M: usize>(
    x: &[f32],
    pack: &[PackedA],
    bias: Option<&[f32]>,
    clamp_to: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    assert!(supports(g), "winograd::forward: unsupported geometry {g:?}");
    assert!(
        pack.len() == A * A && pack.iter().all(|p| p.rows() == g.c_out && p.depth() == g.c_in),
        "winograd: pack mismatch"
    );
    let [oh, ow] = g.out_hw;
    let (th, tw) = (oh.div_ceil(M), ow.div_ceil(M));
    // Blocks of whole tile rows, so each transform row is contiguous in V and M.
    let threads = rayon::current_num_threads();
    let block_tiles = BLOCK_VALUES / (A * A);
    let mut blocks_per_image = th.div_ceil((block_tiles / tw.max(1)).max(1));
    if blocks_per_image > 1 {
        // Equal blocks in a count the threads share evenly (9, 9, 9, 1 rows would not).
        let per_image_share = threads.div_ceil(g.n).max(1);
        blocks_per_image = blocks_per_image.next_multiple_of(per_image_share).min(th);
    }
    let rows_per_block = th.div_ceil(blocks_per_image).max(1);
    let blocks_per_image = th.div_ceil(rows_per_block).max(1);
    let jobs = g.n * blocks_per_image;
    // Enough blocks: one per task, serial inside; else each block's work is split.
    let split = jobs < 2 * threads;
    let op = SendPtr(out.as_mut_ptr());
    let run = |job: usize| {
        let (n, blk) = (job / blocks_per_image, job % blocks_per_image);
        let rows = blk * rows_per_block..((blk + 1) * rows_per_block).min(th);
        let t = rows.len() * tw;
        let mut v = scratch.take(A * A * g.c_in * t);
        let mut m = scratch.take(A * A * g.c_out * t);
        let xn = &x[n * g.c_in * g.in_len()..][..g.c_in * g.in_len()];
        transform_input::<T, A, M>(xn, g, tw, rows.clone(), &mut v, split, scratch);
        for (xi, u) in pack.iter().enumerate() {
            unsafe {
                // Safety: V[ξ] is c_in × t and M[ξ] c_out × t, both in their buffers.
                let c = OutMat { ptr: m.as_mut_ptr().add(xi * g.c_out * t), ld: t };
                sgemm_direct(u, t, v.as_ptr().add(xi * g.c_in * t), t, c, &Epilogue::default(), split);
            }
        }
        // Safety: this job alone writes its image's output rows of these tile rows.
        let on = SendPtr(unsafe { op.get().add(n * g.c_out * g.out_len()) });
        transform_output::<T, A, M>(&m, g, tw, rows, bias, clamp_to, on, split, scratch);
        scratch.give(v);
        scratch.give(m);
    };
    for_each_index(jobs, !split, run);
}

/// Defines `$name::<T, A, M>` to run `$inner::<T, A, M>` compiled for AVX2 + FMA when
/// the CPU has them: the transforms are plain loops the compiler vectorizes once they are
/// inlined into a function built for those features (the build's baseline is SSE2).
macro_rules! avx2_dispatch {
    ($name:ident => $inner:ident ( $($arg:ident : $ty:ty),* )) => {
        #[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
        fn $name<T: Tile<A, M>, const A: usize, const M: usize>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<T: Tile<A, M>, const A: usize, const M: usize>($($arg: $ty),*) {
                    $inner::<T, A, M>($($arg),*)
                }
                if crate::gemm::direct::Isa::detect() != crate::gemm::direct::Isa::Generic {
                    // Safety: detect() found AVX2 and FMA (or more).
                    return unsafe { avx2::<T, A, M>($($arg),*) };
                }
            }
            $inner::<T, A, M>($($arg),*)
        }
    };
}

/// Positions a transform loop handles at once: one AVX2 register of each stream. The
/// lanes go through local arrays, so the compiler vectorizes them without proving that
/// the streams do not overlap (too many pairs for its run-time checks).
const LANES: usize = 8;

/// `outs[j][i] = T::input([ins[0][i], …, ins[α−1][i]])[j]` for `i < len`: one 1-D input
/// transform per position, over α contiguous input and output streams.
///
/// # Safety
/// Every `ins[k]` is readable and every `outs[j]` writable for `len` floats, and no
/// output overlaps an input or another output.
#[inline(always)]
unsafe fn input_streams<T: Tile<A, M>, const A: usize, const M: usize>(
    ins: [*const f32; A],
    outs: [*mut f32; A],
    len: usize,
) {
    let mut i = 0;
    while i + LANES <= len {
        let d: [[f32; LANES]; A] = std::array::from_fn(|k| ins[k].add(i).cast::<[f32; LANES]>().read_unaligned());
        let mut o = [[0.0f32; LANES]; A];
        for l in 0..LANES {
            let v = T::input(std::array::from_fn(|k| d[k][l]));
            for j in 0..A {
                o[j][l] = v[j];
            }
        }
        for j in 0..A {
            outs[j].add(i).cast::<[f32; LANES]>().write_unaligned(o[j]);
        }
        i += LANES;
    }
    for i in i..len {
        let v = T::input(std::array::from_fn(|k| *ins[k].add(i)));
        for j in 0..A {
            *outs[j].add(i) = v[j];
        }
    }
}

/// `Aᵀ P A` of one tile's α×α products: its m×m outputs `y[p][q]`.
#[inline(always)]
fn output_tile<T: Tile<A, M>, const A: usize, const M: usize>(p: [[f32; A]; A]) -> [[f32; M]; M] {
    let cols: [[f32; M]; A] = p.map(T::output);
    let rows: [[f32; M]; M] = std::array::from_fn(|q| T::output(std::array::from_fn(|i| cols[i][q])));
    std::array::from_fn(|pp| std::array::from_fn(|q| rows[q][pp]))
}

/// `V[ξ][c][t]` for the tile rows `rows` of one image (see the module docs).
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
fn transform_input<T: Tile<A, M>, const A: usize, const M: usize>(
    x: &[f32],
    g: &ConvGeometry,
    tw: usize,
    rows: std::ops::Range<usize>,
    v: &mut [f32],
    parallel: bool,
    scratch: &ScratchPool,
) {
    let vp = SendPtr(v.as_mut_ptr());
    let (r0, r1) = (rows.start, rows.end);
    let buf_len = (2 * A + 1) * M * (tw + 1);
    let one = |c: usize, buf: &mut [f32]| input_channel_fast::<T, A, M>(x, g, tw, r0, r1, c, vp, buf);
    if parallel {
        (0..g.c_in).into_par_iter().for_each_init(|| scratch.lease(buf_len), |buf, c| one(c, buf));
    } else {
        let mut buf = scratch.lease(buf_len);
        (0..g.c_in).for_each(|c| one(c, &mut buf));
    }
}

/// [`transform_input`] of channel `c` (tile rows `r0 .. r1`). Per tile row: the α
/// input rows (zero-padded, phase-split) go through `Bᵀ` as whole rows, then each
/// tile's α columns through `B`, into V's α² rows.
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
#[inline(always)]
fn input_channel<T: Tile<A, M>, const A: usize, const M: usize>(
    x: &[f32],
    g: &ConvGeometry,
    tw: usize,
    r0: usize,
    r1: usize,
    c: usize,
    vp: SendPtr,
    buf: &mut [f32],
) {
    let ([h, w], pad, t) = (g.in_hw, g.p.padding, (r1 - r0) * tw);
    // A phase-split row: m phases of tw + 1 slots hold padded columns 0 .. m·(tw + 1),
    // which cover the m·tw + 2 a tile row reads and the w + pad.left the image fills.
    let slots = tw + 1;
    let pl = M * slots;
    debug_assert!(w + pad.left <= pl);
    let plane = &x[c * g.in_len()..][..g.in_len()];
    let (d, rest) = buf[..(2 * A + 1) * pl].split_at_mut(A * pl);
    let (tr, padded) = rest.split_at_mut(A * pl);
    for (j, ty) in (r0..r1).enumerate() {
        for r in 0..A {
            let dst = &mut d[r * pl..(r + 1) * pl];
            let ih = (M * ty + r) as isize - pad.top as isize;
            if ih < 0 || ih as usize >= h {
                dst.fill(0.0);
                continue;
            }
            // The padded row, then split into its phases: one loop of m loads per
            // m stores, which the compiler turns into vector loads and shuffles.
            padded[..pad.left].fill(0.0);
            padded[pad.left..pad.left + w].copy_from_slice(&plane[ih as usize * w..][..w]);
            padded[pad.left + w..].fill(0.0);
            let mut phases = dst.chunks_exact_mut(slots);
            let phases: [&mut [f32]; M] = std::array::from_fn(|_| phases.next().expect("m phases"));
            for (s, group) in padded.chunks_exact(M).enumerate() {
                for k in 0..M {
                    phases[k][s] = group[k];
                }
            }
        }
        unsafe {
            // Safety: Bᵀ down the columns: α rows of `pl` floats in `d`, into `tr`.
            let ins = std::array::from_fn(|r| d.as_ptr().add(r * pl));
            let outs = std::array::from_fn(|r| tr.as_mut_ptr().add(r * pl));
            input_streams::<T, A, M>(ins, outs, pl);
        }
        for i in 0..A {
            unsafe {
                // Safety: column k of tile tx is phase k mod m, slot tx + k / m, so the
                // α streams of `tw` floats stay inside row i of `tr`. The outputs are
                // rows (ξ = α·i + j, c) of V, this tile row's tw entries; each channel
                // writes its own rows.
                let row = tr.as_ptr().add(i * pl);
                let ins = std::array::from_fn(|k| row.add((k % M) * slots + k / M));
                let outs = std::array::from_fn(|jj| vp.get().add(((A * i + jj) * g.c_in + c) * t + j * tw));
                input_streams::<T, A, M>(ins, outs, tw);
            }
        }
    }
}

avx2_dispatch!(input_channel_fast => input_channel(x: &[f32], g: &ConvGeometry, tw: usize, r0: usize, r1: usize, c: usize, vp: SendPtr, buf: &mut [f32]));

/// Outputs of the tile rows `rows` from `M[ξ][o][t]`, with bias and clamp; `out` is the
/// image's first output plane.
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
fn transform_output<T: Tile<A, M>, const A: usize, const M: usize>(
    m: &[f32],
    g: &ConvGeometry,
    tw: usize,
    rows: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    clamp_to: Clamp,
    out: SendPtr,
    parallel: bool,
    scratch: &ScratchPool,
) {
    let (r0, r1) = (rows.start, rows.end);
    let one = |o: usize, planar: &mut [f32]| {
        let b = bias.map_or(0.0, |b| b[o]);
        output_channel_fast::<T, A, M>(m, g, tw, r0, r1, o, b, clamp_to, out, planar)
    };
    let len = M * M * tw;
    if parallel {
        (0..g.c_out).into_par_iter().for_each_init(|| scratch.lease(len), |planar, o| one(o, planar));
    } else {
        let mut planar = scratch.lease(len);
        (0..g.c_out).for_each(|o| one(o, &mut planar));
    }
}

/// [`transform_output`] of channel `o` (tile rows `r0 .. r1`), bias `b`: per tile row,
/// `Aᵀ · A` of every tile into m² planar rows (one per output of a tile, so the loop
/// vectorizes over tiles), then interleaved into the m output rows.
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
#[inline(always)]
fn output_channel<T: Tile<A, M>, const A: usize, const M: usize>(
    m: &[f32],
    g: &ConvGeometry,
    tw: usize,
    r0: usize,
    r1: usize,
    o: usize,
    b: f32,
    clamp_to: Clamp,
    out: SendPtr,
    planar: &mut [f32],
) {
    let ([oh, ow], t) = (g.out_hw, (r1 - r0) * tw);
    assert!(planar.len() >= M * M * tw && m.len() >= A * A * g.c_out * t);
    for (j, ty) in (r0..r1).enumerate() {
        let ins: [[*const f32; A]; A] =
            std::array::from_fn(|i| std::array::from_fn(|k| m[((A * i + k) * g.c_out + o) * t + j * tw..].as_ptr()));
        let outs: [[*mut f32; M]; M] =
            std::array::from_fn(|p| std::array::from_fn(|q| planar[(M * p + q) * tw..].as_mut_ptr()));
        // Safety (both loops): M[ξ]'s row of this tile row holds tw floats from
        // `ins[i][k]` (asserted above), and each planar row tw floats from `outs[p][q]`.
        let mut tx = 0;
        while tx + LANES <= tw {
            let d: [[[f32; LANES]; A]; A] =
                ins.map(|row| row.map(|s| unsafe { s.add(tx).cast::<[f32; LANES]>().read_unaligned() }));
            let mut o = [[[0.0f32; LANES]; M]; M];
            for l in 0..LANES {
                let y = output_tile::<T, A, M>(std::array::from_fn(|i| std::array::from_fn(|k| d[i][k][l])));
                for (op, yp) in o.iter_mut().zip(y) {
                    for (oq, v) in op.iter_mut().zip(yp) {
                        oq[l] = v;
                    }
                }
            }
            for (dp, op) in outs.iter().zip(&o) {
                for (d, oq) in dp.iter().zip(op) {
                    unsafe { d.add(tx).cast::<[f32; LANES]>().write_unaligned(*oq) };
                }
            }
            tx += LANES;
        }
        for tx in tx..tw {
            let y = output_tile::<T, A, M>(ins.map(|row| row.map(|s| unsafe { *s.add(tx) })));
            for (dp, yp) in outs.iter().zip(y) {
                for (d, v) in dp.iter().zip(yp) {
                    unsafe { *d.add(tx) = v };
                }
            }
        }
        for p in 0..M {
            let rr = M * ty + p;
            if rr >= oh {
                break;
            }
            // Safety: output row (o, rr) belongs to this channel and tile row only.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add((o * oh + rr) * ow), ow) };
            for q in 0..M.min(ow) {
                let src = &planar[(M * p + q) * tw..][..tw];
                for (d, &s) in dst[q..].iter_mut().step_by(M).zip(src) {
                    *d = clamp(s + b, clamp_to);
                }
            }
        }
    }
}
avx2_dispatch!(output_channel_fast => output_channel(m: &[f32], g: &ConvGeometry, tw: usize, r0: usize, r1: usize, o: usize, b: f32, clamp_to: Clamp, out: SendPtr, planar: &mut [f32]));
