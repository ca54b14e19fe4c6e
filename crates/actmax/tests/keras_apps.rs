//! One small functional Keras model with every layer class Keras applications use
//! (Rescaling, Normalization, swish, ReLU(6), DepthwiseConv2D and SeparableConv2D,
//! squeeze-excite with GlobalAveragePooling2D(keepdims) and Multiply, ZeroPadding2D,
//! Add, Concatenate, BatchNormalization without centre), saved by tf-keras as Keras 2
//! `.h5` and by Keras 3 as `.keras`, checked against TensorFlow's outputs
//! (`testdata/keras_apps/`, made by `xtask/python/keras_apps.py tiny`).

use std::path::PathBuf;

use actmax::{visualize_activation, Options};
use actmax_layers::loaders::keras;
use actmax_layers::Model;
use actmax_tensor::Tensor;
use serde_json::Value;

mod fixtures;

use fixtures::f32s;

fn dir() -> PathBuf {
    fixtures::dir("keras_apps")
}

fn cases() -> Vec<Value> {
    fixtures::cases(&dir())
}

/// The model, its input (NHWC in the file, NCHW here) and TensorFlow's output.
fn load(case: &Value) -> (Model, Tensor, Vec<f32>) {
    let file = case["file"].as_str().unwrap();
    let stem = file.rsplit_once('.').unwrap().0;
    let model = keras::load(&dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let s: Vec<usize> = case["input_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let nhwc = Tensor::from_shape_vec(s, f32s(&dir().join(format!("{stem}.input.bin")))).unwrap();
    let x = nhwc.permuted_axes(vec![0, 3, 1, 2]).as_standard_layout().into_owned();
    (model, x, f32s(&dir().join(format!("{stem}.output.bin"))))
}

#[test]
fn both_formats_match_tensorflow() {
    let cases = cases();
    assert_eq!(cases.len(), 2, "Keras 2 .h5 and Keras 3 .keras");
    for case in &cases {
        assert!(case.get("error").is_none(), "{case}");
        let (model, x, want) = load(case);
        let got = model.predict(&x).unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{}: max |Δ| {worst} of {scale}: {got:?} vs {want:?}", case["file"]);
    }
}

#[test]
fn both_formats_name_the_layers_alike_and_visualize() {
    let mut listings = Vec::new();
    for case in cases() {
        let (model, ..) = load(&case);
        let names: Vec<String> = model.layers().into_iter().map(|l| l.name).collect();
        for named in ["stem", "excite", "logits"] {
            assert!(names.iter().any(|n| n == named), "{}: no `{named}` in {names:?}", case["file"]);
        }
        let vis = visualize_activation(&model, "stem", Some(vec![3]), Options { max_iter: 5, ..Options::default() });
        let vis = vis.unwrap();
        assert!(vis.history.len() == 5 && vis.history.iter().all(|l| l.is_finite()), "{:?}", vis.history);
        listings.push(model.layers().into_iter().map(|l| (l.kind, l.output_shape)).collect::<Vec<_>>());
    }
    assert_eq!(listings[0], listings[1], "the two formats give the same layers");
}

fn keras3_bytes() -> Vec<u8> {
    std::fs::read(dir().join("keras_small_all_layers-keras3.keras")).unwrap()
}

/// The archive with one entry's bytes replaced (the others copied as they are).
fn with_entry(name: &str, body: Option<&[u8]>) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut src = zip::ZipArchive::new(std::io::Cursor::new(keras3_bytes())).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..src.len() {
        let mut f = src.by_index(i).unwrap();
        let entry = f.name().to_string();
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        if entry == name {
            let Some(b) = body else { continue };
            data = b.to_vec();
        }
        out.start_file(entry, zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(&data).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// Flips `n` bits at xorshift positions of `b`, advancing the state `s`.
fn flip_bits(b: &mut [u8], n: usize, s: &mut u64) {
    for _ in 0..n {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        let at = (*s % b.len() as u64) as usize;
        b[at] ^= 1 << (*s >> 61);
    }
}

fn error_of(bytes: &[u8]) -> String {
    match keras::from_bytes(bytes) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("loaded"),
    }
}

#[test]
fn bad_keras3_archives_are_typed_errors_and_never_panic() {
    assert!(error_of(&with_entry("config.json", None)).contains("config.json"));
    assert!(error_of(&with_entry("model.weights.h5", Some(b"not hdf5"))).contains("not an HDF5"));
    assert!(error_of(&with_entry("config.json", Some(b"{\"class_name\": \"Functional\""))).contains("config.json"));
    // A layer class actmax does not read is named with its layer.
    let config = String::from_utf8(
        zip::ZipArchive::new(std::io::Cursor::new(keras3_bytes()))
            .unwrap()
            .by_name("config.json")
            .map(|mut f| {
                let mut s = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut s).unwrap();
                s
            })
            .unwrap(),
    )
    .unwrap();
    let renamed = config.replace("\"class_name\": \"Multiply\"", "\"class_name\": \"Subtract\"");
    let msg = error_of(&with_entry("config.json", Some(renamed.as_bytes())));
    assert!(msg.contains("Subtract") && msg.contains("excite"), "{msg}");
    // Truncated and bit-flipped archives: an error or a model, never a panic.
    let good = keras3_bytes();
    for cut in (0..good.len()).step_by(good.len() / 61) {
        let _ = keras::from_bytes(&good[..cut]);
    }
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..200 {
        let mut b = good.clone();
        flip_bits(&mut b, 6, &mut s);
        let _ = keras::from_bytes(&b);
    }
    // Damage inside a well-formed archive reaches the JSON and HDF5 readers themselves.
    for entry in ["config.json", "model.weights.h5"] {
        let body = {
            let mut a = zip::ZipArchive::new(std::io::Cursor::new(keras3_bytes())).unwrap();
            let mut f = a.by_name(entry).unwrap();
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v).unwrap();
            v
        };
        for k in 0..60 {
            let mut b = body.clone();
            flip_bits(&mut b, 4, &mut s);
            if k % 3 == 0 {
                b.truncate((s % b.len() as u64) as usize);
            }
            let _ = keras::from_bytes(&with_entry(entry, Some(&b)));
        }
    }
}
