//! Would fusing an expand conv with the depthwise after it pay? `fused_expand_dw CIN COUT
//! HW K S [BLOCK]`: the 1×1 expand (ReLU6) into a full buffer and then the depthwise
//! (ReLU6), against the same two kernels run per block of BLOCK channels, each block's
//! expand output kept in a small buffer while it is still in cache. `--cold` flushes the
//! caches before each run.
use actmax_tensor::conv::{self, ConvPlan};
use actmax_tensor::gemm::direct::{matmul_packed, Epilogue, Isa, PackedA};
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, ScratchPool};
use rayon::prelude::*;

fn best(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    // `--cold`: every buffer out of cache before each run, as in a model's forward where
    // ten other layers ran since this one's buffers were last touched.
    let cold = std::env::args().any(|a| a == "--cold");
    let mut flush = vec![0u8; if cold { 64 << 20 } else { 0 }];
    (0..reps)
        .map(|_| {
            flush.iter_mut().for_each(|b| *b = b.wrapping_add(1));
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter(|a| a != "--cold")
        .take(6)
        .map(|a| a.parse().expect("CIN COUT HW K S [BLOCK]"))
        .collect();
    let (cin, c, hw, k, s) = (a[0], a[1], a[2], a[3], a[4]);
    let block = a.get(5).copied().unwrap_or(16);
    let n = hw * hw;
    let isa = Isa::detect();
    let x: Vec<f32> = (0..cin * n).map(|i| (i % 13) as f32 * 0.1 - 0.5).collect();
    let we: Vec<f32> = (0..c * cin).map(|i| (i % 7) as f32 * 0.05 - 0.15).collect();
    let wd: Vec<f32> = (0..c * k * k).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
    let relu6 = Some((0.0, 6.0));
    let p = Conv2dParams::new().stride(s).groups(c).padding(Padding2d::tf_same([hw, hw], [k, k], [s, s], [1, 1]));
    let g = ConvGeometry::new("dw", &[1, c, hw, hw], &[c, 1, k, k], p).unwrap();
    let pb = Conv2dParams::new().stride(s).groups(block).padding(p.padding);
    let gb = ConvGeometry::new("dw", &[1, block, hw, hw], &[block, 1, k, k], pb).unwrap();
    let ol = g.out_elems() / c;
    let scratch = ScratchPool::new();
    let full = PackedA::pack(isa, c, cin, &we).unwrap();
    let blocks: Vec<PackedA> = (0..c / block)
        .map(|b| PackedA::pack(isa, block, cin, &we[b * block * cin..][..block * cin]).unwrap())
        .collect();
    let (mut mid, mut y, mut y2) = (vec![0.0f32; c * n], vec![0.0f32; c * ol], vec![0.0f32; c * ol]);
    let ep = Epilogue { bias: None, clamp: relu6 };
    let dw = ConvPlan::with_kernel(conv::ConvKernel::Depthwise);
    let t_split = best(
        || {
            matmul_packed(&full, n, &x, &mut mid, &ep, true).unwrap();
            conv::conv2d_forward_with(dw, &mid, &wd, None, relu6, &g, &mut y, &scratch).unwrap();
        },
        50,
    );
    let t_fused = best(
        || {
            y2.par_chunks_mut(block * ol).zip(&blocks).enumerate().for_each(|(b, (yb, pa))| {
                let mut m = scratch.lease(block * n);
                matmul_packed(pa, n, &x, &mut m, &ep, false).unwrap();
                let wb = &wd[b * block * k * k..][..block * k * k];
                conv::conv2d_forward_with(dw, &m, wb, None, relu6, &gb, yb, &scratch).unwrap();
            });
        },
        50,
    );
    assert!(y.iter().zip(&y2).all(|(a, b)| a == b), "fused blocks changed the result");
    println!(
        "{cin}->{c} at {hw}x{hw}, dw {k}x{k} s{s}, {} threads: expand then depthwise {t_split:.3} ms, per {block} channels {t_fused:.3} ms ({:.2}x)",
        rayon::current_num_threads(),
        t_split / t_fused
    );
}
