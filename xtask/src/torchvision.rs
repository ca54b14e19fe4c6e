//! `cargo xtask check-torchvision [--no-export] [MODEL ...]`: torchvision classifiers
//! exported with both PyTorch exporters (TorchScript at opset 13, dynamo at opset 18),
//! loaded by actmax and compared with onnxruntime on the same input; then a 20-step
//! visualization of class 1 on each model that loads. One table row per case.
//!
//! The export and onnxruntime run in `.cache/torchvision-venv` (pinned torch, torchvision,
//! onnx, onnxscript, onnxruntime); the models and references go to `.cache/torchvision/`.

use std::path::Path;
use std::time::Instant;

use actmax_layers::loaders::onnx;
use actmax_tensor::Tensor;

use crate::reference::{agreement, exported_cases};

/// The export venv: torchvision's wheel pins the torch it was built against.
pub(crate) const VENV_PACKAGES: &[&str] = &[
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "onnxscript==0.7.2",
    "torch==2.15.0",
    "torchvision==0.29.2",
];

/// Reads a little-endian f32 file written by the export script.
pub(crate) fn read_f32(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// One case of `index.json`, loaded and compared: (max |Δ| / max |ref|, top-1 equal).
pub(crate) fn compare(dir: &Path, entry: &serde_json::Value) -> Result<(actmax_layers::Model, f64, bool), String> {
    let file = |key: &str, ext: &str| -> Result<std::path::PathBuf, String> {
        let stem = entry["onnx"].as_str().ok_or("index entry without onnx")?.trim_end_matches(".onnx");
        Ok(dir.join(format!("{stem}{}", if key == "onnx" { ".onnx".into() } else { format!(".{ext}.bin") })))
    };
    let model = onnx::load(&file("onnx", "")?).map_err(|e| e.to_string())?;
    let shape: Vec<usize> = entry["input_shape"]
        .as_array()
        .ok_or("no input_shape")?
        .iter()
        .map(|v| v.as_u64().unwrap_or(0) as usize)
        .collect();
    let x = Tensor::from_shape_vec(shape, read_f32(&file("", "input")?)?).map_err(|e| e.to_string())?;
    let want = read_f32(&file("", "logits")?)?;
    let got = model.predict(&x).map_err(|e| e.to_string())?;
    let (err, top1) = agreement(got.as_slice().unwrap_or_default(), &want)?;
    Ok((model, err, top1))
}

/// `cargo xtask check-torchvision`.
pub fn run(args: crate::reference::ExportArgs) -> Result<(), String> {
    let dir = crate::fetch::cache().join("torchvision");
    let (index, models) = exported_cases(&args, ("torchvision-venv", VENV_PACKAGES), "torchvision_models.py", &dir)?;
    println!("| model | exporter | opset | loads | max rel. logit error | top-1 equal | 20-step visualize |");
    println!("|---|---|---:|---|---:|---|---|");
    let (mut ok, mut total) = (0, 0);
    for e in &index {
        let (name, exporter, opset) =
            (e["model"].as_str().unwrap_or("?"), e["exporter"].as_str().unwrap_or("?"), &e["opset"]);
        if !models.is_empty() && !models.iter().any(|m| *m == name) {
            continue;
        }
        total += 1;
        if let Some(err) = e["error"].as_str() {
            println!("| {name} | {exporter} | {opset} | export failed: {err} | | | |");
            continue;
        }
        match compare(&dir, e) {
            Err(why) => println!("| {name} | {exporter} | {opset} | no: {} | | | |", why.replace('|', "/")),
            Ok((model, err, top1)) => {
                let t = Instant::now();
                let opts = actmax::Options { max_iter: 20, ..actmax::Options::default() };
                let vis = match actmax::visualize_activation(&model, -1, Some(vec![1]), opts) {
                    Ok(_) => format!("ran, {:.1} s", t.elapsed().as_secs_f64()),
                    Err(why) => format!("failed: {why}"),
                };
                if err <= 1e-4 && top1 && vis.starts_with("ran") {
                    ok += 1;
                }
                println!("| {name} | {exporter} | {opset} | yes | {err:.1e} | {top1} | {vis} |");
            }
        }
    }
    println!("\n{ok} of {total} cases load, match onnxruntime within 1e-4 relative and visualize.");
    Ok(())
}
