//! Tiled im2col + GEMM: the kernel for every geometry that is not depthwise, and the
//! copy-free GEMM of pointwise (1×1, stride 1) convs. `mod.rs` says when each runs.

use rayon::prelude::*;

use super::{Clamp, ConvKernel, ConvPack, ConvPlan};
use crate::gemm::direct::{sgemm_direct, Epilogue, Isa, OutMat, PackedA};
use crate::gemm::{for_each_index, sgemm, sgemm_par, Mat, SendPtr};
use crate::geometry::ConvGeometry;
use crate::scratch::ScratchPool;
use crate::simd::every_second;

/// Largest im2col block a tile may use, in floats (16 MiB): big enough that a tile holds
/// at least one full GEMM column block (so A is not re-packed more often than inside
/// one sgemm), small enough to stay bounded on 512-channel layers.
pub const COL_BUDGET: usize = 4 << 20;

/// The pool size col2im's tiling assumes (the machines this runs on have 2 to 8 cores;
/// with more threads than tasks the GEMM inside each tile is split instead).
const COL2IM_THREADS: usize = 2;

/// Output rows per tile, and the number of tiles.
///
/// Tiles aim at `tile_cols` output columns. When there are few of them, their count is
/// rounded up so the pool's threads get equal shares (four tiles of 18, 18, 18 and 2 rows
/// on two threads leave one idle for a quarter of the time); the even/odd phases of
/// col2im each need that share. That holds only where the im2col side of the GEMM is the
/// bigger operand (`out_len ≥ a_rows`, with `a_rows` the rows of the weight operand):
/// every tile packs all of the weights, so with small images (512 channels at 14×14)
/// one tile whose GEMM is split by rows packs less.
fn row_tiles(g: &ConvGeometry, tile_cols: usize, for_col2im: bool) -> (usize, usize) {
    let (ow, oh) = (g.out_hw[1].max(1), g.out_hw[0].max(1));
    let col_rows = if g.is_pointwise() { 1 } else { g.k_col() };
    let cols = tile_cols.min(COL_BUDGET / col_rows.max(1)).max(ow);
    let mut tiles = oh.div_ceil((cols / ow).max(1));
    // col2im sums overlapping input rows tile by tile, so its tiling decides the rounding:
    // it is sized for one image on COL2IM_THREADS threads, whatever the batch and the
    // pool, so that an image's gradient has the same bits in any batch on any pool.
    let (threads, per_tile) =
        if for_col2im { (COL2IM_THREADS, g.p.groups) } else { (rayon::current_num_threads(), g.n * g.p.groups) };
    let share = if for_col2im { 2 * threads } else { threads };
    let a_rows = if for_col2im { g.k_col() } else { g.cout_g() };
    if per_tile * tiles < 4 * threads && g.out_len() >= a_rows {
        while !(per_tile * tiles).is_multiple_of(share) && tiles < oh {
            tiles += 1;
        }
    }
    let mut r = oh.div_ceil(tiles);
    if for_col2im {
        // Tiles t and t+2 must not touch the same input rows: r·s + s > (kh−1)·d.
        let (s, reach) = (g.p.stride[0], (g.k_hw[0] - 1) * g.p.dilation[0]);
        while r * s + s <= reach {
            r += 1;
        }
    }
    let r = r.min(oh);
    (r, oh.div_ceil(r))
}

/// Whether tasks alone keep the pool busy; otherwise the GEMM inside each is split.
fn split_gemm(tasks: usize) -> bool {
    tasks < rayon::current_num_threads()
}

/// `ow` range whose input column `ow·s + off` falls inside `[0, len)`.
#[inline]
fn valid_range(off: isize, s: usize, out_n: usize, len: usize) -> (usize, usize) {
    let s = s as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let hi = if len as isize - off <= 0 { 0 } else { (len as isize - off + s - 1) / s };
    let hi = (hi as usize).min(out_n);
    ((lo as usize).min(hi), hi)
}

