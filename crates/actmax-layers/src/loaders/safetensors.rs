//! safetensors files through the `safetensors` crate.

use ::safetensors::{Dtype, SafeTensors};
use actmax_tensor::Tensor;

use super::StateDict;
use crate::error::{format_err, LoadError};

const FORMAT: &str = "safetensors";

/// Reads every tensor of a safetensors file, converted to f32.
pub fn read(bytes: &[u8]) -> Result<StateDict, LoadError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| format_err(FORMAT, e.to_string()))?;
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8")) as f32).collect(),
            Dtype::BF16 => {
                data.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect()
            }
            Dtype::I64 => data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f32).collect(),
            Dtype::I32 => data.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
            other => return Err(LoadError::Unsupported { format: FORMAT, msg: format!("{name}: dtype {other:?}") }),
        };
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
                ::safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                    .map_err(|e| format_err(FORMAT, e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    ::safetensors::serialize(views, None).map_err(|e| format_err(FORMAT, e.to_string()))
}
