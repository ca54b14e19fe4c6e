//! Depthwise convs (one input and one output channel per group): direct kernels, one
//! channel plane per task.
//!
//! Each plane is first copied, zero-padded, into a scratch buffer and split into
//! `stride` column phases (phase p holds padded columns p, p + s, p + 2s, ...). Every
//! kernel tap then reads one contiguous run per output row, of a length rounded up to a
//! multiple of 8: no bounds checks and no scalar tails in the inner loops, which are plain
//! `axpy`s and dot products the compiler vectorizes (AVX2 + FMA when the CPU has them).
//!
//! The forward runs tap by tap (`fwd_block`: each tap's run added into a block of output
//! rows), or for 3×3 and 5×5 kernels it slides (`slide_strip`, and in AVX-512 intrinsics
//! `avx512::slide_strip`): each input row is loaded once per kernel column and added into
//! every output row it reaches. Loads bound this kernel, and tap by tap loads each input
//! row once per output row it feeds. The AVX-512 strips read the plane in place (masked
//! lanes stand for the padding, a permute splits stride 2's columns) instead of its
//! phase copy. `dw_forward_plane` and `dw_forward_planes_on` say which runs where, with
//! the measurements.

use rayon::prelude::*;

use super::Clamp;
use crate::gemm::direct::Isa;
use crate::geometry::{Conv2dParams, ConvGeometry, Padding2d};
use crate::scratch::ScratchPool;

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

/// `dst[..n] = src[..n]` for `n` below 16 as at most four fixed-size moves: the rows of
/// 7×7 and 14×14 planes are that short, and a `memmove` call per row cost more than
/// the row's arithmetic.
#[inline(always)]
fn copy_prefix(dst: &mut [f32], src: &[f32], n: usize) {
    debug_assert!(n < 16);
    let mut i = 0;
    macro_rules! part {
        ($w:literal) => {
            if n - i >= $w {
                let d: &mut [f32; $w] = (&mut dst[i..i + $w]).try_into().expect("in bounds");
                *d = src[i..i + $w].try_into().expect("in bounds");
                i += $w;
            }
        };
    }
    part!(8);
    part!(4);
    part!(2);
    part!(1);
    let _ = i;
}

/// `dst.copy_from_slice(src)`, in 16-float moves and a [`copy_prefix`] tail (rows of
/// up to a few hundred floats: a `memmove` call per row cost 14 % of a 56×56 plane).
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let full = src.len() / 16 * 16;
    for (d, s) in dst[..full].chunks_exact_mut(16).zip(src[..full].chunks_exact(16)) {
        let d: &mut [f32; 16] = d.try_into().expect("16 floats");
        *d = s.try_into().expect("16 floats");
    }
    copy_prefix(&mut dst[full..], &src[full..], src.len() - full);
}

