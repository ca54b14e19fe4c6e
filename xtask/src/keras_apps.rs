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

use crate::reference::pinned_venv;
use crate::torchvision::read_f32;
use crate::workspace_root;

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
    if got.len() != want.len() {
        return Err(format!("{} outputs, TensorFlow has {}", got.len(), want.len()));
    }
    let scale = want.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    let err = got.iter().zip(&want).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale;
    let argmax =
        |v: &[f32]| v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
    Ok((err, argmax(got.as_slice().unwrap_or_default()) == argmax(&want)))
}

/// `cargo xtask check-keras-apps`.
pub fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let dir = crate::fetch::cache().join("keras-apps");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if !args.iter().any(|a| a == "--no-export") {
        let python = pinned_venv("keras-venv", VENV_PACKAGES)?;
        let status = std::process::Command::new(python)
            .arg(root.join("xtask/python/keras_apps.py"))
            .arg("full")
            .arg(&dir)
            .args(&names)
            .current_dir(&root)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("keras_apps.py failed".into());
        }
    }
    let index: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("index.json")).map_err(|e| format!("{}: {e}", dir.display()))?,
    )
    .map_err(|e| e.to_string())?;
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
