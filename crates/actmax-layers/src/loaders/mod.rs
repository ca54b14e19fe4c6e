//! Model and weight files: whole models from ONNX ([`onnx`]) and Keras 2 `.h5` ([`keras`]);
//! named tensors from PyTorch `.pth`/`.pt` (legacy and zip), safetensors, npz.
//!
//! Every reader returns a typed [`LoadError`] on a malformed file — truncated, corrupt or
//! claiming sizes it does not hold — and never allocates more than the file can back.

pub mod dtype;
pub mod keras;
pub mod npz;
pub mod onnx;
pub mod pickle;
pub mod pth;
pub mod safetensors;

use std::collections::BTreeMap;
use std::path::Path;

use actmax_tensor::Tensor;

use crate::error::LoadError;

/// Deflate expands at most ~1032×: an entry claiming more than this per compressed byte
/// lies about its size.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// All of one zip entry's bytes — never more than it declares, and refused (with a
/// message) when it declares more than the archive's `archive_len` bytes can hold or
/// expand to (both sizes in a zip header are claims), so a zip bomb allocates nothing.
pub(crate) fn read_zip_entry<R: std::io::Read>(
    entry: &mut zip::read::ZipFile<'_, R>,
    archive_len: usize,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let size = entry.size();
    let packed = entry.compressed_size().min(archive_len as u64);
    let most = match entry.compression() {
        zip::CompressionMethod::Stored => packed,
        _ => packed.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1 << 16),
    };
    if size > most {
        return Err(format!("claims {size} bytes, more than the archive's {archive_len} can hold"));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.by_ref().take(size).read_to_end(&mut data).map_err(|e| e.to_string())?;
    if data.len() as u64 != size {
        return Err(format!("holds {} of the {size} bytes it declares", data.len()));
    }
    Ok(data)
}

/// Named tensors, sorted by name.
pub type StateDict = BTreeMap<String, Tensor>;

/// The weight formats actmax reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// PyTorch `torch.save` (legacy or zip).
    Pth,
    /// Hugging Face safetensors.
    Safetensors,
    /// numpy `.npz`.
    Npz,
}

impl WeightFormat {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "pth" | "pt" | "bin" | "ckpt" => Some(Self::Pth),
            "safetensors" => Some(Self::Safetensors),
            "npz" => Some(Self::Npz),
            _ => None,
        }
    }
}

/// Reads a weight file, picking the format from its extension.
pub fn load_weights(path: &Path) -> Result<StateDict, LoadError> {
    let format = WeightFormat::from_path(path).ok_or_else(|| LoadError::Unsupported {
        format: "weights",
        msg: format!("{}: unknown extension (expected .pth, .pt, .safetensors or .npz)", path.display()),
    })?;
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    load_weights_from(&bytes, format)
}

/// Reads weights from bytes in a known format.
pub fn load_weights_from(bytes: &[u8], format: WeightFormat) -> Result<StateDict, LoadError> {
    match format {
        WeightFormat::Pth => pth::read(bytes),
        WeightFormat::Safetensors => safetensors::read(bytes),
        WeightFormat::Npz => npz::read(bytes),
    }
}
