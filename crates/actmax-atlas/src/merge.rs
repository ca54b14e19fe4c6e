//! Joining the outputs of shards (or of several runs) into one atlas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest::{read_manifest, write_manifest};
use crate::{AtlasError, Plan, Result, TileRecord, PLAN};

/// What a merge did.
#[derive(Debug, Clone, PartialEq)]
pub struct MergeReport {
    /// Tiles in the merged atlas.
    pub tiles: usize,
    /// Tiles of the plan no input had: `(layer name, filter)`.
    pub missing: Vec<(String, usize)>,
    /// Manifest lines dropped (unreadable, or their PNG missing or changed).
    pub dropped: usize,
}

/// Reads an atlas directory's plan.
pub(crate) fn read_plan(dir: &Path) -> Result<Plan> {
    let path = dir.join(PLAN);
    let not_an_atlas = || {
        AtlasError::Request(format!(
            "{} is not an atlas (no {PLAN}); give directories `actmax atlas -o DIR` wrote",
            dir.display()
        ))
    };
    if !path.is_file() {
        return Err(not_an_atlas());
    }
    let bytes = std::fs::read(&path).map_err(|e| AtlasError::io(&path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AtlasError::Corrupt { path, msg: format!("not an atlas plan ({e}); was it written by actmax?") })
}

/// Merges the atlases in `inputs` into `out`: every input must be of the same plan (model,
/// recipe, seed, layers); a tile found twice must have the same bytes; with `complete`,
/// every tile of the plan must be there (a merge step that waits for its shards).
/// Everything is checked before anything is written.
pub fn merge(inputs: &[PathBuf], out: &Path, complete: bool) -> Result<MergeReport> {
    let first = inputs.first().ok_or_else(|| AtlasError::Request("merge needs at least one atlas".into()))?;
    let plan = read_plan(first)?;
    let mut found: BTreeMap<(usize, usize), (TileRecord, PathBuf)> = BTreeMap::new();
    let mut dropped = 0;
    for dir in inputs {
        let other = read_plan(dir)?;
        if let Some(diff) = plan.difference(&other) {
            return Err(AtlasError::Mismatch(format!(
                "{} and {} are not shards of one atlas: {diff}",
                first.display(),
                dir.display()
            )));
        }
        let (records, unreadable) = read_manifest(dir)?;
        dropped += unreadable;
        for r in records {
            if !r.png_matches(dir) {
                dropped += 1;
                continue;
            }
            match found.get(&r.key()) {
                Some((seen, at)) if seen.png_sha256 != r.png_sha256 => {
                    return Err(AtlasError::Mismatch(format!(
                        "tile {} filter {} differs between {} and {}: were they rendered by different builds?",
                        r.layer,
                        r.filter,
                        at.display(),
                        dir.display()
                    )));
                }
                Some(_) => {}
                None => {
                    found.insert(r.key(), (r, dir.clone()));
                }
            }
        }
    }
    if out.join(PLAN).exists() {
        let there = read_plan(out)?;
        if let Some(diff) = plan.difference(&there) {
            return Err(AtlasError::Mismatch(format!("{} holds an atlas of {diff}", out.display())));
        }
    }
    // Plan order: layer by layer, filters ascending.
    let order: BTreeMap<(usize, usize), usize> =
        plan.tiles().iter().enumerate().map(|(i, t)| ((plan.layers[t.layer].index, t.filter), i)).collect();
    found.retain(|key, _| order.contains_key(key));
    let missing: Vec<(String, usize)> = plan
        .tiles()
        .into_iter()
        .filter(|t| !found.contains_key(&(plan.layers[t.layer].index, t.filter)))
        .map(|t| (plan.layers[t.layer].name.clone(), t.filter))
        .collect();
    if complete && !missing.is_empty() {
        return Err(AtlasError::Request(format!(
            "{} of {} tiles are missing (e.g. {} filter {}); nothing merged",
            missing.len(),
            order.len(),
            missing[0].0,
            missing[0].1
        )));
    }
    copy_tiles(&found, out)?;
    let mut records: Vec<TileRecord> = found.into_values().map(|(r, _)| r).collect();
    records.sort_by_key(|r| order[&r.key()]);
    let text = serde_json::to_string_pretty(&plan).expect("plans serialize") + "\n";
    crate::write_atomic(&out.join(PLAN), text.as_bytes())?;
    write_manifest(out, &records)?;
    Ok(MergeReport { tiles: records.len(), missing, dropped })
}

/// Copies every found PNG into `out` (atomically; a PNG already there with the same
/// bytes is left alone).
fn copy_tiles(found: &BTreeMap<(usize, usize), (TileRecord, PathBuf)>, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| AtlasError::io(out, e))?;
    for (r, from) in found.values() {
        let dest = out.join(&r.png);
        if r.png_matches(out) {
            continue;
        }
        let src = from.join(&r.png);
        let bytes = std::fs::read(&src).map_err(|e| AtlasError::io(&src, e))?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AtlasError::io(parent, e))?;
        }
        crate::write_atomic(&dest, &bytes)?;
    }
    Ok(())
}
