//! MaCo's robustness: each step the model sees several random crops of each image,
//! resized to its input and noised, as one batch — so a feature must hold at several
//! scales and places of the image, not at one alignment of the pixels.

use actmax_tensor::{Affine, Pool2dParams, Tape, Tensor, Var, WarpBorder};
use rand::{Rng, RngCore};

use crate::ModifierError;

/// A standard Gaussian draw from the caller's RNG (ziggurat: the crops draw millions of
/// noise values per step). Generic, so a concrete RNG inlines: through `&mut dyn
/// RngCore` every 64 random bits were a call through the vtable.
#[inline]
pub fn standard_normal<R: RngCore + ?Sized>(rng: &mut R) -> f32 {
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
    /// is the input range's width (the noise scale). `rngs` holds one random stream for
    /// the batch or one per image: image `b`'s crops and noise then come from `rngs[b]`
    /// alone, whatever else is in the batch.
    pub fn apply<R: RngCore>(
        &self,
        tape: &mut Tape,
        x: Var,
        out_hw: [usize; 2],
        width: f32,
        rngs: &mut [R],
    ) -> Result<Var, ModifierError> {
        self.apply_after(tape, x, &[], out_hw, width, rngs)
    }

    /// [`RandomCrops::apply`] of the images moved by `moves` (one sampling map per image,
    /// e.g. [`crate::TransformSet::draw_maps`]; empty: unmoved), in one warp per view.
    pub fn apply_after<R: RngCore>(
        &self,
        tape: &mut Tape,
        x: Var,
        moves: &[Affine],
        out_hw: [usize; 2],
        width: f32,
        rngs: &mut [R],
    ) -> Result<Var, ModifierError> {
        self.validate()?;
        let s = nchw(tape, x)?;
        let (b, h, w) = (s[0], s[2] as f32, s[3] as f32);
        crate::check_streams(rngs.len(), b)?;
        if !moves.is_empty() && moves.len() != b {
            return Err(ModifierError::Param(format!("{} moves for a batch of {b}", moves.len())));
        }
        let mut boxes = Vec::with_capacity(self.count * b);
        for i in 0..self.count * b {
            // View-major rows: row i is a view of image i mod B.
            let rng = crate::stream(rngs, i % b);
            let side = rng.random_range(self.size.0..=self.size.1);
            let half = side / 2.0;
            let mut centre = || (0.5 + self.spread * standard_normal(rng)).clamp(half, 1.0 - half);
            let (cy, cx) = (centre(), centre());
            let crop = CropBox { centre: [cy * h, cx * w], side: [side * h, side * w] }.map([s[2], s[3]], out_hw);
            boxes.push(match moves.get(i % b) {
                Some(m) => crate::transform::compose(m, &crop),
                None => crop,
            });
        }
        let views = warp_views(tape, x, &boxes, out_hw)?;
        if self.noise == 0.0 {
            return Ok(views);
        }
        let shape = tape.shape(views)?.to_vec();
        let sd = self.noise * width;
        let per_view: usize = shape[1..].iter().product();
        let mut noise = Vec::with_capacity(shape[0] * per_view);
        for i in 0..shape[0] {
            let rng = crate::stream(rngs, i % b);
            noise.extend((0..per_view).map(|_| sd * standard_normal(rng)));
        }
        let noise = tape.constant(Tensor::from_shape_vec(shape, noise).expect("sized to the views"));
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
    let whole = CropBox { centre: [h / 2.0, w / 2.0], side: [h, w] }.map([s[2], s[3]], out_hw);
    warp_views(tape, x, &vec![whole; s[0]], out_hw)
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

impl CropBox {
    /// The sampling map from a view's pixels (centred) to the image's (centred).
    fn map(&self, in_hw: [usize; 2], out_hw: [usize; 2]) -> Affine {
        let k = [self.side[0] / out_hw[0] as f32, self.side[1] / out_hw[1] as f32];
        // Pixel i's centre sits at i + 0.5 in box coordinates.
        let shift = [self.centre[0] - in_hw[0] as f32 / 2.0, self.centre[1] - in_hw[1] as f32 / 2.0];
        Affine { row: [k[0], 0.0], col: [0.0, k[1]], shift }
    }
}

/// View `i` is image `i mod N` of `x` through `maps[i]` (bilinear, reflected borders). A
/// map that shrinks by 2× or more is average-pooled first by that factor (its scale and
/// shift divided by it: pooled pixel j covers j·f .. j·f + f − 1), so the taps do not
/// alias.
fn warp_views(tape: &mut Tape, x: Var, maps: &[Affine], out_hw: [usize; 2]) -> Result<Var, ModifierError> {
    let s = tape.shape(x)?.to_vec();
    let shrink =
        maps.iter().map(|m| m.row[0].hypot(m.col[0]).min(m.row[1].hypot(m.col[1]))).fold(f32::INFINITY, f32::min);
    let f = (shrink.floor() as usize).clamp(1, s[2].min(s[3]));
    if f == 1 {
        return Ok(tape.affine_warp(x, maps, out_hw, WarpBorder::Reflect)?);
    }
    let src = tape.avg_pool2d(x, Pool2dParams::new(f, f))?;
    let ff = f as f32;
    let scaled: Vec<Affine> = maps
        .iter()
        .map(|m| Affine {
            row: [m.row[0] / ff, m.row[1] / ff],
            col: [m.col[0] / ff, m.col[1] / ff],
            shift: [m.shift[0] / ff, m.shift[1] / ff],
        })
        .collect();
    Ok(tape.affine_warp(src, &scaled, out_hw, WarpBorder::Reflect)?)
}
