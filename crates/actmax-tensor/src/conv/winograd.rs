//! Winograd F(2×2, 3×3) for 3×3, stride-1, undilated, ungrouped convs (VGG's every conv).
//!
//! Each 2×2 block of outputs ("tile") is computed from the 4×4 input patch around it as
//! `Y = Aᵀ [ Σ_c (G g Gᵀ) ⊙ (Bᵀ d B) ] A`: the 16 element-wise products, summed over the
//! input channels, are 16 GEMMs `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]`: `c_out × c_in`, the
//! transformed weights, packed once; `V[ξ]`: `c_in × tiles`, the transformed input). A
//! tile costs 16 multiply-adds per channel pair instead of 36: 2.25× fewer, for input and
//! output transforms that are `O(c·tiles)`, small next to the `O(c_out·c_in·tiles)`
//! GEMMs once both channel counts reach 32 or so. F(2×2, 3×3)'s transforms hold only
//! 0, ±1 and ±½, so its rounding stays close to a direct conv's; F(4×4, 3×3) would save
//! more multiplies for noticeably larger errors.
//!
//! Tiles are processed in blocks of [`BLOCK_TILES`] so `V` and `M` stay in the L2/L3
//! caches; blocks are the unit of parallelism when there are enough of them, otherwise
//! the GEMMs and the transforms split across the pool. The output transform applies the
//! bias and the clamp, like every other forward kernel.
//!
//! The backward to the input of such a conv is itself one (the weights rotated by 180°
//! and their channel axes swapped, padding `2 − pad`), so it runs here too.

use rayon::prelude::*;

use super::Clamp;
use crate::gemm::direct::{clamp, sgemm_direct, Epilogue, Isa, OutMat, PackedA};
use crate::gemm::{for_each_index, Mat, SendPtr};
use crate::geometry::{Conv2dParams, ConvGeometry, Padding2d};
use crate::scratch::ScratchPool;

/// Tiles per block: `V` and `M` of a block hold `16 · c · BLOCK_TILES` floats each.
const BLOCK_TILES: usize = 256;

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