/// Copies an input plane into the phase layout. Every plane writes the same positions,
/// so the padding is zeroed once per buffer ([`zeroed_lease`]), not once per plane.
#[inline(always)]
fn phase_split(plane: &[f32], g: &ConvGeometry, l: &PhaseLayout, out: &mut [f32]) {
    let ([h, w], pad) = (g.in_hw, g.p.padding);
    for ih in 0..h {
        let src = &plane[ih * w..(ih + 1) * w];
        if l.s == 1 {
            let o = l.at(ih + pad.top, pad.left);
            copy_row(&mut out[o..o + w], src);
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

/// [`phase_split`] of a gradient plane masked on the way (stride 1 only: the transposed
/// conv a stride-1 backward runs): element `i` passes where `lo < y[i] < hi`.
#[inline(always)]
fn phase_split_masked(plane: &[f32], m: GradMask, g: &ConvGeometry, l: &PhaseLayout, out: &mut [f32]) {
    assert!(l.s == 1 && m.y.len() == plane.len(), "a masked split is stride 1, one y per element");
    let ([h, w], pad) = (g.in_hw, g.p.padding);
    for ih in 0..h {
        let (src, ys) = (&plane[ih * w..(ih + 1) * w], &m.y[ih * w..(ih + 1) * w]);
        let o = l.at(ih + pad.top, pad.left);
        for ((d, &v), &y) in out[o..o + w].iter_mut().zip(src).zip(ys) {
            *d = if y > m.lo && y < m.hi { v } else { 0.0 };
        }
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
            copy_row(dst, &phases[o..o + w]);
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
                if crate::gemm::direct::Isa::detect() != crate::gemm::direct::Isa::Generic {
                    // Safety: detect() found AVX2 and FMA (or more).
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
    /// `(K, S)` when the kernel is `K × K` (3 or 5) with stride `S` (1 or 2) both ways
    /// and dilation 1: such planes can slide ([`dw_forward_plane`] says when they do).
    slide: Option<(usize, usize)>,
    /// The furthest phase-layout offset any tap reads from a block's start (its bound,
    /// checked once per block, is the same for every block).
    tap_reach: usize,
    /// Per strip of 32 output columns, the in-place sliding loads (where `slide` is set).
    strips: Vec<StripLanes>,
}

/// What the backward gather (`dw_backward_input_plane`) computes once per call: built
/// only where that gather runs, not for every forward (its lists are a few hundred
/// small allocations on a 112-row plane).
struct Gather {
    l: PhaseLayout,
    /// Kernel taps (weights per channel).
    taps: usize,
    /// Left zero margin of a padded gradient row.
    margin: usize,
    /// Length of a padded gradient row.
    dyw: usize,
    /// Per padded input row: the furthest gradient-row offset its gather reads, before
    /// the block's column.
    row_reach: Vec<usize>,
    /// Per padded input row `r` and phase `p` (at `r·s + p`): the gather's terms, each a
    /// gradient-row offset (before the block's column) and a weight index.
    terms: Vec<Vec<(usize, usize)>>,
}

impl Gather {
    fn new(g: &ConvGeometry) -> Self {
        let l = PhaseLayout::new(g);
        let ([kh_n, kw_n], [dh, dw], [sh, sw]) = (g.k_hw, g.p.dilation, g.p.stride);
        // Per kernel column: (phase, kw, column offset within the phase).
        let cols: Vec<(usize, usize, usize)> = (0..kw_n).map(|kw| ((kw * dw) % sw, kw, (kw * dw) / sw)).collect();
        // Per padded input row: the (output row, kernel row) pairs that reach it.
        let reach: Vec<Vec<(usize, usize)>> = (0..l.rows)
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
        let dyw = margin + l.pw + BLOCK;
        let row_reach = reach
            .iter()
            .map(|r: &Vec<(usize, usize)>| r.iter().map(|&(oh, _)| oh * dyw + margin).max().unwrap_or(0))
            .collect();
        let terms = (0..l.rows * l.s)
            .map(|rp| {
                let (r, p) = (rp / l.s, rp % l.s);
                let cols = cols.iter().filter(|c| c.0 == p);
                reach[r]
                    .iter()
                    .flat_map(|&(oh, kh)| {
                        cols.clone().map(move |&(_, kw, q0)| (oh * dyw + margin - q0, kh * kw_n + kw))
                    })
                    .collect()
            })
            .collect();
        Self { l, taps: kh_n * kw_n, margin, dyw, row_reach, terms }
    }

    /// Scratch floats one plane needs: the phase planes and a padded gradient plane.
    fn buf_len(&self, g: &ConvGeometry) -> usize {
        self.l.len() + g.out_hw[0].max(1) * self.dyw
    }
}

/// Widest register block of output lanes.
const BLOCK: usize = 4 * LANES;

impl DwPlan {
    fn new(g: &ConvGeometry) -> Self {
        let l = PhaseLayout::new(g);
        let ([kh_n, kw_n], [dh, dw], [sh, sw]) = (g.k_hw, g.p.dilation, g.p.stride);
        let taps: Vec<Tap> =
            (0..kh_n * kw_n).map(|t| Tap { w: t, dr: (t / kw_n) * dh, c0: l.at(0, (t % kw_n) * dw) }).collect();
        let tap_reach = taps.iter().map(|t: &Tap| t.c0 + t.dr * l.pw).max().unwrap_or(0);
        let slide = (g.k_hw[0] == g.k_hw[1] && sh == sw && g.p.dilation == [1, 1])
            .then_some((kh_n, sh))
            .filter(|ks| matches!(ks, (3 | 5, 1 | 2)));
        let strips = slide
            .map_or(Vec::new(), |(k, s)| (0..g.out_hw[1]).step_by(32).map(|j| StripLanes::new(g, k, s, j)).collect());
        Self { l, taps, slide, tap_reach, strips }
    }

    /// Whether the AVX-512 build runs this conv as sliding strips (where no channel
    /// blocks do: `channel_blocks` is asked first).
    fn avx512_slides(&self, g: &ConvGeometry) -> bool {
        // AVX-512 pays for the sliding kernels, which read the plane in place: on one
        // thread, against the AVX2 build's tap-major kernel over phase copies, Lite0's
        // strided 3×3 at 28×28 (rows of 14) 0.116 → 0.059 ms, its 3×3 at 7×7 0.089 →
        // 0.079, its strided 5×5 at 14×14 (rows of 7) 0.130 → 0.117. Not 5×5 stride-1
        // planes of 8 columns or fewer (1152 channels at 7×7: 0.144 → 0.156): five
        // rows of one half-filled vector in flight. The tap-major kernel compiled for
        // AVX-512 was slower everywhere (the strided 3×3 at 112×112: 0.59 → 0.68 ms; at
        // 7×7 0.42 → 0.56), so it stays on the AVX2 build.
        self.slide.is_some_and(|ks| ks != (5, 1) || g.out_hw[1] > LANES)
    }

    /// Whether AVX-512 runs this conv 16 channels at a time (`avx512::channel_block`):
    /// 3 × 3 and 5 × 5 stride-1 planes of up to 8 columns, whose rows fill half a vector.
    /// `dw_profile`, one thread, 1152 channels at 7×7: 5 × 5 (AVX2 tap-major) 0.134–0.144
    /// → 0.084–0.089 ms, 3 × 3 (AVX-512 sliding) 0.074–0.079 → 0.057–0.063. Not at
    /// 14×14, where the sliding strips stay faster (672 channels 5 × 5: 0.14 against
    /// 0.16; 480 3 × 3: 0.053 against 0.078).
    fn channel_blocks(&self, g: &ConvGeometry) -> bool {
        matches!(self.slide, Some((3 | 5, 1))) && g.out_hw[1] <= LANES && g.in_hw[1] <= LANES
    }

    /// Scratch floats one plane needs for the forward and the weight gradient: the
    /// phase planes, a row, and per-tap accumulators.
    fn buf_len(&self) -> usize {
        self.l.len() + self.l.owp + self.taps.len() * LANES
    }
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
    let FwdRows { phases, plan, wk, store: Store { bias, clamp }, row_step } = *c;
    let mut acc = [[bias; W]; R];
    // One bounds check per block instead of one per tap and row.
    let last = plan.tap_reach;
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
    for (r, acc) in acc.iter_mut().enumerate() {
        if clamp.is_some() {
            acc.iter_mut().for_each(|v| *v = crate::gemm::direct::clamp(*v, clamp));
        }
        if valid == W {
            // A whole block: a fixed-size store (a variable-length copy would be a
            // `memmove` call per row and block).
            let dst: &mut [f32; W] = (&mut out[r * ow..r * ow + W]).try_into().expect("W lanes");
            *dst = *acc;
        } else {
            copy_prefix(&mut out[r * ow..], &acc[..], valid);
        }
    }
}

/// What every forward register block reads.
#[derive(Clone, Copy)]
struct FwdRows<'a> {
    phases: &'a [f32],
    plan: &'a DwPlan,
    wk: &'a [f32],
    /// The channel's bias and the clamp its store applies.
    store: Store,
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
    store: Store,
    out: &mut [f32],
) {
    let (l, ow) = (&plan.l, g.out_hw[1]);
    let step = g.p.stride[0] * l.pw;
    let c = FwdRows { phases, plan, wk, store, row_step: step };
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

/// What a forward plane's store applies: the channel's bias, then the clamp.
#[derive(Clone, Copy)]
struct Store {
    bias: f32,
    clamp: Clamp,
}

/// Rows per register block in the forward kernel: 7 rows of two 8-lane vectors are 14
/// accumulators, and a 7×7 or 14×14 plane has no remainder.
const ROWS: usize = 7;

#[allow(clippy::too_many_arguments)] // a plane's operands, spelled out
#[inline(always)]
fn dw_forward_plane<const FMA: bool, const V: usize>(
    xp: &[f32],
    mask: Option<GradMask>,
    wk: &[f32],
    store: Store,
    g: &ConvGeometry,
    plan: &DwPlan,
    out: &mut [f32],
    buf: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if V >= 16 {
        // Safety: V = 16 is the AVX-512 build (dw_forward_planes_on), on a CPU with it.
        unsafe {
            match plan.slide {
                Some((3, 1)) => return forward_sliding_in_place::<3, 1>(xp, mask, g, plan, wk, store, out),
                Some((5, 1)) => return forward_sliding_in_place::<5, 1>(xp, mask, g, plan, wk, store, out),
                Some((3, 2)) => return forward_sliding_in_place::<3, 2>(xp, mask, g, plan, wk, store, out),
                Some((5, 2)) => return forward_sliding_in_place::<5, 2>(xp, mask, g, plan, wk, store, out),
                _ => {}
            }
        }
    }
    let phases = &mut buf[..plan.l.len()];
    match mask {
        Some(m) => phase_split_masked(xp, m, g, &plan.l, phases),
        None => phase_split(xp, g, &plan.l, phases),
    }
    // Sliding keeps K rows of sums and a row in flight in registers: at 3 × 3 that fits
    // AVX2's 16 (two 8-lane vectors a row), at 5 × 5 only AVX-512's 32 (with AVX2 it
    // spilled: 2.3× slower than tap-major at 16 lanes, no faster at 8; AVX2 intrinsics
    // were no better overall). The AVX-512 build slid in place above; the generic loops
    // are written for stride 1.
    if plan.slide == Some((3, 1)) {
        return forward_sliding::<3, 16, FMA>(phases, g, plan, wk, store, out);
    }
    let oh_n = g.out_hw[0];
    let mut oh = 0;
    while oh + ROWS <= oh_n {
        fwd_rows::<ROWS, FMA>(phases, oh, g, plan, wk, store, out);
        oh += ROWS;
    }
    // The last rows as one block: single rows would each be one chain of dependent FMAs.
    macro_rules! tail {
        ($($r:literal)*) => {
            match oh_n - oh {
                $($r => fwd_rows::<$r, FMA>(phases, oh, g, plan, wk, store, out),)*
                _ => {}
            }
        };
    }
    tail!(1 2 3 4 5 6);
}

/// A stride-1 `K × K` plane (dilation 1) in column strips of `SW` lanes (the last ones
/// narrower), each swept down the plane by [`slide_strip`].
#[inline(always)]
fn forward_sliding<const K: usize, const SW: usize, const FMA: bool>(
    phases: &[f32],
    g: &ConvGeometry,
    plan: &DwPlan,
    wk: &[f32],
    store: Store,
    out: &mut [f32],
) {
    let (owp, ow) = (plan.l.owp, g.out_hw[1]);
    if g.out_hw[0] == 0 {
        return;
    }
    assert!(g.p.stride == [1, 1], "the generic sliding strip is written for stride 1");
    let mut j = 0;
    // Strips of SW lanes, then of 16 and 8 (`owp` is a multiple of 8).
    while j < owp {
        if j + SW <= owp {
            slide_strip::<K, SW, FMA>(phases, g, plan, wk, store, j, out);
            j += SW;
        } else {
            slide_strip::<K, LANES, FMA>(phases, g, plan, wk, store, j, out);
            j += LANES;
        }
        debug_assert!(j <= owp.max(ow));
    }
}

/// A `K × K` plane at stride `S` (dilation 1) read in place, with no phase copy, in
/// AVX-512 strips of 32 lanes (`avx512::Plane`).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn forward_sliding_in_place<const K: usize, const S: usize>(
    xp: &[f32],
    mask: Option<GradMask>,
    g: &ConvGeometry,
    plan: &DwPlan,
    wk: &[f32],
    store: Store,
    out: &mut [f32],
) {
    // A gated plane is a stride-1 gradient (`Plane::new` checks).
    match mask {
        Some(_) => strips_in_place::<K, S, true>(xp, mask, g, plan, wk, store, out),
        None => strips_in_place::<K, S, false>(xp, mask, g, plan, wk, store, out),
    }
}

/// [`forward_sliding_in_place`], the plane gated by `mask` or not (the same safety).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn strips_in_place<const K: usize, const S: usize, const GATED: bool>(
    xp: &[f32],
    mask: Option<GradMask>,
    g: &ConvGeometry,
    plan: &DwPlan,
    wk: &[f32],
    store: Store,
    out: &mut [f32],
) {
    let ow = g.out_hw[1];
    if g.out_hw[0] == 0 {
        return;
    }
    assert!(out.len() >= g.out_len() && plan.strips.len() == ow.div_ceil(32));
    for (lanes, j) in plan.strips.iter().zip((0..ow).step_by(32)) {
        let s = Slide::<K>::over_plane(g, wk, store, j, 32);
        let src = avx512::Plane::<S, GATED>::new(xp, mask, g, lanes);
        if ow - j > 16 {
            avx512::slide_strip::<K, S, 2, GATED>(&s, &src, out);
        } else {
            avx512::slide_strip::<K, S, 1, GATED>(&s, &src, out);
        }
    }
}

/// Where the loads of an in-place sliding strip (`avx512::Plane`) start, and their lane
/// masks: the same for every plane of a call, so [`DwPlan`] makes them once per strip
/// (made per plane they were 7 % of a 14×14 plane's time).
struct StripLanes {
    /// The input column of the strip's first lane at kernel column 0 (negative in the
    /// left padding); every load starts [`StripLanes::offset`] from it.
    base: isize,
    /// Lane masks per row kind (0: a padding row, all clear; 1: an input row), kernel
    /// column, output vector and half (stride 2 loads two vectors).
    masks: [[[[u16; 2]; 2]; 5]; 2],
}

impl StripLanes {
    /// The strip of 32 output columns from `j`, for a `k × k` kernel at stride `s`.
    fn new(g: &ConvGeometry, k: usize, s: usize, j: usize) -> Self {
        let (w, left) = (g.in_hw[1] as isize, g.p.padding.left as isize);
        let base = (s * j) as isize - left;
        let mut masks = [[[[0; 2]; 2]; 5]; 2];
        for (kw, m) in masks[1].iter_mut().enumerate().take(k) {
            for (n, m) in m.iter_mut().enumerate() {
                for (half, m) in m.iter_mut().enumerate().take(s) {
                    let c = base + Self::offset(s, kw, n, half);
                    // Lanes i with 0 <= c + i < w.
                    let lo = (-c).clamp(0, 16) as u32;
                    let hi = (w - c).clamp(0, 16) as u32;
                    *m = if hi > lo { (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16 } else { 0 };
                }
            }
        }
        Self { base, masks }
    }

    /// Where the load of kernel column `kw`, output vector `n` and half `half` starts,
    /// from `base`, at stride `s`.
    #[inline(always)]
    fn offset(s: usize, kw: usize, n: usize, half: usize) -> isize {
        (kw + 16 * (s * n + half)) as isize
    }
}

/// Output columns `[j, j + W)` of a stride-1 `K × K` plane, top to bottom: each padded
/// input row is loaded once per kernel column and added into the `K` output rows it
/// reaches, whose sums stay in registers until the last of their rows has passed
/// (`acc[a]` is output row `r − K + 1 + a` while input row `r` is read). The tap-major
/// [`fwd_block`] loads each input row once per output row instead: `K` times the
/// loads, half of them split across cache lines, and loads were what bounded it.
#[inline(always)]
fn slide_strip<const K: usize, const W: usize, const FMA: bool>(
    phases: &[f32],
    g: &ConvGeometry,
    plan: &DwPlan,
    wk: &[f32],
    store: Store,
    j: usize,
    out: &mut [f32],
) {
    let s = Slide::<K>::new(phases, g, plan, wk, store, j, W);
    debug_assert_eq!(s.rows, g.out_hw[0] + K - 1, "stride 1");
    let (rows, bias) = (s.rows, s.bias);
    // Output row o sums in slot o mod K; the rows go K at a time, each of the K as its
    // own instance of `slide_row`, so every slot index is a constant and the sums stay in
    // registers (a rotating array, or a loop over the K, was kept in memory).
    let mut acc = [[bias; W]; K];
    let mut r0 = 0;
    while r0 < rows {
        macro_rules! rows {
            ($($q:literal)*) => {$(
                if $q < K && r0 + $q < rows {
                    slide_row::<K, W, $q, FMA>(&s, &mut acc, r0 + $q, out);
                }
            )*};
        }
        rows!(0 1 2 3 4);
        r0 += K;
    }
}

/// What every row of a sliding strip reads.
struct Slide<'a, const K: usize> {
    phases: &'a [f32],
    /// Phase-layout offset of each kernel column at the strip's first lane.
    c0: [usize; K],
    pw: usize,
    w: [f32; 25],
    bias: f32,
    clamp: Clamp,
    ow: usize,
    j: usize,
    /// Output lanes of the strip inside the row.
    valid: usize,
    /// Padded input rows the strip passes.
    rows: usize,
}

impl<'a, const K: usize> Slide<'a, K> {
    /// The strip at output column `j`, `lanes` wide (its reads checked here, once).
    #[inline(always)]
    fn new(
        phases: &'a [f32],
        g: &ConvGeometry,
        plan: &DwPlan,
        wk: &[f32],
        store: Store,
        j: usize,
        lanes: usize,
    ) -> Self {
        let mut s = Self::over_plane(g, wk, store, j, lanes);
        s.pw = plan.l.pw;
        for (kw, c) in s.c0.iter_mut().enumerate() {
            *c = plan.taps[kw].c0 + j;
        }
        // The furthest read is the last row's last column tap.
        let far = s.c0.iter().max().copied().unwrap_or(0);
        assert!(plan.l.rows >= s.rows && far + (s.rows - 1) * s.pw + lanes <= phases.len());
        Self { phases, ..s }
    }

    /// The strip at output column `j`, `lanes` wide, without phase planes: its inputs
    /// come from elsewhere (`avx512::Plane`).
    #[inline(always)]
    fn over_plane(g: &ConvGeometry, wk: &[f32], store: Store, j: usize, lanes: usize) -> Self {
        let ow = g.out_hw[1];
        // Output row o reads padded rows o·S .. o·S + K − 1.
        let rows = g.p.stride[0] * g.out_hw[0].saturating_sub(1) + K;
        let mut w = [0.0f32; 25];
        assert!(K * K <= 25);
        w[..K * K].copy_from_slice(&wk[..K * K]);
        let valid = ow.saturating_sub(j).min(lanes);
        let Store { bias, clamp } = store;
        Self { phases: &[], c0: [0; K], pw: 0, w, bias, clamp, ow, j, valid, rows }
    }
}

/// Input row `r` (the `Q`-th of its group of `K`) of a sliding strip: added into the
/// `K` output rows it reaches, then the output row it completes is stored.
#[inline(always)]
fn slide_row<const K: usize, const W: usize, const Q: usize, const FMA: bool>(
    s: &Slide<K>,
    acc: &mut [[f32; W]; K],
    r: usize,
    out: &mut [f32],
) {
    for kw in 0..K {
        // Safety: r < rows and c0[kw] ≤ c0[K − 1], bounded by slide_strip's assert.
        let src: &[f32; W] = unsafe { &*(s.phases.as_ptr().add(s.c0[kw] + r * s.pw) as *const [f32; W]) };
        for kh in 0..K {
            // Input row r is tap row kh of output row r − kh, in slot (Q − kh) mod K.
            let (acc, wv) = (&mut acc[(Q + K - kh) % K], s.w[kh * K + kw]);
            for i in 0..W {
                acc[i] = fmadd::<FMA>(wv, src[i], acc[i]);
            }
        }
    }
    // Output row r − K + 1 has all its rows: its slot starts row r + 1, and it is stored
    // unless it lies above the plane (the first K − 1 rows fill such slots too). A
    // copy: a reference into `acc` would keep all of it in memory.
    let mut done = std::mem::replace(&mut acc[(Q + 1) % K], [s.bias; W]);
    if r + 1 >= K {
        if s.clamp.is_some() {
            done.iter_mut().for_each(|v| *v = crate::gemm::direct::clamp(*v, s.clamp));
        }
        let o = (r + 1 - K) * s.ow + s.j;
        if s.valid == W {
            let dst: &mut [f32; W] = (&mut out[o..o + W]).try_into().expect("W lanes");
            *dst = done;
        } else {
            copy_prefix(&mut out[o..], &done[..], s.valid);
        }
    }
}

/// `W` lanes of padded input row `r`, phase `p`, of the input gradient: the transposed
/// conv as a gather, `Σ_{(oh, kh) reaching r} Σ_{kw in phase p} w·dy[oh][q − q0]`.
#[inline(always)]
fn bwd_input_block<const W: usize, const FMA: bool>(
    dypad: &[f32],
    r: usize,
    p: usize,
    q: usize,
    gather: &Gather,
    wk: &[f32],
    dst: &mut [f32],
) {
    let mut acc = [0.0f32; W];
    // Bounds, once per block: every read below starts at or before `last` and spans W.
    let last = gather.row_reach[r] + q;
    assert!(last + W <= dypad.len() && gather.margin <= gather.dyw && wk.len() >= gather.taps);
    for &(at, wi) in &gather.terms[r * gather.l.s + p] {
        // Safety: q0 <= margin, so `at + q` <= `last`, checked above; wi < taps.
        let (src, w) = unsafe { (dypad.get_unchecked(at + q..at + q + W), *wk.get_unchecked(wi)) };
        for i in 0..W {
            acc[i] = fmadd::<FMA>(w, src[i], acc[i]);
        }
    }
    dst[..W].copy_from_slice(&acc);
}

#[inline(always)]
fn dw_backward_input_plane<const FMA: bool>(
    dyp: &[f32],
    wk: &[f32],
    g: &ConvGeometry,
    plan: &Gather,
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
            // The widest blocks the row has: a block's sum per lane vector is one chain
            // of dependent FMAs, so wider blocks keep more of them in flight (7×7
            // outputs have rows of 16 lanes and nothing else to overlap).
            let mut j = 0;
            while j + 2 * BLOCK <= l.pw {
                bwd_input_block::<{ 2 * BLOCK }, FMA>(dypad, r, p, j, plan, wk, &mut row[j..]);
                j += 2 * BLOCK;
            }
            if j + BLOCK <= l.pw {
                bwd_input_block::<BLOCK, FMA>(dypad, r, p, j, plan, wk, &mut row[j..]);
                j += BLOCK;
            }
            if j + 2 * LANES <= l.pw {
                bwd_input_block::<{ 2 * LANES }, FMA>(dypad, r, p, j, plan, wk, &mut row[j..]);
                j += 2 * LANES;
            }
            if j < l.pw {
                bwd_input_block::<LANES, FMA>(dypad, r, p, j, plan, wk, &mut row[j..]);
            }
        }
    }
    phase_gather(phases, g, l, dx);
}

/// [`dw_backward_input_plane`] compiled for `isa` (which the CPU must have). AVX-512
/// runs the AVX2 build: compiled for AVX-512 the gather was no faster (one thread,
/// 96 channels at 112×112 stride 2: 0.485 against 0.478 ms, within noise); where the
/// in-place kernel takes a conv (`strided_backward_in_place`) this is not reached.
fn dw_backward_input_plane_on(
    isa: Isa,
    dyp: &[f32],
    wk: &[f32],
    g: &ConvGeometry,
    plan: &Gather,
    dx: &mut [f32],
    buf: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(dyp: &[f32], wk: &[f32], g: &ConvGeometry, plan: &Gather, dx: &mut [f32], buf: &mut [f32]) {
            dw_backward_input_plane::<true>(dyp, wk, g, plan, dx, buf)
        }
        match isa {
            // Safety: callers pass an ISA of `Isa::available()`, detected on this CPU.
            Isa::Avx512 | Isa::Avx2 => return unsafe { avx2(dyp, wk, g, plan, dx, buf) },
            Isa::Generic => {}
        }
    }
    let _ = isa;
    dw_backward_input_plane::<false>(dyp, wk, g, plan, dx, buf)
}

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

