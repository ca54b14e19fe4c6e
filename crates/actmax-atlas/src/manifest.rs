//! `manifest.jsonl`: one JSON line per finished tile.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{AtlasError, Result};

/// The manifest's file in an atlas directory.
pub const MANIFEST: &str = "manifest.jsonl";

/// One finished tile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TileRecord {
    /// The model as the user named it.
    pub model: String,
    /// sha256 of the model's file.
    pub model_sha256: String,
    /// The layer's name.
    pub layer: String,
    /// The layer's index in the model.
    pub layer_index: usize,
    /// The filter (class).
    pub filter: usize,
    /// The preset the recipe started from.
    pub preset: String,
    /// Every setting that shapes the image.
    pub settings: BTreeMap<String, String>,
    /// The atlas seed.
    pub seed: u64,
    /// The tile's own seed (from the atlas seed, the layer and the filter).
    pub tile_seed: u64,
    /// Optimization steps.
    pub steps: usize,
    /// The filter's mean activation (the logit, for a class) on the saved 8-bit PNG.
    pub activation: f32,
    /// The PNG, relative to the atlas directory.
    pub png: String,
    /// sha256 of the PNG.
    pub png_sha256: String,
    /// Seconds this tile took (its batch's time over its size): the one field that
    /// differs between runs.
    pub seconds: f64,
    /// The tile's loss per step (the negated activation, plus any regularizers).
    pub loss_curve: Vec<f32>,
}

impl TileRecord {
    /// The tile's key: layer index and filter.
    pub fn key(&self) -> (usize, usize) {
        (self.layer_index, self.filter)
    }

    /// Whether the PNG in `dir` is the one this record describes.
    pub fn png_matches(&self, dir: &Path) -> bool {
        std::fs::read(dir.join(&self.png)).is_ok_and(|b| crate::sha256_hex(&b) == self.png_sha256)
    }
}

/// The records of `dir/manifest.jsonl` (none when it does not exist), and how many lines
/// could not be read — a line cut by a kill mid-write; its tile is simply rendered again.
pub fn read_manifest(dir: &Path) -> Result<(Vec<TileRecord>, usize)> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(AtlasError::io(&path, e)),
    };
    let (mut records, mut bad) = (Vec::new(), 0);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<TileRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

/// Replaces `dir/manifest.jsonl` by `records`, atomically.
pub(crate) fn write_manifest(dir: &Path, records: &[TileRecord]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        text.push_str(&line(r));
    }
    crate::write_atomic(&dir.join(MANIFEST), text.as_bytes())
}

/// Appends records, each line in one write (a kill can cut only the last line).
pub(crate) fn append(dir: &Path, records: &[TileRecord]) -> Result<()> {
    let path = dir.join(MANIFEST);
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| AtlasError::io(&path, e))?;
    for r in records {
        f.write_all(line(r).as_bytes()).map_err(|e| AtlasError::io(&path, e))?;
    }
    f.sync_data().map_err(|e| AtlasError::io(&path, e))
}

fn line(r: &TileRecord) -> String {
    serde_json::to_string(r).expect("records serialize") + "\n"
}
