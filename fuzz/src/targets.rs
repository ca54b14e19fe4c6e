//! What is fuzzed: one [`Target`] per reader, each with the files it starts from and a
//! function that feeds it bytes the way `actmax` does (and then uses what it read, so a
//! file that loads but describes an inconsistent model is caught too).

use std::path::{Path, PathBuf};

use actmax::layers::loaders::{keras, npz, onnx, pth, safetensors};
use actmax::layers::{ChannelOrder, InputSpec, Model};
use actmax::tensor::{Tape, Tensor};

/// What a reader made of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Read (a model, a state dict or an image); the text tells such results apart.
    Loaded(String),
    /// Refused with a typed error; its message.
    Refused(String),
}

/// A reader under test.
pub struct Target {
    /// The name on the command line and of its `testdata/fuzz/<name>/` directory.
    pub name: &'static str,
    /// What it reads.
    pub what: &'static str,
    /// Seed files, relative to the repository: a path, or `dir/*suffix`.
    pub seeds: &'static [&'static str],
    /// Inputs are zip archives: half the mutations go inside an entry.
    pub zip: bool,
    /// Mends checksums after most mutations, so they do not stop every input at the door.
    pub fixup: Option<fn(&mut [u8])>,
    /// Feeds one input to the reader.
    pub run: fn(&[u8]) -> Outcome,
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "onnx",
        what: "ONNX models (protobuf graph, initializers, attributes)",
        seeds: &["testdata/*.onnx"],
        zip: false,
        fixup: None,
        run: |b| model(onnx::from_bytes(b, None)),
    },
    Target {
        name: "keras-h5",
        what: "Keras 2 HDF5 models (model_config JSON, model_weights)",
        seeds: &["testdata/keras_small_*.h5", "testdata/keras_apps/*.h5", "testdata/emotion_model.hdf5"],
        zip: false,
        fixup: None,
        run: |b| model(keras::from_bytes(b)),
    },
    Target {
        name: "keras3",
        what: "Keras 3 .keras archives (config.json + model.weights.h5 in a zip)",
        seeds: &["testdata/keras_apps/*.keras"],
        zip: true,
        fixup: None,
        run: |b| model(keras::from_bytes(b)),
    },
    Target {
        name: "pth-legacy",
        what: "PyTorch torch.save, legacy serialization (pickles + raw storages)",
        seeds: &["testdata/fuzz/seeds/*-legacy.pth"],
        zip: false,
        fixup: None,
        run: |b| weights(pth::read(b)),
    },
    Target {
        name: "pth-zip",
        what: "PyTorch torch.save, zip serialization (data.pkl + data/N)",
        seeds: &["testdata/fuzz/seeds/*-zip.pth"],
        zip: true,
        fixup: None,
        run: |b| weights(pth::read(b)),
    },
    Target {
        name: "safetensors",
        what: "safetensors (JSON header + tensor bytes)",
        seeds: &["testdata/fuzz/seeds/*.safetensors"],
        zip: false,
        fixup: None,
        run: |b| weights(safetensors::read(b)),
    },
    Target {
        name: "npz",
        what: "numpy .npz (zip of .npy, stored or deflated)",
        seeds: &["testdata/fuzz/seeds/*.npz"],
        zip: true,
        fixup: None,
        run: |b| weights(npz::read(b)),
    },
    Target {
        name: "png",
        what: "PNG images (seed images, `predict --image`)",
        seeds: &["testdata/fuzz/seeds/*.png"],
        zip: false,
        fixup: Some(crate::mutate::fix_png_crcs),
        run: image,
    },
    Target {
        name: "jpeg",
        what: "JPEG images",
        seeds: &["testdata/fuzz/seeds/*.jpg"],
        zip: false,
        fixup: None,
        run: image,
    },
    Target {
        name: "gif",
        what: "GIF images",
        seeds: &["testdata/fuzz/seeds/*.gif"],
        zip: false,
        fixup: None,
        run: image,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The seed files of `t` under the repository `root`, sorted.
pub fn seed_files(root: &Path, t: &Target) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for pattern in t.seeds {
        match pattern.split_once('*') {
            Some((prefix, suffix)) => {
                let (dir, head) = prefix.rsplit_once('/').unwrap_or((".", prefix));
                let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(head) && name.ends_with(suffix) {
                        files.push(e.path());
                    }
                }
            }
            None if root.join(pattern).is_file() => files.push(root.join(pattern)),
            None => {}
        }
    }
    files.sort();
    files
}

fn refused(e: impl std::fmt::Display) -> Outcome {
    Outcome::Refused(e.to_string())
}

/// A model that loaded is listed, counted, and — where small enough to be quick — run
/// forward and backward to its input, as `layers`, `predict` and `visualize` would.
fn model(m: actmax::layers::Result<Model>) -> Outcome {
    let m = match m {
        Ok(m) => m,
        Err(e) => return refused(e),
    };
    let layers = m.layers();
    let params = m.param_count();
    let [c, h, w] = m.input_spec().shape;
    if c * h * w > 1 << 20 || m.flops() > 5e7 {
        return Outcome::Loaded(format!("{} layers, {params} parameters, not run", layers.len()));
    }
    let mut tape = Tape::new();
    let x = tape.variable(Tensor::zeros(vec![1, c, h, w]));
    let run = m
        .forward(&mut tape, x, &[m.len() - 1])
        .map_err(|e| e.to_string())
        .and_then(|out| tape.mean_all(out[0]).map_err(|e| e.to_string()))
        .and_then(|loss| tape.backward(loss).map_err(|e| e.to_string()));
    match run {
        Ok(_) => Outcome::Loaded(format!("{} layers, {params} parameters, ran", layers.len())),
        Err(e) => Outcome::Loaded(format!("{} layers, {params} parameters, run refused: {e}", layers.len())),
    }
}

fn weights(sd: Result<actmax::layers::loaders::StateDict, actmax::layers::LoadError>) -> Outcome {
    match sd {
        Ok(sd) => {
            Outcome::Loaded(format!("{} tensors, {} values", sd.len(), sd.values().map(|t| t.len()).sum::<usize>()))
        }
        Err(e) => refused(e),
    }
}

/// An image is decoded and fitted to a model's input, as `--seed-image` does.
fn image(bytes: &[u8]) -> Outcome {
    match actmax::images::decode(bytes) {
        Ok(img) => {
            let (w, h) = (img.width(), img.height());
            if (w as u64) * (h as u64) <= 1 << 22 {
                let spec = InputSpec::raw([3, 32, 32], ChannelOrder::Rgb);
                let _ = actmax::images::from_image(&img, &spec);
            }
            Outcome::Loaded(format!("{w}×{h} {:?}", img.color()))
        }
        Err(e) => refused(e),
    }
}
