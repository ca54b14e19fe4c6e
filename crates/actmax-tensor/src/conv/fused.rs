//! A pointwise (1×1) conv and the depthwise conv that reads it, run a block of channels
//! at a time: the inverted-residual blocks of MobileNet and EfficientNet, at inference.
//!
//! Why: the expand conv of such a block writes the largest tensor of the network (Lite0's
//! first: 96 × 112 × 112, 4.8 MB) only for the depthwise conv to read it once. Written
//! whole, it leaves the caches before it is read, and on two threads those two passes
//! are bound by memory, not arithmetic. A block of a few channels (a few hundred KB)
//! is written and read while still in the core's L2: `fused_expand_dw --cold`, two
//! threads, Zen 4: 16 → 96 at 112², 3×3 stride 2: 0.83 → 0.66 ms; 24 → 144 at 56²,
//! 3×3: 0.42 → 0.30, 5×5 stride 2: 0.48 → 0.28.
//!
//! Each output element is computed by the same kernels in the same order as the two
//! convs run apart, so the result is the same bits. At inference the expand conv's
//! output is never kept; for a gradient ([`pointwise_depthwise_forward_keeping`]) each
//! block is written where the tape keeps it, with one bit per element of where its
//! ReLU6 passes a gradient, and still read by the depthwise conv while in cache.

use rayon::prelude::*;

use super::{depthwise, refuse, Clamp, ConvKernel, ConvPack, PackDirection};
use crate::backprop_modes::PassBand;
use crate::elementwise::pass_bits;
use crate::error::Result;
use crate::gemm::direct::{sgemm_panels, Epilogue, Isa, OutMat};
#[cfg(target_arch = "x86_64")]
use crate::gemm::wide::{self, PixelMajor};
use crate::geometry::{Conv2dParams, ConvGeometry};
use crate::scratch::ScratchPool;

/// The expand output a block may hold, in bytes: well inside a core's L2 (1 MB on Zen 4,
/// 1.25–2 MB on recent Intel), beside the depthwise output it writes.
const BLOCK_BYTES: usize = 512 << 10;

/// One of the fused convs: its geometry, bias and clamp.
#[derive(Debug, Clone, Copy)]
pub struct FusedConv<'a> {
    /// The geometry.
    pub g: &'a ConvGeometry,
    /// The bias, one per output channel.
    pub bias: Option<&'a [f32]>,
    /// The activation's bounds, applied in the store.
    pub clamp: Clamp,
}

/// Whether [`pointwise_depthwise_forward`] runs this pair: a pointwise conv packed for
/// the row kernel (images of more than a few hundred pixels; the wide kernel's few
/// columns leave nothing to gain) whose output is exactly the depthwise conv's input.
pub fn fuses(pw: &ConvGeometry, pack: &ConvPack, dw: &ConvGeometry) -> bool {
    one_gemm(pw, pack) && dw.is_depthwise() && reads_output(dw, pw) && !pack.panels[0].is_wide()
}

/// A pointwise conv run as one GEMM on its forward pack.
fn one_gemm(pw: &ConvGeometry, pack: &ConvPack) -> bool {
    pw.is_pointwise()
        && pw.p.groups == 1
        && pack.kernel == ConvKernel::Pointwise
        && pack.panels.len() == 1
        && pack.panels[0].depth() > 0
}

/// Whether `next`'s input is exactly `prev`'s output.
fn reads_output(next: &ConvGeometry, prev: &ConvGeometry) -> bool {
    next.n == prev.n && next.c_in == prev.c_out && next.in_hw == prev.out_hw
}