/// Fills `col` (`k_col × tile` row-major) with the windows of output rows `[oh0, oh1)`.
/// `x` holds the group's `cin_g` input planes. With `parallel`, channels are spread over
/// the pool (used when there are too few tiles to keep it busy).
pub fn im2col(x: &[f32], g: &ConvGeometry, oh0: usize, oh1: usize, col: &mut [f32], parallel: bool) {
    let rows_per_plane = g.k_hw[0] * g.k_hw[1] * (oh1 - oh0) * g.out_hw[1];
    let planes = x.chunks_exact(g.in_len()).take(g.cin_g());
    let col = &mut col[..rows_per_plane * g.cin_g()];
    if parallel {
        col.par_chunks_mut(rows_per_plane)
            .zip(planes.collect::<Vec<_>>())
            .for_each(|(rows, plane)| im2col_plane(plane, g, oh0, oh1, rows));
    } else {
        col.chunks_mut(rows_per_plane).zip(planes).for_each(|(rows, plane)| im2col_plane(plane, g, oh0, oh1, rows));
    }
}

fn im2col_plane(plane: &[f32], g: &ConvGeometry, oh0: usize, oh1: usize, rows: &mut [f32]) {
    let ([h, w], [kh_n, kw_n], ow_n) = (g.in_hw, g.k_hw, g.out_hw[1]);
    let ([sh, sw], [dh, dw], pad) = (g.p.stride, g.p.dilation, g.p.padding);
    let tl = (oh1 - oh0) * ow_n;
    let isa = Isa::detect();
    let mut rows = rows.chunks_exact_mut(tl);
    for kh in 0..kh_n {
        for kw in 0..kw_n {
            let row = rows.next().expect("im2col: col buffer too short");
            let off = (kw * dw) as isize - pad.left as isize;
            let (lo, hi) = valid_range(off, sw, ow_n, w);
            for (dst, oh) in row.chunks_exact_mut(ow_n).zip(oh0..oh1) {
                let ih = (oh * sh + kh * dh) as isize - pad.top as isize;
                if ih < 0 || ih >= h as isize {
                    dst.fill(0.0);
                    continue;
                }
                let src = &plane[ih as usize * w..(ih as usize + 1) * w];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo == hi {
                    continue;
                }
                let s0 = ((lo * sw) as isize + off) as usize;
                let dst = &mut dst[lo..hi];
                match sw {
                    1 => dst.copy_from_slice(&src[s0..s0 + dst.len()]),
                    // Stride 2 (stem convs, a third of the stem's time in scalar copies)
                    // in vectors.
                    2 => every_second(isa, &src[s0..], dst),
                    _ => dst.iter_mut().zip(src[s0..].iter().step_by(sw)).for_each(|(d, s)| *d = *s),
                }
            }
        }
    }
}

/// Adds `col` (`k_col × tile`, output rows `[oh0, oh1)`) back into the group's input
/// planes: the adjoint of [`im2col`]. With `parallel`, channels (which write disjoint
/// planes) are spread over the pool.
///
/// # Safety
/// `dx` must point at `cin_g` writable planes, and no other thread may write the input
/// rows these output rows reach.
pub(crate) unsafe fn col2im(col: &[f32], g: &ConvGeometry, oh0: usize, oh1: usize, dx: *mut f32, parallel: bool) {
    let rows_per_plane = g.k_hw[0] * g.k_hw[1] * (oh1 - oh0) * g.out_hw[1];
    let dx = SendPtr(dx);
    let one = |(c, rows): (usize, &[f32])| {
        // Safety: channel c owns plane c; the caller vouches for the rows.
        unsafe { col2im_plane(rows, g, oh0, oh1, dx.get().add(c * g.in_len())) }
    };
    let chunks = &col[..rows_per_plane * g.cin_g()];
    if parallel {
        chunks.par_chunks(rows_per_plane).enumerate().for_each(one);
    } else {
        chunks.chunks(rows_per_plane).enumerate().for_each(one);
    }
}

