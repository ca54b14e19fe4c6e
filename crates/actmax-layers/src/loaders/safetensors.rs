//! safetensors files through the `safetensors` crate.

use ::safetensors::SafeTensors;
use actmax_tensor::Tensor;

use super::dtype::Dtype;
use super::StateDict;
use crate::error::{format_err, LoadError};

const FORMAT: &str = "safetensors";

/// Reads every tensor of a safetensors file, converted to f32.
pub fn read(bytes: &[u8]) -> Result<StateDict, LoadError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(FORMAT, e.to_string()))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let dtype = Dtype::from_safetensors(view.dtype()).ok_or_else(|| LoadError::Unsupported {
            format: FORMAT,
            msg: format!("{name}: dtype {:?} (f16, bf16, f32, f64 and integers are read)", view.dtype()),
        })?;
        // The crate has checked the data length against the shape and dtype.
        let values = dtype.decode_f32(view.data()).ok_or_else(|| format_err(FORMAT, format!("{name}: ragged data")))?;
        let t = Tensor::from_shape_vec(view.shape().to_vec(), values)
            .map_err(|e| format_err(FORMAT, format!("{name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes f32 tensors as a safetensors file's bytes.
pub fn write(tensors: &StateDict) -> Result<Vec<u8>, LoadError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shape().to_vec(), t.iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| {
            Ok((
                k.as_str(),
                ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F32, s.clone(), b)
                    .map_err(|e| format_err(FORMAT, e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    ::safetensors::serialize(views, None).map_err(|e| format_err(FORMAT, e.to_string()))
}
