//! `cargo xtask bench-peer [RUNS]`: EfficientNet-Lite0 forward at batch 1, actmax against
//! onnxruntime on the same ONNX file, in one run, both on the machine's cores (2 here).
//! onnxruntime is inference-only, so this compares forward passes; a step of activation
//! maximization adds the backward pass to the input (see `cargo xtask bench effnet`).

use std::process::Command;
use std::time::Instant;

use actmax_layers::loaders::onnx;
use actmax_tensor::{Tape, Tensor};

use crate::workspace_root;

fn median_ms(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

/// `cargo xtask bench-peer`.
pub fn run(args: &[String]) -> Result<(), String> {
    let runs: usize = args.first().map(|a| a.parse().map_err(|_| "RUNS must be a number")).transpose()?.unwrap_or(30);
    let root = workspace_root();
    let path = root.join("models/efficientnet_lite0.onnx");
    let model = onnx::load(&path).map_err(|e| e.to_string())?;
    let folded = model.fold_batch_norms();
    let x = Tensor::from_shape_fn(vec![1, 3, 224, 224], |ix| ((ix[2] * 7 + ix[3] * 3 + ix[1]) % 256) as f32);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let forward = |m: &actmax_layers::Model| {
        let mut tape = Tape::new();
        let xv = tape.constant(x.clone());
        let _ = m.forward(&mut tape, xv, &[m.len() - 1]).expect("forward");
    };
    let (ours, ours_min) = median_ms(runs, || forward(&model));
    let (ours_folded, folded_min) = median_ms(runs, || forward(&folded));
    let python = crate::fetch::cache().join("venv/bin/python");
    let out = Command::new(&python)
        .arg(root.join("xtask/python/ort_bench.py"))
        .arg(&path)
        .arg(threads.to_string())
        .arg(runs.to_string())
        .output()
        .map_err(|e| format!("{}: {e} (make the venv with `cargo xtask reference-onnx`)", python.display()))?;
    if !out.status.success() {
        return Err(format!("onnxruntime timing failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let peer: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).map_err(|e| format!("onnxruntime output: {e}"))?;
    let ort = peer["ms_median"].as_f64().ok_or("no ms_median")?;
    let ort_min = peer["ms_min"].as_f64().ok_or("no ms_min")?;
    println!("EfficientNet-Lite0 forward, batch 1, 224×224, {threads} threads, median (min) of {runs} runs:");
    println!("  actmax, the ONNX file as loaded (BN unfused)  {ours:7.2} ms ({ours_min:.2})");
    println!("  actmax, BN folded (what a visualization runs) {ours_folded:7.2} ms ({folded_min:.2})");
    let version = peer["onnxruntime"].as_str().unwrap_or("?");
    println!("  onnxruntime {version} (all graph optimizations)  {ort:7.2} ms ({ort_min:.2})");
    println!("  ratio onnxruntime / actmax (folded): {:.2} (> 1: actmax is faster)", ort / ours_folded);
    Ok(())
}
