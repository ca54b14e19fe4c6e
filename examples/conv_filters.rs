//! Conv filters: all 32 filters of the stem (after its ReLU6), then 10 filters of a deeper
//! block, each stitched into a sheet, with keras-vis's optimizer and the activation term
//! alone (LP/TV weights 0: keras-vis's weights of 10 flatten weak early filters on 0..255
//! images); then six filters each of an early, a middle and a deep block in the quality
//! preset (`Options::actmax()`), one row per layer.
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

/// Six filters of an early, a middle and a deep layer in the quality preset, with each
/// filter's mean activation on its image next to the one on the seed noise.
fn quality_rows(model: &actmax_layers::Model) -> actmax::Result<()> {
    let layers = ["_blocks.1.expand_relu6", "_blocks.7.expand_relu6", "_blocks.14.expand_relu6"];
    let (mut tiles, mut captions) = (Vec::new(), Vec::new());
    let noise = actmax::seed_noise(&[1, 3, 224, 224], (0.0, 255.0), 1);
    for layer in layers {
        let filters = [0, 1, 2, 3, 4, 5];
        let vis = visualize_batch(model, layer, filters.iter().map(|&f| vec![f]).collect(), Options::actmax())?;
        for (k, &f) in filters.iter().enumerate() {
            let am = actmax_losses::ActivationMaximization::new(layer, vec![f]);
            let one = vis.images.slice(ndarray::s![k..k + 1, .., .., ..]).to_owned().into_dyn();
            let (on_image, on_noise) = (-actmax::evaluate(model, &am, &one)?, -actmax::evaluate(model, &am, &noise)?);
            println!("{layer} filter {f}: mean activation {on_image:.3} (noise: {on_noise:.3})");
            tiles.push(vis.image(k)?.resize(160, 160, image::imageops::FilterType::Triangle));
            captions.push(format!("{} {f}", layer.trim_start_matches("_blocks.").trim_end_matches(".expand_relu6")));
        }
    }
    images::save(&images::labelled_sheet(&tiles, &captions, 4, 6)?, &common::out("filters_quality.png"))
}

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    sheet(&model, "stem_relu6", &(0..32).collect::<Vec<_>>(), "filters_stem.png")?;
    sheet(&model, "_blocks.5.expand_relu6", &(0..10).collect::<Vec<_>>(), "filters_block5.png")?;
    quality_rows(&model)?;
    println!("wrote docs/images/filters_stem.png, filters_block5.png and filters_quality.png");
    Ok(())
}
