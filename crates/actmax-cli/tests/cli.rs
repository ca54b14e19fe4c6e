//! The `actmax` binary on the shipped EfficientNet-Lite0 and the test photos.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn actmax(args: &[&str]) -> (bool, String, String) {
    // From another directory: zoo names must resolve to the shipped weights anyway.
    let out = Command::new(env!("CARGO_BIN_EXE_actmax")).args(args).current_dir(std::env::temp_dir()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn top(image: &str, k: usize) -> Vec<(u64, String, f64)> {
    let img = repo().join("testdata").join(image);
    let (ok, out, err) = actmax(&[
        "predict",
        "--model",
        "efficientnet_lite0",
        "--image",
        img.to_str().unwrap(),
        "--top",
        &k.to_string(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r["class"].as_u64().unwrap(), r["label"].as_str().unwrap().to_string(), r["probability"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn coffee_is_an_espresso() {
    let t = top("coffee.png", 5);
    assert_eq!(t.len(), 5);
    assert_eq!((t[0].0, t[0].1.as_str()), (967, "espresso"));
    assert!(t[0].2 > 0.9, "p(espresso) = {}", t[0].2);
}

#[test]
fn chelsea_is_a_cat() {
    let t = top("chelsea.png", 1);
    assert!((281..=285).contains(&t[0].0), "top-1 {:?} is not a cat class", t[0]);
}

#[test]
fn layers_lists_the_model() {
    let (ok, out, err) = actmax(&["layers", "--model", "efficientnet_lite0", "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 144);
    assert_eq!(rows[1]["name"], "_conv_stem");
    assert_eq!(rows[1]["output_shape"], serde_json::json!([1, 32, 112, 112]));
    assert_eq!(rows[143]["name"], "_fc");
    assert_eq!(rows[143]["filters"], 1000);
}

#[test]
fn bad_input_is_one_line_and_a_failure() {
    for args in [
        vec!["predict", "--model", "no_such_model", "--image", "x.png"],
        vec!["predict", "--image", "/no/such/image.png"],
        vec!["layers", "--model", "/etc/hostname"],
    ] {
        let (ok, out, err) = actmax(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("actmax: "), "{err}");
    }
}
