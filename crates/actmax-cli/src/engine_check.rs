//! The engine check (the main job until the facade lands):
//! gradient ascent on the input of a small seeded CNN, driving one conv filter's mean
//! activation up with keras-vis's optimizer (L2-normalised gradient, RMSProp without a
//! learning rate), and a report of how far it went.

use std::time::Instant;

use actmax_tensor::{Conv2dParams, Padding2d, Result, Tape, Tensor, Var};

/// Seeded values in [-0.5, 0.5).
fn noise(seed: u64, shape: &[usize]) -> Tensor {
    let mut s = seed;
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Tensor::from_shape_vec(shape.to_vec(), v).expect("sized")
}

struct Net {
    w1: Var,
    w2: Var,
    w3: Var,
}

impl Net {
    fn new(tape: &mut Tape) -> Self {
        // Uniform He-style scale: ±√(6 / fan_in).
        let he = |seed, shape: &[usize]| {
            noise(seed, shape) * (2.0 * (6.0 / shape[1..].iter().product::<usize>() as f32).sqrt())
        };
        Net {
            w1: tape.constant(he(1, &[16, 3, 3, 3])),
            w2: tape.constant(he(2, &[32, 16, 3, 3])),
            w3: tape.constant(he(3, &[32, 1, 3, 3])),
        }
    }

    /// conv 3→16, ReLU, conv 16→32 stride 2, ReLU6, depthwise 3×3: channel `filter`'s mean.
    fn filter_mean(&self, tape: &mut Tape, x: Var, filter: usize) -> Result<Var> {
        let same = Conv2dParams::new().padding(Padding2d::uniform(1));
        let h = tape.conv2d(x, self.w1, None, same)?;
        let h = tape.relu(h)?;
        let h = tape.conv2d(h, self.w2, None, same.stride(2))?;
        let h = tape.relu6(h)?;
        let h = tape.conv2d(h, self.w3, None, same.groups(32))?;
        let ch = tape.slice(h, &[(0, 1), (filter, filter + 1)])?;
        tape.mean_all(ch)
    }
}

/// The engine check: filter visualization on a small seeded CNN.
pub fn run() -> Result<()> {
    let (steps, size) = (100, 96);
    // A filter whose depthwise taps sum positive: it can be driven up, not just to zero.
    let w3 = noise(3, &[32, 9]).into_dimensionality::<ndarray::Ix2>().expect("2-D");
    let filter = (0..32).max_by(|&a, &b| w3.row(a).sum().total_cmp(&w3.row(b).sum())).unwrap_or(0);
    // keras-vis's seed: noise around the middle of the range, 5 % of its width.
    let mut x = noise(42, &[1, 3, size, size]) * 0.2;
    let mut cache = Tensor::zeros(x.raw_dim());
    let mut tape = Tape::new();
    let mut first = None;
    let start = Instant::now();
    for step in 0..=steps {
        tape.reset();
        let net = Net::new(&mut tape);
        let xv = tape.variable(x.clone());
        let act = net.filter_mean(&mut tape, xv, filter)?;
        let value = tape.value(act)?.iter().next().copied().unwrap_or(0.0);
        first.get_or_insert(value);
        if step % 25 == 0 {
            println!("step {step:>3}: mean activation of filter {filter} = {value:.4}");
        }
        if step == steps {
            let gain = value / first.unwrap_or(1.0).max(1e-6);
            let ms = start.elapsed().as_secs_f64() * 1e3 / (steps + 1) as f64;
            println!(
                "filter {filter}: {:.4} -> {value:.4} ({gain:.1}x) in {steps} steps, {ms:.2} ms per step",
                first.unwrap_or(0.0)
            );
            break;
        }
        let loss = tape.neg(act)?;
        let g = tape.backward(loss)?.take(xv).expect("the input requires a gradient");
        // keras-vis: gradient L2-normalised over the whole input, then RMSProp without a
        // learning rate; the image stays inside its range [-1, 1].
        let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt() + 1e-7;
        let g = g / norm;
        cache.zip_mut_with(&g, |c, &g| *c = 0.95 * *c + 0.05 * g * g);
        rmsprop_step(&mut x, &g, &cache);
    }
    Ok(())
}

/// keras-vis takes unit steps on a 0..255 image; the same relative step on [-1, 1].
const STEP: f32 = 2.0 / 255.0;

/// `x −= STEP · g / √(cache + 1e-7)`, then clip to [-1, 1].
fn rmsprop_step(x: &mut Tensor, g: &Tensor, cache: &Tensor) {
    for ((xv, &gv), &cv) in x.iter_mut().zip(g.iter()).zip(cache.iter()) {
        *xv = (*xv - STEP * gv / (cv + 1e-7).sqrt()).clamp(-1.0, 1.0);
    }
}
