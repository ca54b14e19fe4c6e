//! Rendering an atlas (or one shard of it) into a directory, resuming what is there.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use actmax::Options;
use actmax_layers::{Activation, Model};
use actmax_tensor::Tape;

use crate::manifest::{append, read_manifest, write_manifest};
use crate::{AtlasError, AtlasLayer, Plan, Result, Shard, TileId, TileRecord, PLAN};

/// How to render.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Filters of one layer optimized together (the weights and buffers are shared).
    /// Recipes that couple a batch's images render one tile per batch instead.
    pub batch_size: usize,
    /// This process's part of the atlas (`None`: all of it).
    pub shard: Option<Shard>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { batch_size: 4, shard: None }
    }
}

/// What a render reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// Before the first batch: tiles this process owns, those already done, the batch size.
    Start {
        /// Tiles of this shard.
        total: usize,
        /// Already finished (skipped).
        done: usize,
        /// Filters per batch.
        batch_size: usize,
    },
    /// A tile was written.
    Tile {
        /// Its manifest line.
        record: &'a TileRecord,
        /// Tiles of this shard finished so far.
        done: usize,
        /// Tiles of this shard.
        total: usize,
    },
}

/// What a render did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Tiles of this shard.
    pub total: usize,
    /// Found finished and skipped.
    pub skipped: usize,
    /// Rendered now.
    pub rendered: usize,
    /// Seconds spent rendering.
    pub seconds: f64,
    /// Manifest lines that could not be read (cut by a kill) or did not match their PNG.
    pub dropped: usize,
    /// Filters per batch used.
    pub batch_size: usize,
}

