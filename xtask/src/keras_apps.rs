//! `cargo xtask check-keras-apps [--no-export] [NAME ...]`: Keras applications (MobileNet,
//! MobileNetV2, ResNet50, EfficientNetB0, DenseNet121) with seeded random weights, saved
//! by tf-keras as Keras 2 `.h5` and by Keras 3 as `.keras`, loaded by actmax and compared
//! with TensorFlow's outputs on the same input. One table row per case.
//!
//! TensorFlow runs in `.cache/keras-venv` (pinned tensorflow-cpu, tf-keras, keras); the
//! files and references go to `.cache/keras-apps/`.

use std::path::Path;

use actmax_layers::loaders::keras;
use actmax_tensor::Tensor;

use crate::reference::{agreement, exported_cases};
use crate::torchvision::read_f32;

/// The TensorFlow venv (h5py as tensorflow-cpu 2.21 resolves it).
const VENV_PACKAGES: &[&str] =
    &["numpy==2.4.6", "h5py==3.14.0", "tensorflow-cpu==2.21.0", "tf-keras==2.21.0", "keras==3.15.1"];

/// One case: (max |Δ| / max |ref|, top-1 equal).
fn compare(dir: &Path, entry: &serde_json::Value) -> Result<(f64, bool), String> {
    let file = entry["file"].as_str().ok_or("index entry without file")?;
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let model = keras::load(&dir.join(file)).map_err(|e| e.to_string())?;
    let shape: Vec<usize> = entry["input_shape"]
        .as_array()
        .ok_or("no input_shape")?
        .iter()
        .map(|v| v.as_u64().unwrap_or(0) as usize)
        .collect();
    let nhwc =
        Tensor::from_shape_vec(shape, read_f32(&dir.join(format!("{stem}.input.bin")))?).map_err(|e| e.to_string())?;
    let x = nhwc.permuted_axes(vec![0, 3, 1, 2]).as_standard_layout().into_owned();
    let want = read_f32(&dir.join(format!("{stem}.output.bin")))?;
    let got = model.predict(&x).map_err(|e| e.to_string())?;
    agreement(got.as_slice().unwrap_or_default(), &want)
}

/// `cargo xtask check-keras-apps`.
pub fn run(args: crate::reference::ExportArgs) -> Result<(), String> {
    let dir = crate::fetch::cache().join("keras-apps");
    let (index, _) = exported_cases(&args, ("keras-venv", VENV_PACKAGES), "keras_apps.py", &dir)?;
    println!("| model | format | loads | max rel. output error | top-1 equal |");
    println!("|---|---|---|---:|---|");
    let (mut ok, mut total) = (0, 0);
    for e in &index {
        let (name, format) = (e["model"].as_str().unwrap_or("?"), e["format"].as_str().unwrap_or("?"));
        total += 1;
        if let Some(err) = e["error"].as_str() {
            println!("| {name} | {format} | save failed: {err} | | |");
            continue;
        }
        match compare(&dir, e) {
            Err(why) => println!("| {name} | {format} | no: {} | | |", why.replace('|', "/")),
            Ok((err, top1)) => {
                ok += usize::from(err <= 1e-4 && top1);
                println!("| {name} | {format} | yes | {err:.1e} | {top1} |");
            }
        }
    }
    println!("\n{ok} of {total} cases load and match TensorFlow within 1e-4 relative.");
    Ok(())
}