unsafe fn col2im_plane(rows: &[f32], g: &ConvGeometry, oh0: usize, oh1: usize, plane: *mut f32) {
    let ([h, w], [kh_n, kw_n], ow_n) = (g.in_hw, g.k_hw, g.out_hw[1]);
    let ([sh, sw], [dh, dw], pad) = (g.p.stride, g.p.dilation, g.p.padding);
    let tl = (oh1 - oh0) * ow_n;
    let mut rows = rows.chunks_exact(tl);
    for kh in 0..kh_n {
        for kw in 0..kw_n {
            let row = rows.next().expect("col2im: col buffer too short");
            let off = (kw * dw) as isize - pad.left as isize;
            let (lo, hi) = valid_range(off, sw, ow_n, w);
            if lo == hi {
                continue;
            }
            for (src, oh) in row.chunks_exact(ow_n).zip(oh0..oh1) {
                let ih = (oh * sh + kh * dh) as isize - pad.top as isize;
                if ih < 0 || ih >= h as isize {
                    continue;
                }
                // Safety: one input row, written by this task only (see `col2im`).
                let dst = std::slice::from_raw_parts_mut(plane.add(ih as usize * w), w);
                if sw == 1 {
                    let s0 = (lo as isize + off) as usize;
                    for (d, s) in dst[s0..s0 + hi - lo].iter_mut().zip(&src[lo..hi]) {
                        *d += s;
                    }
                } else {
                    for (ow, s) in src[lo..hi].iter().enumerate() {
                        dst[(((ow + lo) * sw) as isize + off) as usize] += s;
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // BLAS-shaped on purpose
unsafe fn gemm(split: bool, m: usize, k: usize, n: usize, a: Mat, b: Mat, beta: f32, c: *mut f32, rsc: usize) {
    if split {
        sgemm_par(m, k, n, 1.0, a, b, beta, c, rsc)
    } else {
        sgemm(m, k, n, 1.0, a, b, beta, c, rsc)
    }
}

/// One (image, group, row tile) unit of work.
#[derive(Clone, Copy)]
struct Task {
    n: usize,
    grp: usize,
    oh0: usize,
    oh1: usize,
}

fn tasks(g: &ConvGeometry, r: usize, tiles: usize, parity: Option<usize>) -> Vec<Task> {
    let mut v = Vec::new();
    for n in 0..g.n {
        for grp in 0..g.p.groups {
            for t in (0..tiles).filter(|t| parity.is_none_or(|p| t % 2 == p)) {
                v.push(Task { n, grp, oh0: t * r, oh1: ((t + 1) * r).min(g.out_hw[0]) });
            }
        }
    }
    v
}

/// Runs `f(task, col)` on each task, where `col` is the task's `k_col × tile` im2col
/// matrix (for a pointwise conv: a view of the input itself).
fn with_col<R>(
    x: &[f32],
    g: &ConvGeometry,
    t: Task,
    split: bool,
    scratch: &ScratchPool,
    f: impl FnOnce(Mat, usize) -> R,
) -> R {
    let ow = g.out_hw[1];
    let tl = (t.oh1 - t.oh0) * ow;
    let xg = &x[(t.n * g.c_in + t.grp * g.cin_g()) * g.in_len()..][..g.cin_g() * g.in_len()];
    if g.is_pointwise() {
        let b = Mat { ptr: xg[t.oh0 * ow..].as_ptr(), rs: g.in_len() as isize, cs: 1 };
        return f(b, tl);
    }
    let mut col = scratch.take(g.k_col() * tl);
    im2col(xg, g, t.oh0, t.oh1, &mut col, split);
    let r = f(Mat::row_major(&col, g.k_col(), tl), tl);
    scratch.give(col);
    r
}

/// The weights of each group packed for the direct GEMM: `W_grp` (`cout_g × k_col`) for
/// the forward, `W_grpᵀ` (`k_col × cout_g`) for the backward to the input.
pub(super) fn packed_weights(w: &[f32], g: &ConvGeometry, transposed: bool, pointwise: bool) -> Vec<PackedA> {
    let (cout_g, k_col, isa) = (g.cout_g(), g.k_col(), Isa::detect());
    // A pointwise GEMM has one image's pixels as its columns, both ways: few of them
    // (7×7, 14×14) take the wide kernel. Im2col's columns are tiles of any width.
    let pack = |m: usize, k: usize, a: Mat| unsafe {
        // Safety: `a` is the checked weight matrix (or its transpose) of group `grp`.
        if pointwise {
            PackedA::for_columns(isa, m, k, g.out_len(), a)
        } else {
            PackedA::new(isa, m, k, a)
        }
    };
    (0..g.p.groups)
        .map(|grp| {
            // Safety: group `grp` holds cout_g × k_col weights from this offset (check_lens).
            let a = Mat { ptr: unsafe { w.as_ptr().add(grp * cout_g * k_col) }, rs: k_col as isize, cs: 1 };
            if transposed {
                pack(k_col, cout_g, a.t())
            } else {
                pack(cout_g, k_col, a)
            }
        })
        .collect()
}

/// Forward conv (pointwise or im2col) then `clamp`; every output element is written.
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
pub(super) fn forward(
    plan: ConvPlan,
    x: &[f32],
    pack: &ConvPack,
    bias: Option<&[f32]>,
    clamp: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    let packed = pack.groups(g, g.cout_g(), g.k_col());
    let (ol, cout_g, ow) = (g.out_len(), g.cout_g(), g.out_hw[1]);
    let op = SendPtr(out.as_mut_ptr());
    let (r, tiles) = if plan.kernel == ConvKernel::Pointwise {
        // One tile per image and group: the GEMM splits its own columns.
        (g.out_hw[0].max(1), 1)
    } else {
        row_tiles(g, plan.tile_cols, false)
    };
    let ts = tasks(g, r, tiles, None);
    let split = split_gemm(ts.len());
    let run = |t: &Task| {
        with_col(x, g, *t, split, scratch, |col, tl| unsafe {
            let ep = Epilogue { bias: bias.map(|b| &b[t.grp * cout_g..][..cout_g]), clamp };
            // Safety: this task alone writes rows [grp·cout_g, +cout_g) × columns
            // [oh0·ow, +tl) of image n.
            let c = op.get().add((t.n * g.c_out + t.grp * cout_g) * ol + t.oh0 * ow);
            sgemm_direct(&packed[t.grp], tl, col.ptr, col.rs as usize, OutMat { ptr: c, ld: ol }, &ep, split);
        })
    };
    for_each_index(ts.len(), !split, |i| run(&ts[i]));
}

/// Gradient with respect to the input (pointwise or im2col); `dx` is overwritten.
pub(super) fn backward_input(
    plan: ConvPlan,
    dy: &[f32],
    pack: &ConvPack,
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) {
    let packed = pack.groups(g, g.k_col(), g.cout_g());
    let (ol, il, cout_g, cin_g, k_col, ow) = (g.out_len(), g.in_len(), g.cout_g(), g.cin_g(), g.k_col(), g.out_hw[1]);
    let pointwise = plan.kernel == ConvKernel::Pointwise;
    let (r, tiles) = if pointwise { (g.out_hw[0].max(1), 1) } else { row_tiles(g, plan.tile_cols, true) };
    if !pointwise {
        dx.fill(0.0);
    }
    let dxp = SendPtr(dx.as_mut_ptr());
    // Pointwise tiles write disjoint columns; im2col tiles scatter into overlapping rows,
    // so even tiles go first, then odd ones.
    let phases: &[Option<usize>] = if pointwise { &[None] } else { &[Some(0), Some(1)] };
    for &parity in phases {
        let ts = tasks(g, r, tiles, parity);
        let split = split_gemm(ts.len());
        let run = |t: &Task| unsafe {
            let tl = (t.oh1 - t.oh0) * ow;
            let b = dy.as_ptr().add((t.n * g.c_out + t.grp * cout_g) * ol + t.oh0 * ow);
            let planes = dxp.get().add((t.n * g.c_in + t.grp * cin_g) * il);
            let ep = Epilogue::default();
            if pointwise {
                // Safety: columns [oh0·ow, +tl) of this image and group belong to this task.
                let c = OutMat { ptr: planes.add(t.oh0 * ow), ld: il };
                sgemm_direct(&packed[t.grp], tl, b, ol, c, &ep, split);
            } else {
                let mut col = scratch.take(k_col * tl);
                sgemm_direct(&packed[t.grp], tl, b, ol, OutMat { ptr: col.as_mut_ptr(), ld: tl }, &ep, split);
                // Safety: tiles of one parity never reach the same input rows (row_tiles).
                col2im(&col, g, t.oh0, t.oh1, planes, split);
                scratch.give(col);
            }
        };
        for_each_index(ts.len(), !split, |i| run(&ts[i]));
    }
}

/// Floats of a group's weight gradient from which it is written in place, one GEMM
/// split over its columns per tile, rather than summed from per-thread copies. A copy
/// of VGG's 512 × 4608 gradient (9.4 MB) cost more to zero, sum and copy back than the
/// GEMM itself loses by splitting (block5 at 14×14: 0.67 of same-shape sgemm that way).
/// Small gradients (3 → 64 channels: 64 × 27) have too few columns to split, and there
/// the per-thread sums over tiles are what keeps both threads busy.
const DW_IN_PLACE: usize = 1 << 17;

/// Gradient with respect to the weights (on matrixmultiply: training only). `dw` is
/// overwritten.
pub(super) fn backward_weight(
    plan: ConvPlan,
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dw: &mut [f32],
    scratch: &ScratchPool,
) {
    if g.cout_g() * g.k_col() >= DW_IN_PLACE {
        return backward_weight_in_place(plan, x, dy, g, dw, scratch);
    }
    let (r, tiles) = row_tiles(g, plan.tile_cols, false);
    let ts = tasks(g, r, tiles, None);
    let split = split_gemm(ts.len());
    let (cout_g, k_col) = (g.cout_g(), g.k_col());
    let len = dw.len();
    let sum = ts
        .par_iter()
        .fold(
            || vec![0.0f32; len],
            |mut acc, &t| {
                with_col(x, g, t, split, scratch, |col, tl| unsafe {
                    let c = acc.as_mut_ptr().add(t.grp * cout_g * k_col);
                    gemm(split, cout_g, tl, k_col, dy_rows(dy, g, t), col.t(), 1.0, c, k_col);
                });
                acc
            },
        )
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        });
    match sum {
        Some(s) => dw.copy_from_slice(&s),
        None => dw.fill(0.0),
    }
}

/// Task `t`'s block of the output gradient: its group's `cout_g` channels × its output
/// columns, as a GEMM operand (both weight-gradient paths read it).
fn dy_rows(dy: &[f32], g: &ConvGeometry, t: Task) -> Mat {
    let (ol, start) = (g.out_len(), (t.n * g.c_out + t.grp * g.cout_g()) * g.out_len() + t.oh0 * g.out_hw[1]);
    Mat { ptr: dy[start..].as_ptr(), rs: ol as isize, cs: 1 }
}

/// [`backward_weight`] for large gradients: tiles of whole output rows near the plan's
/// width, one after another, each GEMM split over the pool and accumulating into `dw`.
fn backward_weight_in_place(
    plan: ConvPlan,
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dw: &mut [f32],
    scratch: &ScratchPool,
) {
    let (ow, oh, cout_g, k_col) = (g.out_hw[1].max(1), g.out_hw[0], g.cout_g(), g.k_col());
    let col_rows = if g.is_pointwise() { 1 } else { k_col };
    let cols = plan.tile_cols.min(COL_BUDGET / col_rows.max(1)).max(ow);
    let r = (cols / ow).clamp(1, oh.max(1));
    let mut written = vec![false; g.p.groups];
    for t in tasks(g, r, oh.div_ceil(r), None) {
        let dw_g = &mut dw[t.grp * cout_g * k_col..][..cout_g * k_col];
        let beta = if written[t.grp] { 1.0 } else { 0.0 };
        with_col(x, g, t, true, scratch, |col, tl| unsafe {
            // Safety: dy_rows is the task's rows of dy, `col` its im2col block, `dw_g` the
            // group's cout_g × k_col gradient (beta 0: not read on the first tile).
            sgemm_par(cout_g, tl, k_col, 1.0, dy_rows(dy, g, t), col.t(), beta, dw_g.as_mut_ptr(), k_col);
        });
        written[t.grp] = true;
    }
    for (grp, done) in written.iter().enumerate() {
        if !done {
            dw[grp * cout_g * k_col..][..cout_g * k_col].fill(0.0);
        }
    }
}

impl ConvPack {
    /// The per-group panels, checked against the geometry they are used with.
    fn groups(&self, g: &ConvGeometry, rows: usize, depth: usize) -> &[PackedA] {
        let fits =
            self.panels.len() == g.p.groups && self.panels.iter().all(|p| p.rows() == rows && p.depth() == depth);
        assert!(fits, "ConvPack: packed for another geometry or direction than {g:?}");
        &self.panels
    }
}
