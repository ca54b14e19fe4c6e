//! PyTorch `torch.save` files: the legacy format (a magic-number pickle, protocol and
//! system pickles, the state dict pickle, the storage key list, then each storage's raw
//! little-endian bytes) and the zip format (`archive/data.pkl` + `archive/data/<key>`).

use std::collections::HashMap;
use std::io::Cursor;

use actmax_tensor::Tensor;

use super::dtype::Dtype;
use super::pickle::{self, StorageRef, TensorRef, Value};
use super::StateDict;
use crate::error::{format_err, LoadError};

const FORMAT: &str = "pth";
/// `torch.serialization.MAGIC_NUMBER` as little-endian LONG1 bytes.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Reads a `.pth` state dict from bytes.
pub fn read(bytes: &[u8]) -> Result<StateDict, LoadError> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)
    } else {
        read_legacy(bytes)
    }
}

/// The element type of a storage class.
fn dtype(kind: &str) -> Result<Dtype, LoadError> {
    Dtype::from_torch_storage(kind)
        .ok_or_else(|| LoadError::Unsupported { format: FORMAT, msg: format!("storage type {kind}") })
}

/// Gathers a strided tensor view out of its storage bytes.
fn materialize(name: &str, t: &TensorRef, storage: &[u8]) -> Result<Tensor, LoadError> {
    let dtype = dtype(&t.storage.kind)?;
    let size = dtype.size();
    let numel = storage.len() / size;
    let count = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format_err(FORMAT, format!("{name}: size overflows")))?;
    if count > 0 {
        let last = t
            .shape
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |a, (&d, &s)| (d - 1).checked_mul(s).and_then(|x| a.checked_add(x)));
        if last.is_none_or(|l| l >= numel) {
            return Err(format_err(
                FORMAT,
                format!("{name}: view {:?}/{:?}+{} reaches past its storage of {numel}", t.shape, t.stride, t.offset),
            ));
        }
    }
    let mut out = Vec::with_capacity(count);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..count {
        let at = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(dtype.f32_at(&storage[at * size..(at + 1) * size]));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_shape_vec(t.shape.clone(), out).map_err(|e| format_err(FORMAT, format!("{name}: {e}")))
}

/// The `(name, tensor view)` pairs of a (possibly nested) state dict.
fn collect(v: &Value, prefix: &str, out: &mut Vec<(String, TensorRef)>) -> Result<(), LoadError> {
    let Value::Dict(items) = v else { return Err(format_err(FORMAT, "the top-level object is not a dict of tensors")) };
    for (k, v) in items {
        let Value::Str(k) = k else { continue };
        // Checkpoints often wrap the weights; DataParallel prefixes "module.".
        let key = if prefix.is_empty() && matches!(k.as_str(), "state_dict" | "model" | "model_state_dict") {
            String::new()
        } else {
            format!("{prefix}{}", k.strip_prefix("module.").unwrap_or(k))
        };
        match v {
            Value::Tensor(t) => out.push((key, t.clone())),
            Value::Dict(_) => collect(v, &if key.is_empty() { key.clone() } else { format!("{key}.") }, out)?,
            _ => {}
        }
    }
    Ok(())
}

fn read_legacy(bytes: &[u8]) -> Result<StateDict, LoadError> {
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value, LoadError> {
        let (v, used) = pickle::load(&bytes[pos..]).map_err(|e| match e {
            LoadError::Format { msg, .. } => format_err(FORMAT, format!("{what}: {msg}")),
            other => other,
        })?;
        pos += used;
        Ok(v)
    };
    let magic = next("magic number")?;
    if magic != Value::Bytes(MAGIC.to_vec()) && magic != Value::Int(0) {
        // pickle::load keeps wide ints as bytes; anything else is not a torch file.
        if !matches!(magic, Value::Bytes(_)) {
            return Err(format_err(FORMAT, "not a PyTorch file (no torch.save magic number)"));
        }
        return Err(format_err(FORMAT, "wrong torch.save magic number"));
    }
    match next("protocol version")? {
        Value::Int(1001) => {}
        other => {
            return Err(LoadError::Unsupported { format: FORMAT, msg: format!("legacy protocol version {other:?}") })
        }
    }
    next("system info")?;
    let dict = next("state dict")?;
    let keys = match next("storage keys")? {
        Value::List(k) => k
            .into_iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s),
                _ => Err(format_err(FORMAT, "storage key is not a string")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(format_err(FORMAT, "storage key list missing")),
    };
    let mut views = Vec::new();
    collect(&dict, "", &mut views)?;
    let kinds: HashMap<&str, &StorageRef> = views.iter().map(|(_, t)| (t.storage.key.as_str(), &t.storage)).collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for key in keys {
        let header =
            bytes.get(pos..pos + 8).ok_or_else(|| format_err(FORMAT, format!("truncated before storage {key}")))?;
        let numel = u64::from_le_bytes(header.try_into().expect("8 bytes"));
        pos += 8;
        let size = match kinds.get(key.as_str()) {
            Some(s) => dtype(&s.kind)?.size(),
            None => return Err(format_err(FORMAT, format!("storage {key} is listed but no tensor uses it"))),
        };
        let len = usize::try_from(numel).ok().and_then(|n| n.checked_mul(size)).filter(|&l| l <= bytes.len() - pos);
        let len = len.ok_or_else(|| {
            format_err(FORMAT, format!("storage {key} claims {numel} elements, more than the file holds"))
        })?;
        storages.insert(key, &bytes[pos..pos + len]);
        pos += len;
    }
    let mut out = StateDict::new();
    for (name, t) in views {
        let data = storages
            .get(&t.storage.key)
            .ok_or_else(|| format_err(FORMAT, format!("{name}: storage {} missing", t.storage.key)))?;
        out.insert(name.clone(), materialize(&name, &t, data)?);
    }
    Ok(out)
}

fn read_zip(bytes: &[u8]) -> Result<StateDict, LoadError> {
    let zerr = |e: zip::result::ZipError| format_err(FORMAT, format!("zip: {e}"));
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zerr)?;
    let names: Vec<String> = archive.file_names().map(str::to_string).collect();
    let pkl = names
        .iter()
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| format_err(FORMAT, "zip without data.pkl"))?
        .clone();
    let root = pkl.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str| -> Result<Vec<u8>, LoadError> {
        let mut f = archive.by_name(name).map_err(zerr)?;
        super::read_zip_entry(&mut f, bytes.len()).map_err(|m| format_err(FORMAT, format!("{name}: {m}")))
    };
    let (dict, _) = pickle::load(&read_entry(&pkl)?)?;
    let mut views = Vec::new();
    collect(&dict, "", &mut views)?;
    let mut out = StateDict::new();
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    for (name, t) in views {
        if !cache.contains_key(&t.storage.key) {
            let data = read_entry(&format!("{root}data/{}", t.storage.key))?;
            cache.insert(t.storage.key.clone(), data);
        }
        out.insert(name.clone(), materialize(&name, &t, &cache[&t.storage.key])?);
    }
    Ok(out)
}
