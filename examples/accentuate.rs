//! Feature accentuation: what of a tiger (292) is there in the shipped cat photo? The photo,
//! plain seeding, the accentuated image (kept near the photo in Lite0's mid-level
//! activations), its transparency map, and the accentuated image with the map as alpha.
//! `cargo run --release -p actmax --example accentuate`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_activation, Accentuation, Options};

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let photo_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/chelsea.png");
    let photo = images::load(&photo_path, model.input_spec())?;
    let run = |accent: Option<Accentuation>| {
        let opts = Options { seed_input: Some(photo.clone()), accent, ..Options::actmax() };
        visualize_activation(&model, -1, Some(vec![292]), opts)
    };
    let (plain, accented) = (run(None)?, run(Some(Accentuation::default()))?);
    let map = accented.transparency_map(0)?.expect("a Fourier run has a map");
    let seed = images::batch_image(&photo, 0, accented.range)?;
    // The alpha version over white, as a page would show it.
    let over_white = {
        let rgba = accented.image_with_alpha(0)?.to_rgba8();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let p = rgba.get_pixel(x, y).0;
            let a = p[3] as f32 / 255.0;
            image::Rgb([0, 1, 2].map(|c| (p[c] as f32 * a + 255.0 * (1.0 - a)).round() as u8))
        }))
    };
    let tiles = [seed, plain.image(0)?, accented.image(0)?, image::DynamicImage::ImageLuma8(map), over_white];
    let sheet = images::stitch_images(&tiles, 8, 5)?;
    images::save(&sheet, &common::out("accentuate_cat_tiger.png"))?;
    for (name, v) in [("plain seeding", &plain), ("accentuated", &accented)] {
        println!("{name}: Lite0 says {:?}", common::top1(&model, &v.images));
    }
    println!("distance weight (balanced after step 1): {:?}", accented.accent_weight);
    Ok(())
}
