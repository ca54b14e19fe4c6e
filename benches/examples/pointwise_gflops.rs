//! GFLOP/s of the direct GEMM against matrixmultiply on EfficientNet-Lite0's pointwise
//! shapes (M = out channels, K = in channels, N = pixels), one sitting, same inputs; then,
//! for every kernel family this CPU runs, the row kernel against the wide kernel on the
//! shapes with few columns. `--cold`: instead, each kernel on the shapes with few
//! columns with its weights streamed from memory, as in a model's forward (each call reads
//! another copy of A, 96 MB of copies in all), against the same kernel with A in cache.
use actmax_tensor::gemm::direct::{matmul_packed, Epilogue, Isa, PackedA};
use actmax_tensor::gemm::matmul;

fn median(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = std::time::Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[0]
}

/// A (`m × k`), B (`k × n`), C and the product's FLOPs.
fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>, f64) {
    let a = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    (a, b, vec![0.0; m * n], 2.0 * (m * k * n) as f64)
}

fn main() {
    let shapes = [
        (32, 32, 12544),
        (96, 16, 12544),
        (24, 96, 3136),
        (144, 24, 3136),
        (40, 144, 784),
        (240, 40, 784),
        (480, 80, 196),
        (80, 480, 196),
        (672, 112, 196),
        (112, 672, 196),
        (112, 480, 196),
        (192, 672, 49),
        (1152, 192, 49),
        (192, 1152, 49),
        (1280, 320, 49),
        (64, 576, 12544),
    ];
    let isa = Isa::detect();
    println!("isa {isa:?}, {} threads", rayon::current_num_threads());
    if std::env::args().any(|a| a == "--cold") {
        return cold_weights(&shapes);
    }
    for (m, k, n) in shapes {
        let (a, b, mut c, flops) = operands(m, k, n);
        let pa = PackedA::pack(isa, m, k, &a).expect("sized");
        let ours = median(|| matmul_packed(&pa, n, &b, &mut c, &Epilogue::default(), true).expect("sized"), 21);
        let mm = median(|| matmul(m, k, n, &a, &b, &mut c, true).expect("sized"), 21);
        println!(
            "{m:5} x {k:5} x {n:6}: direct {:6.1} GFLOP/s  matrixmultiply {:6.1}  ratio {:.2}",
            flops / ours / 1e9,
            flops / mm / 1e9,
            mm / ours
        );
    }
    for isa in Isa::available() {
        for &(m, k, n) in shapes.iter().filter(|s| s.2 <= 256) {
            let (a, b, mut c, flops) = operands(m, k, n);
            let rows = PackedA::pack(isa, m, k, &a).expect("sized");
            let wide = PackedA::pack_for_columns(isa, m, k, n, &a).expect("sized");
            let t_rows = median(|| matmul_packed(&rows, n, &b, &mut c, &Epilogue::default(), true).expect("sized"), 21);
            let t_wide = median(|| matmul_packed(&wide, n, &b, &mut c, &Epilogue::default(), true).expect("sized"), 21);
            println!(
                "{isa:?} {m:5} x {k:5} x {n:4}: row kernel {:6.1} GFLOP/s  wide {:6.1}{}  ratio {:.2}",
                flops / t_rows / 1e9,
                flops / t_wide / 1e9,
                if wide.is_wide() { "" } else { " (not taken here)" },
                t_wide / t_rows
            );
        }
    }
}

/// Hot against cold weights, per kernel family, on the shapes the wide kernel may take.
fn cold_weights(shapes: &[(usize, usize, usize)]) {
    for isa in Isa::available() {
        for &(m, k, n) in shapes.iter().filter(|s| s.2 <= 256) {
            let (a, b, mut c, flops) = operands(m, k, n);
            let copies = (96 << 20) / (4 * m * k);
            let packs: Vec<PackedA> =
                (0..copies).map(|_| PackedA::pack_for_columns(isa, m, k, n, &a).expect("sized")).collect();
            let hot =
                median(|| matmul_packed(&packs[0], n, &b, &mut c, &Epilogue::default(), false).expect("sized"), 21);
            let mut next = 0;
            let cold = median(
                || {
                    next = (next + 1) % copies;
                    matmul_packed(&packs[next], n, &b, &mut c, &Epilogue::default(), false).expect("sized")
                },
                copies.min(200),
            );
            println!(
                "{isa:?} {m:5} x {k:5} x {n:4} (wide {}): A in cache {:6.1} GFLOP/s, A from memory {:6.1}  ratio {:.2}",
                packs[0].is_wide(),
                flops / hot / 1e9,
                flops / cold / 1e9,
                hot / cold
            );
        }
    }
}
