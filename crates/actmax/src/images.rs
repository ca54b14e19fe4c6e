//! Images in and out: tensors in a model's value range ↔ 8-bit pictures, stitching,
//! checking an output path before a long run.
//!
//! Images in follow a model's input spec: decoded by the `image` crate, converted to the
//! model's channels, resized (short side to 8/7 of the input, bicubic, then a centre crop,
//! ImageNet-style) unless already the input size, scaled to the input range.

use std::path::Path;

use actmax_layers::{ChannelOrder, InputSpec};
use actmax_tensor::Tensor;
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, RgbImage};

use crate::{Error, Result};

/// `[C, H, W]` (C = 1 or 3) in `range` → an 8-bit image. Values are mapped linearly from
/// the range onto 0..255 and rounded; for a 0..255 range that is the image itself.
pub fn to_image(x: &Tensor, range: (f32, f32)) -> Result<DynamicImage> {
    let s = x.shape();
    if s.len() != 3 || !(s[0] == 1 || s[0] == 3) {
        return Err(Error::Options(format!("an image tensor is [1 or 3, H, W], got {s:?}")));
    }
    let (h, w) = (s[1] as u32, s[2] as u32);
    let to_u8 = |v: f32| (((v - range.0) / (range.1 - range.0)) * 255.0).round().clamp(0.0, 255.0) as u8;
    Ok(if s[0] == 1 {
        DynamicImage::ImageLuma8(GrayImage::from_fn(w, h, |i, j| image::Luma([to_u8(x[[0, j as usize, i as usize]])])))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |i, j| {
            image::Rgb([0, 1, 2].map(|c| to_u8(x[[c, j as usize, i as usize]])))
        }))
    })
}

/// Image `b` of a batch `[B, C, H, W]` in `range` as an 8-bit picture (see [`to_image`]).
pub fn batch_image(x: &Tensor, b: usize, range: (f32, f32)) -> Result<DynamicImage> {
    match x.shape() {
        [n, _, _, _] if b >= *n => return Err(Error::Options(format!("image {b} of a batch of {n}"))),
        [_, _, _, _] => {}
        s => return Err(Error::Options(format!("an image batch is [B, C, H, W], got {s:?}"))),
    }
    to_image(&x.index_axis(ndarray::Axis(0), b).to_owned(), range)
}

/// Fails early when `path` cannot be written (missing folder, no permission, unknown
/// format), so a long run does not end in a write error.
pub fn check_writable(path: &Path) -> Result<()> {
    let err = |msg: String| Error::Image { path: path.to_path_buf(), msg };
    if image::ImageFormat::from_path(path).is_err() {
        return Err(err("unknown image format: use a .png (or .jpg, .gif) name".into()));
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| err(format!("cannot be written: {e}")))?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Saves an image, naming the path in any error.
pub fn save(img: &DynamicImage, path: &Path) -> Result<()> {
    img.save(path).map_err(|e| Error::Image { path: path.to_path_buf(), msg: e.to_string() })
}

/// keras-vis's `stitch_images`: tiles in rows of `cols`, `margin` pixels apart, on black.
pub fn stitch_images(images: &[DynamicImage], margin: u32, cols: usize) -> Result<DynamicImage> {
    let first = images.first().ok_or_else(|| Error::Options("stitch_images needs at least one image".into()))?;
    let (w, h) = (first.width(), first.height());
    if images.iter().any(|i| i.width() != w || i.height() != h) {
        return Err(Error::Options("stitch_images needs images of one size".into()));
    }
    let cols = cols.clamp(1, images.len());
    let rows = images.len().div_ceil(cols);
    let mut sheet = RgbImage::new(cols as u32 * (w + margin) - margin, rows as u32 * (h + margin) - margin);
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = ((k % cols) as u32 * (w + margin), (k / cols) as u32 * (h + margin));
        image::imageops::overlay(&mut sheet, &img.to_rgb8(), x0 as i64, y0 as i64);
    }
    Ok(DynamicImage::ImageRgb8(sheet))
}

