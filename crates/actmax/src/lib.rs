#![doc = include_str!("../README.md")]

mod accent;
pub mod callbacks;
mod error;
pub mod font;
pub mod images;
mod optim;
mod param;
mod run;
mod split;

use actmax_layers::{Activation, LayerRef, Model};
use actmax_losses::{lucid, ActivationMaximization, LpNorm, TotalVariation, WeightedLosses};
use actmax_modifiers::{GradModifier, InputModifier, RandomCrops, TransformSet};
use actmax_tensor::{BackpropMode, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The layer zoo, the model graph and the loaders (`actmax-layers`): one dependency
/// gives a user the whole stack.
pub use actmax_layers as layers;
/// Losses and regularizers (`actmax-losses`).
pub use actmax_losses as losses;
/// Input, gradient and backprop modifiers (`actmax-modifiers`).
pub use actmax_modifiers as modifiers;
/// The tensor core and its kernels (`actmax-tensor`).
pub use actmax_tensor as tensor;

pub use accent::{feature_distance, feature_map_at_depth, Accentuation, AUTO_BALANCE, DEFAULT_DEPTH};
pub use callbacks::{Callback, GifGenerator, Print, Step};
pub use error::{Error, Result};
pub use optim::Optimizer;
pub use param::{MagnitudeTemplate, Parameterization, PreparedImage};
pub use run::evaluate;

/// Which image a run returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The image of the step with the best loss (keras-vis; deterministic losses).
    BestLoss,
    /// The image after the last update (lucid, MaCo: their losses are measured on random
    /// views, so the best one is partly luck).
    Last,
}

/// The named recipes ([`Options::preset`]).
pub const PRESETS: &[&str] = &["keras-vis", "lucid", "maco", "actmax"];

/// Options of a run; `Default` gives keras-vis's defaults.
pub struct Options {
    /// Starting image(s) `[B, C, H, W]` in the input range; default: seeded noise. With a
    /// Fourier or MaCo parameterization the parameters are initialized from it.
    pub seed_input: Option<Tensor>,
    /// Pixel range; default: the model's (0..255 for the zoo's ImageNet models).
    pub input_range: Option<(f32, f32)>,
    /// How the optimized parameters become the image (keras-vis: the pixels).
    pub param: Parameterization,
    /// Size `[H, W]` of the generated image; default: the model's input. A larger image is
    /// what the crops (or one resize) feed the model from; the whole image is returned.
    pub image_size: Option<[usize; 2]>,
    /// Images per target in [`visualize_activation`] (with `diversity`: several different
    /// images of one class); default 1, or the seed input's batch.
    pub batch: Option<usize>,
    /// Changes made before each step and undone after it (e.g. `Jitter`); pixel images only.
    pub input_modifiers: Vec<Box<dyn InputModifier>>,
    /// In-graph random transforms (lucid's robustness), applied each step.
    pub transforms: TransformSet,
    /// MaCo's random crops: several views of each image per step, one batch.
    pub crops: Option<RandomCrops>,
    /// Applied to the gradient of the parameters. In [`visualize_activation`] and
    /// [`visualize_batch`], `Negate` flips the activation term only (drive the output
    /// down, regularizers still on); with [`visualize_activation_with_losses`] it flips
    /// the whole gradient.
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
    /// Weight of lucid's `diversity` across the images of a batch (0: off).
    pub diversity_weight: f32,
    /// The layer `diversity` compares Gram matrices of; default: the target layer when it
    /// is a feature map, else the deepest feature map before it.
    pub diversity_layer: Option<String>,
    /// Which image is returned.
    pub keep: Keep,
    /// Called after every step.
    pub callbacks: Vec<Box<dyn Callback>>,
    /// Print every named loss each step (adds [`Print`]).
    pub verbose: bool,
    /// Seed of every random draw: same seed, same image.
    pub seed: u64,
    /// One seed per image instead of `seed`'s one stream for the batch: image `b`'s start,
    /// transforms, crops and noise then come from `image_seeds[b]` alone, so the image does
    /// not depend on the batch it is in (with a run that keeps images apart:
    /// [`Options::images_independent`]). Its length must be the batch size.
    pub image_seeds: Option<Vec<u64>>,
    /// Replace a softmax on the target layer by a linear activation (keras-vis's advice:
    /// maximizing a softmax output does not work). When false, a softmax target is an error.
    pub swap_softmax: bool,
    /// Feature accentuation: keep the image close to `seed_input` in the activations of a
    /// layer while the objective moves it ([`Accentuation`]). Needs a seed input.
    pub accent: Option<Accentuation>,
    /// Bytes of per-image model graphs a step may keep from its forward to its backward,
    /// all threads together (320 MiB by default). A graph holds what reverse mode reads:
    /// with frozen weights and the built-in backprop modes little more than a bit or two
    /// per activation (EfficientNet-Lite0 at 224: ≈ 2 MB an image; a custom hook is handed
    /// the activations' inputs and outputs, which stay: tens of MB). An image whose graph
    /// does not fit runs its forward again right before its backward: the same bits, one
    /// more forward. 0 keeps none: the least memory, one graph per thread.
    pub graph_memory: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed_input: None,
            input_range: None,
            param: Parameterization::Pixel,
            image_size: None,
            batch: None,
            input_modifiers: Vec::new(),
            transforms: TransformSet::default(),
            crops: None,
            grad_modifier: GradModifier::Identity,
            backprop_modifier: BackpropMode::Plain,
            optimizer: Optimizer::KerasRmsprop,
            max_iter: 200,
            act_max_weight: 1.0,
            lp_norm_weight: 10.0,
            tv_weight: 10.0,
            diversity_weight: 0.0,
            diversity_layer: None,
            keep: Keep::BestLoss,
            callbacks: Vec::new(),
            verbose: false,
            seed: 42,
            image_seeds: None,
            swap_softmax: true,
            accent: None,
            graph_memory: 320 << 20,
        }
    }
}

