//! `actmax visualize`: the CLI face of `actmax::visualize_activation`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use actmax::{images, Options, Step};
use actmax_modifiers::{InputModifier, Jitter};
use serde_json::json;

use crate::model_args::parse_range;
use crate::recipe_args::RecipeArgs;

/// `visualize` arguments.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub model: crate::model_args::ModelArgs,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Layer name or index (negative counts from the end: -1 is the last layer).
    #[arg(long, default_value = "-1", allow_hyphen_values = true)]
    pub layer: String,
    /// Filter (class) index; repeat to maximize several at once.
    #[arg(long = "filter")]
    pub filters: Vec<usize>,
    /// One image per --filter, in one run (-o out.png writes out_<filter>.png).
    #[arg(long)]
    pub batch: bool,
    /// Jitter each step by up to this many pixels (below 1: a fraction of the size).
    #[arg(long)]
    pub jitter: Option<f32>,
    /// Start from this image instead of noise.
    #[arg(long)]
    pub seed_image: Option<PathBuf>,
    /// Feature accentuation: start from --seed-image and keep the image close to it in the
    /// activations of --accent-layer while the target is pushed (down with --grad-modifier
    /// negate).
    #[arg(long)]
    pub accentuate: bool,
    /// The layer whose activations stay close to the photo's (default: the feature map 30 %
    /// of the way to the target).
    #[arg(long)]
    pub accent_layer: Option<String>,
    /// Weight of the accentuation distance (default: balanced against the objective's
    /// gradient after the first step).
    #[arg(long, allow_hyphen_values = true)]
    pub accent_weight: Option<f32>,
    /// With --param maco and --seed-image: give the image the natural-image magnitude
    /// (Horama) instead of the photo's own (faccent, the default: step 0 is the photo).
    #[arg(long)]
    pub template_magnitude: bool,
    /// Also write the transparency map (where the objective drew; Fourier and MaCo runs).
    #[arg(long)]
    pub transparency: Option<PathBuf>,
    /// Save the image with its transparency map as alpha (Fourier and MaCo runs).
    #[arg(long)]
    pub alpha: bool,
    /// Pixel range LOW,HIGH (default: the model's).
    #[arg(long)]
    pub input_range: Option<String>,
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

/// Output file of target `k` in a batch: `out.png` → `out_<filter>.png`.
fn batch_path(out: &Path, filter: usize) -> PathBuf {
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("out");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("png");
    out.with_file_name(format!("{stem}_{filter}.{ext}"))
}

