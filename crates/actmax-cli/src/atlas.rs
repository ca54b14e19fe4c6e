//! `actmax atlas`, `actmax atlas merge` and `actmax gallery`: the CLI face of
//! `actmax-atlas`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use actmax_atlas::{Event, LayerSelection, PlanRequest, RenderOptions, Shard};
use serde_json::json;

use crate::emit;
use crate::model_args::ModelArgs;
use crate::recipe_args::RecipeArgs;

/// `atlas` and its `merge`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AtlasCommand {
    #[command(subcommand)]
    action: Option<AtlasAction>,
    #[command(flatten)]
    render: RenderArgs,
}

#[derive(clap::Subcommand)]
enum AtlasAction {
    /// Join the outputs of shards (or of several runs) into one atlas; reports missing tiles.
    Merge {
        /// The atlas directories to join.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// The merged atlas's directory.
        #[arg(short, long)]
        output: PathBuf,
        /// Fail, writing nothing, unless every tile is there (a merge step that waits
        /// for its shards retries until this succeeds).
        #[arg(long)]
        complete: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `atlas` arguments.
#[derive(clap::Args)]
struct RenderArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Layers to render, every filter of each: NAME,NAME (or indices, -1 the last), or all-conv.
    #[arg(long, allow_hyphen_values = true)]
    layers: Option<String>,
    /// Also the classes of the last layer: all, or a list (1,20,94).
    #[arg(long, num_args = 0..=1, default_missing_value = "all")]
    classes: Option<String>,
    /// Only these filters of each layer: a list of indices and ranges (0-15,20).
    #[arg(long)]
    filters: Option<String>,
    /// Filters of one layer optimized together.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Render shard K of N (0 <= K < N): a stable 1/N of the tiles.
    #[arg(long)]
    shard: Option<String>,
    /// The shard count when a scheduler gives the index (JOB_COMPLETION_INDEX, or
    /// SLURM_ARRAY_TASK_ID when SLURM_ARRAY_TASK_COUNT is not the count).
    #[arg(long)]
    shards: Option<usize>,
    /// One JSON line per tile on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
    /// The atlas directory.
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
}

/// Runs `atlas` or `atlas merge`.
pub fn run(cmd: AtlasCommand) -> crate::error::Result<()> {
    match cmd.action {
        Some(AtlasAction::Merge { dirs, output, complete, json }) => merge(&dirs, &output, complete, json),
        None => render(cmd.render),
    }
}

/// `0-15,20` → 0, 1, …, 15, 20.
fn index_list(flag: &str, s: &str) -> crate::error::Result<Vec<usize>> {
    let bad = |p: &str| format!("{flag}: `{p}` is not an index or a range LOW-HIGH (e.g. 0-15,20)");
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) =
                    (lo.parse::<usize>().map_err(|_| bad(part))?, hi.parse::<usize>().map_err(|_| bad(part))?);
                if lo > hi {
                    return Err(bad(part).into());
                }
                out.extend(lo..=hi);
            }
            None => out.push(part.parse().map_err(|_| bad(part))?),
        }
    }
    if out.is_empty() {
        return Err(format!("{flag} is empty").into());
    }
    Ok(out)
}

fn request(a: &RenderArgs) -> crate::error::Result<PlanRequest> {
    let layers = match a.layers.as_deref().map(str::trim) {
        None => LayerSelection::None,
        Some("all-conv") => LayerSelection::AllConv,
        Some(list) => {
            LayerSelection::Names(list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(String::from).collect())
        }
    };
    let classes = match a.classes.as_deref() {
        None => None,
        Some("all") => Some(Vec::new()),
        Some(list) => Some(index_list("--classes", list)?),
    };
    let filters = a.filters.as_deref().map(|f| index_list("--filters", f)).transpose()?;
    if layers == LayerSelection::None && classes.is_none() {
        return Err("choose what to render: --layers NAME,NAME or --layers all-conv, and/or --classes".into());
    }
    Ok(PlanRequest { layers, classes, filters })
}