/// A task's share of a forward: consecutive planes from `first` on (plane `i` is channel
/// `i % C` of image `i / C`).
#[derive(Clone, Copy)]
struct FwdPlanes<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    clamp: Clamp,
    first: usize,
    /// Where `x` is a gradient that a clamped layer's output still has to mask.
    mask: Option<GradMask<'a>>,
}

/// A clamped layer's output `y` and its bounds: a gradient element passes where
/// `lo < y < hi` and is 0 elsewhere (ReLU6's and a clip's derivative, as the tape's
/// separate mask pass computes it).
#[derive(Clone, Copy)]
pub(crate) struct GradMask<'a> {
    pub(crate) y: &'a [f32],
    pub(crate) lo: f32,
    pub(crate) hi: f32,
}

/// The planes of `out` one after the other, inside one dispatch: small planes (7×7) cost
/// little more than the call and closure around each.
#[inline(always)]
fn dw_forward_planes<const FMA: bool, const V: usize>(
    p: FwdPlanes,
    g: &ConvGeometry,
    plan: &DwPlan,
    out: &mut [f32],
    buf: &mut [f32],
) {
    let (il, kk, c) = (g.in_len(), g.k_hw[0] * g.k_hw[1], g.c_in);
    for (k, plane) in out.chunks_exact_mut(g.out_len()).enumerate() {
        let (i, ch) = (p.first + k, (p.first + k) % c);
        let store = Store { bias: p.bias.map_or(0.0, |b| b[ch]), clamp: p.clamp };
        let (xp, wk) = (&p.x[i * il..(i + 1) * il], &p.w[ch * kk..(ch + 1) * kk]);
        let mask = p.mask.map(|m| GradMask { y: &m.y[i * il..(i + 1) * il], ..m });
        dw_forward_plane::<FMA, V>(xp, mask, wk, store, g, plan, plane, buf);
    }
}