impl Options {
    /// keras-vis's `visualize_activation`, exactly: the same as `Options::default()`.
    pub fn keras_vis() -> Self {
        Self::default()
    }

    /// lucid's recipe: the decorrelated Fourier parameterization, lucid's standard
    /// transforms (jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4), Adam 0.05, 512 steps,
    /// lucid's redirected ReLU gradients, no pixel regularizers, the last image.
    pub fn lucid() -> Self {
        Self {
            param: Parameterization::fourier(),
            backprop_modifier: BackpropMode::Redirected,
            transforms: TransformSet::lucid_standard(),
            optimizer: Optimizer::Adam(0.05),
            max_iter: 512,
            lp_norm_weight: 0.0,
            tv_weight: 0.0,
            keep: Keep::Last,
            ..Self::default()
        }
    }

    /// MaCo's recipe: the phase-only parameterization with the natural-image magnitude,
    /// random crops with noise (4 per step; MaCo takes 6 over 1000 steps, a budget this
    /// CPU-first preset cuts to 100 steps at Adam 0.5), no pixel regularizers, the last
    /// image.
    pub fn maco() -> Self {
        Self {
            param: Parameterization::maco(),
            backprop_modifier: BackpropMode::Redirected,
            crops: Some(RandomCrops { count: 4, ..RandomCrops::maco() }),
            optimizer: Optimizer::Adam(0.5),
            max_iter: 100,
            lp_norm_weight: 0.0,
            tv_weight: 0.0,
            keep: Keep::Last,
            ..Self::default()
        }
    }

    /// actmax's own recipe, the one that measured best per second on a held-out model
    /// (`cargo xtask quality`, README): lucid's decorrelated Fourier image and transforms,
    /// MaCo's random crops (2 per step, so each feature must hold when zoomed), Adam 0.08
    /// (lucid's 0.05 leaves so few steps short of contrast), 90 steps — less time than
    /// keras-vis's 200.
    pub fn actmax() -> Self {
        Self {
            crops: Some(RandomCrops { count: 2, ..RandomCrops::maco() }),
            optimizer: Optimizer::Adam(0.08),
            max_iter: 90,
            ..Self::lucid()
        }
    }

    /// Whether each image of a batch is optimized on its own, so that with
    /// [`Options::image_seeds`] an image comes out the same in any batch: no term mixes the
    /// images (keras-vis's LP norm is one norm over the batch; diversity compares the
    /// images), no input modifier moves the batch as one, and the kept image is the last
    /// (the best loss is the batch's total). The optimizers update each image on its own.
    pub fn images_independent(&self) -> bool {
        self.lp_norm_weight == 0.0
            && self.diversity_weight == 0.0
            && self.input_modifiers.is_empty()
            && self.keep == Keep::Last
            && !matches!(self.grad_modifier, GradModifier::Custom(_))
    }

    /// The same recipe for another run: every setting, without what holds one run's state
    /// (callbacks, input modifiers, which would carry over their counters and shifts).
    pub fn recipe(&self) -> Self {
        Self {
            seed_input: self.seed_input.clone(),
            input_range: self.input_range,
            param: self.param.clone(),
            image_size: self.image_size,
            batch: self.batch,
            input_modifiers: Vec::new(),
            transforms: self.transforms.clone(),
            crops: self.crops.clone(),
            grad_modifier: self.grad_modifier.clone(),
            backprop_modifier: self.backprop_modifier.clone(),
            optimizer: self.optimizer,
            max_iter: self.max_iter,
            act_max_weight: self.act_max_weight,
            lp_norm_weight: self.lp_norm_weight,
            tv_weight: self.tv_weight,
            diversity_weight: self.diversity_weight,
            diversity_layer: self.diversity_layer.clone(),
            keep: self.keep,
            callbacks: Vec::new(),
            verbose: self.verbose,
            seed: self.seed,
            image_seeds: self.image_seeds.clone(),
            swap_softmax: self.swap_softmax,
            accent: self.accent.clone(),
            graph_memory: self.graph_memory,
        }
    }

