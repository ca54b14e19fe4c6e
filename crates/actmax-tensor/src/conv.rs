//! conv2d kernels: forward, backward to the input, backward to the weights and bias.
//!
//! Layouts: input NCHW, weight OIHW (`[c_out, c_in / groups, kh, kw]`), output NCHW.
//!
//! # Kernel choice (see [`ConvKernel::choose`])
//! - **Depthwise** (one input and one output channel per group): a direct loop per channel
//!   plane. Its arithmetic intensity is `kh·kw` multiply-adds per loaded pixel — far too
//!   little for a GEMM to pay for its packing, and im2col would copy every pixel `kh·kw`
//!   times to save nothing.
//! - **Pointwise** (1×1, stride 1, no padding): the input already *is* the im2col matrix,
//!   so the conv is one GEMM per image and group, with no copy at all.
//! - **Im2col** (everything else): the output positions are cut into tiles of whole output
//!   rows; each tile's im2col block (bounded: at most [`COL_BUDGET`] floats) feeds one
//!   `sgemm`. Tiles are the unit of parallelism; when there are too few of them for the
//!   pool (small images, batch 1) the GEMM itself is split across threads instead.
//! - Backward to the input is the transposed conv: `dcol = Wᵀ·dY` through the same GEMM,
//!   then col2im scatters `dcol` into `dX`. Two tiles scatter into overlapping input rows
//!   only when they are neighbours, so even tiles run in parallel, then odd tiles.
//! - Backward to the weights: `dW += dY_tile · colᵀ`, one partial sum per rayon job,
//!   added at the end.

use rayon::prelude::*;

use crate::gemm::{sgemm, sgemm_par, Mat, SendPtr};
use crate::geometry::{Conv2dParams, ConvGeometry, Padding2d};
use crate::scratch::ScratchPool;

/// Largest im2col block a tile may use, in floats (16 MiB): big enough that a tile holds
/// at least one full GEMM column block (so A is not re-packed more often than inside
/// one sgemm), small enough to stay bounded on 512-channel layers.
pub const COL_BUDGET: usize = 4 << 20;

/// Output columns a tile aims for: one matrixmultiply column block (it packs A once per
/// block, so narrower tiles would re-pack A more often than a single big GEMM does).
const TILE_COLS: usize = 1024;

/// The kernel families a conv can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// Direct per-channel loop (one input and one output channel per group).
    Depthwise,
    /// 1×1 stride-1 unpadded conv as a plain GEMM.
    Pointwise,
    /// Tiled im2col + GEMM: works for every geometry.
    Im2col,
}

impl ConvKernel {
    /// The fastest kernel for a geometry (the module docs say why).
    pub fn choose(g: &ConvGeometry) -> Self {
        if g.is_depthwise() {
            Self::Depthwise
        } else if g.is_pointwise() {
            Self::Pointwise
        } else {
            Self::Im2col
        }
    }

    /// Whether this kernel can run the geometry at all.
    pub fn supports(self, g: &ConvGeometry) -> bool {
        match self {
            Self::Depthwise => g.is_depthwise(),
            Self::Pointwise => g.is_pointwise(),
            Self::Im2col => true,
        }
    }
}

fn check_lens(g: &ConvGeometry, x: usize, w: usize, y: usize) {
    assert_eq!(x, g.n * g.c_in * g.in_len(), "conv kernel: input length does not match the geometry");
    assert_eq!(w, g.c_out * g.k_col(), "conv kernel: weight length does not match the geometry");
    assert_eq!(y, g.n * g.c_out * g.out_len(), "conv kernel: output length does not match the geometry");
}

/// A kernel plus its tiling: what [`ConvPlan::choose`] decides for a geometry. Tests and
/// benches build other plans to reach every path (e.g. many small tiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan {
    /// The kernel family.
    pub kernel: ConvKernel,
    /// Output columns an im2col tile aims for (rounded to whole output rows).
    pub tile_cols: usize,
}

