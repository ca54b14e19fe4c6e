//! Element-wise maps over tape values, parallel on rayon's pool once a tensor is big
//! enough to pay for it (EfficientNet's activations hold millions of elements; its ReLU6s
//! and batch norms would otherwise run on one core next to parallel convs). Outputs come
//! from the tape's [`ScratchPool`]: every element is written, so a recycled buffer needs
//! no zeroing.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::backprop_modes::PassBand;
use crate::gemm::direct::Isa;
use crate::scratch::ScratchPool;
use crate::simd;
use crate::tensor::Tensor;

/// Below this many elements a map runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 13;

/// Runs `f` (an element loop) compiled for the widest vector ISA this CPU has: the crate
/// is built for baseline x86-64, where such loops get 4-lane SSE. The results are the
/// same bits: each element is computed alone, and Rust never fuses a multiply and an
/// add on its own. A gradient's ReLU6 mask over every activation of a step took 4.7 %
/// of it as SSE.
#[inline(always)]
fn vectorized(f: impl FnOnce()) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(f: impl FnOnce()) {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(f: impl FnOnce()) {
            f()
        }
        // Safety: each ISA was detected on this CPU.
        match Isa::detect() {
            Isa::Avx512 => return unsafe { avx512(f) },
            Isa::Avx2 => return unsafe { avx2(f) },
            Isa::Generic => {}
        }
    }
    f()
}

fn slice(t: &Tensor) -> &[f32] {
    t.as_slice().expect("tape values are in standard layout")
}

fn build(shape: &[usize], v: Vec<f32>) -> Tensor {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("one output per input element")
}

/// `f(x)` for every element.
pub(crate) fn map1(pool: &ScratchPool, x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
    let xs = slice(x);
    let mut out = pool.take(xs.len());
    let run = |o: &mut [f32], a: &[f32]| vectorized(|| o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a)));
    if xs.len() < PARALLEL_MIN {
        run(&mut out, xs);
    } else {
        out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(o, a)| run(o, a));
    }
    build(x.shape(), out)
}

/// `a = f(a, b)` for every pair of elements of two same-shaped tensors, in place: no
/// new buffer (a gradient masked where it already is, in cache).
pub(crate) fn zip_in_place(a: &mut Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) {
    debug_assert_eq!(a.shape(), b.shape());
    let (xa, xb) = (a.as_slice_mut().expect("tape values are in standard layout"), slice(b));
    let run = |a: &mut [f32], b: &[f32]| vectorized(|| a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b)));
    if xa.len() < PARALLEL_MIN {
        run(xa, xb);
    } else {
        xa.par_chunks_mut(CHUNK).zip(xb.par_chunks(CHUNK)).for_each(|(a, b)| run(a, b));
    }
}

/// `f(a, b)` for every pair of elements of two same-shaped tensors.
pub(crate) fn map2(pool: &ScratchPool, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Tensor {
    debug_assert_eq!(a.shape(), b.shape());
    let (xa, xb) = (slice(a), slice(b));
    let mut out = pool.take(xa.len());
    let run = |o: &mut [f32], a: &[f32], b: &[f32]| {
        vectorized(|| o.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = f(a, b)))
    };
    if xa.len() < PARALLEL_MIN {
        run(&mut out, xa, xb);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(xa.par_chunks(CHUNK))
            .zip(xb.par_chunks(CHUNK))
            .for_each(|((o, a), b)| run(o, a, b));
    }
    build(a.shape(), out)
}

/// `f(a, b, c)` for every triple of elements of three same-shaped tensors.
pub(crate) fn map3(
    pool: &ScratchPool,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> Tensor {
    debug_assert!(a.shape() == b.shape() && b.shape() == c.shape());
    let (xa, xb, xc) = (slice(a), slice(b), slice(c));
    let mut out = pool.take(xa.len());
    let run = |o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]| {
        vectorized(|| o.iter_mut().zip(a).zip(b).zip(c).for_each(|(((o, &a), &b), &c)| *o = f(a, b, c)))
    };
    if xa.len() < PARALLEL_MIN {
        run(&mut out, xa, xb, xc);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(xa.par_chunks(CHUNK))
            .zip(xb.par_chunks(CHUNK))
            .zip(xc.par_chunks(CHUNK))
            .for_each(|(((o, a), b), c)| run(o, a, b, c));
    }
    build(a.shape(), out)
}

