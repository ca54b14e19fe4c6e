//! `cargo xtask bench-peer [--runs N] [--rounds R] [--json FILE]`: actmax against its peers on the same
//! CPU, in one sitting — onnxruntime (inference only: forward passes) and PyTorch
//! (forward, and a step: forward + backward to the input + Adam on the image, weights
//! frozen as a visualization has them), on EfficientNet-Lite0 at batch 1 and 8 and on
//! VGG16 up to block5_conv3. All three run the same network on the same tensor: actmax's
//! Lite0 without the input normalization its file's metadata adds (no peer graph has it).
//! `ACTMAX_MAX_ISA=avx2` measures the CPU as one without AVX-512: PyTorch is capped alike,
//! onnxruntime cannot be.
//!
//! The peers run from `.cache/peer-venv`, which this task makes with pip when it is
//! missing (PyPI's torch wheel is large: its CUDA libraries come along, unused). A peer
//! that cannot be installed or run is skipped with the reason; actmax's rows still print.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use actmax_layers::loaders::onnx;
use actmax_layers::{zoo, InputSpec, Model};
use actmax_tensor::gemm::direct::{Isa, MAX_ISA_VAR};
use actmax_tensor::{AdamConfig, AdamState, Tape, Tensor};

use crate::workspace_root;

/// The peers' pinned packages.
const PEER_PACKAGES: &[&str] = &["numpy==2.4.6", "onnxruntime==1.32.0", "torch==2.15.0"];

/// `cargo xtask bench-peer`: actmax vs onnxruntime and PyTorch, one table of ratios.
#[derive(clap::Args)]
pub struct Options {
    /// Timed runs per case (after three warm-ups).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Rounds of every case, alternating the engines; each row keeps its best round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Write the rows as JSON objects {case, actmax_ms, peer, peer_ms} here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Median and minimum wall time of `runs` calls, in ms, after three warm-ups.
fn time_ms(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[0])
}

/// One case of actmax: a model, the layer it stops at, and how the loss reads it.
struct Case {
    name: &'static str,
    model: Model,
    layer: usize,
    size: usize,
}

