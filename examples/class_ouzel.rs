//! keras-vis's first example: class 20 (water ouzel) of the last layer with the default
//! weights, then the same with Jitter(16).
//! `cargo run --release -p actmax --example class_ouzel`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_activation, Options};
use actmax_modifiers::Jitter;

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let plain = visualize_activation(&model, -1, Some(vec![20]), Options::default())?;
    let jitter = Options { input_modifiers: vec![Box::new(Jitter::new(16.0)?)], ..Options::default() };
    let jittered = visualize_activation(&model, -1, Some(vec![20]), jitter)?;
    let sheet = images::stitch_images(&[plain.image(0)?, jittered.image(0)?], 8, 2)?;
    images::save(&sheet, &common::out("ouzel_plain_vs_jitter.png"))?;
    for (name, v) in [("plain", &plain), ("jitter 16", &jittered)] {
        println!("{name}: model says {:?}", common::top1(&model, &v.images));
    }
    Ok(())
}