/// `f(a, b)` where `b` broadcasts to `a`'s shape (numpy's rules, `a` the larger): `b`'s
/// values are laid out once per run of `a` they meet — a run is the stretch of trailing
/// axes `b` repeats along (a per-channel `[1, C, 1, 1]` over `[N, C, H, W]` meets runs
/// of `H·W`; a Fourier scale `[H, W', 1]` over `[N, C, H, W', 2]` runs of 2, tiled over
/// `N·C`) — and the map runs over those runs in vectors on the pool, instead of
/// ndarray's element-by-element broadcast (a tenth of a second per thousand steps at
/// 224²). `None` where `b` does not broadcast to `a` or `a` is empty. Each element is
/// computed alone: ndarray's bits.
pub(crate) fn map2_runs(
    pool: &ScratchPool,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Option<Tensor> {
    let (sa, nd) = (a.shape(), a.ndim());
    if b.ndim() > nd || a.is_empty() {
        return None;
    }
    let sb: Vec<usize> = std::iter::repeat_n(1, nd - b.ndim()).chain(b.shape().iter().copied()).collect();
    if sa.iter().zip(&sb).any(|(&da, &db)| db != da && db != 1) {
        return None;
    }
    // The trailing axes along which b repeats, and the run of a they span.
    let k = sb.iter().rev().take_while(|&&d| d == 1).count();
    let run: usize = sa[nd - k..].iter().product();
    let scalars = run_values(b, &sb[..nd - k], &sa[..nd - k])?;
    let xa = slice(a);
    let mut out = pool.take(xa.len());
    let runs = |o: &mut [f32], a: &[f32], s: &[f32]| {
        vectorized(|| {
            for ((o, a), &s) in o.chunks_exact_mut(run).zip(a.chunks_exact(run)).zip(s) {
                o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a, s));
            }
        })
    };
    if xa.len() < PARALLEL_MIN {
        runs(&mut out, xa, &scalars);
    } else {
        let per = (CHUNK / run).max(1);
        out.par_chunks_mut(per * run)
            .zip(xa.par_chunks(per * run))
            .zip(scalars.par_chunks(per))
            .for_each(|((o, a), s)| runs(o, a, s));
    }
    Some(build(sa, out))
}

/// `b` (of padded shape `sb`, trailing ones dropped) broadcast to `lead`, in order. Where
/// `b` only repeats along leading axes it is tiled whole; otherwise ndarray broadcasts.
fn run_values(b: &Tensor, sb: &[usize], lead: &[usize]) -> Option<Vec<f32>> {
    let ones = sb.iter().take_while(|&&d| d == 1).count();
    let total: usize = lead.iter().product();
    match b.as_slice() {
        Some(bs) if sb[ones..] == lead[ones..] && !bs.is_empty() => {
            let mut v = Vec::with_capacity(total);
            for _ in 0..total / bs.len() {
                v.extend_from_slice(bs);
            }
            Some(v)
        }
        _ => {
            let b_lead = b.to_shape(IxDyn(sb)).ok()?;
            Some(b_lead.broadcast(IxDyn(lead))?.iter().copied().collect())
        }
    }
}

/// One bit per element of `y`: bit `j` of `bits[w]` is `band.passes(y[16 w + j])`. A
/// ReLU6's gradient mask kept in 1/32 of its output's memory, so the backward reads
/// these instead of the output, long gone from the caches by then. Where `above` is not
/// empty, in the same pass, its bits say `y > band.lo`: which side of the band an element
/// that does not pass is on (what the redirected backward asks of a dead sample).
///
/// # Panics
/// If `y.len() != 16 * bits.len()`, or `above` is neither empty nor as long as `bits`.
pub(crate) fn pass_bits(y: &[f32], band: PassBand, bits: &mut [u16], above: &mut [u16]) {
    simd::pass_bits(Isa::detect(), y, band, bits, above)
}

/// An activation's bits over `y`: [`pass_bits`], with the `above` plane where `bits`
/// holds a second plane after the first.
pub(crate) fn activation_bits(y: &[f32], band: PassBand, bits: &mut [u16]) {
    let (pass, above) = bits.split_at_mut(y.len() / 16);
    pass_bits(y, band, pass, above)
}

