//! Which tiles an atlas holds: the layers, their filters, and what makes each tile's bytes.

use std::collections::BTreeMap;

use actmax::Options;
use actmax_layers::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{AtlasError, Result};

/// The plan's file in an atlas directory.
pub const PLAN: &str = "atlas.json";

/// Layer kinds `all-conv` takes: every convolution, depthwise ones included.
const CONV_KINDS: [&str; 2] = ["Conv2D", "DepthwiseConv2D"];

/// Which layers to render.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum LayerSelection {
    /// None (only classes, when asked).
    #[default]
    None,
    /// Every convolution of the model.
    AllConv,
    /// These layers, by name or index as `actmax layers` lists them.
    Names(Vec<String>),
}

/// What to put in an atlas.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlanRequest {
    /// The layers whose every filter becomes a tile.
    pub layers: LayerSelection,
    /// The classes of the last layer: `Some(vec![])` for all of them.
    pub classes: Option<Vec<usize>>,
    /// Only these filter indices of each layer (those a layer has); all when `None`.
    pub filters: Option<Vec<usize>>,
}

/// One layer of an atlas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtlasLayer {
    /// Index in the model (`actmax layers`).
    pub index: usize,
    /// Name in the model.
    pub name: String,
    /// Layer kind (`Conv2D`, `Dense`, ...).
    pub kind: String,
    /// How many filters the layer has.
    pub count: usize,
    /// The filters the atlas renders.
    pub filters: Vec<usize>,
    /// Its tiles' directory, relative to the atlas.
    pub dir: String,
}

/// One tile: a filter of a plan's layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Position of the layer in [`Plan::layers`].
    pub layer: usize,
    /// The filter (class) index in that layer.
    pub filter: usize,
}

/// An atlas's identity and contents; written as `atlas.json` so that shards, reruns and
/// merges can check they belong together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The model as the user named it (zoo name or path).
    pub model: String,
    /// sha256 of the model's file: what identifies the model.
    pub model_sha256: String,
    /// The preset the recipe started from.
    pub preset: String,
    /// Every setting that shapes an image ([`Options::describe`]).
    pub settings: BTreeMap<String, String>,
    /// The atlas seed every tile's seed derives from.
    pub seed: u64,
    /// The layers, in model order.
    pub layers: Vec<AtlasLayer>,
}

impl Plan {
    /// Every tile, in plan order (layer by layer, filters ascending): the order shards
    /// deal from.
    pub fn tiles(&self) -> Vec<TileId> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(l, layer)| layer.filters.iter().map(move |&filter| TileId { layer: l, filter }))
            .collect()
    }

    /// The tile's PNG, relative to the atlas directory.
    pub fn tile_path(&self, t: TileId) -> String {
        format!("{}/{:04}.png", self.layers[t.layer].dir, t.filter)
    }

    /// The tile's own seed.
    pub fn tile_seed(&self, t: TileId) -> u64 {
        tile_seed(self.seed, &self.layers[t.layer].name, t.filter)
    }

    /// Where this plan and `other` differ in what makes a tile's bytes, if they do.
    pub fn difference(&self, other: &Plan) -> Option<String> {
        if self.model_sha256 != other.model_sha256 {
            return Some(format!(
                "another model (sha256 {}… vs {}…)",
                &self.model_sha256[..12.min(self.model_sha256.len())],
                &other.model_sha256[..12.min(other.model_sha256.len())]
            ));
        }
        if self.preset != other.preset || self.settings != other.settings {
            let diff: Vec<String> = self
                .settings
                .iter()
                .filter(|(k, v)| other.settings.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: {v} vs {}", other.settings.get(k).map_or("-", String::as_str)))
                .collect();
            return Some(format!("other settings (preset {} vs {}; {})", self.preset, other.preset, diff.join("; ")));
        }
        if self.seed != other.seed {
            return Some(format!("another seed ({} vs {})", self.seed, other.seed));
        }
        if self.layers != other.layers {
            return Some("other layers or filters".into());
        }
        None
    }
}

/// A tile's seed: from the atlas seed, the layer's name and the filter only — never from
/// the shard, the batch or the position — so the tile is the same wherever it is made.
pub fn tile_seed(seed: u64, layer: &str, filter: usize) -> u64 {
    let mut h = Sha256::new();
    h.update(b"actmax-atlas tile\0");
    h.update(seed.to_le_bytes());
    h.update(layer.as_bytes());
    h.update([0]);
    h.update((filter as u64).to_le_bytes());
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Which model an atlas is of: its name as the user gave it and the sha256 of its weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// Zoo name or path.
    pub name: String,
    /// sha256 of the file (or bytes) the model was loaded from.
    pub sha256: String,
}

