//! Runs EfficientNet-Lite0 forward (and backward with `--backward`) in a loop, for a profiler;
//! `--fold`, `--batch N`, `--in-pool`, `--inference` (a constant image: no gradient, values
//! released after their last reader), `--reps N`, `--each` (every iteration's time, from a
//! new tape) and `--memory` (what the tape keeps) as named.
use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};

fn main() {
    let backward = std::env::args().any(|a| a == "--backward");
    let model = zoo::load("efficientnet_lite0", None).unwrap();
    let model = if std::env::args().any(|a| a == "--fold") { model.fold_batch_norms() } else { model };
    let batch: usize = std::env::args().skip_while(|a| a != "--batch").nth(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let image = Tensor::from_shape_fn(vec![batch, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32);
    let last = model.len() - 1;
    let mut tape = Tape::new();
    let reps = std::env::args().skip_while(|a| a != "--reps").nth(1).and_then(|v| v.parse().ok());
    let reps: usize = reps.unwrap_or(if batch > 1 { 5 } else { 30 });
    let in_pool = std::env::args().any(|a| a == "--in-pool");
    let inference = std::env::args().any(|a| a == "--inference");
    let each = std::env::args().any(|a| a == "--each");
    let t = std::time::Instant::now();
    let mut body = || {
        for _ in 0..reps {
            let t0 = std::time::Instant::now();
            tape.reset();
            let x = if inference { tape.constant(image.clone()) } else { tape.variable(image.clone()) };
            let out = model.forward(&mut tape, x, &[last]).unwrap()[0];
            if backward {
                let l = tape.sum_all(out).unwrap();
                tape.backward(l).unwrap();
            }
            if each {
                print!("{:.2} ", t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    };
    if in_pool {
        // On a pool thread, every parallel region starts without waking the caller.
        rayon::scope(|_| body());
    } else {
        body();
    }
    println!("{:.2} ms per iteration", t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    if std::env::args().any(|a| a == "--memory") {
        // The last iteration's values are still on the tape.
        println!("{} nodes, {:.1} MB of values", tape.len(), tape.value_floats() as f64 * 4e-6);
    }
}
