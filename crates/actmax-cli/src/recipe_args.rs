//! The flags that make a recipe (`Options`): a preset and the single knobs over it, shared
//! by `visualize` and `atlas`.

use actmax::Options;
use actmax_modifiers::{backprop_mode, GradModifier};

use crate::model_args::parse_range;

/// A preset and the knobs over it.
#[derive(clap::Args)]
pub struct RecipeArgs {
    /// The recipe: keras-vis (pixels, keras-vis's losses and optimizer), lucid (Fourier
    /// image, lucid's transforms, Adam, 512 steps), maco (phase-only image with a natural
    /// magnitude, random crops, Adam), actmax (lucid's image and transforms with MaCo's
    /// crops, 100 steps: the best measured per second). The flags below override it.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub preset: String,
    /// Image parameterization: pixel, fourier or maco.
    #[arg(long)]
    pub param: Option<String>,
    /// Robustness transforms each step: none or lucid (jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4).
    #[arg(long)]
    pub transforms: Option<String>,
    /// Random crops per step (MaCo); 0 is refused, use --no-crops to turn them off.
    #[arg(long)]
    pub crops: Option<usize>,
    /// Turn the preset's crops off.
    #[arg(long)]
    pub no_crops: bool,
    /// Crop side as fractions LOW,HIGH of the image side.
    #[arg(long)]
    pub crop_size: Option<String>,
    /// Noise added to each crop, as a fraction of the input range.
    #[arg(long)]
    pub crop_noise: Option<f32>,
    /// Adam's learning rate (switches the keras-vis preset to Adam).
    #[arg(long, allow_hyphen_values = true)]
    pub lr: Option<f32>,
    /// Side of the generated image (default: the model's input); crops or a resize feed the model.
    #[arg(long)]
    pub size: Option<usize>,
    /// Weight of lucid's diversity across --images images of one target.
    #[arg(long, allow_hyphen_values = true)]
    pub diversity: Option<f32>,
    /// Images per target (with --diversity: different images of one class); -o out.png
    /// writes out_0.png, out_1.png, ...
    #[arg(long)]
    pub images: Option<usize>,
    /// Weight of the activation term.
    #[arg(long, allow_hyphen_values = true)]
    pub act_max_weight: Option<f32>,
    /// Weight of LPNorm(6) (keras-vis preset: 10).
    #[arg(long, allow_hyphen_values = true)]
    pub lp_norm_weight: Option<f32>,
    /// Weight of TotalVariation(2) (keras-vis preset: 10).
    #[arg(long, allow_hyphen_values = true)]
    pub tv_weight: Option<f32>,
    /// Optimization steps (the preset's by default); --steps is the same.
    #[arg(long, alias = "steps")]
    pub max_iter: Option<usize>,
    /// identity, negate, absolute, invert, relu, small_values.
    #[arg(long, default_value = "identity")]
    pub grad_modifier: String,
    /// none, guided, rectified (deconv, relu), redirected (default: the preset's —
    /// redirected for lucid, maco and actmax, none for keras-vis).
    #[arg(long)]
    pub backprop_modifier: Option<String>,
    /// Random seed: same seed, same image.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print every named loss each step.
    #[arg(long)]
    pub verbose: bool,
    /// MB of per-image model graphs a step keeps from forward to backward (default 320;
    /// EfficientNet-Lite0 takes about 2 an image). Images past
    /// it run their forward twice: the same image, slower; 0 keeps none, for the least
    /// memory.
    #[arg(long, value_name = "MB")]
    pub graph_memory: Option<usize>,
}

/// The preset the CLI and the main job use when none is named: the one that measured best
/// on a held-out model (`cargo xtask quality`, README).
pub const DEFAULT_PRESET: &str = "actmax";

/// The preset with the single flags applied over it; checked before any model is loaded.
pub fn options(a: &RecipeArgs) -> crate::error::Result<Options> {
    let mut o = Options::preset(&a.preset)?;
    let finite = |flag: &str, v: f32| -> crate::error::Result<f32> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{flag} must be a finite number, got {v}").into())
        }
    };
    if let Some(p) = &a.param {
        o.param = actmax::Parameterization::from_name(p)?;
    }
    if let Some(t) = &a.transforms {
        o.transforms = match t.as_str() {
            "none" => actmax_modifiers::TransformSet::default(),
            "lucid" => actmax_modifiers::TransformSet::lucid_standard(),
            other => return Err(format!("unknown --transforms `{other}`; valid: none, lucid").into()),
        };
    }
    if a.no_crops {
        o.crops = None;
    }
    if a.crops.is_some() || a.crop_size.is_some() || a.crop_noise.is_some() {
        let mut c = o.crops.take().unwrap_or_else(actmax_modifiers::RandomCrops::maco);
        if let Some(n) = a.crops {
            c.count = n;
        }
        if let Some(r) = &a.crop_size {
            c.size = parse_range("--crop-size", r)?;
        }
        if let Some(n) = a.crop_noise {
            c.noise = finite("--crop-noise", n)?;
        }
        c.validate().map_err(|e| format!("--crops: {e}"))?;
        o.crops = Some(c);
    }
    if let Some(lr) = a.lr {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("--lr must be a finite number > 0, got {lr}").into());
        }
        o.optimizer = actmax::Optimizer::Adam(lr);
    }
    if let Some(s) = a.size {
        if s == 0 {
            return Err("--size must be at least 1".into());
        }
        o.image_size = Some([s, s]);
    }
    if let Some(d) = a.diversity {
        o.diversity_weight = finite("--diversity", d)?;
    }
    if let Some(n) = a.images {
        if n == 0 {
            return Err("--images must be at least 1".into());
        }
        o.batch = Some(n);
    }
    if o.diversity_weight != 0.0 && o.batch.unwrap_or(1) < 2 {
        o.batch = Some(4);
    }
    if let Some(v) = a.act_max_weight {
        o.act_max_weight = finite("--act-max-weight", v)?;
    }
    if let Some(v) = a.lp_norm_weight {
        o.lp_norm_weight = finite("--lp-norm-weight", v)?;
    }
    if let Some(v) = a.tv_weight {
        o.tv_weight = finite("--tv-weight", v)?;
    }
    if let Some(n) = a.max_iter {
        if n == 0 {
            return Err("--max-iter must be at least 1".into());
        }
        o.max_iter = n;
    }
    o.seed = a.seed;
    o.grad_modifier = GradModifier::from_name(&a.grad_modifier)?;
    if let Some(name) = &a.backprop_modifier {
        o.backprop_modifier = backprop_mode(name)?;
    }
    o.verbose = a.verbose;
    if let Some(mb) = a.graph_memory {
        o.graph_memory = mb.checked_mul(1 << 20).ok_or("--graph-memory is more MB than this machine can address")?;
    }
    Ok(o)
}
