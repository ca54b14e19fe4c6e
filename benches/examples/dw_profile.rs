//! Runs one depthwise shape in a loop, for a profiler: `dw_profile C K S HW REPS [bwd]`
//! (forward, or with `bwd` the backward to the input), on a pool thread.
use actmax_tensor::conv;
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, ScratchPool};
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).take(5).filter_map(|a| a.parse().ok()).collect();
    if a.len() != 5 {
        eprintln!("usage: dw_profile C K S HW REPS [bwd] (whole numbers)");
        std::process::exit(2);
    }
    let (c, k, s, hw, reps) = (a[0], a[1], a[2], a[3], a[4]);
    let p = Conv2dParams::new().stride(s).groups(c).padding(Padding2d::tf_same([hw, hw], [k, k], [s, s], [1, 1]));
    let g = ConvGeometry::new("p", &[1, c, hw, hw], &[c, 1, k, k], p).unwrap();
    let x = vec![0.5f32; c * hw * hw];
    let w = vec![0.1f32; c * k * k];
    let mut y = vec![0.0f32; g.out_elems()];
    let scratch = ScratchPool::new();
    let backward = std::env::args().nth(6).is_some_and(|a| a == "bwd");
    let (dy, mut dx) = (vec![0.25f32; g.out_elems()], vec![0.0f32; g.in_elems()]);
    let t = std::time::Instant::now();
    // On a pool thread, as in a model's forward: no wake-up of the caller per call.
    rayon::scope(|_| {
        for _ in 0..reps {
            if backward {
                conv::conv2d_backward_input(&dy, &w, &g, &mut dx, &scratch).unwrap();
            } else {
                conv::conv2d_forward(&x, &w, None, &g, &mut y, &scratch).unwrap();
            }
        }
    });
    let dt = t.elapsed().as_secs_f64() / reps as f64;
    println!("{:.3} ms, {:.1} GFLOP/s", dt * 1e3, g.flops() / dt / 1e9);
}
