//! Images in, as a model's input spec says: decoded by the `image` crate, converted to the
//! model's channels, resized (short side to 8/7 of the input, bicubic, then a centre crop,
//! ImageNet-style) unless already the input size, scaled to the input range.

use std::path::Path;

use actmax_layers::{ChannelOrder, InputSpec};
use actmax_tensor::Tensor;
use image::imageops::FilterType;
use image::DynamicImage;

/// Loads `path` as a `[1, C, H, W]` tensor in the spec's value range.
pub fn load(path: &Path, spec: &InputSpec) -> Result<Tensor, String> {
    let img = image::open(path).map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
    Ok(to_tensor(&img, spec))
}

/// Converts a decoded image (see [`load`]).
pub fn to_tensor(img: &DynamicImage, spec: &InputSpec) -> Tensor {
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
