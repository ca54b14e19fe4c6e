//! The seeds written in Rust, by the writers users' files come from: the `safetensors`
//! crate (the core of Hugging Face's Python package) and the `image` crate's encoders.
//! torch's and numpy's come from `xtask/python/fuzz_seeds.py`. All are committed under
//! `testdata/fuzz/seeds/`; `cargo xtask fuzz-seeds` writes them again.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageFormat};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Writes the safetensors and image seeds into `dir`, made from the photo `photo`.
pub fn write(dir: &Path, photo: &Path) -> Result<Vec<String>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| {
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{name}: {e}"))?;
        files.push(name.to_string());
        Ok::<(), String>(())
    };
    for (name, tensors) in safetensors_files() {
        let views: Vec<(&str, TensorView)> = tensors
            .iter()
            .map(|(k, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes).map(|v| (*k, v)).map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        put(name, safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())?)?;
    }
    let img = image::open(photo).map_err(|e| format!("{}: {e}", photo.display()))?;
    let small = img.thumbnail(48, 32);
    let cases: [(&str, DynamicImage, ImageFormat); 7] = [
        ("rgb.png", DynamicImage::ImageRgb8(small.to_rgb8()), ImageFormat::Png),
        ("rgba.png", DynamicImage::ImageRgba8(small.to_rgba8()), ImageFormat::Png),
        ("gray.png", DynamicImage::ImageLuma8(small.to_luma8()), ImageFormat::Png),
        ("rgb16.png", DynamicImage::ImageRgb16(small.to_rgb16()), ImageFormat::Png),
        ("rgb.jpg", DynamicImage::ImageRgb8(small.to_rgb8()), ImageFormat::Jpeg),
        ("gray.jpg", DynamicImage::ImageLuma8(small.to_luma8()), ImageFormat::Jpeg),
        ("rgba.gif", DynamicImage::ImageRgba8(small.to_rgba8()), ImageFormat::Gif),
    ];
    for (name, img, format) in cases {
        let mut bytes = Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).map_err(|e| format!("{name}: {e}"))?;
        put(name, bytes.into_inner())?;
    }
    Ok(files)
}

type Named = (&'static str, Dtype, Vec<usize>, Vec<u8>);

/// Little state dicts of every dtype a model's weights come in.
fn safetensors_files() -> Vec<(&'static str, Vec<Named>)> {
    let f32s = |n: usize| (0..n).flat_map(|i| ((i as f32 - 3.0) * 0.25).to_le_bytes()).collect::<Vec<u8>>();
    let conv = vec![
        ("features.0.weight", Dtype::F32, vec![4, 3, 3, 3], f32s(108)),
        ("features.0.bias", Dtype::F32, vec![4], f32s(4)),
        ("features.1.num_batches_tracked", Dtype::I64, vec![], 12i64.to_le_bytes().to_vec()),
        ("classifier.weight", Dtype::F32, vec![5, 4], f32s(20)),
    ];
    let dtypes = vec![
        ("w16", Dtype::F16, vec![2, 3], (0..6u16).flat_map(|i| (0x3c00 + i * 0x100).to_le_bytes()).collect()),
        ("wbf16", Dtype::BF16, vec![3, 2], (0..6u16).flat_map(|i| (0x3f80 + i * 0x10).to_le_bytes()).collect()),
        ("w64", Dtype::F64, vec![6], (0..6).flat_map(|i| (i as f64 * 0.5).to_le_bytes()).collect()),
        ("i32", Dtype::I32, vec![5], (0..5i32).flat_map(i32::to_le_bytes).collect()),
        ("empty", Dtype::F32, vec![0, 3], Vec::new()),
    ];
    vec![("conv.safetensors", conv), ("dtypes.safetensors", dtypes)]
}
