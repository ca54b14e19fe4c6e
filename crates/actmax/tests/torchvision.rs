//! Small-width torchvision architectures (ConvNeXt, ShuffleNetV2, SqueezeNet) exported by
//! both PyTorch exporters — TorchScript at opset 13, dynamo at opset 18 — with seeded
//! random weights, checked against onnxruntime's logits (`testdata/torchvision/`, made
//! by `xtask/python/torchvision_models.py tiny`). They cover LayerNormalization and its
//! decomposed form, Erf GELUs, MatMul over NHWC, Slice/Split channel splits, channel
//! shuffles, ceil-mode pooling and Resize (nearest, bilinear with and without
//! align_corners, by scale and to a size).

use std::path::PathBuf;

use actmax::{visualize_activation, Options};
use actmax_layers::loaders::onnx;
use actmax_layers::Model;
use actmax_tensor::{Tape, Tensor};
use serde_json::Value;

mod fixtures;

use fixtures::f32s;

fn dir() -> PathBuf {
    fixtures::dir("torchvision")
}

fn cases() -> Vec<Value> {
    fixtures::cases(&dir())
}

/// The model of a case, and its input and onnxruntime's logits.
fn load(case: &Value) -> (Model, Tensor, Vec<f32>) {
    let stem = case["onnx"].as_str().unwrap().trim_end_matches(".onnx");
    let model = onnx::load(&dir().join(case["onnx"].as_str().unwrap())).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let shape: Vec<usize> =
        case["input_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let x = Tensor::from_shape_vec(shape, f32s(&dir().join(format!("{stem}.input.bin")))).unwrap();
    (model, x, f32s(&dir().join(format!("{stem}.logits.bin"))))
}

#[test]
fn every_case_matches_onnxruntime() {
    let cases = cases();
    assert_eq!(cases.len(), 8, "four architectures × two exporters");
    for case in &cases {
        assert!(case.get("error").is_none(), "{case}");
        let (model, x, want) = load(case);
        let got = model.predict(&x).unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert_eq!(got.len(), want.len());
        assert!(worst <= 1e-4 * scale, "{}: max |Δ| {worst} of {scale}", case["onnx"]);
    }
}

#[test]
fn the_gradient_to_the_input_matches_finite_differences() {
    // Through LayerNorm, GELU, channel splits and shuffles: d(logit 3)/dx at a few pixels.
    for case in cases() {
        let (model, x, _) = load(&case);
        let logit = |x: &Tensor| model.predict(x).unwrap()[[0, 3]] as f64;
        let mut tape = Tape::new();
        let xv = tape.variable(x.clone());
        let out = model.forward(&mut tape, xv, &[model.len() - 1]).unwrap()[0];
        let pick = tape.slice(out, &[(0, 1), (3, 4)]).unwrap();
        let loss = tape.sum_all(pick).unwrap();
        let g = tape.backward(loss).unwrap().get(xv).unwrap().clone();
        // Directional derivatives along the gradient and along the gradient plus noise: the
        // signal is |g| (not one pixel's share), far above the f32 rounding of the logit.
        let norm = g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let noise = Tensor::from_shape_fn(g.raw_dim(), |ix| ((ix[2] * 31 + ix[3] * 17 + ix[1] * 7) % 13) as f32 - 6.0);
        let noise_norm = noise.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        for dir in [g.mapv(|v| v / norm as f32), (&g / norm as f32) + &(noise / noise_norm as f32)] {
            let analytic: f64 = g.iter().zip(dir.iter()).map(|(&a, &b)| a as f64 * b as f64).sum();
            let h = 1e-2f32;
            let numeric = (logit(&(&x + &(&dir * h))) - logit(&(&x - &(&dir * h)))) / (2.0 * h as f64);
            assert!(
                (analytic - numeric).abs() <= 2e-2 * norm,
                "{}: {analytic} vs {numeric} (|g| {norm})",
                case["onnx"]
            );
        }
    }
}

#[test]
fn module_paths_name_the_layers() {
    for case in cases() {
        let (model, ..) = load(&case);
        let names: Vec<String> = model.layers().into_iter().map(|l| l.name).collect();
        // The classifier's linear layer, as `print(model)` names it.
        let head = if case["model"] == "squeezenet_w8" {
            "classifier.0"
        } else if case["model"] == "convnext_tiny_w8" {
            "classifier.2"
        } else {
            "fc"
        };
        assert!(names.iter().any(|n| n == head), "{}: no `{head}` in {names:?}", case["onnx"]);
        assert!(names.iter().all(|n| !n.starts_with("node_") && !n.starts_with('/')), "{}: {names:?}", case["onnx"]);
        // A block's path addresses the layer that ends it: the one that feeds the next block.
        let (block, next) = match case["model"].as_str().unwrap() {
            "convnext_tiny_w8" => ("features.1", "features.2.0"),
            "shufflenet_v2_w8" => ("stage2", "stage3.0"),
            "squeezenet_w8" => ("features.3", "features.4"),
            _ => continue,
        };
        let end = model.find(block).unwrap_or_else(|e| panic!("{}: {e}", case["onnx"]));
        let first_of_next = model.layers().iter().position(|l| l.name.starts_with(next)).unwrap();
        assert!(
            model.nodes()[first_of_next..].iter().any(|n| n.inputs.contains(&end)),
            "{}: {block} is not read by {next}",
            case["onnx"]
        );
    }
}

#[test]
fn each_model_visualizes() {
    for case in cases().iter().filter(|c| c["exporter"] == "dynamo") {
        let (model, ..) = load(case);
        let opts = Options { max_iter: 5, ..Options::default() };
        let vis = visualize_activation(&model, -1, Some(vec![2]), opts).unwrap();
        let losses = &vis.history;
        assert!(losses.len() == 5 && losses.iter().all(|l| l.is_finite()), "{}: {losses:?}", case["onnx"]);
    }
}