/// Whether [`pointwise_depthwise_forward`] runs this pair pixel-major (AVX-512): a
/// pointwise conv packed for the wide kernel (7×7 and 14×14 images) in whole panels of
/// 32 channels, feeding a 3 × 3 or 5 × 5 depthwise conv (stride 1 or 2) with rows of at
/// most 16 outputs.
///
/// Why: the wide kernel holds 32 channels of a pixel in two vectors and the depthwise
/// kernel for such small planes computes 16 channels a vector; run apart, the first
/// transposes its tiles into channel planes and the second transposes them back.
/// Pixel-major in between, neither transposes on the way in.
pub fn fuses_pixel_major(pw: &ConvGeometry, pack: &ConvPack, dw: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let k = dw.k_hw[0];
        one_gemm(pw, pack)
            && dw.is_depthwise()
            && reads_output(dw, pw)
            && pw.c_out.is_multiple_of(32)
            && dw.k_hw == [k, k]
            && matches!(k, 3 | 5)
            && dw.p.dilation == [1, 1]
            && depthwise::ChannelBlockLayout::new(dw).fits(dw, k)
            && pack.panels[0].is_wide()
            && pack.panels[0].isa() == Isa::Avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (pw, pack, dw);
        false
    }
}

/// `out` = depthwise(pointwise(`x`)), each conv's bias and clamp in its store, a block of
/// channels at a time (blocks spread over the pool). `pack` is the pointwise conv's
/// forward pack, `dw_w` the depthwise weights. Pixel-major between the two where
/// [`fuses_pixel_major`]. An error where neither it nor [`fuses`] holds, or an operand
/// does not fit its geometry.
#[allow(clippy::too_many_arguments)] // two convs' operands, spelled out
pub fn pointwise_depthwise_forward(
    x: &[f32],
    pack: &ConvPack,
    pw: FusedConv,
    dw_w: &[f32],
    dw: FusedConv,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if fuses_pixel_major(pw.g, pack, dw.g) {
        return pair_forward_pixel_major(x, pack, pw, dw_w, dw, out, false, scratch);
    }
    pair_forward(x, pack, pw, dw_w, dw, None, out, scratch)
}

/// [`pointwise_depthwise_forward`] where [`fuses_pixel_major`]: per panel of 32
/// channels (spread over the pool), the pointwise conv's tiles go pixel-major into a
/// zero-padded copy, and the depthwise conv reads it 16 channels a vector. Its output
/// goes to `out` as channel planes, or with `pixel_major_out` as it is computed:
/// pixel-major blocks of 16 channels (`16·out_len` floats each, in channel order).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // two convs' operands, spelled out
fn pair_forward_pixel_major(
    x: &[f32],
    pack: &ConvPack,
    pw: FusedConv,
    dw_w: &[f32],
    dw: FusedConv,
    out: &mut [f32],
    pixel_major_out: bool,
    scratch: &ScratchPool,
) -> Result<()> {
    let op = "pointwise_depthwise_forward";
    pack.check(op, ConvKernel::Pointwise, pw.g, PackDirection::Forward)?;
    let (g1, g2) = (pw.g, dw.g);
    check_lens(op, x, dw_w, &pw, &dw, out)?;
    let a = &pack.panels[0];
    let (c, hw, ol) = (g1.c_out, g1.out_len(), g2.out_len());
    let lay = depthwise::ChannelBlockLayout::new(g2);
    let ep = Epilogue { bias: pw.bias, clamp: pw.clamp };
    // Tasks of whole panels, about eight per thread: a panel of a 7×7 layer is a few
    // microseconds, and each task zeroes its copies' padding once.
    let panels = c / 32;
    let per_task = panels.div_ceil(8 * rayon::current_num_threads()).max(1);
    for (n, yn) in out.chunks_mut(c * ol).enumerate() {
        let xn = &x[n * g1.c_in * hw..][..g1.c_in * hw];
        yn.par_chunks_mut(per_task * 32 * ol).enumerate().with_max_len(1).for_each(|(t, ys)| {
            let sums_len = if pixel_major_out { 0 } else { 16 * ol };
            let mut buf = scratch.lease(2 * lay.len() + sums_len);
            let (copy, sums) = buf.split_at_mut(2 * lay.len());
            for block in copy.chunks_mut(lay.len()) {
                lay.zero_padding(block);
            }
            for (i, y) in ys.chunks_mut(32 * ol).enumerate() {
                let p = t * per_task + i;
                let to = PixelMajor {
                    ptr: copy[lay.at(0, 0)..].as_mut_ptr(),
                    width: g1.out_hw[1],
                    pitch: lay.pitch,
                    block: lay.len(),
                };
                // Safety: B is this image's `k × hw` input; `to` covers the panel's two
                // blocks (`fuses_pixel_major`: AVX-512, whole panels, the layout fits).
                unsafe { wide::panel_pixel_major(a, p, hw, xn.as_ptr(), hw, &to, &ep) };
                for (h, y) in y.chunks_mut(16 * ol).enumerate() {
                    let inb = &copy[h * lay.len()..][..lay.len()];
                    let (first, (w, b, cl)) = (32 * p + 16 * h, (dw_w, dw.bias, dw.clamp));
                    // Safety: AVX-512, checked by `fuses_pixel_major`.
                    unsafe {
                        if pixel_major_out {
                            depthwise::channel_block_from_copy(inb, &lay, w, b, cl, first, g2, y, None)
                        } else {
                            depthwise::channel_block_from_copy(inb, &lay, w, b, cl, first, g2, sums, Some(y))
                        }
                    };
                }
            }
        });
    }
    Ok(())
}

