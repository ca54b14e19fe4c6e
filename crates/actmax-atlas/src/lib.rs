//! # actmax-atlas
//!
//! Every filter of chosen layers of a model, rendered as tiles — one PNG per (layer,
//! filter) and a `manifest.jsonl` line per tile — and a static gallery to browse them.
//!
//! - **Deterministic**: a tile depends only on the model file's hash, the layer, the
//!   filter, the recipe and the seed. Each image draws from its own seed
//!   ([`tile_seed`], [`actmax::Options::image_seeds`]) and the recipe keeps images apart
//!   ([`actmax::Options::images_independent`]; otherwise tiles render one per batch), so
//!   the same tile from any shard, batch or thread count is byte-identical.
//! - **Resumable**: [`render`] skips tiles whose PNG exists with the manifest's hash; a PNG
//!   is written under a temporary name and renamed, and its manifest line follows, so a
//!   kill loses at most the batch in flight.
//! - **Sharded**: [`Shard`] `K/N` owns a stable 1/N of the tiles (every N-th in plan
//!   order), from a flag or a scheduler's environment (Kubernetes Indexed Jobs, Slurm job
//!   arrays); [`merge`] joins shard outputs and reports missing tiles.
//! - **Browsable**: [`gallery`] writes an offline HTML site: layers, a lazy-loaded grid per
//!   layer, a page per tile with its settings and loss curve, keyboard navigation.
//!
//! ```no_run
//! use actmax_atlas::{plan, render, LayerSelection, ModelId, PlanRequest};
//! let model = actmax_layers::zoo::load("efficientnet_lite0", None)?;
//! let recipe = actmax::Options::actmax();
//! let request = PlanRequest { layers: LayerSelection::Names(vec!["_conv_stem".into()]), ..Default::default() };
//! let plan = plan(&model, &ModelId::of("efficientnet_lite0")?, &request, "actmax", &recipe)?;
//! let summary = render(&model, &plan, &recipe, &Default::default(), "atlas".as_ref(), &mut |_| {})?;
//! println!("{} tiles rendered", summary.rendered);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod gallery;
mod manifest;
mod merge;
mod plan;
mod render;
mod shard;

pub use error::{AtlasError, Result};
pub use gallery::{gallery, GalleryReport};
pub use manifest::{read_manifest, TileRecord, MANIFEST};
pub use merge::{merge, MergeReport};
pub use plan::{plan, tile_seed, AtlasLayer, LayerSelection, ModelId, Plan, PlanRequest, TileId, PLAN};
pub use render::{render, Event, RenderOptions, Summary};
pub use shard::Shard;

use sha2::{Digest, Sha256};

/// sha256 of `bytes` as lowercase hex (what `sha256sum` prints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, read in one go (model files are tens of MB).
pub fn sha256_file(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| AtlasError::io(path, e))?;
    Ok(sha256_hex(&bytes))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so a reader (or a rerun after a kill) sees the old file or the new one, never half.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(|e| AtlasError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AtlasError::io(path, e)
    })
}

/// `dir/.name.<pid>.tmp`: hidden, unique per process, on the same file system.
pub(crate) fn temp_name(path: &std::path::Path) -> std::path::PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
