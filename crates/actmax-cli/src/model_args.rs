//! The model options every command shares: which model, and — for imported models whose
//! files do not say — how an image becomes its input.

use actmax_layers::{zoo, Model};

/// `--model`, `--arch` and the input preprocessing overrides.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A zoo name (efficientnet_lite0, vgg16, mnist_cnn, apple_counter), a whole model
    /// (.onnx, Keras .h5) or a weights file for a zoo architecture.
    #[arg(long, default_value = "efficientnet_lite0")]
    pub model: String,
    /// Zoo architecture of a weights file (guessed from its name otherwise).
    #[arg(long)]
    pub arch: Option<String>,
    /// Pixel range LOW,HIGH of the images the model takes (e.g. 0,255 for fer's model).
    #[arg(long, allow_hyphen_values = true)]
    pub pixel_range: Option<String>,
    /// Mean subtracted from the pixels, one value or one per channel (e.g. 127.5).
    #[arg(long, allow_hyphen_values = true)]
    pub mean: Option<String>,
    /// Divisor after the mean, one value or one per channel (e.g. 127.5).
    #[arg(long)]
    pub std: Option<String>,
}

fn numbers(flag: &str, s: &str) -> crate::error::Result<Vec<f32>> {
    s.split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|_| format!("{flag}: `{v}` is not a number").into()))
        .collect::<crate::error::Result<Vec<f32>>>()
        .and_then(|v| if v.iter().all(|x| x.is_finite()) { Ok(v) } else { Err(format!("{flag}: not finite").into()) })
}

/// `LOW,HIGH` with LOW < HIGH, both finite (`--input-range`, `--pixel-range`).
pub fn parse_range(flag: &str, s: &str) -> crate::error::Result<(f32, f32)> {
    match numbers(flag, s)?[..] {
        [lo, hi] if lo < hi => Ok((lo, hi)),
        _ => Err(format!("{flag} wants LOW,HIGH (e.g. 0,255); LOW must be below HIGH, got `{s}`").into()),
    }
}

/// Where a zoo model's weights come from: a file found where an installed binary looks
/// ($ACTMAX_MODELS, beside the binary), else the copy embedded in the binary, else the
/// source tree it was built from (a checkout without the embedded models).
enum Source {
    File(std::path::PathBuf),
    Embedded(&'static [u8]),
    Zoo,
}

fn source(model: &str) -> Source {
    if !zoo::ZOO.contains(&model) || std::path::Path::new(model).exists() {
        return Source::Zoo;
    }
    if let Some(file) = zoo::weights_in(&zoo::installed_model_dirs(), model) {
        return Source::File(file);
    }
    crate::embedded::weights(model).map_or(Source::Zoo, Source::Embedded)
}

/// A model by name, by [`Source`]'s rule.
pub fn load_model(model: &str, arch: Option<&str>) -> crate::error::Result<Model> {
    match source(model) {
        Source::File(f) => Ok(zoo::load(f.to_str().ok_or("non-UTF-8 model path")?, Some(model))?),
        Source::Embedded(bytes) => Ok(zoo::from_safetensors_bytes(model, bytes)?),
        Source::Zoo => Ok(zoo::load(model, arch)?),
    }
}

impl ModelArgs {
    /// The model's name and the sha256 of the weights it loads (for atlas manifests).
    pub fn id(&self) -> crate::error::Result<actmax_atlas::ModelId> {
        let name = self.model.clone();
        match source(&self.model) {
            Source::File(f) => Ok(actmax_atlas::ModelId { name, sha256: actmax_atlas::sha256_file(&f)? }),
            Source::Embedded(bytes) => Ok(actmax_atlas::ModelId { name, sha256: actmax_atlas::sha256_hex(bytes) }),
            Source::Zoo => Ok(actmax_atlas::ModelId::of(&self.model)?),
        }
    }

    /// Loads the model and applies the preprocessing overrides.
    pub fn load(&self) -> crate::error::Result<Model> {
        let mut model = load_model(&self.model, self.arch.as_deref())?;
        if self.pixel_range.is_none() && self.mean.is_none() && self.std.is_none() {
            return Ok(model);
        }
        let mut spec = model.input_spec().clone();
        if let Some(r) = &self.pixel_range {
            spec.range = parse_range("--pixel-range", r)?;
        }
        if let Some(m) = &self.mean {
            spec.mean = numbers("--mean", m)?;
        }
        if let Some(s) = &self.std {
            spec.std = numbers("--std", s)?;
        }
        model.set_input_spec(spec)?;
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the embedded models, a zoo name never resolves into the source tree the binary
    /// was built from: a file where an installed binary looks, else the embedded copy.
    #[test]
    fn zoo_names_resolve_without_the_build_tree() {
        let build_tree = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        assert!(zoo::installed_model_dirs().iter().all(|d| !d.starts_with(&build_tree)));
        for name in ["efficientnet_lite0", "mnist_cnn", "mnist_mlp", "apple_counter"] {
            match source(name) {
                Source::File(f) => assert!(!f.starts_with(&build_tree), "{name}: {}", f.display()),
                Source::Embedded(bytes) => {
                    let on_disk = std::fs::read(build_tree.join(format!("{name}.safetensors"))).unwrap();
                    assert!(bytes == on_disk.as_slice(), "{name}: the embedded copy is the shipped file");
                }
                Source::Zoo => assert!(crate::embedded::MODELS.is_empty(), "{name} came from the build tree"),
            }
        }
        assert!(load_model("mnist_cnn", None).is_ok());
    }
}