/// Whether [`pointwise_depthwise_pointwise_forward`] runs these three convs: a pair that
/// [`fuses_pixel_major`], then a pointwise conv of its output packed for the wide
/// kernel (`pack3`, its forward pack).
pub fn fuses_three(
    pw: &ConvGeometry,
    pack: &ConvPack,
    dw: &ConvGeometry,
    pw3: &ConvGeometry,
    pack3: &ConvPack,
) -> bool {
    fuses_pixel_major(pw, pack, dw)
        && one_gemm(pw3, pack3)
        && reads_output(pw3, dw)
        && pack3.panels[0].is_wide()
        && pack3.panels[0].isa() == Isa::Avx512
}

/// The inverted-residual block's three convs at inference: expand (pointwise), depthwise,
/// project (pointwise), each with its bias and clamp, where [`fuses_three`], and the
/// block's `residual` connection (its input, as long as the output) added to the project
/// conv's output in its store. The first two run as [`pointwise_depthwise_forward`] does
/// pixel-major, and the depthwise output stays pixel-major: the project conv reads it so
/// (`wide::sgemm_b_pixel_major`), and nothing is transposed between the three. The same
/// bits as the three convs (and the addition). An error where they do not fuse or an
/// operand does not fit its geometry.
#[allow(clippy::too_many_arguments)] // three convs' operands, spelled out
pub fn pointwise_depthwise_pointwise_forward(
    x: &[f32],
    pack: &ConvPack,
    pw: FusedConv,
    dw_w: &[f32],
    dw: FusedConv,
    pack3: &ConvPack,
    pw3: FusedConv,
    residual: Option<&[f32]>,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let op = "pointwise_depthwise_pointwise_forward";
    if !fuses_three(pw.g, pack, dw.g, pw3.g, pack3) {
        return Err(refuse(op, "not a pixel-major pair feeding a wide pointwise conv".into()));
    }
    pack3.check(op, ConvKernel::Pointwise, pw3.g, PackDirection::Forward)?;
    let g3 = pw3.g;
    let lens = [out.len(), residual.map_or(g3.out_elems(), <[f32]>::len), pw3.bias.map_or(g3.c_out, <[f32]>::len)];
    if lens != [g3.out_elems(), g3.out_elems(), g3.c_out] {
        let want = g3.out_elems();
        return Err(refuse(op, format!("output, residual and bias hold {lens:?} floats, the geometry needs {want}")));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (c, ol) = (dw.g.c_out, dw.g.out_len());
        let mut mid = scratch.lease(dw.g.out_elems());
        pair_forward_pixel_major(x, pack, pw, dw_w, dw, &mut mid, true, scratch)?;
        let ep = Epilogue { bias: pw3.bias, clamp: pw3.clamp };
        for (i, (mid, out)) in mid.chunks(c * ol).zip(out.chunks_mut(g3.c_out * ol)).enumerate() {
            let res = residual.map(|r| r[i * g3.c_out * ol..].as_ptr());
            // Safety: `mid` is this image's pixel-major depthwise output (c · ol floats),
            // `out` (and the residual) its g3.c_out rows of ol; AVX-512 (`fuses_three`).
            unsafe {
                let c = OutMat { ptr: out.as_mut_ptr(), ld: ol };
                wide::sgemm_b_pixel_major(&pack3.panels[0], ol, mid.as_ptr(), c, &ep, res, true)
            };
        }
    }
    Ok(())
}

