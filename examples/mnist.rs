//! keras-vis's MNIST walkthrough on the project's own MNIST CNN (trained by
//! `cargo xtask train-mnist`): the 10 classes, two classes in one image
//! (`filter_indices = [1, 7]`), and a sweep of the total-variation weight.
//! `cargo run --release -p actmax --example mnist`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_activation, Options};
use actmax_layers::{zoo, Model};
use image::DynamicImage;

/// keras-vis's MNIST settings: input in 0..1, the softmax swapped to linear (done by
/// `Options::default()`), the target is the last layer.
fn class_image(model: &Model, classes: Vec<usize>, tv_weight: f32) -> actmax::Result<(DynamicImage, usize)> {
    let vis = visualize_activation(model, -1, Some(classes), Options { tv_weight, ..Options::default() })?;
    let top = model.top_k(&vis.images, 1)?[0].class;
    Ok((common::upscale(&vis.image(0)?, 4), top))
}

fn main() -> actmax::Result<()> {
    let model = zoo::load("mnist_cnn", None)?;

    let mut tiles = Vec::new();
    let mut right = 0;
    for class in 0..10 {
        let (img, top) = class_image(&model, vec![class], 10.0)?;
        right += usize::from(top == class);
        tiles.push(img);
    }
    println!("10 classes: the model calls {right}/10 of the images their class");
    images::save(&images::stitch_images(&tiles, 4, 10)?, &common::out("mnist_classes.png"))?;

    let (both, top) = class_image(&model, vec![1, 7], 10.0)?;
    println!("classes 1 and 7 together: top-1 {top}");
    images::save(&both, &common::out("mnist_1_and_7.png"))?;

    let weights = [0.0, 1.0, 10.0, 100.0];
    let mut sweep = Vec::new();
    for tv in weights {
        let (img, top) = class_image(&model, vec![7], tv)?;
        println!("class 7, tv_weight {tv}: top-1 {top}");
        sweep.push(img);
    }
    images::save(&images::stitch_images(&sweep, 4, weights.len())?, &common::out("mnist_tv_sweep.png"))
}
