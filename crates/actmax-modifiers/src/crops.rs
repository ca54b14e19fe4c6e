//! MaCo's robustness: each step the model sees several random crops of each image,
//! resized to its input and noised, as one batch — so a feature must hold at several
//! scales and places of the image, not at one alignment of the pixels.

use actmax_tensor::{Affine, Pool2dParams, Tape, Tensor, Var, WarpBorder};
use rand::{Rng, RngCore};

use crate::ModifierError;

/// A standard Gaussian draw from the caller's RNG (ziggurat: the crops draw millions of
/// noise values per step).
pub fn standard_normal(rng: &mut dyn RngCore) -> f32 {
    rng.sample(rand_distr::StandardNormal)
}

/// Random crops of an NCHW batch, resized to the model's input: `count` views per image,
/// view-major (view `v` of image `b` is row `v·B + b`), so losses that average over the
/// batch average over the views.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomCrops {
    /// Crops per image and step.
    pub count: usize,
    /// Side of a crop as a fraction of the image side, drawn uniformly from `[lo, hi]`.
    pub size: (f32, f32),
    /// Standard deviation of a crop centre around the image centre, as a fraction of the
    /// side (MaCo: 0.15); the crop is kept inside the image.
    pub spread: f32,
    /// Standard deviation of the Gaussian noise added to each crop, as a fraction of the
    /// input range's width.
    pub noise: f32,
}

impl RandomCrops {
    /// MaCo's recipe, sized for an image as large as the model's input: 6 crops of
    /// 55–100 % of the side around the centre, noise 2 % of the range.
    pub fn maco() -> Self {
        Self { count: 6, size: (0.55, 1.0), spread: 0.15, noise: 0.02 }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ModifierError> {
        let (lo, hi) = self.size;
        if self.count == 0 {
            return Err(ModifierError::Param("crops must be at least 1 per step".into()));
        }
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(ModifierError::Param(format!("crop size must satisfy 0 < lo <= hi <= 1, got [{lo}, {hi}]")));
        }
        if !(self.spread.is_finite() && self.spread >= 0.0 && self.noise.is_finite() && self.noise >= 0.0) {
            return Err(ModifierError::Param(format!(
                "crop spread and noise must be finite and >= 0, got {} and {}",
                self.spread, self.noise
            )));
        }
        Ok(())
    }

    /// The views of `x` (`[B, C, H, W]`) at `out_hw`: `[count·B, C, out_h, out_w]`. `width`
    /// is the input range's width (the noise scale).
    pub fn apply(
        &self,
        tape: &mut Tape,
        x: Var,
        out_hw: [usize; 2],
        width: f32,
        rng: &mut dyn RngCore,
    ) -> Result<Var, ModifierError> {
        self.validate()?;
        let s = nchw(tape, x)?;
        let (b, h, w) = (s[0], s[2] as f32, s[3] as f32);
        let mut boxes = Vec::with_capacity(self.count * b);
        for _ in 0..self.count * b {
            let side = rng.random_range(self.size.0..=self.size.1);
            let half = side / 2.0;
            let mut centre = || (0.5 + self.spread * standard_normal(rng)).clamp(half, 1.0 - half);
            let (cy, cx) = (centre(), centre());
            boxes.push(CropBox { centre: [cy * h, cx * w], side: [side * h, side * w] });
        }
        let views = crop_resize(tape, x, &boxes, out_hw)?;
        if self.noise == 0.0 {
            return Ok(views);
        }
        let shape = tape.shape(views)?.to_vec();
        let sd = self.noise * width;
        let noise = tape.constant(Tensor::from_shape_simple_fn(shape, || sd * standard_normal(rng)));
        Ok(tape.add(views, noise)?)
    }
}

/// The whole of each image resized to `out_hw` (one view per image): what the model sees
/// of an image larger than its input when no crops are asked.
pub fn resize_to(tape: &mut Tape, x: Var, out_hw: [usize; 2]) -> Result<Var, ModifierError> {
    let s = nchw(tape, x)?;
    if [s[2], s[3]] == out_hw {
        return Ok(x);
    }
    let (h, w) = (s[2] as f32, s[3] as f32);
    let boxes = vec![CropBox { centre: [h / 2.0, w / 2.0], side: [h, w] }; s[0]];
    crop_resize(tape, x, &boxes, out_hw)
}

fn nchw(tape: &Tape, x: Var) -> Result<Vec<usize>, ModifierError> {
    let s = tape.shape(x)?.to_vec();
    if s.len() != 4 || s.contains(&0) {
        return Err(ModifierError::Param(format!("crops expect a non-empty NCHW image, got {s:?}")));
    }
    Ok(s)
}

/// A crop in pixels: centre (row, column) and side (rows, columns).
#[derive(Debug, Clone, Copy)]
struct CropBox {
    centre: [f32; 2],
    side: [f32; 2],
}

/// Bilinear crop-and-resize: view `i` is image `i mod N` of `x` cut to `boxes[i]`. A crop
/// shrunk by 2× or more is average-pooled first, so the bilinear taps do not alias.
fn crop_resize(tape: &mut Tape, x: Var, boxes: &[CropBox], out_hw: [usize; 2]) -> Result<Var, ModifierError> {
    let s = tape.shape(x)?.to_vec();
    let shrink = boxes
        .iter()
        .map(|b| (b.side[0] / out_hw[0] as f32).min(b.side[1] / out_hw[1] as f32))
        .fold(f32::INFINITY, f32::min);
    let f = (shrink.floor() as usize).clamp(1, s[2].min(s[3]));
    let src = if f > 1 { tape.avg_pool2d(x, Pool2dParams::new(f, f))? } else { x };
    let ps = tape.shape(src)?.to_vec();
    // Pixel centres: pooled pixel j covers source pixels j·f .. j·f + f − 1.
    let centre_in = [(ps[2] as f32 - 1.0) / 2.0, (ps[3] as f32 - 1.0) / 2.0];
    let maps: Vec<Affine> = boxes
        .iter()
        .map(|b| {
            let k = [b.side[0] / f as f32 / out_hw[0] as f32, b.side[1] / f as f32 / out_hw[1] as f32];
            let c = [b.centre[0] / f as f32 - 0.5, b.centre[1] / f as f32 - 0.5];
            Affine { row: [k[0], 0.0], col: [0.0, k[1]], shift: [c[0] - centre_in[0], c[1] - centre_in[1]] }
        })
        .collect();
    Ok(tape.affine_warp(src, &maps, out_hw, WarpBorder::Reflect)?)
}