fn image(batch: usize, size: usize) -> Tensor {
    Tensor::from_shape_fn(vec![batch, 3, size, size], |i| ((i[0] * 11 + i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32)
}

/// actmax's forward: the layer's value, no gradient wanted.
fn forward(case: &Case, batch: usize, runs: usize) -> (f64, f64) {
    let x0 = image(batch, case.size);
    let mut tape = Tape::new();
    time_ms(runs, || {
        tape.reset();
        let x = tape.constant(x0.clone());
        case.model.forward(&mut tape, x, &[case.layer]).expect("forward");
    })
}

/// actmax's step: forward, backward to the image, Adam on the image (what a visualization
/// does per iteration, without its augmentations).
fn step(case: &Case, batch: usize, runs: usize) -> (f64, f64) {
    let mut img = image(batch, case.size);
    let mut adam = AdamState::new(img.shape());
    let cfg = AdamConfig::new(0.05);
    let mut tape = Tape::new();
    time_ms(runs, || {
        tape.reset();
        let x = tape.variable(img.clone());
        let out = case.model.forward(&mut tape, x, &[case.layer]).expect("forward")[0];
        // Channel (or class) 1 of every image, maximized: the loss is its negative mean.
        let rank = tape.shape(out).expect("shape").len();
        let mut ranges: Vec<(usize, usize)> = tape.shape(out).expect("shape").iter().map(|&d| (0, d)).collect();
        ranges[1] = (1, 2);
        let ch = tape.slice(out, &ranges[..rank]).expect("slice");
        let mean = tape.mean_all(ch).expect("mean");
        let loss = tape.neg(mean).expect("neg");
        let g = tape.backward(loss).expect("backward");
        adam.update(&mut img, g.get(x).expect("input gradient"), &cfg).expect("adam");
    })
}

/// `.cache/peer-venv/bin/python` with the peers installed, made when missing (torch is
/// a large download).
pub(crate) fn peer_python() -> Result<PathBuf, String> {
    crate::reference::pinned_venv("peer-venv", PEER_PACKAGES)
}

fn run_peer(python: &Path, script: &str, args: &[String], env: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let out = Command::new(python)
        .arg(workspace_root().join("xtask/python").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{script} failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    let last = out.stdout.split(|&b| b == b'\n').rfind(|l| !l.trim_ascii().is_empty()).unwrap_or_default();
    serde_json::from_slice(last).map_err(|e| format!("{script} output: {e}"))
}

/// Folds a peer's new round into the best so far: each row keeps its smallest `value`
/// (rows matched by `key`). A failed round keeps what earlier rounds had.
fn keep_best(
    best: Result<serde_json::Value, String>,
    new: Result<serde_json::Value, String>,
    key: &str,
    value: &str,
) -> Result<serde_json::Value, String> {
    let (mut best, new) = match (best, new) {
        (Ok(b), Ok(n)) => (b, n),
        (Err(_), n) => return n,
        (b, Err(_)) => return b,
    };
    if let (Some(rows), Some(fresh)) = (best["rows"].as_array_mut(), new["rows"].as_array()) {
        for r in rows.iter_mut() {
            let better = fresh.iter().find(|f| f[key] == r[key]).and_then(|f| f[value].as_f64());
            if let (Some(b), Some(old)) = (better, r[value].as_f64()) {
                r[value] = serde_json::json!(b.min(old));
            }
        }
    }
    Ok(best)
}

/// One row of the table: a case, actmax's median, and a peer's median.
struct Row {
    case: String,
    actmax_ms: f64,
    peer: &'static str,
    peer_ms: Option<f64>,
}

/// `cargo xtask bench-peer`.
pub fn run(o: Options) -> Result<(), String> {
    if o.rounds == 0 {
        return Err("--rounds must be >= 1".into());
    }
    let root = workspace_root();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A cap on actmax's kernels (to measure the CPU as one without AVX-512) caps
    // PyTorch's alike; onnxruntime's MLAS has no run-time switch and keeps its widest.
    // (A cap at or above what the CPU has changes nothing, for either.)
    Isa::cap_from_env()?;
    let cap = Some(Isa::detect()).filter(|&c| c != Isa::hardware());
    let torch_cap: Vec<(&str, &str)> = match cap {
        Some(Isa::Avx2) => vec![("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2")],
        Some(Isa::Generic) => vec![("ATEN_CPU_CAPABILITY", "default"), ("ONEDNN_MAX_CPU_ISA", "SSE41")],
        _ => Vec::new(),
    };
    let mut model =
        onnx::load(&root.join("models/efficientnet_lite0.onnx")).map_err(|e| e.to_string())?.fold_batch_norms();
    // The same network on the same tensor as the peers: the file's input normalization
    // (metadata actmax reads, a pass over the image) is in neither peer's graph.
    let network_only = InputSpec { mean: vec![0.0], std: vec![1.0], ..model.input_spec().clone() };
    model.set_input_spec(network_only).map_err(|e| e.to_string())?;
    let lite0 = Case { name: "lite0", layer: model.len() - 1, model, size: 224 };
    let mut vgg = zoo::vgg16_features(224).map_err(|e| e.to_string())?;
    zoo::init_he_uniform(&mut vgg, 1);
    let vgg_layer = vgg.find("block5_conv3").map_err(|e| e.to_string())?;
    let vgg = Case { name: "vgg16_block5_conv3", model: vgg, layer: vgg_layer, size: 224 };

    // The machine is shared and noisy: each round times the peers, then actmax, and every
    // case keeps its best round's median, on both sides.
    let python = peer_python();
    let (mut ort, mut torch): (Result<serde_json::Value, String>, Result<serde_json::Value, String>) =
        (Err("not run".into()), Err("not run".into()));
    let mut ours: Vec<(String, f64)> = Vec::new();
    let run_peers = |ort: &mut Result<serde_json::Value, String>, torch: &mut Result<serde_json::Value, String>| {
        if let Ok(py) = &python {
            let model = root.join("models/efficientnet_lite0.onnx").display().to_string();
            let r = run_peer(py, "ort_bench.py", &[model, threads.to_string(), o.runs.to_string(), "1,8".into()], &[]);
            *ort = keep_best(std::mem::replace(ort, Err(String::new())), r, "batch", "ms_median");
            let r = run_peer(py, "torch_bench.py", &[threads.to_string(), o.runs.to_string()], &torch_cap);
            *torch = keep_best(std::mem::replace(torch, Err(String::new())), r, "case", "ms");
        }
    };
    for round in 0..o.rounds {
        eprintln!("bench-peer: round {} of {}", round + 1, o.rounds);
        // Whoever runs right after PyTorch's process exits (it frees gigabytes) can run
        // slower for seconds on a VM: every other round actmax goes first, so each side
        // keeps a best round in either place.
        let peers_first = round % 2 == 0;
        if peers_first {
            run_peers(&mut ort, &mut torch);
        }
        // actmax inside the pool: its parallel regions start on a worker, not from outside.
        let rows = rayon::scope(|_| {
            let mut rows: Vec<(String, f64)> = Vec::new();
            let cases: [(&Case, &[(&str, usize)]); 2] = [
                (&lite0, &[("forward", 1), ("forward", 8), ("step", 1), ("step", 8)]),
                (&vgg, &[("forward", 1), ("step", 1)]),
            ];
            for (case, kinds) in cases {
                for &(kind, batch) in kinds {
                    let runs = if case.name == "lite0" { o.runs / batch.min(4) } else { o.runs / 6 }.max(3);
                    let (ms, _) = if kind == "forward" { forward(case, batch, runs) } else { step(case, batch, runs) };
                    rows.push((format!("{} {kind} b{batch}", case.name), ms));
                }
            }
            rows
        });
        if !peers_first {
            run_peers(&mut ort, &mut torch);
        }
        if ours.is_empty() {
            ours = rows;
        } else {
            ours.iter_mut().zip(rows).for_each(|(a, b)| a.1 = a.1.min(b.1));
        }
    }
    if let Err(e) = &python {
        (ort, torch) = (Err(e.clone()), Err(e.clone()));
    }

    let ort_ms = |batch: usize| -> Option<f64> {
        ort.as_ref().ok()?["rows"].as_array()?.iter().find(|r| r["batch"] == batch)?["ms_median"].as_f64()
    };
    let torch_ms = |case: &str| -> Option<f64> {
        torch.as_ref().ok()?["rows"].as_array()?.iter().find(|r| r["case"] == case)?["ms"].as_f64()
    };
    let mut rows = Vec::new();
    for (case, ms) in &ours {
        if case.starts_with("lite0 forward") {
            let batch = if case.ends_with("b8") { 8 } else { 1 };
            rows.push(Row { case: case.clone(), actmax_ms: *ms, peer: "onnxruntime", peer_ms: ort_ms(batch) });
        }
        rows.push(Row { case: case.clone(), actmax_ms: *ms, peer: "pytorch", peer_ms: torch_ms(case) });
    }

    let features = crate::bench::cpu_features().join("+");
    println!(
        "actmax vs peers, {threads} threads, CPU features {features}; per case the best of {} rounds' medians",
        o.rounds
    );
    if let Some(c) = cap {
        println!(
            "  capped by {MAX_ISA_VAR}={}: actmax's kernels and PyTorch's (ATEN_CPU_CAPABILITY, \
             ONEDNN_MAX_CPU_ISA) at {}; onnxruntime cannot be capped and runs its widest",
            c.name(),
            c.name()
        );
    }
    if let Ok(t) = &torch {
        println!(
            "  pytorch {} (cpu capability {}), best of NCHW / channels-last, weights frozen",
            t["torch"].as_str().unwrap_or("?"),
            t["capability"].as_str().unwrap_or("?")
        );
    }
    if let Ok(v) = &ort {
        println!(
            "  onnxruntime {} (all graph optimizations; the ONNX file is batch 1, so b8 = 8 runs); \
             every side runs the network alone, actmax's input normalization off",
            v["onnxruntime"].as_str().unwrap_or("?")
        );
    }
    for (name, r) in [("onnxruntime", &ort), ("pytorch", &torch)] {
        if let Err(e) = r {
            println!("  {name}: skipped — {}", e.lines().next().unwrap_or(""));
        }
    }
    println!("{:<28} {:>10} {:>12} {:>10} {:>16}", "case", "actmax", "peer", "peer ms", "actmax / peer");
    for r in &rows {
        let (p, ratio) = match r.peer_ms {
            Some(p) => (format!("{p:.2}"), format!("{:.2}", r.actmax_ms / p)),
            None => ("—".into(), "—".into()),
        };
        println!("{:<28} {:>10.2} {:>12} {:>10} {:>16}", r.case, r.actmax_ms, r.peer, p, ratio);
    }
    if let Some(path) = &o.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(
                |r| serde_json::json!({"case": r.case, "actmax_ms": r.actmax_ms, "peer": r.peer, "peer_ms": r.peer_ms}),
            )
            .collect();
        std::fs::write(path, serde_json::to_string_pretty(&v).expect("json"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
