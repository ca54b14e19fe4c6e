//! VGG16 to block5_conv3 (He-uniform weights), one step (forward + backward to the input)
//! in a loop on the pool, for a profiler; the first step (which packs the weights) is
//! not timed.
use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};

fn main() {
    let mut m = zoo::vgg16_features(224).unwrap();
    zoo::init_he_uniform(&mut m, 1);
    let layer = m.find("block5_conv3").unwrap();
    let image = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32);
    let reps = 8;
    rayon::scope(|_| {
        let mut tape = Tape::new();
        let mut t = std::time::Instant::now();
        for rep in 0..=reps {
            if rep == 1 {
                t = std::time::Instant::now();
            }
            tape.reset();
            let x = tape.variable(image.clone());
            let out = m.forward(&mut tape, x, &[layer]).unwrap()[0];
            let ch = tape.slice(out, &[(0, 1), (1, 2), (0, 14), (0, 14)]).unwrap();
            let l = tape.mean_all(ch).unwrap();
            tape.backward(l).unwrap();
        }
        println!("{:.1} ms per step", t.elapsed().as_secs_f64() * 1e3 / reps as f64);
    });
}