/// Runs `visualize`; returns the text to print on stdout.
pub fn run(a: Args) -> crate::error::Result<String> {
    // Everything that can be wrong with the request is checked before the long run.
    let preset = crate::recipe_args::options(&a.recipe)?;
    let range = a.input_range.as_deref().map(|r| parse_range("--input-range", r)).transpose()?;
    let model = a.model.load()?;
    let layer_idx = model.find(a.layer.as_str())?;
    let node = &model.nodes()[layer_idx];
    if let Some(count) = node.layer.filters(&node.output_shape) {
        if let Some(&bad) = a.filters.iter().find(|&&f| f >= count) {
            return Err(format!(
                "filter {bad} is out of range for layer `{}`: valid filters are 0..={}",
                node.name,
                count - 1
            )
            .into());
        }
    }
    if a.batch && a.filters.is_empty() {
        return Err("--batch needs at least one --filter".into());
    }
    let images_per_target = preset.batch.unwrap_or(1);
    if a.batch && images_per_target > 1 {
        return Err("--batch (one image per filter) and --images N (N images of one target) do not combine".into());
    }
    // Several images are told apart by a key in their file names: the filter, or the
    // image's number; a transparency map takes its image's key.
    let keys: Option<Vec<usize>> = if a.batch {
        Some(a.filters.clone())
    } else if images_per_target > 1 {
        Some((0..images_per_target).collect())
    } else {
        None
    };
    let paths = |base: &Path| -> Vec<PathBuf> {
        match &keys {
            Some(keys) => keys.iter().map(|&k| batch_path(base, k)).collect(),
            None => vec![base.to_path_buf()],
        }
    };
    let outputs = paths(&a.output);
    for o in &outputs {
        images::check_writable(o)?;
    }
    let maps: Vec<PathBuf> = a.transparency.as_deref().map(paths).unwrap_or_default();
    for m in &maps {
        images::check_writable(m)?;
    }
    let accent = accentuation(&a, &preset)?;
    let seed_input = match &a.seed_image {
        Some(p) => {
            let mut spec = model.input_spec().clone();
            if let Some(r) = range {
                spec.range = r;
            }
            let t = images::load(p, &spec)?;
            Some(if a.batch { ndarray_repeat(&t, a.filters.len()) } else { ndarray_repeat(&t, images_per_target) })
        }
        None => None,
    };
    let mut mods: Vec<Box<dyn InputModifier>> = Vec::new();
    if let Some(j) = a.jitter {
        mods.push(Box::new(Jitter::new(j)?));
    }
    let mut callbacks: Vec<Box<dyn actmax::Callback>> = Vec::new();
    if let Some(g) = &a.gif {
        let r = range.unwrap_or(model.input_spec().range);
        callbacks.push(Box::new(actmax::GifGenerator::new(g, 5, r)?));
    }
    if !a.json && !a.recipe.verbose {
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
    let mut opts = Options { seed_input, input_range: range, input_modifiers: mods, callbacks, accent, ..preset };
    if let actmax::Parameterization::Maco { seed_magnitude, .. } = &mut opts.param {
        *seed_magnitude = !a.template_magnitude;
    }
    let layer = a.layer.as_str();
    let vis = if a.batch {
        actmax::visualize_batch(&model, layer, a.filters.iter().map(|&f| vec![f]).collect(), opts)
    } else {
        actmax::visualize_activation(&model, layer, (!a.filters.is_empty()).then(|| a.filters.clone()), opts)
    }?;
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
        } else if a.alpha {
            vis.image_with_alpha(k)
        } else {
            vis.image(k)
        }?;
        images::save(&img, path)?;
        saved.push(path.display().to_string());
        if !a.json {
            let _ = writeln!(text, "wrote {}", path.display());
        }
        if let (Some(m), Some(map)) = (maps.get(k), vis.transparency_map(k)?) {
            images::save(&image::DynamicImage::ImageLuma8(map), m)?;
            saved.push(m.display().to_string());
            if !a.json {
                let _ = writeln!(text, "wrote {}", m.display());
            }
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

/// The accentuation settings, their flags checked before the run (nothing is written on an
/// error; the run itself refuses an unknown accent layer, naming the closest ones, before
/// its first step).
fn accentuation(a: &Args, preset: &Options) -> crate::error::Result<Option<actmax::Accentuation>> {
    let fourier_like = !matches!(preset.param, actmax::Parameterization::Pixel);
    if (a.transparency.is_some() || a.alpha) && !fourier_like {
        return Err("--transparency and --alpha need a Fourier or MaCo image (--param fourier or maco, or a preset that uses one)".into());
    }
    if a.template_magnitude && !matches!(preset.param, actmax::Parameterization::Maco { .. }) {
        return Err("--template-magnitude is MaCo's: it needs --param maco".into());
    }
    if a.template_magnitude && a.seed_image.is_none() {
        return Err("--template-magnitude replaces the seed image's magnitude: give --seed-image".into());
    }
    if !a.accentuate {
        if a.accent_layer.is_some() || a.accent_weight.is_some() {
            return Err("--accent-layer and --accent-weight set up accentuation: add --accentuate".into());
        }
        return Ok(None);
    }
    if a.seed_image.is_none() {
        return Err("--accentuate starts from a photo: give --seed-image PHOTO".into());
    }
    if let Some(w) = a.accent_weight {
        if !(w.is_finite() && w >= 0.0) {
            return Err(format!("--accent-weight must be a finite number >= 0, got {w}").into());
        }
    }
    Ok(Some(actmax::Accentuation { layer: a.accent_layer.clone(), weight: a.accent_weight, ..Default::default() }))
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