impl ModelId {
    /// A model loaded by [`actmax_layers::zoo::load`]: its file is hashed.
    pub fn of(name: &str) -> Result<Self> {
        let file = actmax_layers::zoo::source_file(name)
            .ok_or_else(|| AtlasError::Request(format!("no model file for `{name}` to hash")))?;
        Ok(Self { name: name.to_string(), sha256: crate::sha256_file(&file)? })
    }
}

/// The plan for `request` on `model` (identified by `id`).
pub fn plan(model: &Model, id: &ModelId, request: &PlanRequest, preset: &str, recipe: &Options) -> Result<Plan> {
    let rows = model.layers();
    let mut chosen: Vec<usize> = match &request.layers {
        LayerSelection::None => Vec::new(),
        LayerSelection::AllConv => rows.iter().filter(|r| CONV_KINDS.contains(&r.kind)).map(|r| r.index).collect(),
        LayerSelection::Names(names) => names
            .iter()
            .map(|n| {
                let r = match n.parse::<isize>() {
                    Ok(i) => model.find(i),
                    Err(_) => model.find(n.as_str()),
                };
                r.map_err(|e| AtlasError::Request(format!("--layers: {e}")))
            })
            .collect::<Result<_>>()?,
    };
    let last = rows.len().saturating_sub(1);
    if request.classes.is_some() {
        chosen.push(last);
    }
    chosen.sort_unstable();
    chosen.dedup();
    let mut layers = Vec::with_capacity(chosen.len());
    for idx in chosen {
        let row = &rows[idx];
        let count = row.filters.ok_or_else(|| {
            AtlasError::Request(format!(
                "layer `{}` ({}) has no filters to render; pick conv or dense layers (`actmax layers`)",
                row.name, row.kind
            ))
        })?;
        let wanted = if idx == last { request.classes.as_ref().filter(|c| !c.is_empty()) } else { None };
        let filters = pick_filters(&row.name, count, wanted.or(request.filters.as_ref()), wanted.is_some())?;
        layers.push(AtlasLayer {
            index: idx,
            name: row.name.clone(),
            kind: row.kind.to_string(),
            count,
            filters,
            dir: format!("tiles/{idx:03}-{}", slug(&row.name)),
        });
    }
    if layers.iter().all(|l| l.filters.is_empty()) {
        return Err(AtlasError::Request(match (request.filters.as_ref(), layers.first()) {
            (Some(_), Some(l)) => format!(
                "--filters selects none of the layers' filters (`{}` has {}: 0..={})",
                l.name,
                l.count,
                l.count.saturating_sub(1)
            ),
            _ => "the atlas would hold no tiles: choose --layers NAME,NAME or all-conv, and/or --classes".into(),
        }));
    }
    let settings = recipe.describe().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Ok(Plan {
        model: id.name.clone(),
        model_sha256: id.sha256.clone(),
        preset: preset.to_string(),
        settings,
        seed: recipe.seed,
        layers,
    })
}

/// The filters of a layer of `count` to render: `wanted` (checked when `strict`: classes
/// asked by number must exist; a `--filters` list applies to layers of any size) or all.
fn pick_filters(layer: &str, count: usize, wanted: Option<&Vec<usize>>, strict: bool) -> Result<Vec<usize>> {
    let Some(wanted) = wanted else { return Ok((0..count).collect()) };
    if strict {
        if let Some(bad) = wanted.iter().find(|&&f| f >= count) {
            return Err(AtlasError::Request(format!(
                "class {bad} is out of range for layer `{layer}`: valid classes are 0..={}",
                count - 1
            )));
        }
    }
    let mut f: Vec<usize> = wanted.iter().copied().filter(|&f| f < count).collect();
    f.sort_unstable();
    f.dedup();
    Ok(f)
}

/// A layer name as a directory name: what is not `[A-Za-z0-9._-]` becomes `_` (the
/// layer index in front keeps two names that map alike apart).
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_seeds_depend_on_seed_layer_and_filter_only() {
        let a = tile_seed(42, "conv", 3);
        assert_eq!(a, tile_seed(42, "conv", 3));
        assert_ne!(a, tile_seed(43, "conv", 3));
        assert_ne!(a, tile_seed(42, "conv2", 3));
        assert_ne!(a, tile_seed(42, "conv", 4));
        // The layer/filter boundary is unambiguous: ("a", 1) is not ("a\0…", …).
        assert_ne!(tile_seed(1, "a", 12), tile_seed(1, "a1", 2));
    }

    #[test]
    fn slugs_keep_safe_characters() {
        assert_eq!(slug("_blocks.1.expand_relu6"), "_blocks.1.expand_relu6");
        assert_eq!(slug("layer4/1 conv:2"), "layer4_1_conv_2");
    }
}
