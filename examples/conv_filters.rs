//! Conv filters: all 32 filters of the stem (after its ReLU6), then 10 filters of a deeper
//! block, each stitched into a sheet. The activation term alone (LP/TV weights 0): keras-vis's
//! weights of 10 flatten weak early filters on 0..255 images.
//! `cargo run --release -p actmax --example conv_filters`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_batch, Options};

fn sheet(model: &actmax_layers::Model, layer: &str, filters: &[usize], name: &str) -> actmax::Result<()> {
    let mut tiles = Vec::new();
    for chunk in filters.chunks(8) {
        let opts = Options { max_iter: 100, lp_norm_weight: 0.0, tv_weight: 0.0, ..Options::default() };
        let vis = visualize_batch(model, layer, chunk.iter().map(|&f| vec![f]).collect(), opts)?;
        for k in 0..chunk.len() {
            // Half-size tiles keep the sheet small enough to ship.
            tiles.push(vis.image(k)?.resize(112, 112, image::imageops::FilterType::Triangle));
        }
    }
    images::save(&images::stitch_images(&tiles, 4, 8)?, &common::out(name))
}

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    sheet(&model, "stem_relu6", &(0..32).collect::<Vec<_>>(), "filters_stem.png")?;
    sheet(&model, "_blocks.5.expand_relu6", &(0..10).collect::<Vec<_>>(), "filters_block5.png")?;
    println!("wrote docs/images/filters_stem.png and docs/images/filters_block5.png");
    Ok(())
}
