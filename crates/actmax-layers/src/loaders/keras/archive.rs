//! Keras 3 `.keras` archives: a zip of `config.json` (the model config, as Keras 3
//! serializes it) and `model.weights.h5`, whose weights are `layers/<key>/vars/<k>`,
//! numbered in the order the layer created them (the names here follow Keras 3's `build`
//! methods). The key is not the layer's name: Keras 3 (`saving_lib`) names each layer
//! of the model's list by its class in snake case, `_1`, `_2`, ... for repeats, because
//! layer names are not reproducible.

use std::collections::HashMap;
use std::io::Cursor;

use actmax_tensor::Tensor;
use hdf5_pure::{File, Group};
use serde_json::Value as Json;

use super::{format_err, h5, read_weight, Ctx};
use crate::error::Result;

/// The config and the `layers` group of the weights (`None` when no layer has weights).
pub(super) fn read(bytes: &[u8]) -> Result<(Json, Option<Group>)> {
    let zerr = |e: zip::result::ZipError| format_err(format!("not a readable .keras archive: {e}"));
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zerr)?;
    let mut entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip.by_name(name).map_err(|e| format_err(format!("`{name}` in the archive: {e}")))?;
        crate::loaders::read_zip_entry(&mut f, bytes.len()).map_err(|m| format_err(format!("`{name}`: {m}")))
    };
    let config: Json =
        serde_json::from_slice(&entry("config.json")?).map_err(|e| format_err(format!("config.json: {e}")))?;
    let weights = entry("model.weights.h5")?;
    if !hdf5_pure::is_hdf5_bytes(&weights) {
        return Err(format_err("model.weights.h5 is not an HDF5 file"));
    }
    let file = File::from_bytes(weights).map_err(h5)?;
    Ok((config, file.group("layers").ok()))
}

/// Keras's `to_snake_case`: `_` before a capitalized word that follows any character, and
/// between a lower-case letter and a capital (`BatchNormalization` → `batch_normalization`,
/// `ReLU` → `re_lu`, `Conv2D` → `conv2d`); both passes as the regexes match, left to right
/// without overlaps.
fn snake_case(class: &str) -> String {
    let c: Vec<char> = class.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
    let mut a = Vec::with_capacity(c.len() + 4);
    let mut i = 0;
    while i < c.len() {
        let word = i + 2 < c.len() && c[i + 1].is_ascii_uppercase() && c[i + 2].is_ascii_lowercase();
        a.push(c[i]);
        i += 1;
        if word {
            a.push('_');
            a.push(c[i]);
            i += 1;
            while i < c.len() && c[i].is_ascii_lowercase() {
                a.push(c[i]);
                i += 1;
            }
        }
    }
    let mut out = String::with_capacity(a.len() + 4);
    let mut i = 0;
    while i < a.len() {
        out.push(a[i]);
        if i + 1 < a.len() && a[i].is_ascii_lowercase() && a[i + 1].is_ascii_uppercase() {
            out.push('_');
            out.push(a[i + 1]);
            i += 1;
        }
        i += 1;
    }
    out.to_ascii_lowercase()
}

/// Layer name → its key under `layers/` in `model.weights.h5`, for the model's layer list.
pub(super) fn storage_keys(layers: &[Json]) -> HashMap<String, String> {
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut keys = HashMap::new();
    for (k, layer) in layers.iter().enumerate() {
        let (class, name, _) = super::describe(layer, k);
        let base = snake_case(class);
        let key = match used.get_mut(&base) {
            Some(n) => {
                *n += 1;
                format!("{base}_{n}")
            }
            None => {
                used.insert(base.clone(), 0);
                base
            }
        };
        keys.insert(name, key);
    }
    keys
}

/// What each numbered variable of a layer is, by class.
fn variable_names(ctx: &Ctx) -> Option<Vec<&'static str>> {
    Some(match ctx.class {
        "Conv2D" | "Convolution2D" | "Dense" => vec!["kernel", "bias"],
        "DepthwiseConv2D" => vec!["depthwise_kernel", "bias"],
        "SeparableConv2D" => vec!["depthwise_kernel", "pointwise_kernel", "bias"],
        "BatchNormalization" => {
            let mut v = Vec::new();
            if ctx.bool("scale", true) {
                v.push("gamma");
            }
            if ctx.bool("center", true) {
                v.push("beta");
            }
            v.extend(["moving_mean", "moving_variance"]);
            v
        }
        "Normalization" => vec!["mean", "variance", "count"],
        _ => return None,
    })
}

/// A layer's weights by Keras name, from `layers/<key>/vars`.
pub(super) fn layer_weights(ctx: &Ctx, layers: Option<&Group>, key: Option<&str>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let group = layers.zip(key).and_then(|(g, k)| g.group(k).ok());
    let Some(vars) = group.and_then(|g| g.group("vars").ok()) else {
        return Ok(out);
    };
    let mut numbered: Vec<(usize, String)> = vars
        .datasets()
        .map_err(h5)?
        .into_iter()
        .map(|n| {
            n.parse::<usize>().map(|k| (k, n.clone())).map_err(|_| ctx.err(format!("variable `{n}` is not numbered")))
        })
        .collect::<Result<_>>()?;
    numbered.sort();
    if numbered.is_empty() {
        return Ok(out);
    }
    let names = variable_names(ctx).ok_or_else(|| ctx.unsupported("weights of a layer class actmax cannot name"))?;
    // A layer without a bias has one variable less: the names run in order, the bias last.
    if numbered.len() > names.len() || numbered.iter().enumerate().any(|(i, (k, _))| *k != i) {
        return Err(ctx.err(format!("{} variables for {names:?}", numbered.len())));
    }
    for ((_, key), name) in numbered.iter().zip(names) {
        out.insert(name.to_string(), read_weight(ctx, &vars, key)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_follows_keras() {
        for (class, key) in [
            ("Conv2D", "conv2d"),
            ("BatchNormalization", "batch_normalization"),
            ("ReLU", "re_lu"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("InputLayer", "input_layer"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("PReLU", "p_re_lu"),
            ("Dense", "dense"),
        ] {
            assert_eq!(snake_case(class), key);
        }
    }
}