/// `U = G g Gᵀ` of one 3×3 kernel, as 16 values `U[ξ]`, `ξ = 4·row + col`.
fn weight_tile(k: &[f32]) -> [f32; 16] {
    // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]].
    let g = |r: [f32; 3]| [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
    let rows = [g([k[0], k[1], k[2]]), g([k[3], k[4], k[5]]), g([k[6], k[7], k[8]])];
    let mut u = [0.0; 16];
    for c in 0..4 {
        let col = g([rows[0][c], rows[1][c], rows[2][c]]);
        for r in 0..4 {
            u[4 * r + c] = col[r];
        }
    }
    u
}

/// The 16 transformed weight matrices `U[ξ]` (`c_out × c_in`), packed for the GEMM.
/// `w` is OIHW with 3×3 kernels.
pub fn pack_weights(w: &[f32], c_out: usize, c_in: usize) -> Vec<PackedA> {
    let mut u = vec![0.0f32; 16 * c_out * c_in];
    for o in 0..c_out {
        for c in 0..c_in {
            let t = weight_tile(&w[(o * c_in + c) * 9..][..9]);
            for (xi, v) in t.iter().enumerate() {
                u[(xi * c_out + o) * c_in + c] = *v;
            }
        }
    }
    let isa = Isa::detect();
    (0..16)
        .map(|xi| unsafe {
            // Safety: plane ξ holds c_out × c_in values.
            PackedA::new(isa, c_out, c_in, Mat::row_major(&u[xi * c_out * c_in..], c_out, c_in))
        })
        .collect()
}

/// The pack for the backward to the input: the forward pack of the rotated, transposed
/// kernel (`W'[c][o] = rot180(W[o][c])`).
pub fn pack_weights_transposed(w: &[f32], c_out: usize, c_in: usize) -> Vec<PackedA> {
    let mut wt = vec![0.0f32; w.len()];
    for o in 0..c_out {
        for c in 0..c_in {
            let (src, dst) = (&w[(o * c_in + c) * 9..][..9], &mut wt[(c * c_out + o) * 9..][..9]);
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    pack_weights(&wt, c_in, c_out)
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

/// Forward conv of a geometry [`supports`] accepts, with `pack` from [`pack_weights`];
/// every output element is written.
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
pub(super) fn forward(
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
        pack.len() == 16 && pack.iter().all(|p| p.rows() == g.c_out && p.depth() == g.c_in),
        "winograd: pack mismatch"
    );
    let [oh, ow] = g.out_hw;
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    // Blocks of whole tile rows, so each transform row is contiguous in V and M.
    let threads = rayon::current_num_threads();
    let mut blocks_per_image = th.div_ceil((BLOCK_TILES / tw.max(1)).max(1));
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
        let mut v = scratch.take(16 * g.c_in * t);
        let mut m = scratch.take(16 * g.c_out * t);
        let xn = &x[n * g.c_in * g.in_len()..][..g.c_in * g.in_len()];
        transform_input(xn, g, tw, rows.clone(), &mut v, split, scratch);
        for (xi, u) in pack.iter().enumerate() {
            unsafe {
                // Safety: V[ξ] is c_in × t and M[ξ] c_out × t, both in their buffers.
                let c = OutMat { ptr: m.as_mut_ptr().add(xi * g.c_out * t), ld: t };
                sgemm_direct(u, t, v.as_ptr().add(xi * g.c_in * t), t, c, &Epilogue::default(), split);
            }
        }
        // Safety: this job alone writes its image's output rows of these tile rows.
        let on = SendPtr(unsafe { op.get().add(n * g.c_out * g.out_len()) });
        transform_output(&m, g, tw, rows, bias, clamp_to, on, split);
        scratch.give(v);
        scratch.give(m);
    };
    for_each_index(jobs, !split, run);
}

/// Defines `$name` to run `$inner` compiled for AVX2 + FMA when the CPU has them (the
/// transforms are plain loops the compiler vectorizes; the build's baseline is SSE2).
macro_rules! avx2_dispatch {
    ($name:ident => $inner:ident ( $($arg:ident : $ty:ty),* )) => {
        #[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) { $inner($($arg),*) }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // Safety: the features were just detected.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

/// `V[ξ][c][t]` for the tile rows `rows` of one image. Per channel and tile row: the
/// four input rows (zero-padded) go through `Bᵀ` as whole rows, then each tile's four
/// columns through `B`; both loops run over contiguous rows, so they vectorize.
fn transform_input(
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
    let buf_len = 8 * (2 * tw + 2);
    if parallel {
        (0..g.c_in)
            .into_par_iter()
            .for_each_init(|| scratch.lease(buf_len), |buf, c| input_channel_fast(x, g, tw, r0, r1, c, vp, buf));
    } else {
        let mut buf = scratch.lease(buf_len);
        (0..g.c_in).for_each(|c| input_channel_fast(x, g, tw, r0, r1, c, vp, &mut buf));
    }
}

/// [`transform_input`] of channel `c` (tile rows `r0 .. r1`).
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
#[inline(always)]
fn input_channel(x: &[f32], g: &ConvGeometry, tw: usize, r0: usize, r1: usize, c: usize, vp: SendPtr, buf: &mut [f32]) {
    let ([h, w], pad, t) = (g.in_hw, g.p.padding, (r1 - r0) * tw);
    // Padded row width: tile tx reads padded columns 2tx .. 2tx + 3.
    let pw = 2 * tw + 2;
    let plane = &x[c * g.in_len()..][..g.in_len()];
    let (d, tr) = buf.split_at_mut(4 * pw);
    for (j, ty) in (r0..r1).enumerate() {
        // The 4 input rows of this tile row, zero outside the image.
        for r in 0..4 {
            let dst = &mut d[r * pw..(r + 1) * pw];
            dst.fill(0.0);
            let ih = (2 * ty + r) as isize - pad.top as isize;
            if ih >= 0 && (ih as usize) < h {
                let src = &plane[ih as usize * w..][..w];
                let lo = pad.left.min(pw);
                let n = w.min(pw - lo);
                dst[lo..lo + n].copy_from_slice(&src[..n]);
            }
        }
        // Bᵀ on rows: t0 = d0 − d2, t1 = d1 + d2, t2 = d2 − d1, t3 = d1 − d3.
        let (d0, rest) = d.split_at(pw);
        let (d1, rest) = rest.split_at(pw);
        let (d2, d3) = rest.split_at(pw);
        let (t0, rest) = tr.split_at_mut(pw);
        let (t1, rest) = rest.split_at_mut(pw);
        let (t2, t3) = rest.split_at_mut(pw);
        for i in 0..pw {
            t0[i] = d0[i] - d2[i];
            t1[i] = d1[i] + d2[i];
            t2[i] = d2[i] - d1[i];
            t3[i] = d1[i] - d3[i];
        }
        // B on each tile's columns 2tx .. 2tx + 3, into V's 16 rows.
        for (r, tr) in [&*t0, &*t1, &*t2, &*t3].into_iter().enumerate() {
            let at = |k: usize| unsafe {
                // Safety: row (ξ = 4r + k, c) of V, this tile row's tw entries; each
                // channel writes its own rows.
                std::slice::from_raw_parts_mut(vp.get().add(((4 * r + k) * g.c_in + c) * t + j * tw), tw)
            };
            let (v0, v1, v2, v3) = (at(0), at(1), at(2), at(3));
            for tx in 0..tw {
                let (a, b, cc, e) = (tr[2 * tx], tr[2 * tx + 1], tr[2 * tx + 2], tr[2 * tx + 3]);
                v0[tx] = a - cc;
                v1[tx] = b + cc;
                v2[tx] = cc - b;
                v3[tx] = b - e;
            }
        }
    }
}
avx2_dispatch!(input_channel_fast => input_channel(x: &[f32], g: &ConvGeometry, tw: usize, r0: usize, r1: usize, c: usize, vp: SendPtr, buf: &mut [f32]));

/// Outputs of the tile rows `rows` from `M[ξ][o][t]`, with bias and clamp; `out` is the
/// image's first output plane. `Aᵀ` on each tile's 4 columns, then on its 4 rows.
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
fn transform_output(
    m: &[f32],
    g: &ConvGeometry,
    tw: usize,
    rows: std::ops::Range<usize>,
    bias: Option<&[f32]>,
    clamp_to: Clamp,
    out: SendPtr,
    parallel: bool,
) {
    let (r0, r1) = (rows.start, rows.end);
    let one = |o: usize, pair: &mut Vec<f32>| {
        let b = bias.map_or(0.0, |b| b[o]);
        output_channel_fast(m, g, tw, r0, r1, o, b, clamp_to, out, pair)
    };
    if parallel {
        (0..g.c_out).into_par_iter().for_each_init(|| vec![0.0f32; 4 * tw], |pair, o| one(o, pair));
    } else {
        let mut pair = vec![0.0f32; 4 * tw];
        (0..g.c_out).for_each(|o| one(o, &mut pair));
    }
}

/// [`transform_output`] of channel `o` (tile rows `r0 .. r1`), bias `b`.
#[allow(clippy::too_many_arguments)] // the transform's operands, spelled out
#[inline(always)]
fn output_channel(
    m: &[f32],
    g: &ConvGeometry,
    tw: usize,
    r0: usize,
    r1: usize,
    o: usize,
    b: f32,
    clamp_to: Clamp,
    out: SendPtr,
    pair: &mut [f32],
) {
    let ([oh, ow], t) = (g.out_hw, (r1 - r0) * tw);
    for (j, ty) in (r0..r1).enumerate() {
        let m: [&[f32]; 16] = std::array::from_fn(|xi| &m[(xi * g.c_out + o) * t + j * tw..][..tw]);
        // Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]] along each tile's columns, then its rows:
        // first into four planar rows (one per output of the tile, so the loop
        // vectorizes over tiles), then interleaved into the two output rows.
        let (y00, rest) = pair.split_at_mut(tw);
        let (y01, rest) = rest.split_at_mut(tw);
        let (y10, y11) = rest.split_at_mut(tw);
        for r in 0..4 {
            let (m0, m1, m2, m3) = (m[4 * r], m[4 * r + 1], m[4 * r + 2], m[4 * r + 3]);
            let (w0, w1) = [(1.0, 0.0), (1.0, 1.0), (1.0, -1.0), (0.0, -1.0)][r];
            for tx in 0..tw {
                let (s0, s1) = (m0[tx] + m1[tx] + m2[tx], m1[tx] - m2[tx] - m3[tx]);
                if r == 0 {
                    (y00[tx], y01[tx], y10[tx], y11[tx]) = (s0, s1, 0.0, 0.0);
                } else {
                    y00[tx] += w0 * s0;
                    y01[tx] += w0 * s1;
                    y10[tx] += w1 * s0;
                    y11[tx] += w1 * s1;
                }
            }
        }
        for (k, (even, odd)) in [(&*y00, &*y01), (&*y10, &*y11)].into_iter().enumerate() {
            let rr = 2 * ty + k;
            if rr >= oh {
                continue;
            }
            // Safety: output row (o, rr) belongs to this channel and tile row only.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add((o * oh + rr) * ow), ow) };
            let (pairs, last) = dst.split_at_mut(ow - ow % 2);
            for ((d, &e), &od) in pairs.chunks_exact_mut(2).zip(even).zip(odd) {
                d[0] = clamp(e + b, clamp_to);
                d[1] = clamp(od + b, clamp_to);
            }
            if let Some(d) = last.first_mut() {
                *d = clamp(even[tw - 1] + b, clamp_to);
            }
        }
    }
}
avx2_dispatch!(output_channel_fast => output_channel(m: &[f32], g: &ConvGeometry, tw: usize, r0: usize, r1: usize, o: usize, b: f32, clamp_to: Clamp, out: SendPtr, pair: &mut [f32]));
