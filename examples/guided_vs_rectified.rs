//! Backprop modifiers: class 20 with plain, guided and rectified (deconv) backprop through
//! every ReLU6 of the model.
//! `cargo run --release -p actmax --example guided_vs_rectified`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_activation, Options};
use actmax_modifiers::backprop_mode;

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let mut tiles = Vec::new();
    for mode in ["none", "guided", "rectified"] {
        let opts = Options { backprop_modifier: backprop_mode(mode)?, ..Options::default() };
        let vis = visualize_activation(&model, -1, Some(vec![20]), opts)?;
        println!("{mode}: model says {:?}", common::top1(&model, &vis.images));
        tiles.push(vis.image(0)?);
    }
    images::save(&images::stitch_images(&tiles, 8, 3)?, &common::out("backprop_none_guided_rectified.png"))
}