/// Renders `plan`'s tiles of this shard into `dir` with `recipe` (its seed is the plan's;
/// its callbacks and input modifiers are not used), skipping tiles already there.
pub fn render(
    model: &Model,
    plan: &Plan,
    recipe: &Options,
    opts: &RenderOptions,
    dir: &Path,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Summary> {
    check_recipe(plan, recipe, opts)?;
    prepare_dir(dir, plan)?;
    let (done, dropped) = finished_tiles(dir, plan)?;
    let owned: Vec<TileId> = plan
        .tiles()
        .into_iter()
        .enumerate()
        .filter(|(pos, _)| opts.shard.is_none_or(|s| s.owns(*pos)))
        .map(|(_, t)| t)
        .collect();
    let todo: Vec<TileId> = owned.iter().copied().filter(|t| !done.contains(t)).collect();
    let batch_size = if recipe.images_independent() { opts.batch_size } else { 1 };
    let (total, skipped) = (owned.len(), owned.len() - todo.len());
    on_event(Event::Start { total, done: skipped, batch_size });
    let evaluator = Evaluator::new(model, plan)?;
    let start = Instant::now();
    let mut finished = skipped;
    for (layer, batch) in batches(&todo, batch_size) {
        let records = render_batch(model, &evaluator, plan, recipe, &plan.layers[layer], &batch, dir)?;
        append(dir, &records)?;
        for record in &records {
            finished += 1;
            on_event(Event::Tile { record, done: finished, total });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Summary { total, skipped, rendered: todo.len(), seconds, dropped, batch_size })
}

/// Refuses recipes an atlas cannot render tile by tile.
fn check_recipe(plan: &Plan, recipe: &Options, opts: &RenderOptions) -> Result<()> {
    if opts.batch_size == 0 {
        return Err(AtlasError::Request("--batch-size must be at least 1".into()));
    }
    if recipe.diversity_weight != 0.0 || recipe.batch.is_some_and(|b| b > 1) {
        return Err(AtlasError::Request(
            "an atlas renders one image per filter: diversity and --images N do not apply".into(),
        ));
    }
    if recipe.seed != plan.seed {
        return Err(AtlasError::Mismatch(format!("the recipe's seed {} is not the plan's {}", recipe.seed, plan.seed)));
    }
    Ok(())
}

/// Creates `dir` and writes the plan, or checks that the atlas already there is this one.
fn prepare_dir(dir: &Path, plan: &Plan) -> Result<()> {
    let unwritable = |e: std::io::Error| {
        AtlasError::Request(format!("cannot write the atlas into {}: {e}; choose a writable -o DIR", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(unwritable)?;
    let path = dir.join(PLAN);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let there: Plan = serde_json::from_slice(&bytes).map_err(|e| AtlasError::Corrupt {
                path: path.clone(),
                msg: format!("not an atlas plan ({e}); render into an empty directory"),
            })?;
            if let Some(diff) = there.difference(plan) {
                return Err(AtlasError::Mismatch(format!(
                    "{} holds an atlas of {diff}; render into another directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AtlasError::io(&path, e)),
    }
    // Written even when present: the cheapest proof that the directory is writable.
    let text = serde_json::to_string_pretty(plan).expect("plans serialize") + "\n";
    crate::write_atomic(&path, text.as_bytes()).map_err(|e| match e {
        AtlasError::Io { source, .. } => unwritable(source),
        other => other,
    })
}

/// The tiles already finished in `dir` (their PNG holds the manifest's hash); the
/// manifest is rewritten without the lines that do not count. Also returns how many
/// lines were dropped.
fn finished_tiles(dir: &Path, plan: &Plan) -> Result<(BTreeSet<TileId>, usize)> {
    let (records, unreadable) = read_manifest(dir)?;
    let ids: std::collections::HashMap<(usize, usize), TileId> =
        plan.tiles().into_iter().map(|t| ((plan.layers[t.layer].index, t.filter), t)).collect();
    let (mut done, mut kept) = (BTreeSet::new(), Vec::new());
    for r in &records {
        let Some(&id) = ids.get(&r.key()) else { continue };
        let same = r.model_sha256 == plan.model_sha256
            && r.settings == plan.settings
            && r.seed == plan.seed
            && r.png == plan.tile_path(id);
        if same && !done.contains(&id) && r.png_matches(dir) {
            done.insert(id);
            kept.push(r.clone());
        }
    }
    let dropped = unreadable + records.len() - kept.len();
    if dropped > 0 {
        write_manifest(dir, &kept)?;
    }
    Ok((done, dropped))
}

/// Consecutive tiles of one layer, at most `size` per batch.
fn batches(todo: &[TileId], size: usize) -> Vec<(usize, Vec<TileId>)> {
    let mut out: Vec<(usize, Vec<TileId>)> = Vec::new();
    for &t in todo {
        match out.last_mut() {
            Some((layer, batch)) if *layer == t.layer && batch.len() < size => batch.push(t),
            _ => out.push((t.layer, vec![t])),
        }
    }
    out
}

/// One batch of a layer's filters: optimized together, each from its own seed, saved
/// (temporary name, then rename) and measured on the saved PNG.
fn render_batch(
    model: &Model,
    evaluator: &Evaluator,
    plan: &Plan,
    recipe: &Options,
    layer: &AtlasLayer,
    tiles: &[TileId],
    dir: &Path,
) -> Result<Vec<TileRecord>> {
    let start = Instant::now();
    let opts = Options { image_seeds: Some(tiles.iter().map(|&t| plan.tile_seed(t)).collect()), ..recipe.recipe() };
    let targets = tiles.iter().map(|t| vec![t.filter]).collect();
    let vis = actmax::visualize_batch(model, layer.name.as_str(), targets, opts)?;
    let mut pngs = Vec::with_capacity(tiles.len());
    for (b, &t) in tiles.iter().enumerate() {
        let mut bytes = std::io::Cursor::new(Vec::new());
        vis.image(b)?.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| AtlasError::Request(e.to_string()))?;
        let bytes = bytes.into_inner();
        let path = dir.join(plan.tile_path(t));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AtlasError::io(parent, e))?;
        }
        crate::write_atomic(&path, &bytes)?;
        pngs.push(bytes);
    }
    let activations = evaluator.activations(layer, tiles, &pngs)?;
    let seconds = start.elapsed().as_secs_f64() / tiles.len() as f64;
    Ok(tiles
        .iter()
        .enumerate()
        .map(|(b, &t)| TileRecord {
            model: plan.model.clone(),
            model_sha256: plan.model_sha256.clone(),
            layer: layer.name.clone(),
            layer_index: layer.index,
            filter: t.filter,
            preset: plan.preset.clone(),
            settings: plan.settings.clone(),
            seed: plan.seed,
            tile_seed: plan.tile_seed(t),
            steps: vis.history.len(),
            activation: activations[b],
            png: plan.tile_path(t),
            png_sha256: crate::sha256_hex(&pngs[b]),
            seconds,
            loss_curve: match (vis.image_history.get(b), tiles.len()) {
                (Some(h), _) => h.clone(),
                (None, 1) => vis.history.clone(),
                (None, _) => Vec::new(),
            },
        })
        .collect())
}

/// Reads a filter's activation off saved PNGs, with softmax outputs read as logits (what
/// the optimization maximized).
struct Evaluator {
    model: Model,
}

impl Evaluator {
    fn new(model: &Model, plan: &Plan) -> Result<Self> {
        let mut model = model.clone();
        for l in &plan.layers {
            if model.nodes()[l.index].layer.activation() == Some(Activation::Softmax) {
                model.swap_activation(l.index as isize, Activation::Linear)?;
            }
        }
        Ok(Self { model })
    }

    /// The mean of each tile's filter over its positions (the value itself for a dense
    /// layer), on the decoded PNGs.
    fn activations(&self, layer: &AtlasLayer, tiles: &[TileId], pngs: &[Vec<u8>]) -> Result<Vec<f32>> {
        let spec = self.model.input_spec();
        let mut images = Vec::with_capacity(pngs.len());
        for png in pngs {
            let img = image::load_from_memory(png).map_err(|e| AtlasError::Request(format!("a saved tile: {e}")))?;
            images.push(actmax::images::from_image(&img, spec));
        }
        let views: Vec<_> = images.iter().map(|t| t.view()).collect();
        let x = ndarray::concatenate(ndarray::Axis(0), &views).expect("one input shape");
        let mut tape = Tape::new();
        let xv = tape.constant(x);
        let out = self.model.forward(&mut tape, xv, &[layer.index])?;
        let y = tape.value(out[0]).map_err(actmax::Error::from)?;
        Ok(tiles
            .iter()
            .enumerate()
            .map(|(b, t)| {
                let channel = y.index_axis(ndarray::Axis(0), b);
                let channel = channel.index_axis(ndarray::Axis(0), t.filter);
                channel.mean().unwrap_or(f32::NAN)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_within_a_layer() {
        let t = |layer, filter| TileId { layer, filter };
        let todo = [t(0, 0), t(0, 1), t(0, 2), t(1, 0), t(1, 5), t(2, 3)];
        let b = batches(&todo, 2);
        let sizes: Vec<(usize, usize)> = b.iter().map(|(l, v)| (*l, v.len())).collect();
        assert_eq!(sizes, [(0, 2), (0, 1), (1, 2), (2, 1)]);
        assert!(b.iter().all(|(l, v)| v.iter().all(|x| x.layer == *l)));
    }
}
