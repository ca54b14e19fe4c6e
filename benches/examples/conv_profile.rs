//! Runs one dense conv shape in a loop on a pool thread, for a profiler: `conv_profile
//! CIN COUT K S HW REPS` (TF-SAME padding, the kernel `ConvPlan::choose` picks, ReLU6).
use actmax_tensor::conv::{self, ConvPlan};
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, ScratchPool};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).take(6).filter_map(|a| a.parse().ok()).collect();
    if a.len() != 6 {
        eprintln!("usage: conv_profile CIN COUT K S HW REPS (whole numbers)");
        std::process::exit(2);
    }
    let (cin, cout, k, s, hw, reps) = (a[0], a[1], a[2], a[3], a[4], a[5]);
    let p = Conv2dParams::new().stride(s).padding(Padding2d::tf_same([hw, hw], [k, k], [s, s], [1, 1]));
    let g = ConvGeometry::new("p", &[1, cin, hw, hw], &[cout, cin, k, k], p).unwrap();
    let x: Vec<f32> = (0..g.in_elems()).map(|i| (i % 11) as f32 * 0.1).collect();
    let w: Vec<f32> = (0..cout * cin * k * k).map(|i| (i % 7) as f32 * 0.05 - 0.1).collect();
    let mut y = vec![0.0f32; g.out_elems()];
    let scratch = ScratchPool::new();
    let plan = ConvPlan::choose(&g);
    let pack = conv::ConvPack::forward(plan, &w, &g).unwrap();
    let t = std::time::Instant::now();
    rayon::scope(|_| {
        for _ in 0..reps {
            conv::conv2d_forward_prepacked(plan, &x, &w, &pack, None, Some((0.0, 6.0)), &g, &mut y, &scratch).unwrap();
        }
    });
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("{:?}: {:.3} ms, {:.1} GFLOP/s", plan.kernel, dt * 1e3, g.flops() / dt / 1e9);
}
