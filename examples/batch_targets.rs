//! A batch of three targets in one call: one image per class (1 goldfish, 294 brown bear,
//! 413 assault rifle).
//! `cargo run --release -p actmax --example batch_targets`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_batch, Options};

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let classes = [1usize, 294, 413];
    let vis = visualize_batch(&model, -1, classes.iter().map(|&c| vec![c]).collect(), Options::default())?;
    let tiles: Vec<_> = (0..classes.len()).map(|k| vis.image(k)).collect::<Result<_, _>>()?;
    images::save(&images::stitch_images(&tiles, 8, 3)?, &common::out("batch_1_294_413.png"))?;
    for (k, &c) in classes.iter().enumerate() {
        let one = vis.images.slice_axis(ndarray::Axis(0), ndarray::Slice::from(k..k + 1)).to_owned();
        println!("target {c}: model says {:?}", common::top1(&model, &one));
    }
    Ok(())
}