fn render(a: RenderArgs) -> crate::error::Result<()> {
    let dir = a.output.clone().ok_or("atlas needs -o DIR")?;
    // Everything that can be wrong with the request is refused before the model loads.
    let recipe = crate::recipe_args::options(&a.recipe)?;
    let req = request(&a)?;
    let shard = match &a.shard {
        Some(s) => Some(Shard::parse(s)?),
        None => Shard::from_env(a.shards, |k| std::env::var(k).ok())?,
    };
    let model = a.model.load()?;
    let plan = actmax_atlas::plan(&model, &a.model.id()?, &req, &a.recipe.preset, &recipe)?;
    let opts = RenderOptions { batch_size: a.batch_size, shard };
    let bar = indicatif::ProgressBar::hidden();
    let json_out = a.json;
    let mut on_event = |e: Event<'_>| match e {
        Event::Start { total, done, batch_size } => {
            if json_out {
                let line = json!({"event": "start", "tiles": total, "done": done, "batch_size": batch_size,
                    "shard": shard.map(|s| s.to_string())});
                let _ = emit(&format!("{line}\n"));
            } else {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.reset_eta();
                if let Ok(style) =
                    indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tiles  {msg}  ETA {eta}")
                {
                    bar.set_style(style);
                }
            }
        }
        Event::Tile { record, done, total } => {
            if json_out {
                let line = json!({"event": "tile", "layer": record.layer, "filter": record.filter, "png": record.png,
                    "activation": record.activation, "seconds": record.seconds, "done": done, "total": total});
                let _ = emit(&format!("{line}\n"));
            } else {
                bar.set_message(format!("{} #{}", record.layer, record.filter));
                bar.set_position(done as u64);
            }
        }
    };
    let summary = actmax_atlas::render(&model, &plan, &recipe, &opts, &dir, &mut on_event)?;
    bar.finish_and_clear();
    let per_tile = if summary.rendered > 0 { summary.seconds / summary.rendered as f64 } else { 0.0 };
    if json_out {
        let line = json!({"event": "done", "tiles": summary.total, "rendered": summary.rendered,
            "skipped": summary.skipped, "seconds": summary.seconds, "seconds_per_tile": per_tile,
            "dropped_lines": summary.dropped, "dir": dir.display().to_string()});
        return emit(&format!("{line}\n"));
    }
    let mut out = String::new();
    let part = shard.map_or(String::new(), |s| format!(" (shard {s})"));
    let _ = writeln!(
        out,
        "{} tiles{part}: rendered {} in {:.1} s ({per_tile:.2} s/tile, batches of {}), {} already there",
        summary.total, summary.rendered, summary.seconds, summary.batch_size, summary.skipped
    );
    if summary.dropped > 0 {
        let _ = writeln!(out, "dropped {} manifest lines whose tile was cut short; rendered again", summary.dropped);
    }
    let _ = writeln!(
        out,
        "wrote {}; browse it with `actmax gallery {}`",
        dir.join("manifest.jsonl").display(),
        dir.display()
    );
    emit(&out)
}

fn merge(dirs: &[PathBuf], output: &Path, complete: bool, json_out: bool) -> crate::error::Result<()> {
    let report = actmax_atlas::merge(dirs, output, complete)?;
    if json_out {
        let missing: Vec<_> = report.missing.iter().map(|(l, f)| json!({"layer": l, "filter": f})).collect();
        let line = json!({"tiles": report.tiles, "missing": missing, "dropped_lines": report.dropped});
        return emit(&format!("{line}\n"));
    }
    let mut out = format!("merged {} tiles into {}\n", report.tiles, output.display());
    if report.missing.is_empty() {
        out.push_str("no tiles missing\n");
    } else {
        let _ = writeln!(out, "{} tiles missing (rerun their shards into the same directories):", report.missing.len());
        for (layer, filter) in report.missing.iter().take(20) {
            let _ = writeln!(out, "  {layer} filter {filter}");
        }
        if report.missing.len() > 20 {
            let _ = writeln!(out, "  … and {} more", report.missing.len() - 20);
        }
    }
    emit(&out)
}

/// Runs `gallery`.
pub fn gallery(dir: &Path) -> crate::error::Result<()> {
    let r = actmax_atlas::gallery(dir)?;
    emit(&format!("wrote {} ({} layers, {} tile pages): open it in a browser\n", r.index.display(), r.layers, r.tiles))
}
