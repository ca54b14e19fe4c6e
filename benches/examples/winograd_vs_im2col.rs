//! Forward and backward-input time of VGG16's 3×3 convs: Winograd F(2×2, 3×3) and
//! F(4×4, 3×3) against im2col + GEMM, same inputs, one sitting, the kernels taking turns (best of 8 after a warm-up).
use actmax_tensor::conv::{self, ConvKernel, ConvPack, ConvPlan};
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, ScratchPool};

/// Milliseconds of one call of `f`.
fn time(f: &mut dyn FnMut()) -> f64 {
    let t = std::time::Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let scratch = ScratchPool::new();
    for (c_in, c_out, hw) in [(64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14)] {
        let p = Conv2dParams::new().padding(Padding2d::uniform(1));
        let g = ConvGeometry::new("bench", &[1, c_in, hw, hw], &[c_out, c_in, 3, 3], p).unwrap();
        let x: Vec<f32> = (0..c_in * hw * hw).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let w: Vec<f32> = (0..c_out * c_in * 9).map(|i| (i % 7) as f32 * 0.01 - 0.03).collect();
        let mut y = vec![0.0; c_out * hw * hw];
        let mut dx = vec![0.0; c_in * hw * hw];
        let kernels = [ConvKernel::Im2col, ConvKernel::Winograd, ConvKernel::Winograd4];
        let packs: Vec<_> = kernels
            .iter()
            .map(|&k| {
                let plan = ConvPlan::with_kernel(k);
                (plan, ConvPack::forward(plan, &w, &g).unwrap(), ConvPack::backward_input(plan, &w, &g).unwrap())
            })
            .collect();
        // The kernels take turns, so a noisy moment hits them alike; the best of 8 counts.
        let mut row = vec![(f64::INFINITY, f64::INFINITY); kernels.len()];
        for rep in 0..9 {
            for ((plan, pf, pb), best) in packs.iter().zip(row.iter_mut()) {
                let plan = *plan;
                let f = time(&mut || {
                    conv::conv2d_forward_prepacked(plan, &x, &w, pf, None, None, &g, &mut y, &scratch).unwrap()
                });
                let b = time(&mut || {
                    conv::conv2d_backward_input_prepacked(plan, &y, &w, pb, &g, &mut dx, &scratch).unwrap()
                });
                if rep > 0 {
                    *best = (best.0.min(f), best.1.min(b));
                }
            }
        }
        let gf = g.flops() / 1e6;
        println!(
            "{c_in:4}->{c_out:4} @{hw:3}: im2col fwd {:7.2} ms ({:5.0} GFLOP/s) bwd {:7.2} | F2 fwd {:7.2} bwd {:7.2} | F4 fwd {:7.2} bwd {:7.2} | speedup over im2col F2 {:.2}/{:.2} F4 {:.2}/{:.2}",
            row[0].0,
            gf / row[0].0,
            row[0].1,
            row[1].0,
            row[1].1,
            row[2].0,
            row[2].1,
            row[0].0 / row[1].0,
            row[0].1 / row[1].1,
            row[0].0 / row[2].0,
            row[0].1 / row[2].1
        );
    }
}
