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
    // A file it cannot place is named as a file, with what would work.
    let (_, _, err) = actmax(&["layers", "--model", "/etc/hostname"]);
    assert!(err.contains("cannot read /etc/hostname") && err.contains("--arch"), "{err}");
    assert!(!err.contains("layer `"), "{err}");
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("actmax-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn visualize_is_deterministic_per_seed() {
    let run = |seed: &str, name: &str| {
        let out = tmp(name);
        let (ok, _, err) =
            actmax(&["visualize", "--filter", "20", "--max-iter", "3", "--seed", seed, "-o", out.to_str().unwrap()]);
        assert!(ok, "{err}");
        std::fs::read(&out).unwrap()
    };
    let (a, b, c) = (run("5", "a.png"), run("5", "b.png"), run("6", "c.png"));
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, another image");
}

#[test]
fn visualize_json_reports_every_step() {
    let out = tmp("j.png");
    let (ok, stdout, err) = actmax(&[
        "visualize",
        "--filter",
        "1",
        "--filter",
        "7",
        "--max-iter",
        "2",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
    assert!(v["steps"][0]["terms"]["ActivationMaximization(_fc, [1, 7])"].is_number(), "{v}");
    assert_eq!(v["outputs"][0], out.to_str().unwrap());
}

#[test]
fn visualize_refuses_bad_requests_before_running() {
    let out = tmp("never.png");
    let o = out.to_str().unwrap();
    let cat = repo().join("testdata/chelsea.png").to_str().unwrap().to_string();
    let map = tmp("never_map.png").to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["visualize", "--layer", "_blocks.3._projct_conv", "--filter", "0", "-o", o], "_blocks.3._project_conv"),
        (vec!["visualize", "--filter", "1000", "-o", o], "0..=999"),
        (vec!["visualize", "--filter", "1", "--grad-modifier", "negative", "-o", o], "negate"),
        (vec!["visualize", "--filter", "1", "--backprop-modifier", "guidde", "-o", o], "guided"),
        (vec!["visualize", "--filter", "1", "--seed-image", "/no/such.png", "-o", o], "/no/such.png"),
        (vec!["visualize", "--filter", "1", "-o", "/no/such/dir/out.png"], "cannot be written"),
        (vec!["visualize", "--filter", "1", "--input-range", "5,1", "-o", o], "LOW must be below HIGH"),
        (vec!["visualize", "--filter", "1", "--gif", "/no/such/dir/run.gif", "-o", o], "cannot be written"),
        (vec!["visualize", "--filter", "1", "--preset", "lucent", "-o", o], "keras-vis, lucid, maco, actmax"),
        (vec!["visualize", "--filter", "1", "--param", "wavelet", "-o", o], "pixel, fourier, maco"),
        (vec!["visualize", "--filter", "1", "--transforms", "all", "-o", o], "none, lucid"),
        (vec!["visualize", "--filter", "1", "--crops", "0", "-o", o], "at least 1"),
        (vec!["visualize", "--filter", "1", "--crop-size", "0.5,2", "-o", o], "<= 1"),
        (vec!["visualize", "--filter", "1", "--lr", "-0.05", "-o", o], "--lr must be a finite number > 0"),
        (vec!["visualize", "--filter", "1", "--lr", "NaN", "-o", o], "--lr must be a finite number > 0"),
        (vec!["visualize", "--filter", "1", "--diversity", "NaN", "-o", o], "--diversity must be a finite number"),
        (vec!["visualize", "--filter", "1", "--size", "0", "-o", o], "--size must be at least 1"),
        (vec!["visualize", "--filter", "1", "--graph-memory", "18446744073709551615", "-o", o], "--graph-memory"),
        (vec!["visualize", "--filter", "1", "--preset", "lucid", "--jitter", "4", "-o", o], "--transforms lucid"),
        (vec!["visualize", "--filter", "1", "--accentuate", "-o", o], "give --seed-image"),
        (vec!["visualize", "--filter", "1", "--accent-layer", "_blocks.3._project_conv", "-o", o], "add --accentuate"),
        (
            vec![
                "visualize",
                "--filter",
                "1",
                "--seed-image",
                &cat,
                "--accentuate",
                "--accent-layer",
                "_blocks.3._projct_conv",
                "-o",
                o,
            ],
            "_blocks.3._project_conv",
        ),
        (
            vec!["visualize", "--filter", "1", "--seed-image", &cat, "--accentuate", "--accent-weight", "-1", "-o", o],
            "--accent-weight must be a finite number >= 0",
        ),
        (
            vec!["visualize", "--filter", "1", "--seed-image", &cat, "--accentuate", "--accent-weight", "NaN", "-o", o],
            "--accent-weight must be a finite number >= 0",
        ),
        (
            vec!["visualize", "--filter", "1", "--preset", "keras-vis", "--transparency", &map, "-o", o],
            "Fourier or MaCo",
        ),
        (vec!["visualize", "--filter", "1", "--preset", "keras-vis", "--alpha", "-o", o], "Fourier or MaCo"),
        (vec!["visualize", "--filter", "1", "--seed-image", &cat, "--template-magnitude", "-o", o], "--param maco"),
        (vec!["visualize", "--filter", "1", "--transparency", "/no/such/dir/map.png", "-o", o], "cannot be written"),
    ];
    for (args, expect) in cases {
        let (ok, stdout, err) = actmax(&args);
        assert!(!ok, "{args:?} succeeded");
        assert!(stdout.is_empty(), "{args:?} printed {stdout}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: `{err}` lacks `{expect}`");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
        assert!(!Path::new(&map).exists(), "{args:?} wrote {map}");
    }
}

