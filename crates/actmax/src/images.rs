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
use image::{DynamicImage, GrayImage, ImageDecoder, RgbImage};

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
    let err = |msg: String| Error::Image { path: path.to_path_buf(), msg };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read image: {e}")))?;
    let img = decode(&bytes).map_err(|e| err(format!("cannot read image: {e}")))?;
    Ok(from_image(&img, spec))
}

/// The largest side an image in may have: far above any input size, and it keeps a file
/// that claims a huge canvas from allocating it.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most a decoder may allocate for one image in (bytes): an 8192 × 8192 RGB photo.
pub const MAX_IMAGE_ALLOC: u64 = 200 << 20;

/// Decodes a PNG, JPEG or GIF from bytes (the format read from the content), refusing
/// empty images, sides above [`MAX_IMAGE_SIDE`], decodes above [`MAX_IMAGE_ALLOC`] and
/// more pixels than the file could hold, before allocating.
pub fn decode(bytes: &[u8]) -> std::result::Result<DynamicImage, image::ImageError> {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_ALLOC);
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    reader.limits(limits.clone());
    // The header is read once; its size is checked first: no codec packs more than a few
    // thousand pixels into a byte, so a tiny file claiming a huge canvas is refused
    // before it decodes for seconds.
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    let claimed = w as u64 * h as u64;
    if claimed == 0 || claimed > MAX_PIXELS_PER_BYTE * bytes.len() as u64 + (1 << 20) {
        let kind = image::error::LimitErrorKind::DimensionError;
        return Err(image::ImageError::Limits(image::error::LimitError::from_kind(kind)));
    }
    // As `ImageReader::decode` does: the output buffer counts against the budget.
    limits.reserve(decoder.total_bytes())?;
    decoder.set_limits(limits)?;
    DynamicImage::from_decoder(decoder)
}

/// More pixels per byte of file than PNG (deflate, ≤ 1032:1), GIF (LZW) or JPEG can encode.
const MAX_PIXELS_PER_BYTE: u64 = 4096;

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
    if img.width() == 0 || img.height() == 0 {
        // Nothing to scale (`decode` refuses such files; a caller's image may still be one).
        return DynamicImage::new(w, h, img.color());
    }
    let short = img.width().min(img.height()) as f64;
    let target = (w.max(h) as f64 * 8.0 / 7.0).round();
    let s = target / short;
    let (nw, nh) = ((img.width() as f64 * s).round().max(w as f64), (img.height() as f64 * s).round().max(h as f64));
    if nw * nh > 16.0 * target * target {
        // A sliver (1 × 16384, say) would resize to gigapixels only to be cropped: cut
        // its middle first, keeping the filter's reach on each side.
        let reach = (4.0 / s).ceil() + 2.0;
        let cw = ((w as f64 / s).ceil() + 2.0 * reach).min(img.width() as f64) as u32;
        let ch = ((h as f64 / s).ceil() + 2.0 * reach).min(img.height() as f64) as u32;
        let middle = img.crop_imm((img.width() - cw) / 2, (img.height() - ch) / 2, cw, ch);
        let (mw, mh) = (((cw as f64 * s).round() as u32).max(w), ((ch as f64 * s).round() as u32).max(h));
        return middle.resize_exact(mw, mh, FilterType::CatmullRom).crop_imm((mw - w) / 2, (mh - h) / 2, w, h);
    }
    let (nw, nh) = (nw as u32, nh as u32);
    let resized = img.resize_exact(nw, nh, FilterType::CatmullRom);
    resized.crop_imm((nw - w) / 2, (nh - h) / 2, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliver_fits_without_resizing_all_of_it() {
        // 1 × 16384 would resize to 256 × 4 M pixels if resized whole; its middle is enough.
        let sliver =
            DynamicImage::ImageLuma8(GrayImage::from_fn(1, MAX_IMAGE_SIDE, |_, y| image::Luma([(y % 251) as u8])));
        let fitted = fit(&sliver, 224, 224);
        assert_eq!((fitted.width(), fitted.height()), (224, 224));
        // No pixels at all (a GIF may say 48 × 0): a blank image of the input size.
        let empty = DynamicImage::new(48, 0, image::ColorType::Rgba8);
        assert_eq!((fit(&empty, 224, 224).width(), fit(&empty, 224, 224).height()), (224, 224));
        // A photo's shape takes the usual road: same as resizing whole, then cropping.
        let photo =
            DynamicImage::ImageLuma8(GrayImage::from_fn(300, 200, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8])));
        let whole = photo.resize_exact(384, 256, FilterType::CatmullRom).crop_imm(80, 16, 224, 224);
        assert_eq!(fit(&photo, 224, 224).to_luma8(), whole.to_luma8());
    }

    #[test]
    fn decode_refuses_a_canvas_above_the_limits_and_junk() {
        // A PNG header claiming 100000 × 100000: refused before the decoder allocates.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&[8, 0, 0, 0, 0]);
        let crc = crc32(&png[12..]);
        png.extend_from_slice(&crc.to_be_bytes());
        // An IDAT (an empty zlib stream) and IEND, so the header is all that is wrong.
        for (kind, body) in [(&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]), (b"IEND", b"")] {
            png.extend_from_slice(&(body.len() as u32).to_be_bytes());
            let chunk = [kind, body].concat();
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        let err = decode(&png).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("limit"), "{err}");
        assert!(decode(b"not an image").is_err());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
