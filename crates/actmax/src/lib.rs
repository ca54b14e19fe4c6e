//! # actmax
//!
//! Activation maximization: generate the input that drives a class logit or a conv filter
//! of a CNN as high as it can — keras-vis's `visualize_activation`, with its bugs fixed.
//!
//! ```no_run
//! use actmax::{visualize_activation, Options};
//! use actmax_layers::zoo;
//!
//! let model = zoo::load("efficientnet_lite0", None).unwrap();
//! // Class 20 (water ouzel) of the last layer, keras-vis's defaults.
//! let vis = visualize_activation(&model, -1, Some(vec![20]), Options::default()).unwrap();
//! actmax::images::save(&vis.image(0).unwrap(), "ouzel.png".as_ref()).unwrap();
//! ```
//!
//! The optimizer is keras-vis's: the gradient is L2-normalized over the whole input, then
//! RMSProp without a learning rate (`cache = 0.95·cache + 0.05·g²`, `x −= u · g / √(cache +
//! 1e-7)`, with `u = (high − low) / 255`: keras-vis's step was sized for 0..255, so `u = 1`
//! there). Unlike keras-vis, the image stays inside the input range during the run, the
//! best-loss image is the one that had that loss (not the next one), the image returned
//! is the one the model saw, and `negate` drives the activation down with the
//! regularizers still on (keras-vis flipped them too, and then kept its seed: see
//! [`Options::grad_modifier`]).

pub mod callbacks;
mod error;
pub mod font;
pub mod images;

use std::collections::HashMap;

use actmax_layers::{Activation, LayerRef, Model};
use actmax_losses::{ActivationMaximization, Loss, LossContext, LpNorm, TotalVariation, WeightedLosses};
use actmax_modifiers::{GradModifier, InputModifier, TransformSet};
use actmax_tensor::{BackpropMode, Tape, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use callbacks::{Callback, GifGenerator, Print, Step};
pub use error::{Error, Result};

/// How the image is updated from its gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// keras-vis: L2-normalized gradient, RMSProp without a learning rate.
    KerasRmsprop,
    /// Adam with this learning rate (in input-range units).
    Adam(f32),
}

