#![doc = include_str!("../README.md")]

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
