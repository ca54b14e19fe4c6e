//! Tile-size sweep for the im2col kernels (a tuning aid; criterion is the record).
use actmax_tensor::conv::{self, ConvKernel, ConvPlan};
use actmax_tensor::gemm::matmul;
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, ScratchPool};
use std::time::Instant;

fn median(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    let tiles: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    for &(ci, co, s) in &[(64, 64, 224), (128, 128, 112), (256, 256, 56), (512, 512, 28), (512, 512, 14)] {
        let g =
            ConvGeometry::new("t", &[1, ci, s, s], &[co, ci, 3, 3], Conv2dParams::new().padding(Padding2d::uniform(1)))
                .unwrap();
        let x = vec![0.5f32; ci * s * s];
        let w = vec![0.25f32; co * ci * 9];
        let mut y = vec![0.0f32; co * s * s];
        let mut dx = vec![0.0f32; ci * s * s];
        let scratch = ScratchPool::new();
        let fl = g.flops() / 1e9;
        let (m, k, n) = (co, ci * 9, s * s);
        let a = vec![0.1f32; m * k];
        let b = vec![0.1f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let gemm = median(|| matmul(m, k, n, &a, &b, &mut c, true).expect("sized"), 9);
        let bt = vec![0.1f32; k * m];
        let bd = vec![0.1f32; m * n];
        let mut cd = vec![0.0f32; k * n];
        let gemm_bi = median(|| matmul(k, m, n, &bt, &bd, &mut cd, true).expect("sized"), 9);
        print!("{ci}x{co}@{s}: sgemm {:.0} / {:.0} GF/s |", fl / gemm, fl / gemm_bi);
        for &t in &tiles {
            let plan = ConvPlan { kernel: ConvKernel::Im2col, tile_cols: t };
            let f = median(|| conv::conv2d_forward_with(plan, &x, &w, None, None, &g, &mut y, &scratch).unwrap(), 9);
            let bi = median(|| conv::conv2d_backward_input_with(plan, &y, &w, &g, &mut dx, &scratch).unwrap(), 9);
            print!(" t{t}: {:.2} {:.2}", gemm / f, gemm_bi / bi);
        }
        println!();
    }
}