/// Options of a run; `Default` gives keras-vis's defaults.
pub struct Options {
    /// Starting image(s) `[B, C, H, W]` in the input range; default: seeded noise.
    pub seed_input: Option<Tensor>,
    /// Pixel range; default: the model's (0..255 for the zoo's ImageNet models).
    pub input_range: Option<(f32, f32)>,
    /// Changes made before each step and undone after it (e.g. `Jitter`).
    pub input_modifiers: Vec<Box<dyn InputModifier>>,
    /// In-graph random transforms (lucid's robustness), applied each step.
    pub transforms: TransformSet,
    /// Applied to dL/dinput. In [`visualize_activation`] and [`visualize_batch`],
    /// `Negate` flips the activation term only (drive the output down, regularizers still
    /// on); with [`visualize_activation_with_losses`] it flips the whole gradient.
    pub grad_modifier: GradModifier,
    /// How ReLU-family ops pass gradients back.
    pub backprop_modifier: BackpropMode,
    /// The update rule.
    pub optimizer: Optimizer,
    /// Steps.
    pub max_iter: usize,
    /// Weight of the activation term (keras-vis `act_max_weight`).
    pub act_max_weight: f32,
    /// Weight of `LPNorm(6)` (keras-vis `lp_norm_weight`).
    pub lp_norm_weight: f32,
    /// Weight of `TotalVariation(2)` (keras-vis `tv_weight`).
    pub tv_weight: f32,
    /// Called after every step.
    pub callbacks: Vec<Box<dyn Callback>>,
    /// Print every named loss each step (adds [`Print`]).
    pub verbose: bool,
    /// Seed of every random draw: same seed, same image.
    pub seed: u64,
    /// Replace a softmax on the target layer by a linear activation (keras-vis's advice:
    /// maximizing a softmax output does not work). When false, a softmax target is an error.
    pub swap_softmax: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed_input: None,
            input_range: None,
            input_modifiers: Vec::new(),
            transforms: TransformSet::default(),
            grad_modifier: GradModifier::Identity,
            backprop_modifier: BackpropMode::Plain,
            optimizer: Optimizer::KerasRmsprop,
            max_iter: 200,
            act_max_weight: 1.0,
            lp_norm_weight: 10.0,
            tv_weight: 10.0,
            callbacks: Vec::new(),
            verbose: false,
            seed: 42,
            swap_softmax: true,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Visualization {
    /// The best images `[B, C, H, W]` (rounded to integers for byte-like ranges such as
    /// 0..255, so that what is saved is what the model saw).
    pub images: Tensor,
    /// The input range of `images`.
    pub range: (f32, f32),
    /// The total loss of the kept step: the lowest — but with
    /// [`visualize_activation_with_losses`], the highest under `negate` (whose steps ascend
    /// the loss) and the last step under the other gradient modifiers.
    pub best_loss: f32,
    /// The step that reached it.
    pub best_step: usize,
    /// Total loss per step.
    pub history: Vec<f32>,
    /// Whether a softmax on the target layer was swapped for linear.
    pub swapped_softmax: bool,
}

impl Visualization {
    /// Image `b` as an 8-bit picture.
    pub fn image(&self, b: usize) -> Result<image::DynamicImage> {
        let s = self.images.shape();
        if b >= s[0] {
            return Err(Error::Options(format!("image {b} of a batch of {}", s[0])));
        }
        let one = self.images.index_axis(ndarray::Axis(0), b).to_owned();
        images::to_image(&one, self.range)
    }
}

/// Where a layer sits and whether it ends in a softmax.
fn target_layer(model: &mut Model, layer: LayerRef, swap: bool) -> Result<(String, bool)> {
    let idx = model.find(layer)?;
    let node = &model.nodes()[idx];
    let name = node.name.clone();
    if idx == 0 {
        return Err(Error::Options("the input layer has no filters to maximize; pick a Conv or Dense layer".into()));
    }
    let softmax = node.layer.activation() == Some(Activation::Softmax);
    if softmax {
        if !swap {
            return Err(Error::Options(format!(
                "layer `{name}` ends in a softmax, and maximizing a softmax output does not work (keras-vis); swap it to linear"
            )));
        }
        model.swap_activation(idx as isize, Activation::Linear)?;
    }
    Ok((name, softmax))
}

/// keras-vis's `visualize_activation`: the image that maximizes `filter_indices` of
/// `layer` (all of its output when `None`), with `act_max_weight·ActivationMaximization +
/// lp_norm_weight·LPNorm(6) + tv_weight·TotalVariation(2)`.
pub fn visualize_activation(
    model: &Model,
    layer: impl Into<LayerRef>,
    filter_indices: Option<Vec<usize>>,
    opts: Options,
) -> Result<Visualization> {
    let mut model = model.clone();
    let (name, swapped) = target_layer(&mut model, layer.into(), opts.swap_softmax)?;
    let am = match filter_indices {
        Some(f) => ActivationMaximization::new(name, f),
        None => ActivationMaximization::whole(name),
    };
    let (losses, grad_modifier) = default_losses(am, &opts);
    let opts = Options { grad_modifier, ..opts };
    let mut vis = run(&model, &losses, opts)?;
    vis.swapped_softmax = swapped;
    Ok(vis)
}

/// One image per target in one run: sample `b` maximizes `targets[b]` of `layer`.
pub fn visualize_batch(
    model: &Model,
    layer: impl Into<LayerRef>,
    targets: Vec<Vec<usize>>,
    mut opts: Options,
) -> Result<Visualization> {
    if targets.is_empty() {
        return Err(Error::Options("a batch needs at least one target".into()));
    }
    let mut model = model.clone();
    let (name, swapped) = target_layer(&mut model, layer.into(), opts.swap_softmax)?;
    if opts.seed_input.is_none() {
        let [c, h, w] = model.input_spec().shape;
        let range = opts.input_range.unwrap_or(model.input_spec().range);
        opts.seed_input = Some(seed_noise(&[targets.len(), c, h, w], range, opts.seed));
    }
    let (losses, grad_modifier) = default_losses(ActivationMaximization::per_sample(name, targets), &opts);
    let opts = Options { grad_modifier, ..opts };
    let mut vis = run(&model, &losses, opts)?;
    vis.swapped_softmax = swapped;
    Ok(vis)
}

/// keras-vis's three terms, and the gradient modifier left to apply. `negate` here means
/// "drive the activation down": it flips the activation term only, so the regularizers
/// still smooth the image — keras-vis flipped the whole gradient, which also maximized LP
/// norm and total variation (noise).
fn default_losses(am: ActivationMaximization, opts: &Options) -> (WeightedLosses, GradModifier) {
    let (act_weight, grad) = match opts.grad_modifier {
        GradModifier::Negate => (-opts.act_max_weight, GradModifier::Identity),
        ref other => (opts.act_max_weight, other.clone()),
    };
    let losses = WeightedLosses::new()
        .with(am, act_weight)
        .with(LpNorm::keras_default(), opts.lp_norm_weight)
        .with(TotalVariation::default(), opts.tv_weight);
    (losses, grad)
}

/// keras-vis's `visualize_activation_with_losses`: minimizes any weighted sum of losses.
pub fn visualize_activation_with_losses(
    model: &Model,
    losses: &WeightedLosses,
    opts: Options,
) -> Result<Visualization> {
    run(model, losses, opts)
}

/// keras-vis's seed: uniform noise with mean at the middle of the range and a standard
/// deviation of 5 % of its width.
pub fn seed_noise(shape: &[usize], range: (f32, f32), seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mid, half) = ((range.0 + range.1) / 2.0, 0.05 * (range.1 - range.0) * 3f32.sqrt());
    Tensor::from_shape_simple_fn(shape.to_vec(), || mid + rng.random_range(-half..=half))
}