/// The operands' lengths against the pair's geometries.
fn check_lens(op: &'static str, x: &[f32], dw_w: &[f32], pw: &FusedConv, dw: &FusedConv, out: &[f32]) -> Result<()> {
    let (g1, g2) = (pw.g, dw.g);
    let lens = [
        ("input", x.len(), g1.in_elems()),
        ("depthwise weight", dw_w.len(), g2.weight_elems()),
        ("output", out.len(), g2.out_elems()),
        ("pointwise bias", pw.bias.map_or(g1.c_out, <[f32]>::len), g1.c_out),
        ("depthwise bias", dw.bias.map_or(g2.c_out, <[f32]>::len), g2.c_out),
    ];
    match lens.into_iter().find(|l| l.1 != l.2) {
        Some((what, got, want)) => {
            Err(refuse(op, format!("the {what} holds {got} floats, the geometries need {want}")))
        }
        None => Ok(()),
    }
}

/// What a fused pair keeps for a gradient through it: the pointwise conv's whole output
/// (the depthwise conv's backward and the activation's mask need it), and optionally
/// one bit per element of it ([`PassBand`]), computed while each block is in cache.
pub struct KeptMid<'a> {
    /// The pointwise conv's output, as [`Tape::conv2d`](crate::Tape::conv2d) gives it.
    pub mid: &'a mut [f32],
    /// Where its activation passes a gradient: 16 elements a word, in NCHW order (the
    /// output's planes must be multiples of 16 pixels); twice as many words for a second
    /// plane after the first, where the output is above the band's lower bound (what the
    /// redirected backward asks of the elements that do not pass).
    pub bits: Option<(&'a mut [u16], PassBand)>,
}

/// [`pointwise_depthwise_forward`] that also writes what [`KeptMid`] asks for: each block
/// of the pointwise output goes into `keep.mid` instead of a scratch buffer, and the
/// depthwise conv reads it from there while it is in L2. The same bits as the two convs.
#[allow(clippy::too_many_arguments)] // two convs' operands, spelled out
pub fn pointwise_depthwise_forward_keeping(
    x: &[f32],
    pack: &ConvPack,
    pw: FusedConv,
    dw_w: &[f32],
    dw: FusedConv,
    keep: KeptMid,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    pair_forward(x, pack, pw, dw_w, dw, Some(keep), out, scratch)
}