/// [`dw_forward_planes`] compiled for `isa` (which the CPU must have: [`Isa::available`]).
/// `V` is its vector width in lanes; the loops are plain Rust that the compiler
/// vectorizes for the enabled features.
fn dw_forward_planes_on(isa: Isa, p: FwdPlanes, g: &ConvGeometry, plan: &DwPlan, out: &mut [f32], buf: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(p: FwdPlanes, g: &ConvGeometry, plan: &DwPlan, out: &mut [f32], buf: &mut [f32]) {
            dw_forward_planes::<true, 16>(p, g, plan, out, buf)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(p: FwdPlanes, g: &ConvGeometry, plan: &DwPlan, out: &mut [f32], buf: &mut [f32]) {
            dw_forward_planes::<true, 8>(p, g, plan, out, buf)
        }
        match isa {
            // Safety: callers pass an ISA of `Isa::available()`, detected on this CPU
            // (AVX-512F implies AVX2 and FMA on every CPU that has it).
            Isa::Avx512 if plan.avx512_slides(g) => return unsafe { avx512(p, g, plan, out, buf) },
            Isa::Avx512 => return unsafe { avx2(p, g, plan, out, buf) },
            Isa::Avx2 => return unsafe { avx2(p, g, plan, out, buf) },
            Isa::Generic => {}
        }
    }
    let _ = isa;
    dw_forward_planes::<false, 8>(p, g, plan, out, buf)
}

/// A task's scratch, its phase planes zeroed: [`phase_split`] only writes the input's
/// positions, the same ones for every plane.
fn zeroed_lease<'a>(scratch: &'a ScratchPool, plan: &DwPlan) -> crate::scratch::Lease<'a> {
    let mut buf = scratch.lease(plan.buf_len());
    buf[..plan.l.len()].fill(0.0);
    buf
}

pub(super) fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    forward_on(Isa::detect(), x, None, w, bias, clamp, g, out, scratch, pool_tasks())
}

/// [`forward`] on the calling thread only: for a caller that already splits its work
/// over the pool and wants each piece to stay where its input is in cache
/// ([`super::fused`]). The same kernels, so the same bits.
pub(super) fn forward_serial(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
) {
    forward_on(Isa::detect(), x, None, w, bias, clamp, g, out, scratch, 1)
}

/// Tasks for a pass spread over the pool: about eight per thread, enough to balance,
/// few enough to amortize a task.
fn pool_tasks() -> usize {
    8 * rayon::current_num_threads()
}

/// [`forward`] on a given instruction set (tests run every one the CPU has), with `x`
/// masked on its way in where `mask` says (a gradient), in at most `tasks` tasks (one:
/// all on the calling thread).
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
fn forward_on(
    isa: Isa,
    x: &[f32],
    mask: Option<GradMask>,
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Clamp,
    g: &ConvGeometry,
    out: &mut [f32],
    scratch: &ScratchPool,
    tasks: usize,
) {
    let plan = DwPlan::new(g);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && plan.channel_blocks(g) {
        let p = FwdPlanes { x, w, bias, clamp, first: 0, mask };
        return forward_channel_blocks(p, g, out, scratch, tasks);
    }
    let per_task = (g.n * g.c_in).div_ceil(tasks).max(1);
    // The AVX-512 strips read their planes in place and need no phase copies.
    let in_place = isa == Isa::Avx512 && plan.avx512_slides(g);
    out.par_chunks_mut(per_task * g.out_len()).enumerate().for_each_init(
        || (!in_place).then(|| zeroed_lease(scratch, &plan)),
        |buf, (t, chunk)| {
            let p = FwdPlanes { x, w, bias, clamp, first: t * per_task, mask };
            dw_forward_planes_on(isa, p, g, &plan, chunk, buf.as_deref_mut().unwrap_or_default());
        },
    );
}

