//! keras-vis's MNIST walkthrough on the project's own MNIST CNN (trained by
//! `cargo xtask train-mnist`): the 10 classes, two classes in one image
//! (`filter_indices = [1, 7]`), a sweep of the total-variation weight, and the 10 classes
//! in the quality preset, read by a second classifier (the MLP) that never saw them made.
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
    images::save(&images::stitch_images(&sweep, 4, weights.len())?, &common::out("mnist_tv_sweep.png"))?;

    // The quality preset (a 28×28 digit is cheap: 300 steps), judged by the MLP.
    let judge = zoo::load("mnist_mlp", None)?;
    let targets = (0..10).map(|c| vec![c]).collect();
    let vis = actmax::visualize_batch(&model, -1, targets, Options { max_iter: 300, ..Options::actmax() })?;
    let (mut tiles, mut read) = (Vec::new(), 0);
    for class in 0..10 {
        let img = vis.image(class)?;
        let top = judge.top_k(&images::from_image(&img, judge.input_spec()), 1)?[0].class;
        read += usize::from(top == class);
        tiles.push(common::upscale(&img, 4));
    }
    println!("quality preset: the MLP reads {read}/10 of the digits as their class");
    images::save(&images::stitch_images(&tiles, 4, 10)?, &common::out("mnist_quality.png"))
}