#[allow(clippy::too_many_arguments)]
fn pair_forward(
    x: &[f32],
    pack: &ConvPack,
    pw: FusedConv,
    dw_w: &[f32],
    dw: FusedConv,
    keep: Option<KeptMid>,
    out: &mut [f32],
    scratch: &ScratchPool,
) -> Result<()> {
    let op = "pointwise_depthwise_forward";
    if !fuses(pw.g, pack, dw.g) {
        return Err(refuse(op, "not a row-kernel pointwise conv feeding a depthwise conv of its output".into()));
    }
    pack.check(op, ConvKernel::Pointwise, pw.g, PackDirection::Forward)?;
    let (g1, g2) = (pw.g, dw.g);
    check_lens(op, x, dw_w, &pw, &dw, out)?;
    if let Some(k) = &keep {
        if k.mid.len() != g1.out_elems() {
            return Err(refuse(op, format!("the kept output holds {} floats, not {}", k.mid.len(), g1.out_elems())));
        }
        if let Some((bits, _)) = &k.bits {
            if g1.out_len() % 16 != 0 || (16 * bits.len() != g1.out_elems() && 8 * bits.len() != g1.out_elems()) {
                return Err(refuse(
                    op,
                    format!(
                        "{} pass-bit words for {} outputs (planes of a multiple of 16)",
                        bits.len(),
                        g1.out_elems()
                    ),
                ));
            }
        }
    }
    let a = &pack.panels[0];
    let (c, hw, ol) = (g1.c_out, g1.out_len(), g2.out_len());
    // Blocks of whole panels of A, as many as fit the budget, evened out over the channels.
    let mr = a.panel_rows();
    let panels = c.div_ceil(mr);
    let per_budget = (BLOCK_BYTES / (4 * hw * mr)).clamp(1, panels);
    let blocks_per_image = panels.div_ceil(per_budget);
    let per_block = panels.div_ceil(blocks_per_image);
    let ep = Epilogue { bias: pw.bias, clamp: pw.clamp };
    let taps = g2.k_hw[0] * g2.k_hw[1];
    // Per block: its output planes, and where it keeps the pointwise output and its bits.
    // A block's channels are contiguous planes in NCHW, in all three.
    let (block_out, block_mid) = (per_block * mr * ol, per_block * mr * hw);
    let (mut mids, bits, band) = match keep {
        Some(KeptMid { mid, bits: Some((bits, band)) }) => (Some(mid), Some(bits), Some(band)),
        Some(KeptMid { mid, bits: None }) => (Some(mid), None, None),
        None => (None, None, None),
    };
    let (mut bits, mut above) = match bits.map(|b| b.split_at_mut(g1.out_elems() / 16)) {
        Some((pass, above)) => (Some(pass), (!above.is_empty()).then_some(above)),
        None => (None, None),
    };
    for (n, yn) in out.chunks_mut(c * ol).enumerate() {
        let xn = &x[n * g1.c_in * hw..][..g1.c_in * hw];
        let mut mids_n = mids.as_deref_mut().map(|m| m[n * c * hw..][..c * hw].chunks_mut(block_mid));
        let (image_words, block_words) = (n * c * hw / 16..(n + 1) * c * hw / 16, block_mid / 16);
        let mut bits_n = bits.as_deref_mut().map(|b| b[image_words.clone()].chunks_mut(block_words));
        let mut above_n = above.as_deref_mut().map(|b| b[image_words.clone()].chunks_mut(block_words));
        let blocks: Vec<BlockOut> = yn
            .chunks_mut(block_out)
            .map(|out| BlockOut {
                out,
                mid: mids_n.as_mut().and_then(Iterator::next),
                bits: bits_n.as_mut().and_then(Iterator::next),
                above: above_n.as_mut().and_then(Iterator::next),
            })
            .collect();
        blocks.into_par_iter().enumerate().with_max_len(1).for_each(
            |(b, BlockOut { out: y, mid: kept, bits: kept_bits, above: kept_above })| {
                let (p0, p1) = (b * per_block, ((b + 1) * per_block).min(panels));
                let (c0, c1) = (p0 * mr, (p1 * mr).min(c));
                let mut lease = kept.is_none().then(|| scratch.lease((c1 - c0) * hw));
                let mid: &mut [f32] = match kept {
                    Some(m) => m,
                    None => lease.as_deref_mut().expect("leased"),
                };
                // Safety: B is this image's `k × hw` input, C the block's `(c1 − c0) × hw` rows.
                unsafe {
                    let c_out = OutMat { ptr: mid.as_mut_ptr(), ld: hw };
                    sgemm_panels(a, p0..p1, hw, xn.as_ptr(), hw, c_out, &ep, false);
                }
                if let (Some(bits), Some(band)) = (kept_bits, band) {
                    pass_bits(mid, band, bits, kept_above.unwrap_or_default());
                }
                let gb = one_image_of_channels(g2, c1 - c0);
                let bias = dw.bias.map(|b| &b[c0..c1]);
                depthwise::forward_serial(mid, &dw_w[c0 * taps..c1 * taps], bias, dw.clamp, &gb, y, scratch);
            },
        );
    }
    Ok(())
}

/// Where one block writes: its depthwise output planes and, for a gradient, its part of
/// the kept pointwise output and of the pass bits.
struct BlockOut<'a> {
    out: &'a mut [f32],
    mid: Option<&'a mut [f32]>,
    bits: Option<&'a mut [u16]>,
    above: Option<&'a mut [u16]>,
}

/// A depthwise geometry for one image and `c` of its channels.
fn one_image_of_channels(g: &ConvGeometry, c: usize) -> ConvGeometry {
    ConvGeometry { n: 1, c_in: c, c_out: c, p: Conv2dParams { groups: c, ..g.p }, ..*g }
}