/// `g` set to +0 wherever `bits` ([`pass_bits`]) is clear: the plain ReLU-family
/// gradient mask, the same bits as applying it with the output in hand.
pub(crate) fn mask_by_bits(g: &mut [f32], bits: &[u16]) {
    let isa = Isa::detect();
    by_chunks(g, Some(bits), |g, b| simd::mask_by_bits(isa, g, b.unwrap_or_default()));
}

/// `g` kept where it is positive — and, given `bits`, where they are set — else +0:
/// rectification's gradient, and guided backprop's from a plane of `y > 0`; the bits of
/// `if g > 0 && up { g } else { 0 }`.
pub(crate) fn rectify(g: &mut [f32], bits: Option<&[u16]>) {
    let isa = Isa::detect();
    by_chunks(g, bits, |g, b| {
        if let Some(b) = b {
            simd::mask_by_bits(isa, g, b);
        }
        g.iter_mut().for_each(|v| *v = if *v > 0.0 { *v } else { 0.0 });
    });
}

/// `run` over `g` and its bits (16 values a word), on this thread or, past
/// `PARALLEL_MIN`, in chunks over the pool.
///
/// # Panics
/// If `bits` does not hold one word per 16 values of `g`.
fn by_chunks(g: &mut [f32], bits: Option<&[u16]>, run: impl Fn(&mut [f32], Option<&[u16]>) + Sync) {
    if let Some(b) = bits {
        assert_eq!(g.len(), 16 * b.len(), "16 values per word of bits");
    }
    match bits {
        _ if g.len() < PARALLEL_MIN => run(g, bits),
        Some(b) => g.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK / 16)).for_each(|(g, b)| run(g, Some(b))),
        None => g.par_chunks_mut(CHUNK).for_each(|g| run(g, None)),
    }
}

