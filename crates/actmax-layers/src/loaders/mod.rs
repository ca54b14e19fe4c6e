//! Model and weight files: whole models from ONNX ([`onnx`]) and Keras 2 `.h5` ([`keras`]);
//! named tensors from PyTorch `.pth`/`.pt` (legacy and zip), safetensors, npz.
//!
//! Every reader returns a typed [`LoadError`] on a malformed file — truncated, corrupt or
//! claiming sizes it does not hold — and never allocates more than the file can back.

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