fn run(model: &Model, losses: &WeightedLosses, mut opts: Options) -> Result<Visualization> {
    let spec = model.input_spec().clone();
    let range = opts.input_range.unwrap_or(spec.range);
    if !(range.0.is_finite() && range.1.is_finite() && range.0 < range.1) {
        return Err(Error::Options(format!("input range must be finite with low < high, got {range:?}")));
    }
    if opts.max_iter == 0 {
        return Err(Error::Options("max_iter must be at least 1".into()));
    }
    let [c, h, w] = spec.shape;
    let mut x = match opts.seed_input.take() {
        Some(s) if s.ndim() == 4 && s.shape()[1..] == [c, h, w] => s,
        Some(s) if s.ndim() == 3 && s.shape() == [c, h, w] => s.insert_axis(ndarray::Axis(0)),
        Some(s) => {
            return Err(Error::Options(format!(
                "seed input {:?} does not fit the model input [N, {c}, {h}, {w}]",
                s.shape()
            )))
        }
        None => seed_noise(&[1, c, h, w], range, opts.seed),
    };
    x.mapv_inplace(|v| v.clamp(range.0, range.1));
    let (names, idx) = loss_layers(model, &losses.layers())?;
    // Fold batch norms unless a loss reads a conv that folding would change.
    let folded = model.fold_batch_norms();
    let reads_folded_conv = idx.iter().any(|&i| {
        folded.nodes().get(i + 1).is_some_and(|n| matches!(n.layer, actmax_layers::Layer::Identity) && n.inputs == [i])
    });
    let net = if reads_folded_conv { model } else { &folded };

    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    let mut tape = Tape::new();
    tape.set_backprop_mode(opts.backprop_modifier.clone());
    if opts.verbose {
        opts.callbacks.push(Box::new(Print));
    }
    let weights: Vec<f32> = losses.active().map(|(_, w)| w).collect();
    let (mut cache, mut m1, mut m2) =
        (Tensor::zeros(x.raw_dim()), Tensor::zeros(x.raw_dim()), Tensor::zeros(x.raw_dim()));
    let (mut best, mut best_step, mut best_x) = (f32::INFINITY, 0, x.clone());
    let sign = opts.grad_modifier.loss_sign();
    // keras-vis's RMSProp has no learning rate: its first steps move pixels by ~4.5, sized
    // for 0..255. Scaled to the range, a 0..1 model takes the same relative steps instead
    // of saturating every pixel at the first step.
    let step_unit = (range.1 - range.0) / 255.0;
    let mut history = Vec::with_capacity(opts.max_iter);
    for step in 0..opts.max_iter {
        for m in opts.input_modifiers.iter_mut() {
            m.pre(&mut x, &mut rng)?;
        }
        tape.reset();
        let xv = tape.variable(x.clone());
        let seen = opts.transforms.apply(&mut tape, xv, &mut rng)?;
        let acts = activations(net, &mut tape, seen, &names, &idx)?;
        let built = losses.build(&mut tape, &LossContext::new(xv, &acts))?;
        let total = scalar(&tape, built.total)?;
        let mut terms = Vec::with_capacity(built.terms.len());
        for ((name, v), w) in built.terms.iter().zip(&weights) {
            let value = tape.value(*v)?.sum();
            if !value.is_finite() {
                return Err(Error::NonFinite { step, term: name.clone(), value });
            }
            terms.push((name.clone(), value, *w));
        }
        if !total.is_finite() {
            return Err(Error::NonFinite { step, term: "total".into(), value: total });
        }
        let g = tape.backward(built.total)?.take(xv).unwrap_or_else(|| Tensor::zeros(x.raw_dim()));
        // The image that had this loss: before the update, with the modifiers undone.
        let mut seen_x = x.clone();
        for m in opts.input_modifiers.iter_mut().rev() {
            m.post(&mut seen_x)?;
        }
        let better = match sign {
            Some(sign) => sign * total < sign * best,
            None => true,
        };
        if better || step == 0 {
            (best, best_step, best_x) = (total, step, seen_x.clone());
        }
        history.push(total);
        let g = opts.grad_modifier.apply(&g)?;
        x = seen_x;
        // The gradient was taken on the modified image: map it back the same way (Jitter's
        // roll is a permutation, so its `post` moves gradients exactly like pixels).
        let mut g = g;
        for m in opts.input_modifiers.iter_mut().rev() {
            m.post(&mut g)?;
        }
        match opts.optimizer {
            Optimizer::KerasRmsprop => {
                let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                ndarray::Zip::from(&mut x).and(&g).and(&mut cache).for_each(|x, &g, c| {
                    let g = g / norm;
                    *c = 0.95 * *c + 0.05 * g * g;
                    *x -= step_unit * g / (*c + 1e-7).sqrt();
                });
            }
            Optimizer::Adam(lr) => {
                let t = (step + 1) as i32;
                let (b1, b2) = (0.9f32, 0.999f32);
                let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
                ndarray::Zip::from(&mut x).and(&g).and(&mut m1).and(&mut m2).for_each(|x, &g, m, v| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *x -= lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
                });
            }
        }
        x.mapv_inplace(|v| v.clamp(range.0, range.1));
        for cb in opts.callbacks.iter_mut() {
            cb.on_step(&Step { step, terms: &terms, total, images: &x })?;
        }
    }
    for cb in opts.callbacks.iter_mut() {
        cb.on_end()?;
    }
    // Byte-like ranges (integer ends, at least 16 levels, e.g. 0..255) hold integer
    // pixels; (0, 1) or (-1, 1) are continuous.
    let integer = range.0.fract() == 0.0 && range.1.fract() == 0.0 && range.1 - range.0 >= 15.0;
    if integer {
        best_x.mapv_inplace(f32::round);
    }
    Ok(Visualization { images: best_x, range, best_loss: best, best_step, history, swapped_softmax: false })
}