/// `f(channel, x)` over an `[N, C, ...]` tensor, in chunks that cut across its `(n, c)`
/// planes: an image's three 224² planes, one per task, left one of two threads idle
/// half the time.
pub(crate) fn map_channels(pool: &ScratchPool, x: &Tensor, f: impl Fn(usize, f32) -> f32 + Sync) -> Tensor {
    let (c, inner) = (x.shape()[1], x.shape()[2..].iter().product::<usize>().max(1));
    let xs = slice(x);
    let mut out = pool.take(xs.len());
    // Elements `first..` (the chunk `a`, written to `o`), a piece of a plane at a time.
    let run = |first: usize, o: &mut [f32], a: &[f32]| {
        vectorized(|| {
            let mut at = 0;
            while at < a.len() {
                let plane = (first + at) / inner;
                let end = ((plane + 1) * inner - first).min(a.len());
                let ch = plane % c;
                o[at..end].iter_mut().zip(&a[at..end]).for_each(|(o, &a)| *o = f(ch, a));
                at = end;
            }
        })
    };
    if xs.len() < PARALLEL_MIN {
        run(0, &mut out, xs);
    } else {
        // About four chunks a thread, none shorter than CHUNK.
        let chunk = xs.len().div_ceil(4 * rayon::current_num_threads()).max(CHUNK).next_multiple_of(16);
        out.par_chunks_mut(chunk).zip(xs.par_chunks(chunk)).enumerate().for_each(|(i, (o, a))| run(i * chunk, o, a));
    }
    build(x.shape(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Zip;

    /// The maps, compiled for this CPU's widest vectors, give the bits of a plain scalar
    /// loop: masks, products and sums (never fused into an FMA), and a libm call.
    #[test]
    fn vector_builds_give_the_scalar_bits() {
        let pool = ScratchPool::new();
        let n = PARALLEL_MIN + 77; // parallel chunks and a ragged tail
        let val = |i: usize, s: usize| ((i * 7919 + s * 104729) % 2003) as f32 / 97.0 - 10.0;
        let a = build(&[n], (0..n).map(|i| val(i, 1)).collect());
        let b = build(&[n], (0..n).map(|i| val(i, 2)).collect());
        let c = build(&[n], (0..n).map(|i| val(i, 3)).collect());
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let relu6 = |g: f32, x: f32| if x > 0.0 && x < 6.0 { g } else { 0.0 };
        let want: Vec<u32> = a.iter().zip(&b).map(|(&g, &x)| relu6(g, x).to_bits()).collect();
        assert_eq!(bits(&map2(&pool, &a, &b, relu6)), want);
        let mut g = a.clone();
        zip_in_place(&mut g, &b, relu6);
        assert_eq!(bits(&g), want);
        let fma_like = |x: f32, y: f32, z: f32| x * y + z;
        let want: Vec<u32> = (0..n).map(|i| fma_like(a[i], b[i], c[i]).to_bits()).collect();
        assert_eq!(bits(&map3(&pool, &a, &b, &c, fma_like)), want);
        let want: Vec<u32> = a.iter().map(|&x| (x * 0.1).exp().to_bits()).collect();
        assert_eq!(bits(&map1(&pool, &a, |x| (x * 0.1).exp())), want);
    }

    /// lucid's redirected gradient and guided backprop's from an activation's two planes
    /// of bits (no output at hand), and rectification's from none, are the ones that
    /// read the output: per sample, live or dead (every element below the band, above it,
    /// or a mix, with the bounds, ±∞ and NaN among them), for a ReLU6, a clip and a ReLU
    /// (whose pass bit says its side: one plane).
    #[test]
    fn redirected_gradients_from_bits_read_no_output() {
        use crate::backprop_modes::{BackpropMode, ReluKind};
        let per = 48;
        let edge = [0.0, -0.0, 6.0, 7.5, -3.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -1.0, 1.5];
        // Samples: mixed values (live), all flat on either side or at the bounds (dead).
        let samples: [fn(usize) -> f32; 4] = [
            |i| ((i * 7919) % 97) as f32 / 8.0 - 4.0,
            |i| if i % 2 == 0 { -5.0 } else { 8.0 },
            |i| [0.0, 6.0, -1.0, 1.5, f32::NAN][i % 5],
            |i| -2.0 - i as f32,
        ];
        let y: Vec<f32> = samples
            .iter()
            .flat_map(|f| (0..per).map(move |i| if i % 11 == 5 { edge[i % edge.len()] } else { f(i) }))
            .collect();
        let g: Vec<f32> = (0..y.len()).map(|i| (i % 7) as f32 - 3.0).collect();
        let (y, g) = (build(&[4, per], y), build(&[4, per], g));
        let pool = ScratchPool::new();
        // Guided backprop asks `y > 0`, from the same planes where the band starts at 0;
        // rectification asks nothing.
        let modes = [BackpropMode::Redirected, BackpropMode::Guided, BackpropMode::Rectified];
        for (mode, kind) in modes.iter().flat_map(|m| {
            [ReluKind::Relu6, ReluKind::Clip { lo: -1.0, hi: 1.5 }, ReluKind::Relu].map(|k| (m.clone(), k))
        }) {
            let band = kind.pass_band().unwrap();
            let want = mode.input_grad_pooled(&pool, kind, &g, &y, &y);
            let planes = if band.hi.is_some() { 2 } else { 1 };
            let mut bits = vec![0u16; planes * y.len() / 16];
            activation_bits(y.as_slice().unwrap(), band, &mut bits);
            let mut got = g.clone();
            let served = mode.input_grad_by_bits(kind, &mut got, Some(&bits));
            // A clip from −1 has no plane of `y > 0`: guided backprop needs the output.
            let guided_clip = matches!(mode, BackpropMode::Guided) && band.lo != 0.0;
            assert_eq!(served, !guided_clip, "{mode:?} {kind:?}");
            if served {
                let bits_of = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits_of(&got), bits_of(&want), "{mode:?} {kind:?}");
            }
        }
    }

    /// Pass bits (and the plane of `y > lo` beside them) and the mask they give equal the
    /// plain masks that read the output, for a ReLU (∞ passes), a ReLU6 and a clip, at the
    /// bounds, ±∞, NaN and −0, serial and parallel.
    #[test]
    fn pass_bits_mask_as_the_output_does() {
        let specials = [0.0, -0.0, 6.0, 5.999_999_5, 1e-30, -1e-30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 3.0];
        let n = 16 * (PARALLEL_MIN / 16 + 5);
        let y: Vec<f32> = (0..n)
            .map(|i| if i % 3 == 0 { specials[i % specials.len()] } else { ((i * 7919) % 97) as f32 / 8.0 - 2.0 })
            .collect();
        let g: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.5).collect();
        for (band, plain) in [
            (PassBand { lo: 0.0, hi: None }, (|y: f32| y > 0.0) as fn(f32) -> bool),
            (PassBand { lo: 0.0, hi: Some(6.0) }, |y: f32| y > 0.0 && y < 6.0),
            (PassBand { lo: -1.0, hi: Some(1.5) }, |y: f32| y > -1.0 && y < 1.5),
        ] {
            for len in [16, 48, n] {
                let want: Vec<u32> =
                    g[..len].iter().zip(&y[..len]).map(|(&g, &y)| if plain(y) { g } else { 0.0 }.to_bits()).collect();
                let mut bits = vec![0u16; len / 16];
                pass_bits(&y[..len], band, &mut bits, &mut []);
                let mut masked = g[..len].to_vec();
                mask_by_bits(&mut masked, &bits);
                assert_eq!(masked.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{band:?}, {len}");
                // Every kernel this CPU can run gives the same words and masks.
                for isa in Isa::available() {
                    let mut b = vec![0u16; len / 16];
                    simd::pass_bits(isa, &y[..len], band, &mut b, &mut []);
                    assert_eq!(b, bits, "{isa:?} {band:?}");
                    // With the plane of `y > lo` beside, in the same pass.
                    let (mut b2, mut above) = (vec![0u16; len / 16], vec![0u16; len / 16]);
                    simd::pass_bits(isa, &y[..len], band, &mut b2, &mut above);
                    let want_above: Vec<u16> = y[..len]
                        .chunks(16)
                        .map(|c| c.iter().enumerate().fold(0, |w, (j, &v)| w | (u16::from(v > band.lo) << j)))
                        .collect();
                    assert_eq!((b2, above), (bits.clone(), want_above), "{isa:?} {band:?}: with the above plane");
                    let mut m = g[..len].to_vec();
                    simd::mask_by_bits(isa, &mut m, &b);
                    assert_eq!(m.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "{isa:?} {band:?}");
                }
            }
        }
    }

    /// Broadcasts by runs give ndarray's bits, on the calling thread and in parallel:
    /// per channel, per sample, a Fourier scale repeated along a last axis of 2 and tiled
    /// over leading axes, a row repeated per row (runs of 1), a middle axis of ones (the
    /// general broadcast for the run values). `None` where `b` does not broadcast to `a`.
    #[test]
    fn runs_give_ndarray_broadcast_bits() {
        let pool = ScratchPool::new();
        let val = |i: usize| ((i * 7919) % 2003) as f32 / 97.0 - 10.0;
        let full = |shape: &[usize]| {
            let n = shape.iter().product();
            ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(val).collect::<Vec<_>>()).unwrap()
        };
        let div = |x: f32, y: f32| x / (y + 0.5);
        let cases: [(&[usize], &[usize]); 9] = [
            (&[2, 3, 7, 9], &[1, 3, 1, 1]),
            (&[2, 3, 7, 9], &[3, 1, 1]),
            (&[2, 3, 7, 9], &[2, 1, 1, 1]),
            (&[1, 5, 120, 121], &[1, 5, 1, 1]), // parallel
            (&[3, 4, 5, 32], &[1, 4, 5, 1]),
            (&[2, 3, 64, 33, 2], &[64, 33, 1]), // parallel, runs of 2
            (&[2, 3, 4, 5], &[1, 1, 1, 5]),     // runs of 1
            (&[2, 3, 4, 5], &[2, 1, 4, 1]),     // a middle axis of ones
            (&[4, 6], &[6]),
        ];
        for (sa, sb) in cases {
            let (a, b) = (full(sa), full(sb).mapv(|v| v * 0.3));
            let want = Zip::from(&a).and(&b.broadcast(IxDyn(sa)).unwrap()).map_collect(|&x, &y| div(x, y));
            let got = map2_runs(&pool, &a, &b, div).expect("runs");
            assert_eq!(got.shape(), sa);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{sa:?} {sb:?}");
        }
        assert!(map2_runs(&pool, &full(&[2, 3]), &full(&[2, 2]), div).is_none());
        assert!(map2_runs(&pool, &full(&[3]), &full(&[2, 3]), div).is_none());
    }
}