    /// The settings that shape an image, as `(name, value)` pairs for manifests and logs
    /// (no seeds: a caller records those itself).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let param = match &self.param {
            Parameterization::Pixel => "pixel".to_string(),
            Parameterization::Fourier { decay, init_sd } => format!("fourier(decay={decay}, init_sd={init_sd})"),
            Parameterization::Maco { template, seed_magnitude } => match seed_magnitude {
                true => format!("maco({})", template.source),
                false => format!("maco({}, template magnitude from a seed)", template.source),
            },
        };
        let optimizer = match self.optimizer {
            Optimizer::KerasRmsprop => "keras-rmsprop".to_string(),
            Optimizer::Adam(lr) => format!("adam(lr={lr})"),
        };
        vec![
            ("param", param),
            ("transforms", format!("{:?}", self.transforms.0)),
            ("crops", format!("{:?}", self.crops)),
            ("optimizer", optimizer),
            ("steps", self.max_iter.to_string()),
            ("act_max_weight", self.act_max_weight.to_string()),
            ("lp_norm_weight", self.lp_norm_weight.to_string()),
            ("tv_weight", self.tv_weight.to_string()),
            ("diversity_weight", self.diversity_weight.to_string()),
            ("grad_modifier", self.grad_modifier.name().to_string()),
            ("backprop_modifier", format!("{:?}", self.backprop_modifier)),
            ("keep", format!("{:?}", self.keep)),
            ("image_size", format!("{:?}", self.image_size)),
            ("input_range", format!("{:?}", self.input_range)),
            ("seed_input", if self.seed_input.is_some() { "given" } else { "none" }.to_string()),
            ("accent", format!("{:?}", self.accent)),
        ]
    }

    /// A recipe by name: one of [`PRESETS`].
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "keras-vis" | "keras_vis" => Ok(Self::keras_vis()),
            "lucid" => Ok(Self::lucid()),
            "maco" => Ok(Self::maco()),
            "actmax" => Ok(Self::actmax()),
            other => Err(Error::Options(format!("unknown preset `{other}`; valid: {}", PRESETS.join(", ")))),
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
    /// Each image's own loss per step (`image_history[b][step]`) when every term is per
    /// sample (or the batch is one image); empty when a term spans the batch.
    pub image_history: Vec<Vec<f32>>,
    /// Whether a softmax on the target layer was swapped for linear.
    pub swapped_softmax: bool,
    /// Fourier and MaCo runs: per image `[B, H, W]`, where the objective drew the image —
    /// `Σ_steps Σ_channels |∂losses/∂image|` (without the accentuation distance), divided
    /// by its 99th percentile and clipped to 0..1 (Horama's and Xplique's transparency).
    pub transparency: Option<Tensor>,
    /// The accentuation distance's weight the run used (balanced, or as given).
    pub accent_weight: Option<f32>,
}

impl Visualization {
    /// Image `b` as an 8-bit picture.
    pub fn image(&self, b: usize) -> Result<image::DynamicImage> {
        images::batch_image(&self.images, b, self.range)
    }

    /// Image `b`'s transparency map as an 8-bit grey picture (white: where the objective
    /// drew); `None` for a pixel run.
    pub fn transparency_map(&self, b: usize) -> Result<Option<image::GrayImage>> {
        let Some(t) = &self.transparency else { return Ok(None) };
        let s = t.shape();
        if b >= s[0] {
            return Err(Error::Options(format!("map {b} of a batch of {}", s[0])));
        }
        let (h, w) = (s[1] as u32, s[2] as u32);
        Ok(Some(image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([(t[[b, y as usize, x as usize]] * 255.0).round() as u8])
        })))
    }

    /// Image `b` with its transparency map as alpha (faccent's and Horama's display);
    /// the opaque image for a pixel run.
    pub fn image_with_alpha(&self, b: usize) -> Result<image::DynamicImage> {
        let img = self.image(b)?;
        let Some(map) = self.transparency_map(b)? else { return Ok(img) };
        let mut rgba = img.to_rgba8();
        for (p, a) in rgba.pixels_mut().zip(map.pixels()) {
            p.0[3] = a.0[0];
        }
        Ok(image::DynamicImage::ImageRgba8(rgba))
    }
}

/// Where a layer sits and whether it ends in a softmax.
fn target_layer(model: &mut Model, layer: LayerRef, swap: bool) -> Result<(usize, String, bool)> {
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
    Ok((idx, name, softmax))
}

