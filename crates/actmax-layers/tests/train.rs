//! Training with the tape: parameter gradients against finite differences, dropout's
//! masks, and Adam driving a loss down.

use actmax_layers::{zoo, Adam, Model, TrainingPass};
use actmax_tensor::{Tape, Tensor};

fn counter() -> Model {
    let mut m = zoo::apple_counter();
    zoo::init_he_uniform(&mut m, 3);
    m
}

fn noise(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed | 1;
    Tensor::from_shape_fn(shape.to_vec(), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    })
}

/// Sum of squares of the model's output, and the gradient of every parameter.
fn loss_and_grads(m: &Model, x: &Tensor) -> (f64, std::collections::BTreeMap<String, Tensor>) {
    let mut tape = Tape::new();
    let mut pass = TrainingPass::new(0);
    let xv = tape.constant(x.clone());
    let y = m.forward_training(&mut tape, xv, &[m.len() - 1], &mut pass).unwrap()[0];
    let sq = tape.mul(y, y).unwrap();
    let l = tape.sum_all(sq).unwrap();
    let value = tape.value(l).unwrap().sum() as f64;
    let grads = pass.gradients(&tape.backward(l).unwrap());
    (value, grads)
}

#[test]
fn parameter_gradients_match_finite_differences() {
    let m = counter();
    let x = noise(&[2, 1, 48, 48], 5);
    let (_, grads) = loss_and_grads(&m, &x);
    let names: Vec<&String> = grads.keys().collect();
    assert_eq!(names.len(), 8, "weight and bias of 3 convs and the dense layer: {names:?}");
    for name in ["conv1.weight", "conv2.bias", "conv3.weight", "count.weight", "count.bias"] {
        let g = &grads[name];
        for flat in [0usize, g.len() / 3, g.len() - 1] {
            let bump = |delta: f32| {
                let mut m2 = m.clone();
                m2.for_each_parameter_mut(|n, t| {
                    if n == name {
                        let t = std::sync::Arc::make_mut(t);
                        let v = t.as_slice_mut().unwrap();
                        v[flat] += delta;
                    }
                });
                loss_and_grads(&m2, &x).0
            };
            // Small steps: a bias moves a whole channel, so larger ones cross ReLU kinks.
            let h = 2e-3;
            let fd = (bump(h) - bump(-h)) / (2.0 * h as f64);
            let an = g.as_slice().unwrap()[flat] as f64;
            assert!((fd - an).abs() <= 3e-2 * fd.abs().max(an.abs()) + 3e-4, "{name}[{flat}]: fd {fd} vs {an}");
        }
    }
}

#[test]
fn dropout_is_live_in_training_and_identity_in_inference() {
    let mut m = zoo::mnist_cnn();
    zoo::init_he_uniform(&mut m, 4);
    let x = noise(&[1, 1, 28, 28], 9);
    let dropout = m.find("dropout_2").unwrap();
    let dense = m.find("dense_1").unwrap();
    let mut tape = Tape::new();
    let xv = tape.constant(x.clone());
    let mut pass = TrainingPass::new(1);
    let outs = m.forward_training(&mut tape, xv, &[dense, dropout], &mut pass).unwrap();
    let (before, after) = (tape.value(outs[0]).unwrap().clone(), tape.value(outs[1]).unwrap().clone());
    let mut zeroed = 0;
    for (&b, &a) in before.iter().zip(after.iter()) {
        if a == 0.0 && b != 0.0 {
            zeroed += 1;
        } else {
            assert!((a - 2.0 * b).abs() <= 1e-5 * b.abs().max(1.0), "kept values are scaled by 1/(1 − 0.5)");
        }
    }
    let alive = before.iter().filter(|&&b| b != 0.0).count();
    assert!(zeroed > alive / 4 && zeroed < alive * 3 / 4, "rate 0.5 drops about half: {zeroed} of {alive}");
    let infer = m.forward(&mut tape, xv, &[dense, dropout]).unwrap();
    assert_eq!(tape.value(infer[0]).unwrap(), tape.value(infer[1]).unwrap(), "inference: dropout is the identity");
}

#[test]
fn adam_fits_a_regression_target() {
    let mut m = counter();
    // Brighter canvases count more: learnable through the global average pool.
    let mut x = noise(&[4, 1, 48, 48], 21);
    for (b, mut img) in x.outer_iter_mut().enumerate() {
        img.mapv_inplace(|v| v * (b + 1) as f32 / 4.0);
    }
    let target = Tensor::from_shape_vec(vec![4, 1], vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    let mut adam = Adam::new(1e-2);
    let mut tape = Tape::new();
    let mut losses = Vec::new();
    for step in 0..60 {
        tape.reset();
        let mut pass = TrainingPass::new(step);
        let xv = tape.constant(x.clone());
        let y = m.forward_training(&mut tape, xv, &[m.len() - 1], &mut pass).unwrap()[0];
        let t = tape.constant(target.clone());
        let d = tape.sub(y, t).unwrap();
        let sq = tape.mul(d, d).unwrap();
        let l = tape.mean_all(sq).unwrap();
        losses.push(tape.value(l).unwrap().sum());
        let grads = pass.gradients(&tape.backward(l).unwrap());
        tape.reset();
        adam.step(&mut m, &grads);
    }
    assert!(losses[59] < 0.05 * losses[0], "loss {} → {}", losses[0], losses[59]);
}
