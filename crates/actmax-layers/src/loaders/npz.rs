//! numpy `.npz` archives through `ndarray-npy`.

use std::io::Cursor;

use actmax_tensor::Tensor;
use ndarray::{Array, IxDyn};
use ndarray_npy::NpzReader;

use super::StateDict;
use crate::error::{format_err, LoadError};

const FORMAT: &str = "npz";

/// Reads every array of an npz archive (f32, f64 or integer), converted to f32. Array
/// names lose numpy's `.npy` suffix.
pub fn read(bytes: &[u8]) -> Result<StateDict, LoadError> {
    let mut npz = NpzReader::new(Cursor::new(bytes)).map_err(|e| format_err(FORMAT, e.to_string()))?;
    let names = npz.names().map_err(|e| format_err(FORMAT, e.to_string()))?;
    let mut out = StateDict::new();
    for name in names {
        let t: Tensor = if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f32>, IxDyn>(&name) {
            a
        } else if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<f64>, IxDyn>(&name) {
            a.mapv(|v| v as f32)
        } else if let Ok(a) = npz.by_name::<ndarray::OwnedRepr<i64>, IxDyn>(&name) {
            a.mapv(|v| v as f32)
        } else {
            let e =
                npz.by_name::<ndarray::OwnedRepr<i32>, IxDyn>(&name).map(|a: Array<i32, IxDyn>| a.mapv(|v| v as f32));
            e.map_err(|e| format_err(FORMAT, format!("{name}: {e} (actmax reads f32, f64, i64 and i32 arrays)")))?
        };
        let t = if t.is_standard_layout() { t } else { t.as_standard_layout().into_owned() };
        out.insert(name.trim_end_matches(".npy").to_string(), t);
    }
    Ok(out)
}