/// keras-vis's `visualize_activation`: the image that maximizes `filter_indices` of
/// `layer` (all of its output when `None`), with `act_max_weight·ActivationMaximization +
/// lp_norm_weight·LPNorm(6) + tv_weight·TotalVariation(2)` (+ `diversity_weight·diversity`).
pub fn visualize_activation(
    model: &Model,
    layer: impl Into<LayerRef>,
    filter_indices: Option<Vec<usize>>,
    opts: Options,
) -> Result<Visualization> {
    let mut model = model.clone();
    let (idx, name, swapped) = target_layer(&mut model, layer.into(), opts.swap_softmax)?;
    let am = match filter_indices {
        Some(f) => ActivationMaximization::new(name, f),
        None => ActivationMaximization::whole(name),
    };
    let batch = opts.batch.or(opts.seed_input.as_ref().map(|s| if s.ndim() == 4 { s.shape()[0] } else { 1 }));
    let (losses, grad_modifier) = default_losses(am, &model, idx, &opts)?;
    let opts = Options { grad_modifier, ..opts };
    let mut vis = run::run(&model, &losses, batch.unwrap_or(1), opts)?;
    vis.swapped_softmax = swapped;
    Ok(vis)
}

/// One image per target in one run: sample `b` maximizes `targets[b]` of `layer`.
pub fn visualize_batch(
    model: &Model,
    layer: impl Into<LayerRef>,
    targets: Vec<Vec<usize>>,
    opts: Options,
) -> Result<Visualization> {
    if targets.is_empty() {
        return Err(Error::Options("a batch needs at least one target".into()));
    }
    let mut model = model.clone();
    let (idx, name, swapped) = target_layer(&mut model, layer.into(), opts.swap_softmax)?;
    let b = targets.len();
    let (losses, grad_modifier) =
        default_losses(ActivationMaximization::per_sample(name, targets), &model, idx, &opts)?;
    let opts = Options { grad_modifier, ..opts };
    let mut vis = run::run(&model, &losses, b, opts)?;
    vis.swapped_softmax = swapped;
    Ok(vis)
}

/// keras-vis's three terms (and lucid's diversity), and the gradient modifier left to
/// apply. `negate` here means "drive the activation down": it flips the activation term
/// only, so the regularizers still smooth the image — keras-vis flipped the whole gradient,
/// which also maximized LP norm and total variation (noise).
fn default_losses(
    am: ActivationMaximization,
    model: &Model,
    target: usize,
    opts: &Options,
) -> Result<(WeightedLosses, GradModifier)> {
    let (act_weight, grad) = match opts.grad_modifier {
        GradModifier::Negate => (-opts.act_max_weight, GradModifier::Identity),
        ref other => (opts.act_max_weight, other.clone()),
    };
    let mut losses = WeightedLosses::new()
        .with(am, act_weight)
        .with(LpNorm::keras_default(), opts.lp_norm_weight)
        .with(TotalVariation::default(), opts.tv_weight);
    if opts.diversity_weight != 0.0 {
        let layer = match &opts.diversity_layer {
            Some(l) => model.nodes()[model.find(l.as_str())?].name.clone(),
            None => feature_map_at_or_before(model, target)?,
        };
        losses = losses.with(lucid::diversity(&layer), opts.diversity_weight);
    }
    Ok((losses, grad))
}

/// The target layer when it is a feature map `[N, C, H, W]`, else the deepest one before it.
fn feature_map_at_or_before(model: &Model, target: usize) -> Result<String> {
    model.nodes()[1..=target]
        .iter()
        .rev()
        .find(|n| n.output_shape.len() == 4)
        .map(|n| n.name.clone())
        .ok_or_else(|| Error::Options("diversity needs a feature-map layer at or before the target".into()))
}

/// keras-vis's `visualize_activation_with_losses`: minimizes any weighted sum of losses
/// over a batch of one image, or of the seed input's images.
pub fn visualize_activation_with_losses(
    model: &Model,
    losses: &WeightedLosses,
    opts: Options,
) -> Result<Visualization> {
    let batch = opts.batch.or(opts.seed_input.as_ref().map(|s| if s.ndim() == 4 { s.shape()[0] } else { 1 }));
    run::run(model, losses, batch.unwrap_or(1), opts)
}

/// keras-vis's seed: uniform noise with mean at the middle of the range and a standard
/// deviation of 5 % of its width.
pub fn seed_noise(shape: &[usize], range: (f32, f32), seed: u64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mid, half) = ((range.0 + range.1) / 2.0, 0.05 * (range.1 - range.0) * 3f32.sqrt());
    Tensor::from_shape_simple_fn(shape.to_vec(), || mid + rng.random_range(-half..=half))
}