impl ConvPlan {
    /// The default plan for a geometry.
    pub fn choose(g: &ConvGeometry) -> Self {
        Self { kernel: ConvKernel::choose(g), tile_cols: TILE_COLS }
    }
    /// A given kernel with the default tiling.
    pub fn with_kernel(kernel: ConvKernel) -> Self {
        Self { kernel, tile_cols: TILE_COLS }
    }
}

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
    let threads = rayon::current_num_threads();
    let share = if for_col2im { 2 * threads } else { threads };
    let per_tile = g.n * g.p.groups;
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
                if sw == 1 {
                    let s0 = (lo as isize + off) as usize;
                    dst[lo..hi].copy_from_slice(&src[s0..s0 + hi - lo]);
                } else {
                    for (ow, d) in dst[lo..hi].iter_mut().enumerate() {
                        *d = src[(((ow + lo) * sw) as isize + off) as usize];
                    }
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
pub unsafe fn col2im(col: &[f32], g: &ConvGeometry, oh0: usize, oh1: usize, dx: *mut f32, parallel: bool) {
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

/// Forward conv with the kernel [`ConvKernel::choose`] picks. `out` is overwritten.
pub fn conv2d_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    conv2d_forward_with(ConvPlan::choose(g), x, w, bias, g, out, scratch)
}

/// Forward conv on a given kernel (panics if the kernel does not support the geometry).
pub fn conv2d_forward_with(
    plan: ConvPlan,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    let kernel = plan.kernel;
    check_lens(g, x.len(), w.len(), out.len());
    assert!(kernel.supports(g), "conv2d_forward_with: {kernel:?} cannot run {g:?}");
    if let Some(b) = bias {
        assert_eq!(b.len(), g.c_out, "conv kernel: bias length must equal out channels");
    }
    if kernel == ConvKernel::Depthwise {
        return depthwise_forward(x, w, bias, g, out, scratch);
    }
    let (r, tiles) = row_tiles(g, plan.tile_cols, false);
    let ts = tasks(g, r, tiles, None);
    let split = split_gemm(ts.len());
    let (ol, cout_g, k_col) = (g.out_len(), g.cout_g(), g.k_col());
    let op = SendPtr(out.as_mut_ptr());
    ts.par_iter().for_each(|&t| {
        with_col(x, g, t, split, scratch, |col, tl| unsafe {
            // Safety: this task alone writes rows [grp·cout_g, +cout_g) × columns
            // [oh0·ow, +tl) of image n.
            let c = op.get().add((t.n * g.c_out + t.grp * cout_g) * ol + t.oh0 * g.out_hw[1]);
            let beta = match bias {
                Some(b) => {
                    for (i, &bv) in b[t.grp * cout_g..][..cout_g].iter().enumerate() {
                        std::slice::from_raw_parts_mut(c.add(i * ol), tl).fill(bv);
                    }
                    1.0
                }
                None => 0.0,
            };
            let a = Mat { ptr: w.as_ptr().add(t.grp * cout_g * k_col), rs: k_col as isize, cs: 1 };
            gemm(split, cout_g, k_col, tl, a, col, beta, c, ol);
        })
    });
}

/// Gradient with respect to the input. `dx` is overwritten.
pub fn conv2d_backward_input(dy: &[f32], w: &[f32], g: &ConvGeometry, dx: &mut [f32], scratch: &ScratchPool) {
    conv2d_backward_input_with(ConvPlan::choose(g), dy, w, g, dx, scratch)
}

/// Gradient with respect to the input on a given kernel.
pub fn conv2d_backward_input_with(
    plan: ConvPlan,
    dy: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) {
    let kernel = plan.kernel;
    check_lens(g, dx.len(), w.len(), dy.len());
    assert!(kernel.supports(g), "conv2d_backward_input_with: {kernel:?} cannot run {g:?}");
    if kernel == ConvKernel::Depthwise {
        return depthwise_backward_input(dy, w, g, dx, scratch);
    }
    let (r, tiles) = row_tiles(g, plan.tile_cols, true);
    let (ol, il, cout_g, cin_g, k_col, ow) = (g.out_len(), g.in_len(), g.cout_g(), g.cin_g(), g.k_col(), g.out_hw[1]);
    let pointwise = kernel == ConvKernel::Pointwise;
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
        ts.par_iter().for_each(|&t| unsafe {
            let tl = (t.oh1 - t.oh0) * ow;
            // Wᵀ of the group: k_col × cout_g.
            let a = Mat { ptr: w.as_ptr().add(t.grp * cout_g * k_col), rs: 1, cs: k_col as isize };
            let b = Mat {
                ptr: dy.as_ptr().add((t.n * g.c_out + t.grp * cout_g) * ol + t.oh0 * ow),
                rs: ol as isize,
                cs: 1,
            };
            let planes = dxp.get().add((t.n * g.c_in + t.grp * cin_g) * il);
            if pointwise {
                // Safety: columns [oh0·ow, +tl) of this image and group belong to this task.
                gemm(split, k_col, cout_g, tl, a, b, 0.0, planes.add(t.oh0 * ow), il);
            } else {
                let mut col = scratch.take(k_col * tl);
                gemm(split, k_col, cout_g, tl, a, b, 0.0, col.as_mut_ptr(), tl);
                // Safety: tiles of one parity never reach the same input rows (row_tiles).
                col2im(&col, g, t.oh0, t.oh1, planes, split);
                scratch.give(col);
            }
        });
    }
}

