//! Regression (keras-vis's `grad_modifier='negate'` scenario): the project's "apple
//! counter" (`cargo xtask train-apple-counter`) counts digits on a canvas. Maximizing its
//! one output asks "what looks like many apples?"; negating the gradient asks "what looks
//! like none?".
//! `cargo run --release -p actmax --example regression`
#[path = "common.rs"]
mod common;

use actmax::{images, seed_noise, visualize_activation, Options};
use actmax_layers::zoo;
use actmax_modifiers::GradModifier;

fn main() -> actmax::Result<()> {
    let model = zoo::load("apple_counter", None)?;
    let seed = seed_noise(&[1, 1, 48, 48], (0.0, 1.0), 42);
    let count = |x: &actmax_tensor::Tensor| model.predict(x).map(|y| y[[0, 0]]);
    println!("seed noise: {:.2} apples", count(&seed)?);
    let mut tiles = Vec::new();
    for modifier in ["identity", "negate"] {
        let opts = Options { grad_modifier: GradModifier::from_name(modifier)?, ..Options::default() };
        let vis = visualize_activation(&model, "count", Some(vec![0]), opts)?;
        println!("{modifier}: {:.2} apples", count(&vis.images)?);
        tiles.push(common::upscale(&vis.image(0)?, 4));
    }
    images::save(&images::stitch_images(&tiles, 8, 2)?, &common::out("apple_counter_up_down.png"))
}
