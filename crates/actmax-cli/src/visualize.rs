//! `actmax visualize`: the CLI face of `actmax::visualize_activation`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use actmax::{images, Options, Step};
use actmax_modifiers::{backprop_mode, GradModifier, InputModifier, Jitter};
use serde_json::json;

use crate::model_args::parse_range;

/// `visualize` arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::model_args::ModelArgs,
    /// Layer name or index (negative counts from the end: -1 is the last layer).
    #[arg(long, default_value = "-1", allow_hyphen_values = true)]
    pub layer: String,
    /// Filter (class) index; repeat to maximize several at once.
    #[arg(long = "filter")]
    pub filters: Vec<usize>,
    /// One image per --filter, in one run (-o out.png writes out_<filter>.png).
    #[arg(long)]
    pub batch: bool,
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
    /// Jitter each step by up to this many pixels (below 1: a fraction of the size).
    #[arg(long)]
    pub jitter: Option<f32>,
    /// identity, negate, absolute, invert, relu, small_values.
    #[arg(long, default_value = "identity")]
    pub grad_modifier: String,
    /// none, guided, rectified (deconv, relu), redirected (default: the preset's —
    /// redirected for lucid, maco and actmax, none for keras-vis).
    #[arg(long)]
    pub backprop_modifier: Option<String>,
    /// Start from this image instead of noise.
    #[arg(long)]
    pub seed_image: Option<PathBuf>,
    /// Pixel range LOW,HIGH (default: the model's).
    #[arg(long)]
    pub input_range: Option<String>,
    /// Random seed: same seed, same image.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print every named loss each step.
    #[arg(long)]
    pub verbose: bool,
    /// Print the per-step losses and the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Save keras-vis's contrast-stretched image instead of the one the model saw.
    #[arg(long)]
    pub deprocess: bool,
    /// Also write an animated GIF of the optimization (a frame every 5 steps).
    #[arg(long)]
    pub gif: Option<PathBuf>,
    /// Output image.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The preset the CLI and the main job use when none is named: the one that measured best
/// on a held-out model (`cargo xtask quality`, README).
pub const DEFAULT_PRESET: &str = "actmax";

/// The preset with the single flags applied over it; checked before any model is loaded.
pub fn options(a: &Args) -> Result<Options, String> {
    let mut o = Options::preset(&a.preset).map_err(|e| e.to_string())?;
    let finite = |flag: &str, v: f32| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{flag} must be a finite number, got {v}"))
        }
    };
    if let Some(p) = &a.param {
        o.param = actmax::Parameterization::from_name(p).map_err(|e| e.to_string())?;
    }
    if let Some(t) = &a.transforms {
        o.transforms = match t.as_str() {
            "none" => actmax_modifiers::TransformSet::default(),
            "lucid" => actmax_modifiers::TransformSet::lucid_standard(),
            other => return Err(format!("unknown --transforms `{other}`; valid: none, lucid")),
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
            return Err(format!("--lr must be a finite number > 0, got {lr}"));
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
    o.verbose = a.verbose;
    Ok(o)
}

/// Output file of target `k` in a batch: `out.png` → `out_<filter>.png`.
fn batch_path(out: &Path, filter: usize) -> PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("png");
    out.with_file_name(format!("{stem}_{filter}.{ext}"))
}

