//! EfficientNet-Lite0 against an independent float64 numpy reference
//! (`xtask/python/effnet_reference.py`, which parses the original `.pth` itself and shares
//! no code with actmax): logits within 1e-3, the input gradient within 1e-3 relative.

use std::path::Path;

use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join("testdata/effnet_reference.json")).unwrap()).unwrap()
}

/// The fixture's input: a 224×224 crop of coffee.png's own pixels, RGB in 0..255 (an image
/// of the model's input size is used as it is, no resampling).
fn input(f: &Value) -> Tensor {
    let img = image::open(repo().join("testdata/coffee.png")).unwrap();
    let (top, left) = (f["crop_top"].as_u64().unwrap() as u32, f["crop_left"].as_u64().unwrap() as u32);
    let spec = zoo::efficientnet_lite0().input_spec().clone();
    actmax::images::from_image(&img.crop_imm(left, top, 224, 224), &spec)
}

#[test]
fn logits_match_the_numpy_reference() {
    let f = fixture();
    let model = zoo::load("efficientnet_lite0", None).unwrap();
    let logits = model.predict(&input(&f)).unwrap();
    let want: Vec<f64> = f["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(logits.len(), want.len());
    let worst = logits.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-3, "largest logit difference {worst}");
    assert_eq!(model.top_k(&input(&f), 1).unwrap()[0].class, 967);
}

#[test]
fn input_gradient_matches_the_numpy_finite_differences() {
    let f = fixture();
    let class = f["grad_class"].as_u64().unwrap() as usize;
    let model = zoo::load("efficientnet_lite0", None).unwrap();
    let mut tape = Tape::new();
    let x = tape.variable(input(&f));
    let out = model.forward(&mut tape, x, &[model.len() - 1]).unwrap()[0];
    let logit = tape.slice(out, &[(0, 1), (class, class + 1)]).unwrap();
    let logit = tape.sum_all(logit).unwrap();
    let g = tape.backward(logit).unwrap();
    let g = g.get(x).unwrap();
    for p in f["grad"].as_array().unwrap() {
        let [c, h, w] = ["c", "h", "w"].map(|k| p[k].as_u64().unwrap() as usize);
        let (got, want) = (g[[0, c, h, w]] as f64, p["value"].as_f64().unwrap());
        assert!((got - want).abs() <= 1e-3 * want.abs() + 1e-9, "d logit/d x[{c},{h},{w}]: {got:e} vs {want:e}");
    }
}
