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