/// The model layers losses read (all but `"input"`): names and indexes.
fn loss_layers(model: &Model, layers: &[String]) -> Result<(Vec<String>, Vec<usize>)> {
    let names: Vec<String> = layers.iter().filter(|l| *l != "input").cloned().collect();
    let idx = names.iter().map(|n| model.find(n.as_str())).collect::<Result<_, _>>()?;
    Ok((names, idx))
}

/// Runs `model` on `x` up to the deepest of `idx` and names the activations for the losses.
fn activations(
    model: &Model,
    tape: &mut Tape,
    x: actmax_tensor::Var,
    names: &[String],
    idx: &[usize],
) -> Result<HashMap<String, actmax_tensor::Var>> {
    let outs = model.forward(tape, x, idx)?;
    Ok(names.iter().cloned().zip(outs).collect())
}

fn scalar(tape: &Tape, v: actmax_tensor::Var) -> Result<f32> {
    Ok(tape.value(v)?.iter().next().copied().unwrap_or(f32::NAN))
}

/// The loss a [`Loss`] would report on an image, without optimizing (for checks).
pub fn evaluate(model: &Model, loss: &dyn Loss, image: &Tensor) -> Result<f32> {
    let (names, idx) = loss_layers(model, &loss.layers())?;
    let mut tape = Tape::new();
    let x = tape.constant(image.clone());
    let acts = activations(model, &mut tape, x, &names, &idx)?;
    let v = loss.build(&mut tape, &LossContext::new(x, &acts))?;
    Ok(tape.value(v)?.sum())
}