/// keras-vis's `deprocess_input`, for display only: `(x − mean) / (std + ε) · 0.1 + 0.5`,
/// clipped to [0, 1], then mapped onto `range`. It changes what the model sees — on
/// EfficientNet-Lite0 it alone dropped the share of images classified as their target to
/// 75 % — so saved results are not stretched unless asked.
pub fn deprocess(x: &Tensor, range: (f32, f32)) -> Tensor {
    let n = x.len().max(1) as f32;
    let mean = x.sum() / n;
    let std = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt();
    x.mapv(|v| (((v - mean) / (std + 1e-7)) * 0.1 + 0.5).clamp(0.0, 1.0) * (range.1 - range.0) + range.0)
}

/// A contact sheet with a caption under each tile (white 3×5 capitals on black).
pub fn labelled_sheet(images: &[DynamicImage], captions: &[String], margin: u32, cols: usize) -> Result<DynamicImage> {
    if images.len() != captions.len() {
        return Err(Error::Options(format!("{} images but {} captions", images.len(), captions.len())));
    }
    let scale = 2;
    let strip = 7 * scale;
    let tiles: Vec<DynamicImage> = images
        .iter()
        .zip(captions)
        .map(|(img, cap)| {
            let mut tile = image::RgbaImage::from_pixel(img.width(), img.height() + strip, image::Rgba([0, 0, 0, 255]));
            image::imageops::overlay(&mut tile, &img.to_rgba8(), 0, 0);
            crate::font::draw_text(&mut tile, 0, img.height(), cap, scale, image::Rgba([255, 255, 255, 255]));
            DynamicImage::ImageRgba8(tile)
        })
        .collect();
    stitch_images(&tiles, margin, cols)
}

/// Loads `path` as a `[1, C, H, W]` tensor in the spec's value range.
pub fn load(path: &Path, spec: &InputSpec) -> Result<Tensor> {
    let img = image::open(path)
        .map_err(|e| Error::Image { path: path.to_path_buf(), msg: format!("cannot read image: {e}") })?;
    Ok(from_image(&img, spec))
}

/// Converts a decoded image (see [`load`]).
pub fn from_image(img: &DynamicImage, spec: &InputSpec) -> Tensor {
    let [c, h, w] = spec.shape;
    let fitted = fit(img, w as u32, h as u32);
    let (lo, hi) = spec.range;
    let scale = (hi - lo) / 255.0;
    let mut t = Tensor::zeros(vec![1, c, h, w]);
    match spec.channels {
        ChannelOrder::Gray => {
            let g = fitted.to_luma8();
            for (x, y, p) in g.enumerate_pixels() {
                t[[0, 0, y as usize, x as usize]] = lo + p.0[0] as f32 * scale;
            }
        }
        order => {
            let rgb = fitted.to_rgb8();
            for (x, y, p) in rgb.enumerate_pixels() {
                for ch in 0..c.min(3) {
                    let src = if order == ChannelOrder::Bgr { 2 - ch } else { ch };
                    t[[0, ch, y as usize, x as usize]] = lo + p.0[src] as f32 * scale;
                }
            }
        }
    }
    t
}

/// The input size as it is, or short side to 8/7 of the target (256 for 224), bicubic,
/// then the centre crop.
fn fit(img: &DynamicImage, w: u32, h: u32) -> DynamicImage {
    if img.width() == w && img.height() == h {
        return img.clone();
    }
    let short = img.width().min(img.height()) as f64;
    let target = (w.max(h) as f64 * 8.0 / 7.0).round();
    let s = target / short;
    let (nw, nh) =
        (((img.width() as f64 * s).round() as u32).max(w), ((img.height() as f64 * s).round() as u32).max(h));
    let resized = img.resize_exact(nw, nh, FilterType::CatmullRom);
    resized.crop_imm((nw - w) / 2, (nh - h) / 2, w, h)
}