/// Gradient with respect to the weights. `dw` is overwritten.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeometry, dw: &mut [f32], scratch: &ScratchPool) {
    conv2d_backward_weight_with(ConvPlan::choose(g), x, dy, g, dw, scratch)
}

/// Gradient with respect to the weights on a given kernel.
pub fn conv2d_backward_weight_with(
    plan: ConvPlan,
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dw: &mut [f32],
    scratch: &ScratchPool,
) {
    let kernel = plan.kernel;
    check_lens(g, x.len(), dw.len(), dy.len());
    assert!(kernel.supports(g), "conv2d_backward_weight_with: {kernel:?} cannot run {g:?}");
    if kernel == ConvKernel::Depthwise {
        return depthwise_backward_weight(x, dy, g, dw, scratch);
    }
    let (r, tiles) = row_tiles(g, plan.tile_cols, false);
    let ts = tasks(g, r, tiles, None);
    let split = split_gemm(ts.len());
    let (ol, cout_g, k_col, ow) = (g.out_len(), g.cout_g(), g.k_col(), g.out_hw[1]);
    let len = dw.len();
    let sum = ts
        .par_iter()
        .fold(
            || vec![0.0f32; len],
            |mut acc, &t| {
                with_col(x, g, t, split, scratch, |col, tl| unsafe {
                    let a = Mat {
                        ptr: dy.as_ptr().add((t.n * g.c_out + t.grp * cout_g) * ol + t.oh0 * ow),
                        rs: ol as isize,
                        cs: 1,
                    };
                    let c = acc.as_mut_ptr().add(t.grp * cout_g * k_col);
                    gemm(split, cout_g, tl, k_col, a, col.t(), 1.0, c, k_col);
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

/// Gradient with respect to the bias: the sum of `dy` over batch and positions.
pub fn conv2d_backward_bias(dy: &[f32], g: &ConvGeometry, db: &mut [f32]) {
    let ol = g.out_len();
    db.fill(0.0);
    for img in dy.chunks_exact(g.c_out * ol) {
        for (d, plane) in db.iter_mut().zip(img.chunks_exact(ol)) {
            *d += plane.iter().sum::<f32>();
        }
    }
}

// ---- depthwise: direct kernels, one channel plane per task -------------------------
//
// Each plane is first copied, zero-padded, into a scratch buffer and split into
// `stride` column phases (phase p holds padded columns p, p + s, p + 2s, ...). Every
// kernel tap then reads one contiguous run per output row, of a length rounded up to a
// multiple of 8: no bounds checks and no scalar tails in the inner loops, which are plain
// `axpy`s and dot products the compiler vectorizes (AVX2 + FMA when the CPU has them).

/// Lanes the output rows are rounded up to.
const LANES: usize = 8;

/// Where a depthwise plane lives inside its phase-split scratch buffer.
#[derive(Clone, Copy)]
struct PhaseLayout {
    /// Padded rows.
    rows: usize,
    /// Entries per phase row.
    pw: usize,
    /// Output row length rounded up to [`LANES`].
    owp: usize,
    /// Column stride (= number of phases).
    s: usize,
}

impl PhaseLayout {
    fn new(g: &ConvGeometry) -> Self {
        let (pad, s, d) = (g.p.padding, g.p.stride[1], g.p.dilation[1]);
        let owp = g.out_hw[1].div_ceil(LANES) * LANES;
        let pw = ((g.k_hw[1] - 1) * d / s + owp).max((g.in_hw[1] + pad.left + pad.right).div_ceil(s));
        // Whole blocks of lanes, so the backward gather writes full vectors.
        let pw = pw.div_ceil(LANES) * LANES;
        Self { rows: g.in_hw[0] + pad.top + pad.bottom, pw, owp, s }
    }
    fn len(&self) -> usize {
        self.s * self.rows * self.pw
    }
    /// Offset of padded (row, col).
    #[inline(always)]
    fn at(&self, row: usize, col: usize) -> usize {
        ((col % self.s) * self.rows + row) * self.pw + col / self.s
    }
}

/// Calls `f(phase_row_start, input_col_start)` for each phase: the input columns
/// `iw₀, iw₀ + s, ...` land at `phase_row_start, +1, ...` of that phase's row `row`.
#[inline(always)]
fn for_each_phase(l: &PhaseLayout, row: usize, left: usize, mut f: impl FnMut(usize, usize)) {
    for p in 0..l.s {
        // The first padded column >= left that falls in phase p.
        let col = left + (p + l.s - left % l.s) % l.s;
        f((p * l.rows + row) * l.pw + col / l.s, col - left);
    }
}

/// Stride 2: where input columns `0, 2, 4, ...` and `1, 3, 5, ...` of padded row `row`
/// start in the phase layout.
#[inline(always)]
fn stride2_targets(l: &PhaseLayout, row: usize, left: usize) -> (usize, usize) {
    (l.at(row, left), l.at(row, left + 1))
}

/// Copies an input plane into the zero-padded phase layout.
#[inline(always)]
fn phase_split(plane: &[f32], g: &ConvGeometry, l: &PhaseLayout, out: &mut [f32]) {
    out.fill(0.0);
    let ([h, w], pad) = (g.in_hw, g.p.padding);
    for ih in 0..h {
        let src = &plane[ih * w..(ih + 1) * w];
        if l.s == 1 {
            let o = l.at(ih + pad.top, pad.left);
            out[o..o + w].copy_from_slice(src);
            continue;
        }
        if l.s == 2 {
            // Pairs of input columns go one to each phase: a loop the compiler vectorizes.
            let (first, second) = stride2_targets(l, ih + pad.top, pad.left);
            let (lo, hi) = out.split_at_mut(first.max(second));
            let (a, b) = if first < second { (&mut lo[first..], hi) } else { (hi, &mut lo[second..]) };
            for ((pair, a), b) in src.chunks_exact(2).zip(a.iter_mut()).zip(b.iter_mut()) {
                *a = pair[0];
                *b = pair[1];
            }
            if w % 2 == 1 {
                out[first + w / 2] = src[w - 1];
            }
            continue;
        }
        for_each_phase(l, ih + pad.top, pad.left, |o, iw0| {
            for (d, &v) in out[o..].iter_mut().zip(src[iw0.min(w)..].iter().step_by(l.s)) {
                *d = v;
            }
        });
    }
}

/// The adjoint of [`phase_split`]: reads the input plane's entries back out.
#[inline(always)]
fn phase_gather(phases: &[f32], g: &ConvGeometry, l: &PhaseLayout, plane: &mut [f32]) {
    let ([h, w], pad) = (g.in_hw, g.p.padding);
    for ih in 0..h {
        let dst = &mut plane[ih * w..(ih + 1) * w];
        if l.s == 1 {
            let o = l.at(ih + pad.top, pad.left);
            dst.copy_from_slice(&phases[o..o + w]);
            continue;
        }
        if l.s == 2 {
            let (first, second) = stride2_targets(l, ih + pad.top, pad.left);
            for ((pair, &a), &b) in dst.chunks_exact_mut(2).zip(&phases[first..]).zip(&phases[second..]) {
                pair[0] = a;
                pair[1] = b;
            }
            if w % 2 == 1 {
                dst[w - 1] = phases[first + w / 2];
            }
            continue;
        }
        for_each_phase(l, ih + pad.top, pad.left, |o, iw0| {
            for (d, &v) in dst[iw0.min(w)..].iter_mut().step_by(l.s).zip(&phases[o..]) {
                *d = v;
            }
        });
    }
}

#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines `$name` to run `$inner::<true>` compiled for AVX2 + FMA when the CPU has them,
/// else `$inner::<false>` for the baseline target.
macro_rules! simd_dispatch {
    ($name:ident => $inner:ident ( $($arg:ident : $ty:ty),* )) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $inner::<true>($($arg),*) }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // Safety: the features were just detected.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $inner::<false>($($arg),*)
        }
    };
}

/// One kernel tap: its weight index, its row offset from the window's top row, and the
/// offset of its first column in the phase layout.
#[derive(Clone, Copy)]
struct Tap {
    w: usize,
    dr: usize,
    c0: usize,
}

/// Everything a depthwise call computes once rather than per plane or per row (the
/// divisions would dominate small planes).
struct DwPlan {
    l: PhaseLayout,
    taps: Vec<Tap>,
    /// Per kernel column: (phase, kw, column offset within the phase).
    cols: Vec<(usize, usize, usize)>,
    /// Per padded input row: the (output row, kernel row) pairs that reach it.
    reach: Vec<Vec<(usize, usize)>>,
    /// Left zero margin of a padded gradient row in the backward gather.
    margin: usize,
    /// Length of a padded gradient row.
    dyw: usize,
    /// Kernel columns.
    kw_n: usize,
}

/// Widest register block of output lanes.
const BLOCK: usize = 4 * LANES;

impl DwPlan {
    fn new(g: &ConvGeometry) -> Self {
        let l = PhaseLayout::new(g);
        let ([kh_n, kw_n], [dh, dw], [sh, sw]) = (g.k_hw, g.p.dilation, g.p.stride);
        let taps = (0..kh_n * kw_n).map(|t| Tap { w: t, dr: (t / kw_n) * dh, c0: l.at(0, (t % kw_n) * dw) }).collect();
        let cols = (0..kw_n).map(|kw| ((kw * dw) % sw, kw, (kw * dw) / sw)).collect();
        let reach = (0..l.rows)
            .map(|r| {
                (0..kh_n)
                    .filter_map(|kh| {
                        let t = r.checked_sub(kh * dh)?;
                        (t % sh == 0 && t / sh < g.out_hw[0]).then_some((t / sh, kh))
                    })
                    .collect()
            })
            .collect();
        let margin = (kw_n - 1) * dw / sw;
        Self { l, taps, cols, reach, margin, dyw: margin + l.pw + BLOCK, kw_n }
    }

    /// Scratch floats one plane needs: the phase planes, a padded gradient plane (or row),
    /// and per-tap accumulators.
    fn buf_len(&self, g: &ConvGeometry) -> usize {
        self.l.len() + g.out_hw[0].max(1) * self.dyw + self.taps.len() * LANES
    }
}

/// Register blocks covering `len` (a multiple of [`LANES`]): as many [`BLOCK`]-wide ones
/// as fit, then [`LANES`]-wide ones; `(offset, wide)`. Loops over it stay closure-free:
/// a closure would be compiled without the caller's target features.
#[inline(always)]
fn blocks(len: usize) -> impl Iterator<Item = (usize, bool)> {
    let wide = len / BLOCK;
    (0..wide).map(|b| (b * BLOCK, true)).chain((wide * BLOCK..len).step_by(LANES).map(|j| (j, false)))
}

/// `R` output rows × `W` lanes: `bias + Σ_taps w·src`, accumulated in registers, so
/// each tap's weight is loaded once for `R·W / 8` FMAs.
#[inline(always)]
fn fwd_block<const R: usize, const W: usize, const FMA: bool>(
    c: &FwdRows,
    at: usize,
    out: &mut [f32],
    ow: usize,
    valid: usize,
) {
    let FwdRows { phases, plan, wk, bias, row_step } = *c;
    let mut acc = [[bias; W]; R];
    // One bounds check per block instead of one per tap and row.
    let last = plan.taps.iter().map(|t| t.c0 + t.dr * plan.l.pw).max().unwrap_or(0);
    assert!(last + at + (R - 1) * row_step + W <= phases.len() && wk.len() >= plan.taps.len());
    for t in &plan.taps {
        // Safety: t.w < taps.len() <= wk.len(), and the offsets are bounded by `last` above.
        let w = unsafe { *wk.get_unchecked(t.w) };
        let base = t.c0 + t.dr * plan.l.pw + at;
        for (r, acc) in acc.iter_mut().enumerate() {
            let src = unsafe { phases.get_unchecked(base + r * row_step..base + r * row_step + W) };
            for i in 0..W {
                acc[i] = fmadd::<FMA>(w, src[i], acc[i]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        out[r * ow..r * ow + valid].copy_from_slice(&acc[..valid]);
    }
}

/// What every forward register block reads.
#[derive(Clone, Copy)]
struct FwdRows<'a> {
    phases: &'a [f32],
    plan: &'a DwPlan,
    wk: &'a [f32],
    bias: f32,
    /// Phase-layout distance between consecutive output rows.
    row_step: usize,
}

/// Runs the lane blocks of `R` output rows starting at `oh`.
#[inline(always)]
fn fwd_rows<const R: usize, const FMA: bool>(
    phases: &[f32],
    oh: usize,
    g: &ConvGeometry,
    plan: &DwPlan,
    wk: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    let (l, ow) = (&plan.l, g.out_hw[1]);
    let step = g.p.stride[0] * l.pw;
    let c = FwdRows { phases, plan, wk, bias, row_step: step };
    let mut j = 0;
    while j < l.owp {
        let at = oh * step + j;
        let dst = &mut out[oh * ow + j..];
        if j + 2 * LANES <= l.owp {
            fwd_block::<R, { 2 * LANES }, FMA>(&c, at, dst, ow, (ow - j).min(2 * LANES));
            j += 2 * LANES;
        } else {
            fwd_block::<R, LANES, FMA>(&c, at, dst, ow, (ow - j).min(LANES));
            j += LANES;
        }
    }
}

/// Rows per register block in the forward kernel.
const ROWS: usize = 4;

#[inline(always)]
fn dw_forward_plane<const FMA: bool>(
    xp: &[f32],
    wk: &[f32],
    bias: f32,
    g: &ConvGeometry,
    plan: &DwPlan,
    out: &mut [f32],
    buf: &mut [f32],
) {
    let phases = &mut buf[..plan.l.len()];
    phase_split(xp, g, &plan.l, phases);
    let oh_n = g.out_hw[0];
    let mut oh = 0;
    while oh + ROWS <= oh_n {
        fwd_rows::<ROWS, FMA>(phases, oh, g, plan, wk, bias, out);
        oh += ROWS;
    }
    while oh < oh_n {
        fwd_rows::<1, FMA>(phases, oh, g, plan, wk, bias, out);
        oh += 1;
    }
}
simd_dispatch!(dw_forward_plane_dispatch => dw_forward_plane(xp: &[f32], wk: &[f32], bias: f32, g: &ConvGeometry, plan: &DwPlan, out: &mut [f32], buf: &mut [f32]));

/// `W` lanes of padded input row `r`, phase `p`, of the input gradient: the transposed
/// conv as a gather, `Σ_{(oh, kh) reaching r} Σ_{kw in phase p} w·dy[oh][q − q0]`.
#[inline(always)]
fn bwd_input_block<const W: usize, const FMA: bool>(
    dypad: &[f32],
    r: usize,
    p: usize,
    q: usize,
    plan: &DwPlan,
    wk: &[f32],
    dst: &mut [f32],
) {
    let mut acc = [0.0f32; W];
    // Bounds, once per block: every read below starts at or before `last` and spans W.
    let last = plan.reach[r].iter().map(|&(oh, _)| oh * plan.dyw + plan.margin + q).max().unwrap_or(0);
    assert!(last + W <= dypad.len() && plan.margin <= plan.dyw && wk.len() >= plan.taps.len());
    for &(oh, kh) in &plan.reach[r] {
        for &(phase, kw, q0) in &plan.cols {
            if phase != p {
                continue;
            }
            let at = oh * plan.dyw + plan.margin + q - q0;
            // Safety: q0 <= margin, so `at` <= `last`, checked above; kh·kw_n + kw < taps.
            let (src, w) = unsafe { (dypad.get_unchecked(at..at + W), *wk.get_unchecked(kh * plan.kw_n + kw)) };
            for i in 0..W {
                acc[i] = fmadd::<FMA>(w, src[i], acc[i]);
            }
        }
    }
    dst[..W].copy_from_slice(&acc);
}

#[inline(always)]
fn dw_backward_input_plane<const FMA: bool>(
    dyp: &[f32],
    wk: &[f32],
    g: &ConvGeometry,
    plan: &DwPlan,
    dx: &mut [f32],
    buf: &mut [f32],
) {
    let l = &plan.l;
    let (phases, dypad) = buf.split_at_mut(l.len());
    // Gradient rows with zero margins: reads left of column 0 or past the row add nothing.
    let ow = g.out_hw[1];
    let dypad = &mut dypad[..g.out_hw[0] * plan.dyw];
    dypad.fill(0.0);
    for (src, dst) in dyp.chunks_exact(ow).zip(dypad.chunks_exact_mut(plan.dyw)) {
        dst[plan.margin..plan.margin + ow].copy_from_slice(src);
    }
    for r in 0..l.rows {
        for p in 0..l.s {
            let row = &mut phases[(p * l.rows + r) * l.pw..][..l.pw];
            for (j, wide) in blocks(l.pw) {
                if wide {
                    bwd_input_block::<BLOCK, FMA>(dypad, r, p, j, plan, wk, &mut row[j..])
                } else {
                    bwd_input_block::<LANES, FMA>(dypad, r, p, j, plan, wk, &mut row[j..])
                }
            }
        }
    }
    phase_gather(phases, g, l, dx);
}
simd_dispatch!(dw_backward_input_plane_dispatch => dw_backward_input_plane(dyp: &[f32], wk: &[f32], g: &ConvGeometry, plan: &DwPlan, dx: &mut [f32], buf: &mut [f32]));

#[inline(always)]
fn dw_backward_weight_plane<const FMA: bool>(
    xp: &[f32],
    dyp: &[f32],
    g: &ConvGeometry,
    plan: &DwPlan,
    dwk: &mut [f32],
    buf: &mut [f32],
) {
    let l = &plan.l;
    let (phases, rest) = buf.split_at_mut(l.len());
    let (row, accs) = rest.split_at_mut(l.owp);
    let accs = &mut accs[..plan.taps.len() * LANES];
    phase_split(xp, g, l, phases);
    row.fill(0.0);
    accs.fill(0.0);
    let ow = g.out_hw[1];
    // One vector accumulator per tap, summed across lanes only once, at the end.
    for (oh, src) in dyp.chunks_exact(ow).enumerate() {
        row[..ow].copy_from_slice(src);
        let r0 = oh * g.p.stride[0] * l.pw;
        for (t, acc_mem) in plan.taps.iter().zip(accs.chunks_exact_mut(LANES)) {
            let xs = &phases[t.c0 + t.dr * l.pw + r0..][..l.owp];
            // In registers across the row; memory only between rows.
            let mut acc = [0.0f32; LANES];
            acc.copy_from_slice(acc_mem);
            let full = ow - ow % LANES;
            for (rc, xc) in row[..full].chunks_exact(LANES).zip(xs[..full].chunks_exact(LANES)) {
                for i in 0..LANES {
                    acc[i] = fmadd::<FMA>(rc[i], xc[i], acc[i]);
                }
            }
            // The tail stops at the row's end: padding lanes would compute 0·x, NaN for x = ∞.
            for (i, (r, x)) in row[full..ow].iter().zip(&xs[full..ow]).enumerate() {
                acc[i] = fmadd::<FMA>(*r, *x, acc[i]);
            }
            acc_mem.copy_from_slice(&acc);
        }
    }
    for (t, acc) in plan.taps.iter().zip(accs.chunks_exact(LANES)) {
        dwk[t.w] += acc.iter().sum::<f32>();
    }
}
simd_dispatch!(dw_backward_weight_plane_dispatch => dw_backward_weight_plane(xp: &[f32], dyp: &[f32], g: &ConvGeometry, plan: &DwPlan, dwk: &mut [f32], buf: &mut [f32]));

fn depthwise_forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    let plan = DwPlan::new(g);
    let (il, kk, c) = (g.in_len(), g.k_hw[0] * g.k_hw[1], g.c_in);
    out.par_chunks_mut(g.out_len()).enumerate().for_each_init(
        || scratch.lease(plan.buf_len(g)),
        |buf, (i, plane)| {
            let ch = i % c;
            let b = bias.map_or(0.0, |b| b[ch]);
            dw_forward_plane_dispatch(&x[i * il..(i + 1) * il], &w[ch * kk..(ch + 1) * kk], b, g, &plan, plane, buf);
        },
    );
}

/// With stride 1 the input gradient is itself a depthwise conv: `dy`, padded by the
/// kernel's reach minus the forward padding, correlated with the flipped kernel. That
/// runs on the register-blocked forward kernel, which is faster than the general gather.
fn transposed_as_forward(g: &ConvGeometry) -> Option<ConvGeometry> {
    if g.p.stride != [1, 1] {
        return None;
    }
    let reach = [(g.k_hw[0] - 1) * g.p.dilation[0], (g.k_hw[1] - 1) * g.p.dilation[1]];
    let pad = g.p.padding;
    let padding = Padding2d {
        top: reach[0].checked_sub(pad.top)?,
        bottom: reach[0].checked_sub(pad.bottom)?,
        left: reach[1].checked_sub(pad.left)?,
        right: reach[1].checked_sub(pad.right)?,
    };
    let p = Conv2dParams { padding, ..g.p };
    let t = ConvGeometry::new(
        "conv2d_backward_input",
        &[g.n, g.c_out, g.out_hw[0], g.out_hw[1]],
        &[g.c_in, 1, g.k_hw[0], g.k_hw[1]],
        p,
    )
    .ok()?;
    (t.out_hw == g.in_hw).then_some(t)
}

fn depthwise_backward_input(dy: &[f32], w: &[f32], g: &ConvGeometry, dx: &mut [f32], scratch: &ScratchPool) {
    if let Some(t) = transposed_as_forward(g) {
        let kk = g.k_hw[0] * g.k_hw[1];
        let flipped: Vec<f32> = w.chunks_exact(kk).flat_map(|k| k.iter().rev().copied()).collect();
        return depthwise_forward(dy, &flipped, None, &t, dx, scratch);
    }
    let plan = DwPlan::new(g);
    let (ol, kk, c) = (g.out_len(), g.k_hw[0] * g.k_hw[1], g.c_in);
    dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
        || scratch.lease(plan.buf_len(g)),
        |buf, (i, plane)| {
            let ch = i % c;
            dw_backward_input_plane_dispatch(
                &dy[i * ol..(i + 1) * ol],
                &w[ch * kk..(ch + 1) * kk],
                g,
                &plan,
                plane,
                buf,
            );
        },
    );
}

fn depthwise_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeometry, dw: &mut [f32], scratch: &ScratchPool) {
    let plan = DwPlan::new(g);
    let (il, ol, kk, c) = (g.in_len(), g.out_len(), g.k_hw[0] * g.k_hw[1], g.c_in);
    dw.par_chunks_mut(kk).enumerate().for_each_init(
        || scratch.lease(plan.buf_len(g)),
        |buf, (ch, dwk)| {
            dwk.fill(0.0);
            for n in 0..g.n {
                let i = n * c + ch;
                dw_backward_weight_plane_dispatch(
                    &x[i * il..(i + 1) * il],
                    &dy[i * ol..(i + 1) * ol],
                    g,
                    &plan,
                    dwk,
                    buf,
                );
            }
        },
    );
}

/// Straightforward loop references: the ground truth the fast kernels are tested and
/// benchmarked against. Slow on purpose.
pub mod naive {
    use crate::geometry::ConvGeometry;

    /// Calls `f(n, o, oh, ow, c_in_index, kh, kw, input_index)` for every in-bounds tap.
    fn taps(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
        let (cin_g, cout_g) = (g.cin_g(), g.cout_g());
        let [kh_n, kw_n] = g.k_hw;
        for n in 0..g.n {
            for o in 0..g.c_out {
                let grp = o / cout_g;
                for oh in 0..g.out_hw[0] {
                    for ow in 0..g.out_hw[1] {
                        let yi = ((n * g.c_out + o) * g.out_hw[0] + oh) * g.out_hw[1] + ow;
                        for ci in 0..cin_g {
                            for kh in 0..kh_n {
                                for kw in 0..kw_n {
                                    let ih =
                                        (oh * g.p.stride[0] + kh * g.p.dilation[0]) as isize - g.p.padding.top as isize;
                                    let iw = (ow * g.p.stride[1] + kw * g.p.dilation[1]) as isize
                                        - g.p.padding.left as isize;
                                    if ih < 0 || iw < 0 || ih >= g.in_hw[0] as isize || iw >= g.in_hw[1] as isize {
                                        continue;
                                    }
                                    let c = grp * cin_g + ci;
                                    let xi = ((n * g.c_in + c) * g.in_hw[0] + ih as usize) * g.in_hw[1] + iw as usize;
                                    let wi = ((o * cin_g + ci) * kh_n + kh) * kw_n + kw;
                                    f(yi, xi, wi, o, n);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reference forward conv.
    pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry) -> Vec<f32> {
        let mut y = vec![0.0f64; g.n * g.c_out * g.out_len()];
        taps(g, |yi, xi, wi, _, _| y[yi] += x[xi] as f64 * w[wi] as f64);
        let ol = g.out_len();
        y.iter().enumerate().map(|(i, &v)| (v + bias.map_or(0.0, |b| b[(i / ol) % g.c_out] as f64)) as f32).collect()
    }

    /// Reference gradient with respect to the input.
    pub fn conv2d_backward_input(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut dx = vec![0.0f64; g.n * g.c_in * g.in_len()];
        taps(g, |yi, xi, wi, _, _| dx[xi] += dy[yi] as f64 * w[wi] as f64);
        dx.into_iter().map(|v| v as f32).collect()
    }

    /// Reference gradient with respect to the weights.
    pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut dw = vec![0.0f64; g.c_out * g.k_col()];
        taps(g, |yi, xi, wi, _, _| dw[wi] += dy[yi] as f64 * x[xi] as f64);
        dw.into_iter().map(|v| v as f32).collect()
    }
}