/// [`forward_on`] on AVX-512 for small 3 × 3 and 5 × 5 stride-1 planes (`p.first` 0):
/// 16 planes a block (`avx512::channel_block`), up to `tasks` tasks of whole blocks.
#[cfg(target_arch = "x86_64")]
fn forward_channel_blocks(p: FwdPlanes, g: &ConvGeometry, out: &mut [f32], scratch: &ScratchPool, tasks: usize) {
    let ol = g.out_len();
    let blocks = (g.n * g.c_in).div_ceil(16);
    let per_task = blocks.div_ceil(tasks).max(1) * 16;
    let (len, lay) = (avx512::channel_block_len(g), ChannelBlockLayout::new(g));
    out.par_chunks_mut(per_task * ol).enumerate().for_each_init(
        || {
            let mut buf = scratch.lease(len);
            lay.zero_padding(&mut buf);
            buf
        },
        |buf, (t, chunk)| {
            for (b, block) in chunk.chunks_mut(16 * ol).enumerate() {
                let p = FwdPlanes { first: t * per_task + 16 * b, ..p };
                // Safety: callers pass Isa::Avx512 only where the CPU has it.
                unsafe {
                    if g.k_hw[0] == 5 {
                        avx512::channel_block::<5>(p, g, block, buf)
                    } else {
                        avx512::channel_block::<3>(p, g, block, buf)
                    }
                };
            }
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

pub(super) fn backward_input(dy: &[f32], w: &[f32], g: &ConvGeometry, dx: &mut [f32], scratch: &ScratchPool) {
    backward_input_on(Isa::detect(), dy, w, g, dx, scratch)
}

/// Whether [`backward_input_masked`] takes this conv: stride 1, where the transposed
/// conv is a forward.
pub(super) fn masks_in_kernel(g: &ConvGeometry) -> bool {
    transposed_as_forward(g).is_some()
}

/// [`backward_input`] of a clamped depthwise conv's masked output gradient: `dy` is
/// masked by `mask` (the conv's output and its clamp's bounds) as the transposed conv
/// reads it, instead of in a pass of its own. Stride 1 only ([`masks_in_kernel`]);
/// `false`, with `dx` untouched, elsewhere.
pub(super) fn backward_input_masked(
    dy: &[f32],
    mask: GradMask,
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) -> bool {
    backward_as_forward(Isa::detect(), dy, Some(mask), w, g, dx, scratch)
}

/// With stride 1, the backward to the input as the forward of the transposed geometry
/// with the flipped kernel (`dy` masked on its way in where `mask` says); `false`, with
/// `dx` untouched, where the geometry has no such form.
fn backward_as_forward(
    isa: Isa,
    dy: &[f32],
    mask: Option<GradMask>,
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
    scratch: &ScratchPool,
) -> bool {
    let Some(t) = transposed_as_forward(g) else { return false };
    let kk = g.k_hw[0] * g.k_hw[1];
    // From the pool: a step runs this for every stride-1 depthwise layer.
    let mut flipped = scratch.lease(w.len());
    for (f, k) in flipped.chunks_exact_mut(kk).zip(w.chunks_exact(kk)) {
        f.iter_mut().zip(k.iter().rev()).for_each(|(f, &v)| *f = v);
    }
    forward_on(isa, dy, mask, &flipped, None, None, &t, dx, scratch, pool_tasks());
    true
}

/// [`backward_input`] on a given instruction set (tests run every one the CPU has).
fn backward_input_on(isa: Isa, dy: &[f32], w: &[f32], g: &ConvGeometry, dx: &mut [f32], scratch: &ScratchPool) {
    if backward_as_forward(isa, dy, None, w, g, dx, scratch) {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && strided_backward_in_place(dy, w, g, dx) {
        return;
    }
    let plan = Gather::new(g);
    let (ol, kk, c) = (g.out_len(), g.k_hw[0] * g.k_hw[1], g.c_in);
    dx.par_chunks_mut(g.in_len()).enumerate().for_each_init(
        || scratch.lease(plan.buf_len(g)),
        |buf, (i, plane)| {
            let ch = i % c;
            dw_backward_input_plane_on(
                isa,
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

/// The backward to the input of a stride-2 3×3 or 5×5 depthwise conv on AVX-512
/// (`avx512::strided_backward_plane`, which needs no phase planes); `false`, with `dx`
/// untouched, for any other geometry. One thread, against the phase gather: 96
/// channels at 112×112 3×3 0.65 → 0.27 ms, 144 at 56×56 5×5 0.45 → 0.21 ms.
///
/// The CPU must have AVX-512F (callers check `isa`).
#[cfg(target_arch = "x86_64")]
fn strided_backward_in_place(dy: &[f32], w: &[f32], g: &ConvGeometry, dx: &mut [f32]) -> bool {
    let k = g.k_hw[0];
    if g.p.stride != [2, 2] || g.p.dilation != [1, 1] || g.k_hw[1] != k || !matches!(k, 3 | 5) {
        return false;
    }
    let (ol, kk, c) = (g.out_len(), k * k, g.c_in);
    let strips = g.in_hw[1].div_ceil(32);
    dx.par_chunks_mut(g.in_len()).enumerate().for_each(|(i, plane)| {
        let (dyp, wk) = (&dy[i * ol..(i + 1) * ol], &w[i % c * kk..(i % c + 1) * kk]);
        // Safety: the caller runs this on AVX-512 only; the kernel checks its slices.
        unsafe {
            match (k, strips) {
                (3, 1) => avx512::strided_backward_plane::<3, 1>(dyp, wk, g, plane),
                (3, 2) => avx512::strided_backward_plane::<3, 2>(dyp, wk, g, plane),
                (3, _) => avx512::strided_backward_plane::<3, 4>(dyp, wk, g, plane),
                (_, 1) => avx512::strided_backward_plane::<5, 1>(dyp, wk, g, plane),
                (_, 2) => avx512::strided_backward_plane::<5, 2>(dyp, wk, g, plane),
                _ => avx512::strided_backward_plane::<5, 4>(dyp, wk, g, plane),
            }
        }
    });
    true
}

pub(super) fn backward_weight(x: &[f32], dy: &[f32], g: &ConvGeometry, dw: &mut [f32], scratch: &ScratchPool) {
    let plan = DwPlan::new(g);
    let (il, ol, kk, c) = (g.in_len(), g.out_len(), g.k_hw[0] * g.k_hw[1], g.c_in);
    dw.par_chunks_mut(kk).enumerate().for_each_init(
        || zeroed_lease(scratch, &plan),
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

#[cfg(target_arch = "x86_64")]
pub(super) use avx512::ChannelBlockLayout;

/// 16 channels (`first..first + 16`) of a 3 × 3 or 5 × 5 depthwise conv (stride 1 or 2), from
/// their pixel-major copy `inb` (laid out as `lay`, padding zero) into `outb` (16 ·
/// out_len floats, pixel-major) and, given `out`, from there into their planes (16 ·
/// out_len floats). The same bits as [`forward`].
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)] // a conv's operands, spelled out
pub(super) unsafe fn channel_block_from_copy(
    inb: &[f32],
    lay: &ChannelBlockLayout,
    w: &[f32],
    bias: Option<&[f32]>,
    clamp: Clamp,
    first: usize,
    g: &ConvGeometry,
    outb: &mut [f32],
    out: Option<&mut [f32]>,
) {
    // `block_sums` checks the stride and that the copy fits.
    let k = g.k_hw[0];
    assert!(g.k_hw == [k, k] && matches!(k, 3 | 5) && g.p.dilation == [1, 1]);
    let wbc = (w, bias, clamp);
    match (k, g.p.stride[0]) {
        (5, 1) => avx512::block_sums::<5, 1>(inb, lay, wbc, first, 16, g, outb),
        (3, 1) => avx512::block_sums::<3, 1>(inb, lay, wbc, first, 16, g, outb),
        (5, _) => avx512::block_sums::<5, 2>(inb, lay, wbc, first, 16, g, outb),
        _ => avx512::block_sums::<3, 2>(inb, lay, wbc, first, 16, g, outb),
    }
    if let Some(out) = out {
        avx512::planes_out(outb, g.out_len(), 16, out);
    }
}

/// The sliding strip in AVX-512 intrinsics: the generic loops, compiled for AVX-512,
/// kept their sums on the stack (1.5× slower than AVX2), where these hold them in
/// registers: `K × NV` sums, `NV` input vectors, one weight.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use crate::simd::avx512::{lanes, transpose16};

    use super::{Slide, StripLanes};

    /// The input plane itself, unpadded: padding is masked-off lanes (and whole rows),
    /// and at stride 2 each tap's 16 inputs are the even lanes of 32 (one permute).
    /// No copy of the plane, which at stride 2 (deinterleaved into phases) cost more
    /// than the conv. `GATED`: the plane is a gradient, passed where a clamped layer's
    /// output `y` lies strictly between two bounds (a stride-1 backward's fused mask).
    pub(super) struct Plane<'a, const S: usize, const GATED: bool> {
        x: &'a [f32],
        /// `y` (as long as `x`) and its bounds, when `GATED`.
        gate: (&'a [f32], f32, f32),
        w: usize,
        h: usize,
        top: usize,
        /// Where the strip's loads start and their lane masks.
        lanes: &'a StripLanes,
        evens: __m512i,
    }

    impl<'a, const S: usize, const GATED: bool> Plane<'a, S, GATED> {
        /// The strip `lanes` describes, over plane `x` (gated by `mask` when `GATED`).
        ///
        /// # Safety
        /// The CPU must have AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn new(
            x: &'a [f32],
            mask: Option<super::GradMask<'a>>,
            g: &super::ConvGeometry,
            lanes: &'a StripLanes,
        ) -> Self {
            let ([h, w], pad) = (g.in_hw, g.p.padding);
            assert!(S <= 2 && g.p.stride[1] == S && x.len() >= h * w);
            let gate = match mask {
                Some(m) if GATED => (m.y, m.lo, m.hi),
                None if !GATED => (x, 0.0, 0.0),
                _ => panic!("a gated plane needs its mask, an ungated one none"),
            };
            assert!(gate.0.len() == x.len() && (!GATED || S == 1), "a gate is stride 1, one y per element");
            let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            Self { x, gate, w, h, top: pad.top, lanes, evens }
        }
    }

    impl<const S: usize, const GATED: bool> Plane<'_, S, GATED> {
        /// Where padded row `r`'s loads start counting from (an element offset into the
        /// plane: negative in the left padding), and its kind (a `masks` index).
        #[inline(always)]
        unsafe fn row(&self, r: usize) -> (isize, usize) {
            match r.checked_sub(self.top).filter(|&i| i < self.h) {
                Some(i) => ((i * self.w) as isize + self.lanes.base, 1),
                None => (0, 0),
            }
        }
        /// The 16 inputs that output lanes `16n ..` take at kernel column `kw` in a row
        /// (zero outside the input).
        #[inline(always)]
        unsafe fn load(&self, (row, kind): (isize, usize), kw: usize, n: usize) -> __m512 {
            // Masked-off lanes read nothing (no fault), so a load may start before the
            // row or end past it; a padding row reads nothing at all.
            let m = &self.lanes.masks[kind][kw][n];
            let at = |p: &[f32], h: usize| {
                _mm512_maskz_loadu_ps(m[h], p.as_ptr().wrapping_offset(row + StripLanes::offset(S, kw, n, h)))
            };
            if GATED {
                // As `phase_split_masked`: x where lo < y < hi (false for a NaN y), else 0.
                let (y, lo, hi) = self.gate;
                let y = at(y, 0);
                let pass = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_set1_ps(lo))
                    & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, _mm512_set1_ps(hi));
                _mm512_maskz_mov_ps(pass, at(self.x, 0))
            } else if S == 1 {
                at(self.x, 0)
            } else {
                _mm512_permutex2var_ps(at(self.x, 0), self.evens, at(self.x, 1))
            }
        }
    }

    /// A strip of `NV` vectors of 16 lanes down the plane (as `super::slide_strip`),
    /// stride `S`: input row `r` is tap row `kh` of output row `(r − kh) / S` where that
    /// divides, and `m = ⌈K / S⌉` output rows are in flight, output row `o` in slot
    /// `o mod m`. Rows go in groups of `S·m`, so each slot index is a constant.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `out` must hold the plane's output (each store is
    /// checked); `src`'s reads are its plane's (checked when it was built).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn slide_strip<const K: usize, const S: usize, const NV: usize, const GATED: bool>(
        s: &Slide<K>,
        src: &Plane<S, GATED>,
        out: &mut [f32],
    ) {
        let mut masks = [0; NV];
        for (n, m) in masks.iter_mut().enumerate() {
            *m = lanes(s.valid.saturating_sub(16 * n));
        }
        let group = S * K.div_ceil(S);
        let mut acc = [[_mm512_set1_ps(s.bias); NV]; K];
        let mut r0 = 0;
        while r0 < s.rows {
            macro_rules! rows {
                ($($q:literal)*) => {$(
                    if $q < group && r0 + $q < s.rows {
                        row::<K, S, NV, GATED, $q>(s, src, &masks, &mut acc, r0 + $q, out);
                    }
                )*};
            }
            rows!(0 1 2 3 4 5);
            r0 += group;
        }
    }

    /// The slot of the output row that input row `Q` of a group reaches at tap row `kh`
    /// (`None` where the stride skips it).
    #[inline(always)]
    fn slot<const K: usize, const S: usize, const Q: usize>(kh: usize) -> Option<usize> {
        let d = Q as isize - kh as isize;
        (d.rem_euclid(S as isize) == 0).then(|| (d / S as isize).rem_euclid(K.div_ceil(S) as isize) as usize)
    }

    /// Input row `r` (the `Q`-th of its group), as `super::slide_row`.
    #[inline(always)]
    unsafe fn row<const K: usize, const S: usize, const NV: usize, const GATED: bool, const Q: usize>(
        s: &Slide<K>,
        src: &Plane<S, GATED>,
        masks: &[__mmask16; NV],
        acc: &mut [[__m512; NV]; K],
        r: usize,
        out: &mut [f32],
    ) {
        let input = src.row(r);
        for kw in 0..K {
            let mut v = [_mm512_setzero_ps(); NV];
            for (n, v) in v.iter_mut().enumerate() {
                *v = src.load(input, kw, n);
            }
            for kh in 0..K {
                if let Some(slot) = slot::<K, S, Q>(kh) {
                    let w = _mm512_set1_ps(s.w[kh * K + kw]);
                    let acc = &mut acc[slot];
                    for n in 0..NV {
                        acc[n] = _mm512_fmadd_ps(w, v[n], acc[n]);
                    }
                }
            }
        }
        // The output row whose last tap row this is (if the stride lands on one): its
        // slot starts a new row, and it is stored unless it lies above the plane.
        if let Some(slot) = slot::<K, S, Q>(K - 1) {
            let done = std::mem::replace(&mut acc[slot], [_mm512_set1_ps(s.bias); NV]);
            if r + 1 >= K {
                let o = (r + 1 - K) / S * s.ow + s.j;
                assert!(o + s.valid <= out.len());
                for (n, &d) in done.iter().enumerate() {
                    let d = match s.clamp {
                        Some((lo, hi)) => _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), d)),
                        None => d,
                    };
                    _mm512_mask_storeu_ps(out.as_mut_ptr().add(o + 16 * n), masks[n], d);
                }
            }
        }
    }

    /// The input gradient of a stride-2 `K × K` depthwise plane (dilation 1), read and
    /// written in place: per input row, 32 columns at a time, the even and the odd
    /// columns each sum their taps (kernel columns of one parity, shifted `dy` rows,
    /// masked to real outputs) in vectors of 16, then go out interleaved. `NV` strips of
    /// 32 columns run side by side, so `2·NV` chains of FMAs are in flight. The terms
    /// run in the order of the phase gather (`super::dw_backward_input_plane`): tap row,
    /// then tap column, ascending; the results are its bits.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn strided_backward_plane<const K: usize, const NV: usize>(
        dy: &[f32],
        wk: &[f32],
        g: &super::ConvGeometry,
        dx: &mut [f32],
    ) {
        let ([h, w], [oh_n, ow_n], pad) = (g.in_hw, g.out_hw, g.p.padding);
        assert!(g.p.stride == [2, 2] && K <= 5 && dy.len() >= oh_n * ow_n && dx.len() >= h * w && wk.len() >= K * K);
        let pl = pad.left as isize;
        let lo_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let hi_half = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let mut iw0 = 0;
        while iw0 < w {
            // Per strip and kernel column: the dy column lane 0 reads (negative in the
            // padding) and its lane mask. Kernel column kw feeds input columns of
            // parity (kw + pl) mod 2: the even ones (first vector) or the odd ones.
            let mut at = [[(0isize, 0 as __mmask16); 5]; NV];
            for (n, at) in at.iter_mut().enumerate() {
                for (kw, at) in at.iter_mut().enumerate().take(K) {
                    let odd = (kw as isize + pl).rem_euclid(2);
                    let c = ((iw0 + 32 * n) as isize + pl + odd - kw as isize) / 2;
                    let lo = (-c).clamp(0, 16) as u32;
                    let hi = (ow_n as isize - c).clamp(0, 16) as u32;
                    *at = (c, if hi > lo { (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16 } else { 0 });
                }
            }
            let stores: [[__mmask16; 2]; NV] = std::array::from_fn(|n| {
                let left = w.saturating_sub(iw0 + 32 * n);
                [lanes(left), lanes(left.saturating_sub(16))]
            });
            for ih in 0..h {
                let r = ih + pad.top;
                let mut even = [_mm512_setzero_ps(); NV];
                let mut odd = [_mm512_setzero_ps(); NV];
                for kh in 0..K {
                    // Tap row kh of output row (r − kh) / 2, where that is an output row.
                    let Some(oh) = r.checked_sub(kh).filter(|t| t % 2 == 0).map(|t| t / 2).filter(|&o| o < oh_n) else {
                        continue;
                    };
                    let row = dy.as_ptr().add(oh * ow_n);
                    for kw in 0..K {
                        let wv = _mm512_set1_ps(wk[kh * K + kw]);
                        let to_odd = (kw as isize + pl).rem_euclid(2) == 1;
                        for n in 0..NV {
                            let (c, m) = at[n][kw];
                            // Masked-off lanes read nothing: the load may start before
                            // the row or end past it.
                            let v = _mm512_maskz_loadu_ps(m, row.wrapping_offset(c));
                            if to_odd {
                                odd[n] = _mm512_fmadd_ps(wv, v, odd[n]);
                            } else {
                                even[n] = _mm512_fmadd_ps(wv, v, even[n]);
                            }
                        }
                    }
                }
                for n in 0..NV {
                    let o = ih * w + iw0 + 32 * n;
                    if stores[n][0] != 0 {
                        // In bounds: the masks stop at the row's end, and dx holds h rows.
                        let dst = dx.as_mut_ptr().add(o);
                        _mm512_mask_storeu_ps(dst, stores[n][0], _mm512_permutex2var_ps(even[n], lo_half, odd[n]));
                        _mm512_mask_storeu_ps(
                            dst.wrapping_add(16),
                            stores[n][1],
                            _mm512_permutex2var_ps(even[n], hi_half, odd[n]),
                        );
                    }
                }
            }
            iw0 += 32 * NV;
        }
    }

    /// Up to 16 channel planes of a small stride-1 `K × K` conv (rows of at most 16) at
    /// once, one channel per lane: the planes go into a zero-padded pixel-major copy
    /// (16 channels a pixel, [`ChannelBlockLayout`]), the sums come from it
    /// ([`block_sums`]) and go back out to their planes. A plane of 7 columns fills half a
    /// vector in the plane layout; here every lane works.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn channel_block<const K: usize>(
        p: super::FwdPlanes,
        g: &super::ConvGeometry,
        out: &mut [f32],
        buf: &mut [f32],
    ) {
        let [h, w] = g.in_hw;
        let (il, ol) = (h * w, g.out_len());
        let n = out.len() / ol;
        let lay = ChannelBlockLayout::new(g);
        assert!(n <= 16 && out.len() == n * ol && lay.fits(g, K) && buf.len() >= lay.len() + ol * 16);
        assert!(p.x.len() >= (p.first + n) * il);
        assert!(p.mask.is_none_or(|m| m.y.len() == p.x.len()));
        let (inb, outb) = buf.split_at_mut(lay.len());
        // In: 16 pixels of the 16 planes at a time, transposed into 16 pixel vectors
        // (lane l: plane l) and stored at their padded places. The padding stays zero:
        // every block writes the same pixels (the caller zeroed the padding once).
        for pc in (0..il).step_by(16) {
            let m = lanes(il - pc);
            let mut v = [_mm512_setzero_ps(); 16];
            for (l, v) in v.iter_mut().enumerate().take(n) {
                let at = (p.first + l) * il + pc;
                *v = _mm512_maskz_loadu_ps(m, p.x.as_ptr().add(at));
                if let Some(g) = p.mask {
                    // As `phase_split_masked`: x where lo < y < hi (not for a NaN y), else 0.
                    let y = _mm512_maskz_loadu_ps(m, g.y.as_ptr().add(at));
                    let pass = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, _mm512_set1_ps(g.lo))
                        & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, _mm512_set1_ps(g.hi));
                    *v = _mm512_maskz_mov_ps(pass, *v);
                }
            }
            let t = transpose16(&v);
            for (q, t) in t.iter().enumerate().take(il - pc) {
                _mm512_storeu_ps(inb.as_mut_ptr().add(lay.at((pc + q) / w, (pc + q) % w)), *t);
            }
        }
        block_sums::<K, 1>(inb, &lay, (p.w, p.bias, p.clamp), p.first, n, g, outb);
        planes_out(outb, ol, n, out);
    }

    /// Where [`block_sums`] reads a block of 16 channels: pixel-major (a vector of 16
    /// channels per pixel), rows of `pitch` pixels, the conv's zero padding around the
    /// input and room on the right for a whole register row of taps.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct ChannelBlockLayout {
        /// Pixels per padded row.
        pub(crate) pitch: usize,
        /// Padded rows.
        pub(crate) rows: usize,
        /// The input's top-left pixel in the padded rows.
        top: usize,
        left: usize,
        /// Output pixels of a row in registers at once.
        row: usize,
        /// The input's height and width.
        input: [usize; 2],
    }

    impl ChannelBlockLayout {
        /// The layout for a depthwise conv of stride 1 or 2 (any `K ≤ 5`).
        pub(crate) fn new(g: &super::ConvGeometry) -> Self {
            let (pad, ow) = (g.p.padding, g.out_hw[1]);
            // Rows of 7 (7×7, 14×14 planes) waste no lane; others take 8 at a time.
            let row = if ow.is_multiple_of(7) { 7 } else { 8 };
            let pitch = (g.in_hw[1] + pad.left + pad.right).max(Self::reach(ow, row, g.p.stride[1], 5));
            Self { pitch, rows: g.in_hw[0] + pad.top + pad.bottom, top: pad.top, left: pad.left, row, input: g.in_hw }
        }

        /// Floats of one block's copy.
        pub(crate) fn len(&self) -> usize {
            self.rows * self.pitch * 16
        }

        /// Where input pixel (`ih`, `iw`) of the block starts.
        pub(crate) fn at(&self, ih: usize, iw: usize) -> usize {
            ((ih + self.top) * self.pitch + iw + self.left) * 16
        }

        /// Zeroes the padding of one block's copy (`buf`, [`Self::len`] floats): every
        /// pixel around the input's, which a copy of the input never writes.
        pub(crate) fn zero_padding(&self, buf: &mut [f32]) {
            let (pitch, [h, w]) = (self.pitch * 16, self.input);
            let buf = &mut buf[..self.len()];
            buf[..self.top * pitch].fill(0.0);
            buf[(self.top + h) * pitch..].fill(0.0);
            for row in buf[self.top * pitch..(self.top + h) * pitch].chunks_mut(pitch) {
                row[..self.left * 16].fill(0.0);
                row[(self.left + w) * 16..].fill(0.0);
            }
        }

        /// Pixels a row of `ow` outputs reads, `row` at a time, with stride `s`: the
        /// last register row's reach.
        fn reach(ow: usize, row: usize, s: usize, k: usize) -> usize {
            s * ((ow.max(1) - 1) / row * row + row - 1) + k
        }

        /// Whether a `k × k` conv of `g` (stride 1 or 2 both ways) reads inside the copy.
        pub(crate) fn fits(&self, g: &super::ConvGeometry, k: usize) -> bool {
            let ([oh, ow], [sh, sw]) = (g.out_hw, g.p.stride);
            sh == sw
                && matches!(sh, 1 | 2)
                && k <= 5
                && ow <= 16
                && oh >= 1
                && self.rows >= sh * (oh - 1) + k
                && self.pitch >= Self::reach(ow, self.row, sw, k)
        }
    }

    /// Up to 16 channels' `bias + Σ taps`, clamped, from a block's pixel-major copy
    /// `inb` into `outb` (pixel-major, `ol` pixels): `ROW` outputs of a row in
    /// registers, each input pixel loaded once per kernel row for the outputs it feeds.
    /// The taps run in the tap-major kernel's order (bias, then row by row, left to
    /// right), so the results are its bits. Channels `first..first + n` (modulo the
    /// channel count: blocks may span images, and then each lane gathers its weights).
    ///
    /// # Safety
    /// AVX-512F; `inb` laid out as `lay` (checked by the callers with [`ChannelBlockLayout::fits`]).
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn block_sums<const K: usize, const S: usize>(
        inb: &[f32],
        lay: &ChannelBlockLayout,
        (w, bias, clamp): (&[f32], Option<&[f32]>, super::Clamp),
        first: usize,
        n: usize,
        g: &super::ConvGeometry,
        outb: &mut [f32],
    ) {
        let (kk, c) = (K * K, g.c_in);
        assert!(inb.len() >= lay.len() && outb.len() >= g.out_len() * 16 && w.len() >= c * kk && n <= 16);
        assert!(g.p.stride == [S, S] && lay.fits(g, K));
        // Per lane, its channel's weights (gathers) and bias; lanes past n take channel
        // 0's (their sums are never stored).
        let ch: [i32; 16] = std::array::from_fn(|l| if l < n { ((first + l) % c) as i32 } else { 0 });
        let ch = _mm512_loadu_si512(ch.as_ptr().cast());
        let mut wv = [_mm512_setzero_ps(); 25];
        if first % c + n <= c {
            // The block's weights are n rows of kk taps in a row: two transposes
            // instead of kk gathers (which cost a quarter of a 7×7 block).
            let rows = &w[first % c * kk..][..n * kk];
            for t0 in (0..kk).step_by(16) {
                let m = lanes(kk - t0);
                let v: [__m512; 16] = std::array::from_fn(|l| {
                    if l < n {
                        _mm512_maskz_loadu_ps(m, rows.as_ptr().add(l * kk + t0))
                    } else {
                        _mm512_setzero_ps()
                    }
                });
                let t = transpose16(&v);
                wv[t0..kk.min(t0 + 16)].copy_from_slice(&t[..kk.min(t0 + 16) - t0]);
            }
        } else {
            let first_tap = _mm512_mullo_epi32(ch, _mm512_set1_epi32(kk as i32));
            for (t, wv) in wv.iter_mut().enumerate().take(kk) {
                let at = _mm512_add_epi32(first_tap, _mm512_set1_epi32(t as i32));
                *wv = _mm512_i32gather_ps::<4>(at, w.as_ptr().cast());
            }
        }
        let bias = match bias {
            Some(b) => {
                assert!(b.len() >= c);
                _mm512_i32gather_ps::<4>(ch, b.as_ptr().cast())
            }
            None => _mm512_setzero_ps(),
        };
        let store = |acc: &[__m512], at: usize, outb: &mut [f32]| {
            for (j, acc) in acc.iter().enumerate() {
                let v = match clamp {
                    Some((lo, hi)) => _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), *acc)),
                    None => *acc,
                };
                _mm512_storeu_ps(outb.as_mut_ptr().add((at + j) * 16), v);
            }
        };
        let [oh_n, ow_n] = g.out_hw;
        for oh in 0..oh_n {
            for j0 in (0..ow_n).step_by(lay.row) {
                let at = oh * ow_n + j0;
                let row = inb.as_ptr().add((S * oh * lay.pitch + S * j0) * 16);
                if lay.row == 7 {
                    let acc = row_sums::<K, 7, S>(row, lay.pitch, &wv, bias);
                    store(&acc[..7.min(ow_n - j0)], at, outb);
                } else {
                    let acc = row_sums::<K, 8, S>(row, lay.pitch, &wv, bias);
                    store(&acc[..8.min(ow_n - j0)], at, outb);
                }
            }
        }
    }

    /// `ROW` outputs of one row from the copy at `row` (`S·(ROW − 1) + K` input pixels
    /// a kernel row, stride `S`): each input pixel loaded once, then an FMA into every
    /// output it feeds, for each output in kernel-column order.
    #[inline(always)]
    unsafe fn row_sums<const K: usize, const ROW: usize, const S: usize>(
        row: *const f32,
        pitch: usize,
        wv: &[__m512; 25],
        bias: __m512,
    ) -> [__m512; ROW] {
        let mut acc = [bias; ROW];
        for kh in 0..K {
            let r = row.add(kh * pitch * 16);
            let wk: [__m512; K] = std::array::from_fn(|kw| wv[kh * K + kw]);
            for i in 0..S * (ROW - 1) + K {
                let x = _mm512_loadu_ps(r.add(i * 16));
                for (kw, &w) in wk.iter().enumerate() {
                    let j = i.checked_sub(kw).filter(|d| d % S == 0).map(|d| d / S);
                    if let Some(j) = j.filter(|&j| j < ROW) {
                        acc[j] = _mm512_fmadd_ps(w, x, acc[j]);
                    }
                }
            }
        }
        acc
    }

    /// Pixel-major sums (`ol` pixels of 16 channels) back out to `n` channel planes: 16
    /// pixels at a time through an in-register transpose.
    #[inline(always)]
    pub(crate) unsafe fn planes_out(outb: &[f32], ol: usize, n: usize, out: &mut [f32]) {
        assert!(outb.len() >= ol * 16 && out.len() >= n * ol && n <= 16);
        for pc in (0..ol).step_by(16) {
            let mut v = [_mm512_setzero_ps(); 16];
            for (q, v) in v.iter_mut().enumerate().take(ol - pc) {
                *v = _mm512_loadu_ps(outb.as_ptr().add((pc + q) * 16));
            }
            let t = transpose16(&v);
            for (l, t) in t.iter().enumerate().take(n) {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(l * ol + pc), lanes(ol - pc), *t);
            }
        }
    }

    /// Floats [`channel_block`] needs in its buffer.
    pub(super) fn channel_block_len(g: &super::ConvGeometry) -> usize {
        ChannelBlockLayout::new(g).len() + g.out_len() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::naive;
    use proptest::prelude::*;

    fn values(seed: u64, n: usize) -> Vec<f32> {
        (0..n as u64).map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// Full blocks of 16 channels, some across two images (20 channels, batch 2), on
    /// the small planes AVX-512 runs channel-blocked: the same bits as the AVX2 build's
    /// tap-major kernel, forward (bias, ReLU6) and backward (plain and masked).
    #[test]
    fn channel_blocks_give_the_tap_major_bits() {
        if !Isa::available().contains(&Isa::Avx512) {
            return;
        }
        let c = 20;
        for (k, hw) in [(5, 7), (3, 7), (5, 8), (3, 5), (5, 3)] {
            let p = Conv2dParams::new().groups(c).padding(Padding2d::tf_same([hw, hw], [k, k], [1, 1], [1, 1]));
            let g = ConvGeometry::new("test", &[2, c, hw, hw], &[c, 1, k, k], p).unwrap();
            assert!(DwPlan::new(&g).channel_blocks(&g), "{k}x{k} at {hw}");
            let (x, wk, b) = (values(1, g.in_elems()), values(2, g.weight_elems()), values(3, c));
            let dy = values(4, g.out_elems());
            let scratch = ScratchPool::new();
            let run = |isa: Isa| {
                let mut y = vec![f32::NAN; g.out_elems()];
                forward_on(isa, &x, None, &wk, Some(&b), Some((0.0, 6.0)), &g, &mut y, &scratch, pool_tasks());
                let mut dx = vec![f32::NAN; g.in_elems()];
                backward_input_on(isa, &dy, &wk, &g, &mut dx, &scratch);
                let mut masked = vec![f32::NAN; g.in_elems()];
                let mask = GradMask { y: &y, lo: 0.0, hi: 6.0 };
                assert!(backward_as_forward(isa, &dy, Some(mask), &wk, &g, &mut masked, &scratch));
                [y, dx, masked].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
            };
            assert_eq!(run(Isa::Avx512), run(Isa::Avx2), "{k}x{k} at {hw}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The forward and the backward to the input on every instruction set this CPU
        /// has (the public tests run only the best one): sliding 3×3 and 5×5 (strips of
        /// 32, 16 and 8 lanes), tap-major for the rest, with bias and clamp; the strided
        /// backward's gather.
        #[test]
        fn forward_on_every_isa_matches_naive(c in 1usize..=4, k in prop_oneof![Just(3usize), Just(5), Just(2)], s in 1usize..=2, pad in 0usize..=2, h in 3usize..=20, w in 3usize..=99, seed in any::<u64>()) {
            let p = Conv2dParams { stride: [s, s], padding: Padding2d { top: pad, bottom: pad, left: pad, right: pad }, dilation: [1, 1], groups: c };
            let g = ConvGeometry::new("test", &[1, c, h, w], &[c, 1, k, k], p);
            prop_assume!(g.is_ok());
            let g = g.unwrap();
            let (x, wk, b) = (values(seed, g.in_elems()), values(seed ^ 5, g.weight_elems()), values(seed ^ 9, c));
            let want: Vec<f32> = naive::conv2d_forward(&x, &wk, Some(&b), &g).iter().map(|v| v.clamp(0.0, 6.0)).collect();
            let scratch = ScratchPool::new();
            let dy = values(seed ^ 3, g.out_elems());
            let want_dx = naive::conv2d_backward_input(&dy, &wk, &g);
            // The FMA builds (AVX2, AVX-512) sum in one order: their results are the same bits.
            let mut fma_bits: Option<(Vec<u32>, Vec<u32>)> = None;
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; g.out_elems()];
                forward_on(isa, &x, None, &wk, Some(&b), Some((0.0, 6.0)), &g, &mut y, &scratch, pool_tasks());
                for (i, (a, e)) in y.iter().zip(&want).enumerate() {
                    prop_assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{isa:?} {g:?}: element {i}: {a} vs {e}");
                }
                let mut dx = vec![f32::NAN; g.in_elems()];
                backward_input_on(isa, &dy, &wk, &g, &mut dx, &scratch);
                for (i, (a, e)) in dx.iter().zip(&want_dx).enumerate() {
                    prop_assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "backward {isa:?} {g:?}: element {i}: {a} vs {e}");
                }
                if isa != Isa::Generic {
                    let bits = (y.iter().map(|v| v.to_bits()).collect(), dx.iter().map(|v| v.to_bits()).collect());
                    let first = fma_bits.get_or_insert_with(|| bits.clone());
                    prop_assert!(first.0 == bits.0, "forward {isa:?} {g:?}: other bits than the other FMA build");
                    prop_assert!(first.1 == bits.1, "backward {isa:?} {g:?}: other bits than the other FMA build");
                }
                // The same through a ReLU6's mask: equal, bit for bit, to masking first
                // (the output `want` holds 0s and 6s, on the bounds, that must mask).
                let mask = GradMask { y: &want, lo: 0.0, hi: 6.0 };
                let masked: Vec<f32> = dy.iter().zip(&want).map(|(&d, &y)| if y > 0.0 && y < 6.0 { d } else { 0.0 }).collect();
                let mut plain = vec![f32::NAN; g.in_elems()];
                backward_input_on(isa, &masked, &wk, &g, &mut plain, &scratch);
                let mut fused = vec![f32::NAN; g.in_elems()];
                if backward_as_forward(isa, &dy, Some(mask), &wk, &g, &mut fused, &scratch) {
                    prop_assert!(s == 1, "only stride 1 fuses the mask");
                    prop_assert!(plain.iter().zip(&fused).all(|(a, b)| a.to_bits() == b.to_bits()), "masked backward {isa:?} {g:?}");
                }
            }
        }
    }
}