#[test]
fn accentuate_writes_the_image_its_transparency_map_and_an_alpha_version() {
    // A grey photo for an RGB model is converted, not refused.
    let grey = tmp("grey_cat.png");
    image::open(repo().join("testdata/chelsea.png")).unwrap().to_luma8().save(&grey).unwrap();
    let (out, map, alpha) = (tmp("acc.png"), tmp("acc_map.png"), tmp("acc_alpha.png"));
    let common =
        ["visualize", "--filter", "292", "--max-iter", "3", "--seed-image", grey.to_str().unwrap(), "--accentuate"];
    let (ok, stdout, err) = actmax(
        &[&common[..], &["--transparency", map.to_str().unwrap(), "--json", "-o", out.to_str().unwrap()]].concat(),
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["steps"][2]["terms"]["FeatureDistance(_blocks.5._expand_conv)"].is_number(), "{v}");
    let (img, m) = (image::open(&out).unwrap(), image::open(&map).unwrap());
    assert_eq!((img.width(), img.height(), m.width(), m.height()), (224, 224, 224, 224));
    assert_eq!(m.color(), image::ColorType::L8);
    let (ok, _, err) = actmax(&[&common[..], &["--alpha", "-o", alpha.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let a = image::open(&alpha).unwrap();
    assert_eq!(a.color(), image::ColorType::Rgba8);
    assert_eq!(a.to_rgba8().pixels().map(|p| p.0[3]).collect::<Vec<_>>(), m.to_luma8().into_raw(), "alpha is the map");
}

#[test]
fn visualize_writes_a_gif_of_the_run() {
    let (out, gif) = (tmp("with_gif.png"), tmp("run.gif"));
    let (ok, _, err) = actmax(&[
        "visualize",
        "--filter",
        "20",
        "--max-iter",
        "6",
        "--gif",
        gif.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&gif).expect("the GIF was written");
    assert!(bytes.starts_with(b"GIF89a"), "not a GIF");
}

#[test]
fn a_regression_model_is_driven_down_by_negate_and_predicts_one_number() {
    let out = tmp("apples_down.png");
    let (ok, _, err) = actmax(&[
        "visualize",
        "--model",
        "apple_counter",
        "--layer",
        "count",
        "--filter",
        "0",
        "--grad-modifier",
        "negate",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let count = |img: &Path| {
        let (ok, out, err) =
            actmax(&["predict", "--model", "apple_counter", "--image", img.to_str().unwrap(), "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str::<Value>(&out).unwrap()["output"].as_f64().unwrap()
    };
    let on_photo = count(&repo().join("testdata/coffee.png"));
    let driven_down = count(&out);
    assert!(driven_down < 15.0, "negate drives the count down from the seed's 26.3: {driven_down}");
    assert!(on_photo.is_finite());
}

#[test]
fn an_onnx_file_is_a_model_for_every_command() {
    let onnx = repo().join("models/efficientnet_lite0.onnx");
    let img = repo().join("testdata/coffee.png");
    let (ok, out, err) =
        actmax(&["predict", "--model", onnx.to_str().unwrap(), "--image", img.to_str().unwrap(), "--json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["class"], 967, "espresso, labelled: {out}");
    assert!(v[0]["label"].as_str().unwrap().contains("espresso"));
    let (ok, out, err) = actmax(&["layers", "--model", onnx.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("_blocks.15._project_conv") && out.contains("relu6_head"), "{out}");
}

#[test]
fn a_keras_h5_model_loads_with_its_preprocessing_from_flags() {
    let h5 = repo().join("testdata/emotion_model.hdf5");
    let h5 = h5.to_str().unwrap();
    let (ok, out, err) = actmax(&["layers", "--model", h5]);
    assert!(ok, "{err}");
    assert!(out.contains("separable_conv2d_8") && out.contains("46 layers, 58423 parameters"), "{out}");
    let img = repo().join("testdata/astronaut.png");
    let args = ["predict", "--model", h5, "--image", img.to_str().unwrap(), "--json", "--pixel-range", "0,255"];
    let (ok, out, err) = actmax(&[&args[..], &["--mean", "127.5", "--std", "127.5"]].concat());
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["class"], 3, "happy (fer's label 3): {out}");
    let labels = tmp("emotions.txt");
    std::fs::write(&labels, "angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n").unwrap();
    let with_labels =
        [&args[..], &["--mean", "127.5", "--std", "127.5", "--labels", labels.to_str().unwrap()]].concat();
    let (ok, out, err) = actmax(&with_labels);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["label"], "happy");
    let (ok, _, err) = actmax(&[&args[..], &["--mean", "1,2"]].concat());
    assert!(!ok && err.contains("mean needs one value, or one per channel (1); got 2"), "{err}");
}

#[test]
fn visualize_makes_several_different_images_of_one_class_with_diversity() {
    let out = tmp("div.png");
    let (ok, stdout, err) = actmax(&[
        "visualize",
        "--filter",
        "130",
        "--diversity",
        "10",
        "--images",
        "2",
        "--steps",
        "2",
        "--json",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 2, "{v}");
    let terms = v["steps"][0]["terms"].as_object().unwrap();
    assert!(terms.keys().any(|k| k.starts_with("diversity(")), "no diversity term in {terms:?}");
    assert!(tmp("div_0.png").exists() && tmp("div_1.png").exists());
}

/// `predict --json` on a test photo with `ACTMAX_MAX_ISA` set to `cap`.
fn predict_capped(cap: &str) -> (bool, String, String) {
    let img = repo().join("testdata/coffee.png");
    let out = Command::new(env!("CARGO_BIN_EXE_actmax"))
        .args(["predict", "--model", "efficientnet_lite0", "--image", img.to_str().unwrap(), "--top", "3", "--json"])
        .env("ACTMAX_MAX_ISA", cap)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn capped_kernels_predict_the_same_and_a_bad_cap_is_refused() {
    let probabilities = |json: &str| -> Vec<(u64, f64)> {
        let v: Value = serde_json::from_str(json).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["class"].as_u64().unwrap(), r["probability"].as_f64().unwrap()))
            .collect()
    };
    let (ok, widest, err) = predict_capped("avx512");
    assert!(ok, "{err}");
    let widest = probabilities(&widest);
    for cap in ["avx2", "generic"] {
        let (ok, out, err) = predict_capped(cap);
        assert!(ok, "{cap}: {err}");
        for ((c, p), (wc, wp)) in probabilities(&out).into_iter().zip(&widest) {
            assert_eq!(c, *wc, "{cap}: another class");
            assert!((p - wp).abs() < 1e-4, "{cap}: p {p} against {wp}");
        }
    }
    let (ok, out, err) = predict_capped("sse9");
    assert!(!ok && out.is_empty(), "a bad cap ran: {out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("ACTMAX_MAX_ISA") && err.contains("avx2"), "{err}");
}
