//! Shared by the examples: the shipped model and a place for pictures.
#![allow(dead_code)]

use std::path::PathBuf;

use actmax_layers::{zoo, Model};

/// The shipped EfficientNet-Lite0.
pub fn efficientnet() -> Model {
    zoo::load("efficientnet_lite0", None)
        .expect("models/efficientnet_lite0.safetensors (cargo xtask import-efficientnet)")
}

/// `docs/images/<name>`, created if needed.
pub fn out(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/images");
    std::fs::create_dir_all(&dir).expect("docs/images");
    dir.join(name)
}

/// What the model says about an image tensor `[1, 3, 224, 224]` in 0..255.
pub fn top1(model: &Model, x: &actmax_tensor::Tensor) -> (usize, &'static str) {
    let top = model.top_k(x, 1).expect("predict")[0].class;
    (top, zoo::imagenet_labels()[top])
}

/// `img` scaled up `k` times with nearest neighbours (small MNIST-sized pictures).
pub fn upscale(img: &image::DynamicImage, k: u32) -> image::DynamicImage {
    img.resize(img.width() * k, img.height() * k, image::imageops::FilterType::Nearest)
}

/// EfficientNet-Lite1 from the fetched `.pth` (`cargo xtask fetch`), if it is there: a
/// judge that took no part in an optimization.
pub fn lite1() -> Option<Model> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/efficientnet-lite1-77cc7160.pth");
    zoo::load(path.to_str()?, Some("efficientnet_lite1")).ok()
}

/// The judge's top-1 class for a saved image, resized to its input.
pub fn held_out_top1(judge: &Model, img: &image::DynamicImage) -> usize {
    let [_, h, w] = judge.input_spec().shape;
    let sized = img.resize_exact(w as u32, h as u32, image::imageops::FilterType::CatmullRom);
    judge.top_k(&actmax::images::from_image(&sized, judge.input_spec()), 1).expect("predict")[0].class
}
