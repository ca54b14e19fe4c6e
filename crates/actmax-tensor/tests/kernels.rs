//! Every kernel variant against the naive loop references, on random shapes.

mod common;

use actmax_tensor::conv::{self, fused, naive, ConvKernel, ConvPlan};
use actmax_tensor::pool::{self, PoolGeometry};
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, Pool2dParams, ScratchPool};
use common::{assert_close, distinct, values};
use proptest::prelude::*;

/// A random valid conv geometry (stride, asymmetric padding, dilation, groups, batch).
fn geometry() -> impl Strategy<Value = ConvGeometry> {
    geometry_parts().prop_map(|(x, w, p)| ConvGeometry::new("test", &x, &w, p).expect("filtered"))
}

/// The input shape, weight shape and parameters of [`geometry`].
fn geometry_parts() -> impl Strategy<Value = ([usize; 4], [usize; 4], Conv2dParams)> {
    (
        1usize..=2,
        1usize..=3,
        1usize..=4,
        1usize..=4,
        1usize..=4,
        1usize..=4,
        1usize..=3,
        1usize..=2,
        (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        3usize..=14,
        3usize..=14,
    )
        .prop_filter_map(
            "window must fit",
            |(n, groups, cin_g, cout_g, kh, kw, stride, dil, (t, b, l, r), h, w)| {
                let p = Conv2dParams {
                    stride: [stride, 1 + (stride + kh) % 2],
                    padding: Padding2d { top: t, bottom: b, left: l, right: r },
                    dilation: [dil, 1 + (dil + kw) % 2],
                    groups,
                };
                let (x, w) = ([n, cin_g * groups, h, w], [cout_g * groups, cin_g, kh, kw]);
                ConvGeometry::new("test", &x, &w, p).ok().map(|_| (x, w, p))
            },
        )
}

fn run_all(g: &ConvGeometry, plan: ConvPlan, seed: u64, with_bias: bool) {
    let scratch = ScratchPool::new();
    let x = values(seed, g.in_elems());
    let w = values(seed ^ 1, g.weight_elems());
    let dy = values(seed ^ 2, g.out_elems());
    let b = values(seed ^ 3, g.c_out());
    let bias = with_bias.then_some(&b[..]);

    let mut y = vec![f32::NAN; dy.len()];
    conv::conv2d_forward_with(plan, &x, &w, bias, None, g, &mut y, &scratch).unwrap();
    let want = naive::conv2d_forward(&x, &w, bias, g);
    assert_close(&y, &want, 1e-4, &format!("forward {plan:?} {g:?}"));
    // The fused ReLU6 store equals the reference followed by the clamp.
    let mut y6 = vec![f32::NAN; dy.len()];
    conv::conv2d_forward_with(plan, &x, &w, bias, Some((0.0, 6.0)), g, &mut y6, &scratch).unwrap();
    let want6: Vec<f32> = want.iter().map(|v| v.clamp(0.0, 6.0)).collect();
    assert_close(&y6, &want6, 1e-4, &format!("forward+relu6 {plan:?} {g:?}"));

    let mut dx = vec![f32::NAN; x.len()];
    conv::conv2d_backward_input_with(plan, &dy, &w, g, &mut dx, &scratch).unwrap();
    assert_close(&dx, &naive::conv2d_backward_input(&dy, &w, g), 1e-4, &format!("backward-input {plan:?} {g:?}"));

    let mut dw = vec![f32::NAN; w.len()];
    conv::conv2d_backward_weight_with(plan, &x, &dy, g, &mut dw, &scratch).unwrap();
    assert_close(&dw, &naive::conv2d_backward_weight(&x, &dy, g), 1e-4, &format!("backward-weight {plan:?} {g:?}"));
}

/// Weight gradients large enough to be written in place (a GEMM per tile accumulating
/// into `dw`, not per-thread sums): groups, batches, strides, 1×1, one-row tiles.
#[test]
fn large_weight_gradients_match_naive() {
    let cases = [
        // (n, groups, cin_g, cout_g, k, stride, size)
        (2, 2, 256, 64, 3, 1, 5),
        (1, 1, 256, 72, 3, 2, 7),
        (2, 1, 1024, 128, 1, 1, 4),
    ];
    let scratch = ScratchPool::new();
    for (i, &(n, groups, cin_g, cout_g, k, s, size)) in cases.iter().enumerate() {
        assert!(cout_g * cin_g * k * k >= 1 << 17, "case {i} must reach the in-place path");
        let pad = Padding2d::tf_same([size, size], [k, k], [s, s], [1, 1]);
        let p = Conv2dParams::new().stride(s).groups(groups).padding(pad);
        let g =
            ConvGeometry::new("test", &[n, cin_g * groups, size, size], &[cout_g * groups, cin_g, k, k], p).unwrap();
        let (x, dy) = (values(i as u64, g.in_elems()), values(i as u64 + 7, g.out_elems()));
        let want = naive::conv2d_backward_weight(&x, &dy, &g);
        for tile_cols in [1, 1024] {
            let plan = ConvPlan { tile_cols, ..ConvPlan::choose(&g) };
            let mut dw = vec![f32::NAN; g.weight_elems()];
            conv::conv2d_backward_weight_with(plan, &x, &dy, &g, &mut dw, &scratch).unwrap();
            assert_close(&dw, &want, 1e-4, &format!("backward-weight {plan:?} {g:?}"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Tiled im2col on any geometry, with default tiles and with one-row tiles (which
    /// exercises the even/odd col2im phases and many parallel tasks).
    #[test]
    fn im2col_matches_naive(g in geometry(), seed in any::<u64>(), bias in any::<bool>(), tile in prop_oneof![Just(1usize), Just(7), Just(1024)]) {
        run_all(&g, ConvPlan { kernel: ConvKernel::Im2col, tile_cols: tile }, seed, bias);
    }

    /// The 1×1 GEMM path.
    #[test]
    fn pointwise_matches_naive(n in 1usize..=3, groups in 1usize..=3, cin_g in 1usize..=9, cout_g in 1usize..=9, h in 1usize..=12, w in 1usize..=12, seed in any::<u64>(), tile in prop_oneof![Just(1usize), Just(1024)]) {
        let g = ConvGeometry::new("test", &[n, cin_g * groups, h, w], &[cout_g * groups, cin_g, 1, 1], Conv2dParams::new().groups(groups)).unwrap();
        prop_assert!(ConvKernel::Pointwise.supports(&g));
        run_all(&g, ConvPlan { kernel: ConvKernel::Pointwise, tile_cols: tile }, seed, seed % 2 == 0);
    }

    /// The direct depthwise kernel (stride, asymmetric padding, dilation).
    #[test]
    fn depthwise_matches_naive(n in 1usize..=2, c in 1usize..=6, k in 1usize..=5, s in 1usize..=3, d in 1usize..=2, pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3), h in 5usize..=16, w in 5usize..=27, seed in any::<u64>()) {
        let p = Conv2dParams { stride: [s, s], padding: Padding2d { top: pads.0, bottom: pads.1, left: pads.2, right: pads.3 }, dilation: [d, d], groups: c };
        let g = ConvGeometry::new("test", &[n, c, h, w], &[c, 1, k, k], p);
        prop_assume!(g.is_ok());
        let g = g.unwrap();
        prop_assert_eq!(ConvKernel::choose(&g), ConvKernel::Depthwise);
        run_all(&g, ConvPlan::with_kernel(ConvKernel::Depthwise), seed, seed % 2 == 1);
    }

    /// Winograd F(2×2, 3×3) and F(4×4, 3×3): odd and even sizes (ragged last tiles, of
    /// every remainder), asymmetric padding (TF-SAME), any channel counts, batches;
    /// forward, both backwards (the input's through the transposed Winograd conv).
    #[test]
    fn winograd_matches_naive(n in 1usize..=2, c_in in 1usize..=20, c_out in 1usize..=20, h in 1usize..=13, w in 1usize..=13, pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2), seed in any::<u64>()) {
        let p = Conv2dParams::new().padding(Padding2d { top: pads.0, bottom: pads.1, left: pads.2, right: pads.3 });
        let g = ConvGeometry::new("test", &[n, c_in, h, w], &[c_out, c_in, 3, 3], p);
        prop_assume!(g.is_ok());
        let g = g.unwrap();
        for kernel in [ConvKernel::Winograd, ConvKernel::Winograd4] {
            prop_assert!(kernel.supports(&g));
            run_all(&g, ConvPlan::with_kernel(kernel), seed, seed % 2 == 0);
        }
    }

    /// Max and average pooling, forward and backward, with padding.
    #[test]
    fn pooling_matches_naive(planes in 1usize..=5, k in 1usize..=4, s in 1usize..=3, pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3), h in 4usize..=13, w in 4usize..=13, include in any::<bool>(), seed in any::<u64>()) {
        let pad = Padding2d { top: pads.0.min(k - 1), bottom: pads.1.min(k - 1), left: pads.2.min(k - 1), right: pads.3.min(k - 1) };
        let mut p = Pool2dParams::new(k, s).padding(pad);
        p.count_include_pad = include;
        let g = PoolGeometry::new("test", &[1, planes, h, w], p).unwrap();
        let x = distinct(seed, g.in_elems(), 0.01);
        let dy = values(seed ^ 5, g.out_elems());
        let (y, arg) = pool::max_pool2d_forward(&x, &g).unwrap();
        assert_close(&y, &pool::naive::max_pool2d(&x, &g).unwrap(), 1e-6, "max_pool forward");
        assert_close(&pool::max_pool2d_backward(&dy, &arg, &g).unwrap(), &pool::naive::max_pool2d_backward(&x, &dy, &g).unwrap(), 1e-6, "max_pool backward");
        assert_close(&pool::avg_pool2d_forward(&x, &g).unwrap(), &pool::naive::avg_pool2d(&x, &g).unwrap(), 1e-5, "avg_pool forward");
        assert_close(&pool::avg_pool2d_backward(&dy, &g).unwrap(), &pool::naive::avg_pool2d_backward(&dy, &g).unwrap(), 1e-5, "avg_pool backward");
    }
}

/// The shapes the benchmarks time, at reduced size, through the default plan.
#[test]
fn benchmark_like_shapes_match_naive() {
    let cases: &[(usize, usize, usize, usize, usize, usize)] = &[
        // (c_in, c_out, hw, k, stride, groups)
        (3, 16, 33, 3, 1, 1),   // thin first layer (K = 27)
        (3, 8, 31, 3, 2, 1),    // strided stem, TF-SAME below
        (16, 16, 40, 3, 1, 1),  // several tiles
        (12, 12, 29, 5, 2, 12), // depthwise 5×5 stride 2
        (96, 96, 13, 3, 2, 96), // depthwise, many planes per task (phase padding zeroed once)
        (64, 64, 9, 5, 1, 64),  // the same, stride 1 (its input gradient runs the forward)
        (3, 3, 141, 3, 2, 3),   // depthwise stride 2 with rows wide enough for 64-lane gathers
        (24, 40, 17, 1, 1, 1),  // pointwise
        (64, 48, 15, 3, 1, 1),  // Winograd (3×3 stride 1, ≥ 32 channels), odd size
        (256, 256, 7, 3, 1, 1), // Winograd F(4×4) (≥ 64 channels): long sums, ragged tiles
    ];
    for &(ci, co, hw, k, s, groups) in cases {
        let p =
            Conv2dParams::new().stride(s).groups(groups).padding(Padding2d::tf_same([hw, hw], [k, k], [s, s], [1, 1]));
        let g = ConvGeometry::new("test", &[1, ci, hw, hw], &[co, ci / groups, k, k], p).unwrap();
        run_all(&g, ConvPlan::choose(&g), (ci * 1000 + hw) as u64, true);
    }
    let vgg_like = |c_in: usize, c_out: usize| {
        let p = Conv2dParams::new().padding(Padding2d::uniform(1));
        ConvKernel::choose(&ConvGeometry::new("test", &[1, c_in, 15, 15], &[c_out, c_in, 3, 3], p).unwrap())
    };
    assert_eq!(vgg_like(64, 48), ConvKernel::Winograd, "narrow convs take Winograd F(2×2)");
    assert_eq!(vgg_like(64, 64), ConvKernel::Winograd4, "VGG's convs take Winograd F(4×4)");
    assert_eq!(vgg_like(16, 512), ConvKernel::Im2col, "too few channels for Winograd");
}

/// A reused scratch pool gives the same answer as a fresh one, and keeps its buffers:
/// however many calls, it holds at most one buffer per task that can run at once (how
/// many did run at once depends on the pool's timing, so the first call's count is not
/// a bound).
#[test]
fn scratch_is_reused_between_calls() {
    let g = ConvGeometry::new("test", &[1, 4, 20, 20], &[6, 4, 3, 3], Conv2dParams::new()).unwrap();
    let scratch = ScratchPool::new();
    let x = values(1, g.in_elems());
    let w = values(2, g.weight_elems());
    let (mut a, mut b) = (vec![0.0; g.out_elems()], vec![0.0; g.out_elems()]);
    conv::conv2d_forward(&x, &w, None, &g, &mut a, &scratch).unwrap();
    assert!(!scratch.is_empty());
    for _ in 0..20 {
        conv::conv2d_forward(&x, &w, None, &g, &mut b, &scratch).unwrap();
        assert_eq!(a, b);
    }
    let bound = rayon::current_num_threads();
    assert!(scratch.len() <= bound, "{} scratch buffers after 21 calls on {bound} threads", scratch.len());
}

/// numpy's `rfft2(x, norm="ortho")` written as the double sum, in f64.
fn naive_rfft2(x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let wc = w / 2 + 1;
    let mut out = vec![0.0f32; h * wc * 2];
    let norm = ((h * w) as f64).sqrt();
    for u in 0..h {
        for k in 0..wc {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for r in 0..h {
                for c in 0..w {
                    let a = -2.0 * std::f64::consts::PI * ((u * r) as f64 / h as f64 + (k * c) as f64 / w as f64);
                    re += x[r * w + c] as f64 * a.cos();
                    im += x[r * w + c] as f64 * a.sin();
                }
            }
            out[(u * wc + k) * 2] = (re / norm) as f32;
            out[(u * wc + k) * 2 + 1] = (im / norm) as f32;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rfft2_matches_the_dft_and_irfft2_inverts_it(planes in 1usize..=3, h in 1usize..=17, w in 1usize..=17, seed in any::<u64>()) {
        use actmax_tensor::fft;
        let x = values(seed, planes * h * w);
        let z = fft::rfft2(&x, planes, h, w);
        let wc = fft::half_width(w);
        for p in 0..planes {
            let want = naive_rfft2(&x[p * h * w..][..h * w], h, w);
            assert_close(&z[p * h * wc * 2..][..h * wc * 2], &want, 1e-5, "rfft2 vs the DFT");
        }
        assert_close(&fft::irfft2(&z, planes, h, w), &x, 1e-5, "irfft2(rfft2(x))");
    }
}

/// The 2×2 stride-2 max pool fast path (VGG's) against the reference, odd sizes and
/// ties; a NaN wins its window (as in the general loop).
#[test]
fn max_pool_2x2_matches_naive() {
    for (h, w) in [(2, 2), (5, 7), (8, 6), (13, 13)] {
        let g = PoolGeometry::new("test", &[2, 3, h, w], Pool2dParams::new(2, 2)).unwrap();
        let mut x: Vec<f32> = (0..g.in_elems()).map(|i| ((i * 7) % 5) as f32).collect();
        let (y, arg) = pool::max_pool2d_forward(&x, &g).unwrap();
        assert_close(&y, &pool::naive::max_pool2d(&x, &g).unwrap(), 0.0, "2x2 forward");
        let dy = values(h as u64, g.out_elems());
        let dx = pool::max_pool2d_backward(&dy, &arg, &g).unwrap();
        let want = pool::naive::max_pool2d_backward(&x, &dy, &g).unwrap();
        assert_close(&dx, &want, 1e-6, "2x2 backward");
        x[w + 1] = f32::NAN;
        assert!(pool::max_pool2d_forward(&x, &g).unwrap().0[0].is_nan(), "a NaN in the first window wins it");
    }
}

/// The geometry of `parts` with a batch of `n`.
fn with_batch(parts: &([usize; 4], [usize; 4], Conv2dParams), n: usize) -> ConvGeometry {
    let (mut x, w, p) = *parts;
    x[0] = n;
    ConvGeometry::new("test", &x, &w, p).unwrap()
}

/// Forward and backward-input of image 1 of a batch of 3 on a pool of `threads`.
#[allow(clippy::too_many_arguments)] // two geometries and a conv's operands
fn middle_image(
    plan: ConvPlan,
    g1: &ConvGeometry,
    g3: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    threads: usize,
) -> (Vec<f32>, Vec<f32>) {
    let batch = |one: &[f32], seed: u64| [values(seed, one.len()), one.to_vec(), values(seed + 1, one.len())].concat();
    let (x3, dy3) = (batch(x, 7), batch(dy, 9));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let scratch = ScratchPool::new();
        let mut y = vec![f32::NAN; g3.out_elems()];
        conv::conv2d_forward_with(plan, &x3, w, None, None, g3, &mut y, &scratch).unwrap();
        let mut dx = vec![f32::NAN; g3.in_elems()];
        conv::conv2d_backward_input_with(plan, &dy3, w, g3, &mut dx, &scratch).unwrap();
        let (o, i) = (g1.out_elems(), g1.in_elems());
        (y[o..2 * o].to_vec(), dx[i..2 * i].to_vec())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// An image's forward and input gradient have the same bits alone on one thread and
    /// in the middle of a batch on 2, 3 or 8 (what same seed, same image in any batch and
    /// pool rests on), on every kernel that takes the geometry.
    #[test]
    fn convs_do_not_depend_on_the_batch_or_the_thread_count(parts in geometry_parts(), seed in any::<u64>(), tile in prop_oneof![Just(7usize), Just(1024)]) {
        let (g1, g3) = (with_batch(&parts, 1), with_batch(&parts, 3));
        let (x, w, dy) = (values(seed, g1.in_elems()), values(seed ^ 1, g1.weight_elems()), values(seed ^ 2, g1.out_elems()));
        let all = [ConvKernel::Depthwise, ConvKernel::Pointwise, ConvKernel::Im2col, ConvKernel::Winograd, ConvKernel::Winograd4];
        for kernel in all.into_iter().filter(|k| k.supports(&g1)) {
            let plan = ConvPlan { kernel, tile_cols: tile };
            let alone = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
                let scratch = ScratchPool::new();
                let mut y = vec![f32::NAN; g1.out_elems()];
                conv::conv2d_forward_with(plan, &x, &w, None, None, &g1, &mut y, &scratch).unwrap();
                let mut dx = vec![f32::NAN; g1.in_elems()];
                conv::conv2d_backward_input_with(plan, &dy, &w, &g1, &mut dx, &scratch).unwrap();
                (y, dx)
            });
            for threads in [2, 3, 8] {
                let got = middle_image(plan, &g1, &g3, &x, &w, &dy, threads);
                prop_assert!(got.0 == alone.0, "forward {plan:?} {g1:?} on {threads} threads");
                prop_assert!(got.1 == alone.1, "backward-input {plan:?} {g1:?} on {threads} threads");
            }
        }
    }
}

/// The public GEMM doors check their slices: a wrong length is an error, not a read past
/// the end; right lengths give the product.
#[test]
fn the_gemm_doors_check_their_slices() {
    use actmax_tensor::gemm::direct::{matmul_packed, Epilogue, Isa, PackedA};
    use actmax_tensor::gemm::matmul;
    let (a, b) = (values(1, 6), values(2, 12));
    let want: Vec<f32> = (0..8).map(|ij| (0..3).map(|p| a[(ij / 4) * 3 + p] * b[p * 4 + ij % 4]).sum()).collect();
    for parallel in [false, true] {
        let mut c = vec![f32::NAN; 8];
        matmul(2, 3, 4, &a, &b, &mut c, parallel).unwrap();
        assert_close(&c, &want, 1e-5, "matmul");
        assert!(matmul(2, 3, 4, &a[..5], &b, &mut c, parallel).is_err(), "short A");
        assert!(matmul(2, 3, 4, &a, &b[..11], &mut c, parallel).is_err(), "short B");
        assert!(matmul(2, 3, 4, &a, &b, &mut c[..7], parallel).is_err(), "short C");
        assert!(matmul(usize::MAX, 2, 4, &a, &b, &mut c, parallel).is_err(), "overflowing sizes");
    }
    let isa = Isa::detect();
    assert!(PackedA::pack(isa, 2, 3, &a[..5]).is_err());
    let pa = PackedA::pack(isa, 2, 3, &a).unwrap();
    let mut c = vec![f32::NAN; 8];
    matmul_packed(&pa, 4, &b, &mut c, &Epilogue::default(), true).unwrap();
    assert_close(&c, &want, 1e-5, "matmul_packed");
    assert!(matmul_packed(&pa, 4, &b, &mut c[..6], &Epilogue::default(), false).is_err());
    assert!(matmul_packed(&pa, 4, &b[..8], &mut c, &Epilogue::default(), false).is_err());
    let short_bias = Epilogue { bias: Some(&[1.0]), ..Epilogue::default() };
    assert!(matmul_packed(&pa, 4, &b, &mut c, &short_bias, false).is_err());
}

/// The public conv kernels refuse what does not fit instead of asserting: operands of
/// the wrong length, a kernel that cannot run the geometry, a pack made for the other
/// direction or another conv.
#[test]
fn the_conv_doors_refuse_what_does_not_fit() {
    use conv::ConvPack;
    let p = Conv2dParams { stride: [2, 2], ..Conv2dParams::new() };
    let g = ConvGeometry::new("test", &[1, 3, 9, 9], &[4, 3, 3, 3], p).unwrap();
    let (x, w, dy) = (values(1, g.in_elems()), values(2, g.weight_elems()), values(3, g.out_elems()));
    let scratch = ScratchPool::new();
    let (mut y, mut dx, mut dw) = (vec![0.0; g.out_elems()], vec![0.0; g.in_elems()], vec![0.0; g.weight_elems()]);
    conv::conv2d_forward(&x, &w, None, &g, &mut y, &scratch).unwrap();
    assert!(conv::conv2d_forward(&x[1..], &w, None, &g, &mut y, &scratch).is_err(), "short input");
    assert!(conv::conv2d_forward(&x, &w, Some(&[1.0]), &g, &mut y, &scratch).is_err(), "short bias");
    assert!(conv::conv2d_backward_input(&dy, &w[1..], &g, &mut dx, &scratch).is_err(), "short weight");
    assert!(conv::conv2d_backward_weight(&x, &dy, &g, &mut dw[1..], &scratch).is_err(), "short dw");
    assert!(conv::conv2d_backward_bias(&dy, &g, &mut [0.0; 3]).is_err(), "short db");
    let winograd = ConvPlan::with_kernel(ConvKernel::Winograd);
    assert!(conv::conv2d_forward_with(winograd, &x, &w, None, None, &g, &mut y, &scratch).is_err(), "stride 2");
    assert!(ConvPack::forward(winograd, &w, &g).is_err());
    let plan = ConvPlan::choose(&g);
    let backward = ConvPack::backward_input(plan, &w, &g).unwrap();
    let forward = conv::conv2d_forward_prepacked(plan, &x, &w, &backward, None, None, &g, &mut y, &scratch);
    assert!(forward.is_err(), "a backward pack for the forward pass");
    let other = ConvGeometry::new("test", &[1, 3, 9, 9], &[4, 3, 1, 1], Conv2dParams::new()).unwrap();
    let small = ConvPack::forward(ConvPlan::with_kernel(ConvKernel::Im2col), &w[..12], &other).unwrap();
    let forward = conv::conv2d_forward_prepacked(plan, &x, &w, &small, None, None, &g, &mut y, &scratch);
    assert!(forward.is_err(), "a pack of another conv's weights");
}

#[test]
fn pool_kernels_refuse_slices_that_do_not_fit_their_geometry() {
    let g = PoolGeometry::new("max_pool2d", &[1, 2, 5, 5], Pool2dParams::new(2, 2)).unwrap();
    let (x, dy) = (vec![0.5; g.in_elems()], vec![1.0; g.out_elems()]);
    let (short, long) = (vec![0.0; g.in_elems() - 1], vec![0.0; g.out_elems() + 1]);
    let (_, arg) = pool::max_pool2d_forward(&x, &g).unwrap();
    let errors = [
        pool::max_pool2d_forward(&short, &g).map(|_| ()),
        pool::avg_pool2d_forward(&short, &g).map(|_| ()),
        pool::max_pool2d_backward(&long, &arg, &g).map(|_| ()),
        pool::max_pool2d_backward(&dy, &arg[1..], &g).map(|_| ()),
        pool::max_pool2d_backward(&dy, &vec![25; arg.len()], &g).map(|_| ()),
        pool::avg_pool2d_backward(&long, &g).map(|_| ()),
        pool::naive::max_pool2d(&short, &g).map(|_| ()),
        pool::naive::avg_pool2d(&short, &g).map(|_| ()),
        pool::naive::max_pool2d_backward(&x, &long, &g).map(|_| ()),
        pool::naive::avg_pool2d_backward(&long, &g).map(|_| ()),
    ];
    for (i, e) in errors.into_iter().enumerate() {
        let msg = e.expect_err("a slice that does not fit").to_string();
        assert!(msg.contains("holds") || msg.contains("outside"), "door {i}: {msg}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A sum over trailing axes (a global pooling's) takes a one-pass kernel: the same
    /// bits as ndarray's `sum_axis`, innermost axis first, which every other sum runs on
    /// (lanes of 1 to 20, so ndarray's eight-way unrolled partial sums are crossed).
    #[test]
    fn sums_over_trailing_axes_keep_ndarrays_bits(
        dims in proptest::collection::vec(1usize..=20, 1..=4), k in 1usize..=4, seed in any::<u64>(), mean in any::<bool>(),
    ) {
        let k = k.min(dims.len());
        let x = actmax_tensor::Tensor::from_shape_vec(dims.clone(), values(seed, dims.iter().product())).unwrap();
        let axes: Vec<usize> = (dims.len() - k..dims.len()).collect();
        let mut want = x.clone();
        for &a in axes.iter().rev() {
            want = want.sum_axis(ndarray::Axis(a));
        }
        if mean {
            let scale = 1.0 / axes.iter().map(|&a| dims[a]).product::<usize>() as f32;
            want.mapv_inplace(|v| v * scale);
        }
        let mut tape = actmax_tensor::Tape::new();
        let v = tape.constant(x);
        let y = if mean { tape.mean(v, &axes, false) } else { tape.sum(v, &axes, false) }.unwrap();
        let got = tape.value(y).unwrap();
        prop_assert_eq!(got.shape(), want.shape());
        for (g, w) in got.iter().zip(want.iter()) {
            prop_assert_eq!(g.to_bits(), w.to_bits(), "{:?} over {:?}", dims, axes);
        }
    }
}

/// A global average pool large enough to sum its planes over the pool (EfficientNet's
/// 1280 planes of 7 × 7, and 8 × 8 with a full partial-sum chunk), with negative zeros:
/// ndarray's bits.
#[test]
fn a_large_global_pool_keeps_ndarrays_bits() {
    for hw in [7, 8, 9] {
        let mut v = values(hw as u64, 1280 * hw * hw);
        v.iter_mut().step_by(5).for_each(|x| *x = -0.0);
        let x = actmax_tensor::Tensor::from_shape_vec(vec![1, 1280, hw, hw], v).unwrap();
        let want = x.sum_axis(ndarray::Axis(3)).sum_axis(ndarray::Axis(2)).mapv(|s| s * (1.0 / (hw * hw) as f32));
        let mut tape = actmax_tensor::Tape::new();
        let v = tape.constant(x);
        let y = tape.global_avg_pool(v).unwrap();
        let got = tape.value(y).unwrap();
        assert_eq!(got.shape(), want.shape());
        assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "{hw}x{hw}");
    }
}

/// The clamps a fused conv's store can apply: none, ReLU6, ReLU.
const CLAMPS: [Option<(f32, f32)>; 3] = [None, Some((0.0, 6.0)), Some((0.0, f32::INFINITY))];

/// A pointwise expand conv (`cin` → `c` channels) and the depthwise conv of its output,
/// with seeded operands, their biases (or none) and clamps: the fused-pair tests' input,
/// and with [`ExpandDepthwise::apart`] their reference.
struct ExpandDepthwise {
    g1: ConvGeometry,
    g2: ConvGeometry,
    x: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    b1: Option<Vec<f32>>,
    b2: Option<Vec<f32>>,
    clamps: [Option<(f32, f32)>; 2],
    pack: conv::ConvPack,
}

impl ExpandDepthwise {
    /// `None` where the depthwise conv's geometry is invalid (a window past the padding).
    #[allow(clippy::too_many_arguments)] // a test case's parameters, spelled out
    fn new(
        n: usize,
        cin: usize,
        c: usize,
        [h, w]: [usize; 2],
        k: usize,
        p2: Conv2dParams,
        bias: bool,
        clamps: (usize, usize),
        seed: u64,
    ) -> Option<Self> {
        let g1 = ConvGeometry::new("pw", &[n, cin, h, w], &[c, cin, 1, 1], Conv2dParams::default()).unwrap();
        let g2 = ConvGeometry::new("dw", &[n, c, h, w], &[c, 1, k, k], Conv2dParams { groups: c, ..p2 }).ok()?;
        let (x, w1, w2) = (values(seed, g1.in_elems()), values(seed ^ 1, c * cin), values(seed ^ 2, g2.weight_elems()));
        let (b1, b2) = (bias.then(|| values(seed ^ 3, c)), bias.then(|| values(seed ^ 4, c)));
        let pack = conv::ConvPack::forward(ConvPlan::choose(&g1), &w1, &g1).unwrap();
        Some(Self { g1, g2, x, w1, w2, b1, b2, clamps: [CLAMPS[clamps.0], CLAMPS[clamps.1]], pack })
    }

    /// The pointwise conv's output and the depthwise conv's, each run on its own.
    fn apart(&self, scratch: &ScratchPool) -> (Vec<f32>, Vec<f32>) {
        let (g1, g2) = (&self.g1, &self.g2);
        let (mut mid, mut out) = (vec![0.0; g1.out_elems()], vec![0.0; g2.out_elems()]);
        let (b1, b2) = (self.b1.as_deref(), self.b2.as_deref());
        conv::conv2d_forward_prepacked(
            ConvPlan::choose(g1),
            &self.x,
            &self.w1,
            &self.pack,
            b1,
            self.clamps[0],
            g1,
            &mut mid,
            scratch,
        )
        .unwrap();
        conv::conv2d_forward_with(ConvPlan::choose(g2), &mid, &self.w2, b2, self.clamps[1], g2, &mut out, scratch)
            .unwrap();
        (mid, out)
    }

    /// The two convs as the fused kernels take them.
    fn stages(&self) -> (fused::FusedConv<'_>, fused::FusedConv<'_>) {
        (
            fused::FusedConv { g: &self.g1, bias: self.b1.as_deref(), clamp: self.clamps[0] },
            fused::FusedConv { g: &self.g2, bias: self.b2.as_deref(), clamp: self.clamps[1] },
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// A pointwise conv and the depthwise conv of its output, a block of channels at a
    /// time, give the bits the two convs give one after the other: odd channel counts
    /// (blocks of whole row panels, the last one short), several blocks per image (up to
    /// 70 × 70), batches, strides, TF-SAME and uneven padding, bias or none, clamps.
    #[test]
    fn a_fused_pointwise_depthwise_pair_gives_the_two_convs_bits(
        n in 1usize..=2, cin in 1usize..=24, c in 1usize..=60, h in 17usize..=70, w in 17usize..=70,
        k in prop_oneof![Just(3usize), Just(5)], s in 1usize..=2, pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        bias in any::<bool>(), clamps in (0usize..3, 0usize..3), seed in any::<u64>(),
    ) {
        let p2 = Conv2dParams { stride: [s, s], padding: Padding2d { top: pads.0, bottom: pads.1, left: pads.2, right: pads.3 }, ..Default::default() };
        let e = ExpandDepthwise::new(n, cin, c, [h, w], k, p2, bias, clamps, seed).unwrap();
        let scratch = ScratchPool::new();
        let (mid, want) = e.apart(&scratch);
        let mut got = vec![f32::NAN; e.g2.out_elems()];
        let (s1, s2) = e.stages();
        // A 1 → 1 channel 1×1 conv is also depthwise and runs on that kernel: no GEMM, no
        // pair to fuse, and the fused call refuses it (a typed error, nothing computed).
        let fuses = fused::fuses(&e.g1, &e.pack, &e.g2);
        prop_assert_eq!(fuses, !e.g1.is_depthwise(), "{}x{} should take the row kernel", h, w);
        if !fuses {
            let r = fused::pointwise_depthwise_forward(&e.x, &e.pack, s1, &e.w2, s2, &mut got, &scratch);
            prop_assert!(r.is_err(), "a pair that does not fuse was computed");
            return Ok(());
        }
        fused::pointwise_depthwise_forward(&e.x, &e.pack, s1, &e.w2, s2, &mut got, &scratch).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(a.to_bits(), b.to_bits(), "at {}: {} vs {}", i, a, b);
        }
        // Keeping the pointwise output (and its pass bits where planes are multiples of 16
        // pixels): the same output, the kept one the pointwise conv's, the bits its ReLU's.
        let band = actmax_tensor::PassBand { lo: 0.0, hi: (clamps.0 == 1).then_some(6.0) };
        let with_bits = (h * w) % 16 == 0;
        let mut kept = vec![f32::NAN; e.g1.out_elems()];
        let mut bits = vec![0xA5A5u16; if with_bits { e.g1.out_elems() / 16 } else { 0 }];
        let mut got = vec![f32::NAN; e.g2.out_elems()];
        let keep = fused::KeptMid { mid: &mut kept, bits: with_bits.then_some((bits.as_mut_slice(), band)) };
        fused::pointwise_depthwise_forward_keeping(&e.x, &e.pack, s1, &e.w2, s2, keep, &mut got, &scratch).unwrap();
        prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "keeping changed the output");
        prop_assert!(kept.iter().zip(&mid).all(|(a, b)| a.to_bits() == b.to_bits()), "the kept output is not the pointwise conv's");
        for (i, &y) in mid.iter().enumerate().filter(|_| with_bits) {
            prop_assert_eq!(bits[i / 16] >> (i % 16) & 1 == 1, band.passes(y), "bit {}", i);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// On AVX-512, a pointwise conv packed for the wide kernel (images of a few hundred
    /// pixels or fewer) and the depthwise conv of its output run pixel-major in between,
    /// and give the bits the two convs give one after the other: whole panels of 32
    /// channels (up to 160), rows of 3 to 16 pixels, 3 × 3 and 5 × 5, strides 1 and 2,
    /// uneven padding, batches, bias or none, clamps. Elsewhere (AVX2, or a shape it does
    /// not take) the pair does not run pixel-major.
    #[test]
    fn a_pixel_major_pair_gives_the_two_convs_bits(
        n in 1usize..=2, cin in 1usize..=40, panels in 1usize..=5, h in 3usize..=16, w in 3usize..=16,
        k in prop_oneof![Just(3usize), Just(5)], s in 1usize..=2, pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        bias in any::<bool>(), clamps in (0usize..3, 0usize..3), seed in any::<u64>(),
    ) {
        let p2 = Conv2dParams { stride: [s, s], padding: Padding2d { top: pads.0, bottom: pads.1, left: pads.2, right: pads.3 }, ..Default::default() };
        let e = ExpandDepthwise::new(n, cin, 32 * panels, [h, w], k, p2, bias, clamps, seed);
        prop_assume!(e.is_some());
        let e = e.unwrap();
        let avx512 = actmax_tensor::gemm::direct::Isa::detect() == actmax_tensor::gemm::direct::Isa::Avx512;
        let wide = (h * w) % 32 != 0;
        prop_assert_eq!(fused::fuses_pixel_major(&e.g1, &e.pack, &e.g2), avx512 && wide && e.g2.out_hw()[1] <= 16);
        let scratch = ScratchPool::new();
        let (_, want) = e.apart(&scratch);
        let mut got = vec![f32::NAN; e.g2.out_elems()];
        let (s1, s2) = e.stages();
        let r = fused::pointwise_depthwise_forward(&e.x, &e.pack, s1, &e.w2, s2, &mut got, &scratch);
        if !fused::fuses_pixel_major(&e.g1, &e.pack, &e.g2) && !fused::fuses(&e.g1, &e.pack, &e.g2) {
            prop_assert!(r.is_err());
            return Ok(());
        }
        r.unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(a.to_bits(), b.to_bits(), "at {}: {} vs {}", i, a, b);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// An expand, depthwise and project conv fused pixel-major (AVX-512) give the bits of
    /// the three convs one after the other (and of the residual's addition after them):
    /// whole panels on both pointwise convs, 3 × 3 and 5 × 5, strides 1 and 2, batches,
    /// bias or none, clamps. Where they do not fuse (AVX2, 32-multiple images, which take
    /// the row kernel) the call is refused.
    #[test]
    fn three_convs_fused_pixel_major_give_the_three_convs_bits(
        n in 1usize..=2, cin in 1usize..=40, panels in 1usize..=4, cout in 1usize..=3, h in 3usize..=16, w in 3usize..=16,
        k in prop_oneof![Just(3usize), Just(5)], s in 1usize..=2, bias in any::<bool>(), clamps in (0usize..3, 0usize..3, 0usize..3),
        residual in any::<bool>(), seed in any::<u64>(),
    ) {
        let (c, c3) = (32 * panels, 32 * cout);
        let p2 = Conv2dParams { stride: [s, s], padding: Padding2d::tf_same([h, w], [k, k], [s, s], [1, 1]), ..Default::default() };
        let e = ExpandDepthwise::new(n, cin, c, [h, w], k, p2, bias, (clamps.0, clamps.1), seed).unwrap();
        let g3 = ConvGeometry::new("pw3", &e.g2.out_shape(), &[c3, c, 1, 1], Conv2dParams::default()).unwrap();
        let (w3, b3) = (values(seed ^ 5, c3 * c), bias.then(|| values(seed ^ 6, c3)));
        let scratch = ScratchPool::new();
        let pack3 = conv::ConvPack::forward(ConvPlan::choose(&g3), &w3, &g3).unwrap();
        let (_, mid2) = e.apart(&scratch);
        let mut want = vec![0.0; g3.out_elems()];
        conv::conv2d_forward_prepacked(ConvPlan::choose(&g3), &mid2, &w3, &pack3, b3.as_deref(), CLAMPS[clamps.2], &g3, &mut want, &scratch).unwrap();
        // The block's residual connection, added after the third conv's clamp.
        let res = values(seed ^ 7, g3.out_elems());
        if residual {
            want.iter_mut().zip(&res).for_each(|(w, r)| *w += r);
        }
        let (s1, s2) = e.stages();
        let s3 = fused::FusedConv { g: &g3, bias: b3.as_deref(), clamp: CLAMPS[clamps.2] };
        let mut got = vec![f32::NAN; g3.out_elems()];
        let r = fused::pointwise_depthwise_pointwise_forward(&e.x, &e.pack, s1, &e.w2, s2, &pack3, s3, residual.then_some(res.as_slice()), &mut got, &scratch);
        let fuses = fused::fuses_three(&e.g1, &e.pack, &e.g2, &g3, &pack3);
        prop_assert_eq!(r.is_ok(), fuses, "{:?}", r);
        if fuses {
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                prop_assert_eq!(a.to_bits(), b.to_bits(), "at {}: {} vs {}", i, a, b);
            }
        }
    }
}

/// The fused pair refuses a kept output or pass bits of the wrong size, and bits for
/// planes that are not multiples of 16 pixels, with typed errors.
#[test]
fn a_fused_pair_refuses_kept_buffers_that_do_not_fit() {
    let (n, cin, c) = (1, 4, 8);
    for (h, mid_len, words, refused) in [
        (20, 8 * 400, 8 * 400 / 16, false),
        (20, 8 * 399, 0, true),
        (20, 8 * 400, 3, true),
        (18, 8 * 324, 8 * 324 / 16, true),
    ] {
        let g1 = ConvGeometry::new("pw", &[n, cin, h, h], &[c, cin, 1, 1], Conv2dParams::default()).unwrap();
        let p2 = Conv2dParams { padding: Padding2d::uniform(1), groups: c, ..Default::default() };
        let g2 = ConvGeometry::new("dw", &[n, c, h, h], &[c, 1, 3, 3], p2).unwrap();
        let (x, w1, w2) = (values(1, g1.in_elems()), values(2, c * cin), values(3, g2.weight_elems()));
        let pack = conv::ConvPack::forward(ConvPlan::choose(&g1), &w1, &g1).unwrap();
        let stage = |g| fused::FusedConv { g, bias: None, clamp: Some((0.0, 6.0)) };
        let (mut mid, mut bits, mut out) = (vec![0.0; mid_len], vec![0u16; words], vec![0.0; g2.out_elems()]);
        let band = actmax_tensor::PassBand { lo: 0.0, hi: Some(6.0) };
        let keep = fused::KeptMid { mid: &mut mid, bits: (words > 0).then_some((bits.as_mut_slice(), band)) };
        let r = fused::pointwise_depthwise_forward_keeping(
            &x,
            &pack,
            stage(&g1),
            &w2,
            stage(&g2),
            keep,
            &mut out,
            &ScratchPool::new(),
        );
        assert_eq!(r.is_err(), refused, "{h}x{h}, {mid_len} floats, {words} words: {r:?}");
    }
}

/// What the fused pair cannot run is refused with a typed error, not computed wrong: a
/// 3×3 first conv, a first conv whose output is not the second's input, a wrong length.
#[test]
fn a_pair_that_does_not_fuse_is_refused() {
    let scratch = ScratchPool::new();
    let dw = |c: usize, hw: usize| {
        let p = Conv2dParams { groups: c, padding: Padding2d::uniform(1), ..Default::default() };
        ConvGeometry::new("dw", &[1, c, hw, hw], &[c, 1, 3, 3], p).unwrap()
    };
    fn stage(g: &ConvGeometry) -> fused::FusedConv<'_> {
        fused::FusedConv { g, bias: None, clamp: None }
    }
    let cases = [
        // 3×3 first conv.
        ConvGeometry::new(
            "c",
            &[1, 4, 20, 20],
            &[8, 4, 3, 3],
            Conv2dParams { padding: Padding2d::uniform(1), ..Default::default() },
        ),
        // 1×1, but 8 channels out against the depthwise conv's 6.
        ConvGeometry::new("c", &[1, 4, 20, 20], &[8, 4, 1, 1], Conv2dParams::default()),
    ];
    for (g1, g2) in cases.into_iter().map(|g| g.unwrap()).zip([dw(8, 20), dw(6, 20)]) {
        let w1 = vec![0.5; g1.weight_elems()];
        let pack = conv::ConvPack::forward(ConvPlan::choose(&g1), &w1, &g1).unwrap();
        let (x, w2, mut y) = (vec![1.0; g1.in_elems()], vec![0.5; g2.weight_elems()], vec![0.0; g2.out_elems()]);
        let r = fused::pointwise_depthwise_forward(&x, &pack, stage(&g1), &w2, stage(&g2), &mut y, &scratch);
        assert!(matches!(r, Err(actmax_tensor::TensorError::Param { .. })), "{r:?}");
    }
    let g1 = ConvGeometry::new("c", &[1, 4, 20, 20], &[8, 4, 1, 1], Conv2dParams::default()).unwrap();
    let pack = conv::ConvPack::forward(ConvPlan::choose(&g1), &[0.5; 32], &g1).unwrap();
    let (x, w2, mut y) = (vec![1.0; g1.in_elems() - 1], vec![0.5; 72], vec![0.0; 8 * 400]);
    let r = fused::pointwise_depthwise_forward(&x, &pack, stage(&g1), &w2, stage(&dw(8, 20)), &mut y, &scratch);
    assert!(matches!(r, Err(actmax_tensor::TensorError::Param { .. })), "a short input: {r:?}");
}
