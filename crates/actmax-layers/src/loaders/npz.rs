//! numpy `.npz` archives: a zip (stored or deflated) of `.npy` files, each a magic string,
//! a Python-literal header (`descr`, `fortran_order`, `shape`) and the raw elements.
//!
//! Read here rather than through a general npy crate so that the header's shape is
//! checked against the bytes the entry holds *before* anything is allocated (a 200-byte
//! entry claiming a gigabyte array is refused), and so that elements decode through the
//! same [`Dtype`] as the other weight formats.

use std::io::Cursor;

use actmax_tensor::Tensor;
use ndarray::ShapeBuilder;

use super::dtype::Dtype;
use super::StateDict;
use crate::error::{format_err, LoadError};

const FORMAT: &str = "npz";

/// Reads every array of an npz archive (floats, signed integers, bytes and bools),
/// converted to f32. Array names lose numpy's `.npy` suffix.
pub fn read(bytes: &[u8]) -> Result<StateDict, LoadError> {
    let err = |msg: String| format_err(FORMAT, msg);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| err(format!("not a zip archive: {e}")))?;
    let mut out = StateDict::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| err(format!("entry {i}: {e}")))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        let data = super::read_zip_entry(&mut entry, bytes.len()).map_err(|m| err(format!("{name}: {m}")))?;
        out.insert(name.clone(), read_npy(&data).map_err(|m| err(format!("{name}: {m}")))?);
    }
    Ok(out)
}

/// One `.npy` file's array.
fn read_npy(data: &[u8]) -> Result<Tensor, String> {
    let rest = data.strip_prefix(b"\x93NUMPY").ok_or("not an .npy file (no \\x93NUMPY magic)")?;
    let (len, rest) = match rest {
        [1, _, a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        [2 | 3, _, a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest),
        [v, ..] => return Err(format!("npy format version {v}")),
        [] => return Err("truncated header".into()),
    };
    let header = rest.get(..len).ok_or("the header runs past the end")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let body = &rest[len..];
    let descr = field(header, "descr").ok_or("the header has no 'descr'")?;
    let descr = descr.trim_matches(['\'', '"']);
    let dtype = npy_dtype(descr)
        .ok_or_else(|| format!("dtype '{descr}' (actmax reads little-endian floats, signed integers, u1 and bools)"))?;
    let fortran = match field(header, "fortran_order") {
        Some("True") => true,
        Some("False") => false,
        other => return Err(format!("fortran_order {other:?}")),
    };
    let shape = field(header, "shape").ok_or("the header has no 'shape'")?;
    let shape: Vec<usize> = shape
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("shape entry '{s}'")))
        .collect::<Result<_, _>>()?;
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the shape overflows")?;
    if count.checked_mul(dtype.size()) != Some(body.len()) {
        return Err(format!(
            "shape {shape:?} of '{descr}' needs {count} elements; the file holds {} bytes",
            body.len()
        ));
    }
    let values = dtype.decode_f32(body).ok_or("ragged data")?;
    let t = if fortran {
        Tensor::from_shape_vec(shape.f(), values).map(|t| t.as_standard_layout().into_owned())
    } else {
        Tensor::from_shape_vec(shape, values)
    };
    t.map_err(|e| e.to_string())
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let value = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if value.starts_with('(') { value.find(')')? + 1 } else { value.find([',', '}']).unwrap_or(value.len()) };
    Some(value[..end].trim())
}

/// numpy's type strings (`<f4`, `|u1`, …) for the types [`Dtype`] has.
fn npy_dtype(descr: &str) -> Option<Dtype> {
    Some(match descr.strip_prefix(['<', '|', '='])? {
        "f2" => Dtype::F16,
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i1" => Dtype::I8,
        "u1" => Dtype::U8,
        "i2" => Dtype::I16,
        "i4" => Dtype::I32,
        "i8" => Dtype::I64,
        "b1" => Dtype::Bool,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn headers_are_read_and_checked_against_the_data() {
        let body: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let c = read_npy(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &body)).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c[[1, 0]], 3.0);
        let f = read_npy(&npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", &body)).unwrap();
        assert_eq!(f[[1, 0]], 1.0);
        let scalar = read_npy(&npy("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", &7i64.to_le_bytes()));
        assert_eq!(scalar.unwrap().shape(), &[] as &[usize]);
        let huge = read_npy(&npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", &body));
        assert!(huge.unwrap_err().contains("holds 24 bytes"));
        let big_endian = read_npy(&npy("{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }", &body));
        assert!(big_endian.unwrap_err().contains("little-endian"));
        assert!(read_npy(b"\x93NUMPY\x01\x00\xff\xff{").unwrap_err().contains("past the end"));
    }
}
