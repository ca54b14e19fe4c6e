//! `actmax`: activation maximization from the command line.
//!
//! - no arguments: the main job — five ImageNet classes visualized with the shipped
//!   EfficientNet-Lite0 in the default (best-measured) preset, saved with a contact sheet,
//!   and checked by the model itself;
//! - `visualize`: keras-vis's `visualize_activation` on any layer and filters;
//! - `predict`: a model's top-k classes for an image — the check that a model loaded right;
//! - `layers`: a model's layers with index, type, output shape and filter count;
//! - `atlas` / `atlas merge` / `gallery`: every filter of chosen layers as deterministic,
//!   resumable, shardable tiles, joined from shards, browsable offline.

mod atlas;
mod embedded;
mod error;
mod model_args;
mod recipe_args;
mod visualize;

use std::path::PathBuf;
use std::process::ExitCode;

use actmax_layers::zoo;
use std::fmt::Write as _;
use std::io::Write as _;

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(name = "actmax", version, about = "Shows what a CNN has learned by activation maximization")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the image that maximizes filters (classes) of a layer.
    Visualize(Box<visualize::Args>),
    /// The model's top classes for an image.
    Predict {
        #[command(flatten)]
        model: model_args::ModelArgs,
        /// The image (any format the `image` crate reads).
        #[arg(long)]
        image: PathBuf,
        /// How many classes to show.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Class names, one per line (default: ImageNet's for 1000-class models).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every filter of chosen layers as tiles + manifest.jsonl (resumable, shardable);
    /// `atlas merge` joins shard outputs.
    Atlas(Box<atlas::AtlasCommand>),
    /// A static, offline HTML site to browse an atlas (written into its directory).
    Gallery {
        /// The atlas directory.
        dir: PathBuf,
    },
    /// The model's layers: index, name, type, output shape, filters.
    Layers {
        #[command(flatten)]
        model: model_args::ModelArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Prints to stdout; a closed pipe (`actmax layers | head`) is not an error.
fn emit(text: &str) -> crate::error::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("cannot write output: {e}").into()),
        _ => Ok(()),
    }
}

fn predict(
    model: &model_args::ModelArgs,
    image: &std::path::Path,
    top: usize,
    labels: Option<&std::path::Path>,
    json_out: bool,
) -> crate::error::Result<()> {
    let m = model.load()?;
    let names = match labels {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("cannot read labels {}: {e}", p.display()))?),
        None => None,
    };
    let x = actmax::images::load(image, m.input_spec())?;
    let out_shape = m.nodes().last().map(|n| n.output_shape.clone()).unwrap_or_default();
    if out_shape == [1, 1] {
        // A regression model: one number, no classes to rank.
        let y = m.predict(&x)?[[0, 0]];
        return emit(&if json_out { format!("{}\n", json!({ "output": y })) } else { format!("output {y:.4}\n") });
    }
    let labels = match &names {
        Some(text) => text.lines().map(str::trim).collect(),
        None if out_shape == [1, 1000] => zoo::imagenet_labels(),
        None => Vec::new(),
    };
    let rows: Vec<_> = m
        .top_k(&x, top)?
        .into_iter()
        .map(|p| {
            (
                p.class,
                labels.get(p.class).map_or_else(|| format!("class {}", p.class), |s| s.to_string()),
                p.output,
                p.probability,
            )
        })
        .collect();
    let mut out = String::new();
    if json_out {
        let v: Vec<_> =
            rows.iter().map(|(i, l, z, p)| json!({"class": i, "label": l, "logit": z, "probability": p})).collect();
        out = serde_json::to_string_pretty(&v).expect("json") + "\n";
    } else {
        for (i, l, z, p) in rows {
            let _ = writeln!(out, "{i:>5}  {p:>7.4}  {z:>8.3}  {l}");
        }
    }
    emit(&out)
}

fn layers(model: &model_args::ModelArgs, json_out: bool) -> crate::error::Result<()> {
    let m = model.load()?;
    let rows = m.layers();
    if json_out {
        let v: Vec<_> = rows
            .iter()
            .map(|r| json!({"index": r.index, "name": r.name, "type": r.kind, "output_shape": r.output_shape, "filters": r.filters, "params": r.params, "activation": r.activation, "aliases": r.aliases}))
            .collect();
        return emit(&(serde_json::to_string_pretty(&v).expect("json") + "\n"));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:<34} {:<16} {:<20} {:>8} {:>10}",
        "index", "name", "type", "output shape", "filters", "params"
    );
    for r in &rows {
        let kind = match r.activation {
            Some(a) if a != "linear" && r.kind != "Activation" => format!("{}+{a}", r.kind),
            Some(a) if r.kind == "Activation" => a.to_string(),
            _ => r.kind.to_string(),
        };
        let filters = r.filters.map_or("-".to_string(), |f| f.to_string());
        let shape = format!("{:?}", r.output_shape);
        // A PyTorch block's path addresses the layer that ends it: `layer1.0.relu = layer1.0`.
        let name =
            if r.aliases.is_empty() { r.name.clone() } else { format!("{} = {}", r.name, r.aliases.join(" = ")) };
        let _ =
            writeln!(out, "{:>5}  {:<34} {:<16} {:<20} {:>8} {:>10}", r.index, name, kind, shape, filters, r.params);
    }
    let _ = writeln!(out, "{} layers, {} parameters", rows.len(), m.param_count());
    emit(&out)
}

