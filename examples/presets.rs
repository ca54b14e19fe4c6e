//! The same five classes in each preset — keras-vis (pixels), lucid (Fourier image,
//! transforms) and maco (phase-only image, random crops) — one row per preset, each image
//! also scored by EfficientNet-Lite1, a model that took no part in making it.
//! `cargo run --release -p actmax --example presets` (needs `cargo xtask fetch` for Lite1)
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_batch, Options, PRESETS};

const CLASSES: [usize; 5] = [1, 20, 94, 130, 309];

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let judge = common::lite1();
    let labels = actmax_layers::zoo::imagenet_labels();
    let (mut tiles, mut captions) = (Vec::new(), Vec::new());
    for preset in PRESETS {
        let start = std::time::Instant::now();
        let vis = visualize_batch(&model, -1, CLASSES.iter().map(|&c| vec![c]).collect(), Options::preset(preset)?)?;
        let secs = start.elapsed().as_secs_f64() / CLASSES.len() as f64;
        for (k, &class) in CLASSES.iter().enumerate() {
            let img = vis.image(k)?;
            let held = judge.as_ref().map(|j| common::held_out_top1(j, &img));
            println!("{preset:>9} {class:>3} {:<16} held-out top-1: {held:?} ({secs:.1} s/image)", labels[class]);
            captions.push(format!("{preset} {class}"));
            tiles.push(img);
        }
    }
    images::save(&images::labelled_sheet(&tiles, &captions, 6, CLASSES.len())?, &common::out("presets_side_by_side.png"))
}
