//! Forward wall time per layer kind of folded EfficientNet-Lite0 (no fusion: each layer on
//! its own), or of VGG16's features with `vgg16`, at a batch given as the first argument
//! (default 1), inside the rayon pool; `onnx` reads the shipped ONNX Lite0 instead of the
//! zoo's, and the whole-model (fused) forward time is printed too; `nodes` also prints every
//! node's time in model order; `steps` prints each step of the fused forward as the model
//! runs it.
use std::collections::BTreeMap;
use std::time::Instant;

use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};

fn main() {
    let batch: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let vgg = std::env::args().any(|a| a == "vgg16");
    let onnx = std::env::args().any(|a| a == "onnx");
    let model = if onnx {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/efficientnet_lite0.onnx");
        actmax_layers::loaders::onnx::load(std::path::Path::new(path)).unwrap().fold_batch_norms()
    } else if vgg {
        let mut m = zoo::vgg16_features(224).unwrap();
        zoo::init_he_uniform(&mut m, 1);
        m
    } else {
        zoo::load("efficientnet_lite0", None).unwrap().fold_batch_norms()
    };
    let image = Tensor::from_shape_fn(vec![batch, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32);
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut per_node = vec![0.0; model.nodes().len()];
    let reps = if vgg { 3 } else { 20 };
    rayon::scope(|_| {
        let mut tape = Tape::new();
        for rep in 0..reps + 3 {
            tape.reset();
            let x = tape.constant(image.clone());
            let mut vals = vec![model.input_spec().preprocess(&mut tape, x).unwrap()];
            for (i, node) in model.nodes().iter().enumerate().skip(1) {
                let ins: Vec<_> = node.inputs.iter().map(|&j| vals[j]).collect();
                let t0 = Instant::now();
                vals.push(node.layer.forward(&mut tape, &ins).unwrap());
                if rep >= 3 {
                    let shape = tape.shape(*vals.last().unwrap()).unwrap();
                    let key = format!("{} {:?}", node.layer.type_name(), &shape[1..]);
                    let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
                    *totals.entry(key).or_default() += ms;
                    per_node[i] += ms;
                }
            }
        }
    });
    let whole = rayon::scope(|_| {
        let mut tape = Tape::new();
        let mut times: Vec<f64> = (0..reps + 3)
            .map(|_| {
                tape.reset();
                let x = tape.constant(image.clone());
                let t0 = Instant::now();
                model.forward(&mut tape, x, &[model.len() - 1]).unwrap();
                t0.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        (times[0], times[times.len() / 2])
    });
    println!("whole model forward (fused), median {:.2} ms, best of {}: {:.2} ms", whole.1, reps + 3, whole.0);
    println!("forward FLOPs (convs and dense): {:.3} G per image", model.flops() / 1e9);
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in &totals {
        *by_kind.entry(k.split(' ').next().unwrap().to_string()).or_default() += v;
    }
    let total: f64 = by_kind.values().sum();
    println!("batch {batch}: {total:.2} ms per forward ({:.2} per image)", total / batch as f64);
    for (k, v) in &by_kind {
        println!("  {k:<20} {v:7.2} ms");
    }
    if std::env::args().any(|a| a == "nodes") {
        for (i, node) in model.nodes().iter().enumerate().skip(1) {
            let gflops = node.layer.flops(&node.output_shape) * batch as f64 / per_node[i] * 1e-6;
            let rate = if gflops > 0.0 { format!(" {gflops:6.1} GFLOP/s") } else { String::new() };
            let (kind, name, shape) = (node.layer.type_name(), &node.name, &node.output_shape[1..]);
            println!("node {i:3} {kind:<16} {:?} {:.3} ms{rate} {name} {shape:?}", node.inputs, per_node[i]);
        }
    }
    if std::env::args().any(|a| a == "steps") {
        print_steps(&model, &image);
    }
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (k, v) in rows.iter().take(25) {
        println!("    {k:<40} {v:7.3} ms");
    }
}

/// Each step of the fused forward as the model runs it (`Model::forward_timed`), best of
/// 30 forwards: a fused conv and its activation are one step.
fn print_steps(model: &actmax_layers::Model, image: &Tensor) {
    let mut best: Vec<(std::ops::Range<usize>, f64)> = Vec::new();
    // Per forward: its whole time and the part no step accounts for (between steps).
    let (mut whole, mut between) = (Vec::new(), Vec::new());
    rayon::scope(|_| {
        let mut tape = Tape::new();
        for _ in 0..30 {
            tape.reset();
            let x = tape.constant(image.clone());
            let t0 = Instant::now();
            let (_, steps) = model.forward_timed(&mut tape, x, &[model.len() - 1]).unwrap();
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            whole.push(ms);
            between.push(ms - steps.iter().map(|s| s.time.as_secs_f64() * 1e3).sum::<f64>());
            if best.is_empty() {
                best = steps.iter().map(|s| (s.nodes.clone(), f64::INFINITY)).collect();
            }
            for (b, s) in best.iter_mut().zip(&steps) {
                b.1 = b.1.min(s.time.as_secs_f64() * 1e3);
            }
        }
    });
    let total: f64 = best.iter().map(|b| b.1).sum();
    println!("steps of the fused forward, best of 30 each: {total:.3} ms in all");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "whole timed forward: median {:.3} ms, of which {:.3} ms between steps (median)",
        median(&mut whole),
        median(&mut between)
    );
    for (nodes, ms) in best {
        let node = &model.nodes()[nodes.start];
        let flops = node.layer.flops(&node.output_shape) * image.shape()[0] as f64;
        let rate = if flops > 0.0 { format!(" {:6.1} GFLOP/s", flops / ms * 1e-6) } else { String::new() };
        println!(
            "step {nodes:?} {:<16} {ms:.3} ms{rate} {} {:?}",
            node.layer.type_name(),
            node.name,
            &node.output_shape[1..]
        );
    }
}