/// Runs `visualize`; returns the text to print on stdout.
pub fn run(a: Args) -> Result<String, String> {
    // Everything that can be wrong with the request is checked before the long run.
    let preset = options(&a)?;
    let grad = GradModifier::from_name(&a.grad_modifier).map_err(|e| e.to_string())?;
    let backprop = match &a.backprop_modifier {
        Some(name) => backprop_mode(name).map_err(|e| e.to_string())?,
        None => preset.backprop_modifier.clone(),
    };
    let range = a.input_range.as_deref().map(|r| parse_range("--input-range", r)).transpose()?;
    let model = a.model.load()?;
    let layer_idx = model.find(a.layer.as_str()).map_err(|e| e.to_string())?;
    let node = &model.nodes()[layer_idx];
    if let Some(count) = node.layer.filters(&node.output_shape) {
        if let Some(&bad) = a.filters.iter().find(|&&f| f >= count) {
            return Err(format!(
                "filter {bad} is out of range for layer `{}`: valid filters are 0..={}",
                node.name,
                count - 1
            ));
        }
    }
    if a.batch && a.filters.is_empty() {
        return Err("--batch needs at least one --filter".into());
    }
    let images_per_target = preset.batch.unwrap_or(1);
    if a.batch && images_per_target > 1 {
        return Err("--batch (one image per filter) and --images N (N images of one target) do not combine".into());
    }
    let outputs: Vec<PathBuf> = if a.batch {
        a.filters.iter().map(|&f| batch_path(&a.output, f)).collect()
    } else if images_per_target > 1 {
        (0..images_per_target).map(|k| batch_path(&a.output, k)).collect()
    } else {
        vec![a.output.clone()]
    };
    for o in &outputs {
        images::check_writable(o).map_err(|e| e.to_string())?;
    }
    let seed_input = match &a.seed_image {
        Some(p) => {
            let mut spec = model.input_spec().clone();
            if let Some(r) = range {
                spec.range = r;
            }
            let t = images::load(p, &spec).map_err(|e| e.to_string())?;
            Some(if a.batch { ndarray_repeat(&t, a.filters.len()) } else { ndarray_repeat(&t, images_per_target) })
        }
        None => None,
    };
    let mut mods: Vec<Box<dyn InputModifier>> = Vec::new();
    if let Some(j) = a.jitter {
        mods.push(Box::new(Jitter::new(j).map_err(|e| e.to_string())?));
    }
    let mut callbacks: Vec<Box<dyn actmax::Callback>> = Vec::new();
    if let Some(g) = &a.gif {
        let r = range.unwrap_or(model.input_spec().range);
        callbacks.push(Box::new(actmax::GifGenerator::new(g, 5, r).map_err(|e| e.to_string())?));
    }
    if !a.json && !a.verbose {
        callbacks.push(Box::new(progress(preset.max_iter)));
    }
    let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    if a.json {
        let sink = log.clone();
        callbacks.push(Box::new(move |s: &Step<'_>| {
            let terms: serde_json::Map<String, serde_json::Value> =
                s.terms.iter().map(|(n, v, _)| (n.clone(), json!(v))).collect();
            sink.borrow_mut().push(json!({"step": s.step, "total": s.total, "terms": terms}));
            Ok(())
        }));
    }
    if !mods.is_empty() && !matches!(preset.param, actmax::Parameterization::Pixel) {
        return Err("--jitter moves pixels (keras-vis); with --param fourier or maco, use --transforms lucid".into());
    }
    let opts = Options {
        seed_input,
        input_range: range,
        input_modifiers: mods,
        grad_modifier: grad,
        backprop_modifier: backprop,
        callbacks,
        ..preset
    };
    let layer = a.layer.as_str();
    let vis = if a.batch {
        actmax::visualize_batch(&model, layer, a.filters.iter().map(|&f| vec![f]).collect(), opts)
    } else {
        actmax::visualize_activation(&model, layer, (!a.filters.is_empty()).then(|| a.filters.clone()), opts)
    }
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    if vis.swapped_softmax {
        eprintln!(
            "actmax: layer `{}` ends in a softmax; maximizing its logits instead (softmax swapped to linear)",
            node.name
        );
    }
    let mut saved = Vec::new();
    for (k, path) in outputs.iter().enumerate() {
        let img = if a.deprocess {
            let one = vis.images.index_axis(ndarray::Axis(0), k).to_owned();
            images::to_image(&images::deprocess(&one, vis.range), vis.range)
        } else {
            vis.image(k)
        }
        .map_err(|e| e.to_string())?;
        images::save(&img, path).map_err(|e| e.to_string())?;
        saved.push(path.display().to_string());
        if !a.json {
            let _ = writeln!(text, "wrote {}", path.display());
        }
    }
    if a.json {
        let steps = log.borrow().clone();
        let doc = json!({"outputs": saved, "best_step": vis.best_step, "best_loss": vis.best_loss, "steps": steps, "swapped_softmax": vis.swapped_softmax});
        text = serde_json::to_string(&doc).expect("json") + "\n";
    } else {
        let _ = writeln!(text, "best loss {:.4} at step {}", vis.best_loss, vis.best_step);
    }
    Ok(text)
}

fn ndarray_repeat(t: &actmax_tensor::Tensor, n: usize) -> actmax_tensor::Tensor {
    let views: Vec<_> = (0..n).map(|_| t.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views).expect("same shapes")
}

/// A progress bar on stderr with the current loss and an ETA (hidden when stderr is not a
/// terminal, as in scripts and tests).
pub fn progress(steps: usize) -> impl actmax::Callback {
    let bar = indicatif::ProgressBar::new(steps as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  loss {msg}  ETA {eta}") {
        bar.set_style(style);
    }
    move |s: &Step<'_>| {
        bar.set_message(format!("{:.4}", s.total));
        bar.inc(1);
        if s.step + 1 == steps {
            bar.finish_and_clear();
        }
        Ok(())
    }
}
