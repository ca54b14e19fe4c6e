//! Fifteen random ImageNet classes, one batch, stitched in a 5×3 sheet.
//! `cargo run --release -p actmax --example random_classes`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_batch, Options};
use rand::{Rng, SeedableRng};

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let classes: Vec<usize> = (0..15).map(|_| rng.random_range(0..1000)).collect();
    let mut tiles = Vec::new();
    for chunk in classes.chunks(5) {
        let vis = visualize_batch(&model, -1, chunk.iter().map(|&c| vec![c]).collect(), Options::default())?;
        for k in 0..chunk.len() {
            tiles.push(vis.image(k)?);
        }
    }
    images::save(&images::stitch_images(&tiles, 6, 5)?, &common::out("random_classes.png"))?;
    let labels = actmax_layers::zoo::imagenet_labels();
    println!("classes: {}", classes.iter().map(|&c| format!("{c} {}", labels[c])).collect::<Vec<_>>().join("; "));
    Ok(())
}