/// The classes of the main job: goldfish, water ouzel, hummingbird, flamingo, bee.
const MAIN_CLASSES: [usize; 5] = [1, 20, 94, 130, 309];

/// The main job: five ImageNet classes with the shipped EfficientNet-Lite0, one batch, the
/// PNGs and a contact sheet in `actmax-output/`, then what the model predicts on each PNG.
fn main_job() -> crate::error::Result<()> {
    let model = model_args::load_model("efficientnet_lite0", None)?;
    let labels = zoo::imagenet_labels();
    let dir = PathBuf::from("actmax-output");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let paths: Vec<PathBuf> = MAIN_CLASSES
        .iter()
        .map(|&c| dir.join(format!("{c:03}_{}.png", labels[c].split(',').next().unwrap_or("class").replace(' ', "_"))))
        .collect();
    for p in &paths {
        actmax::images::check_writable(p)?;
    }
    let preset = actmax::Options::preset(recipe_args::DEFAULT_PRESET)?;
    eprintln!(
        "actmax: visualizing {} ImageNet classes with EfficientNet-Lite0 (preset {}, {} steps; \
         `actmax visualize --preset keras-vis|lucid|maco` for the others)...",
        MAIN_CLASSES.len(),
        recipe_args::DEFAULT_PRESET,
        preset.max_iter
    );
    let start = std::time::Instant::now();
    let targets = MAIN_CLASSES.iter().map(|&c| vec![c]).collect();
    let opts = actmax::Options { callbacks: vec![Box::new(visualize::progress(preset.max_iter))], ..preset };
    let vis = actmax::visualize_batch(&model, -1, targets, opts)?;
    let mut out = String::new();
    let mut imgs = Vec::new();
    for (k, (&class, path)) in MAIN_CLASSES.iter().zip(&paths).enumerate() {
        let img = vis.image(k)?;
        actmax::images::save(&img, path)?;
        // Read back what was saved: the check is on the 8-bit PNG, as a user would see it.
        let x = actmax::images::load(path, model.input_spec())?;
        let top = model.top_k(&x, 1)?[0].class;
        let mark = if top == class { "ok" } else { "MISS" };
        let _ = writeln!(
            out,
            "{:<4} {:<40} → model says {:>3} {}",
            mark,
            format!("{class} {}", labels[class]),
            top,
            labels[top]
        );
        imgs.push(img);
    }
    let captions: Vec<String> =
        MAIN_CLASSES.iter().map(|&c| format!("{c} {}", labels[c].split(',').next().unwrap_or(""))).collect();
    let sheet = actmax::images::labelled_sheet(&imgs, &captions, 8, imgs.len())?;
    let sheet_path = dir.join("contact_sheet.png");
    actmax::images::save(&sheet, &sheet_path)?;
    let _ = writeln!(
        out,
        "wrote {} images and {} in {:.1} s",
        paths.len(),
        sheet_path.display(),
        start.elapsed().as_secs_f64()
    );
    let _ = writeln!(
        out,
        "every filter of a layer, browsable: actmax atlas --layers _conv_stem -o atlas && actmax gallery atlas"
    );
    emit(&out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A cap the kernels would silently ignore is refused here, before any work.
    if let Err(e) = actmax_tensor::gemm::direct::Isa::cap_from_env() {
        eprintln!("actmax: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        None => main_job(),
        Some(Command::Visualize(args)) => visualize::run(*args).and_then(|t| emit(&t)),
        Some(Command::Predict { model, image, top, labels, json }) => {
            predict(&model, &image, top, labels.as_deref(), json)
        }
        Some(Command::Layers { model, json }) => layers(&model, json),
        Some(Command::Atlas(cmd)) => atlas::run(*cmd),
        Some(Command::Gallery { dir }) => atlas::gallery(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actmax: {e}");
            ExitCode::FAILURE
        }
    }
}
