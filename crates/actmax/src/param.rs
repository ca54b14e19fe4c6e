//! Image parameterizations: what the optimizer updates, and how the image is made from it
//! *on the tape* each step, so the gradient reaches the parameters.
//!
//! - [`Parameterization::Pixel`]: the image itself (keras-vis).
//! - [`Parameterization::Fourier`]: lucid's — a spectrum scaled by `1/max(f, 1/max(H, W))^decay`,
//!   `irfft2` (orthonormal), `÷ 4`, colour decorrelation, sigmoid into the input range.
//!   Low frequencies get the large steps, so the image grows from coarse to fine.
//! - [`Parameterization::Maco`]: magnitude-constrained optimization (Fel et al., NeurIPS
//!   2023): only the phase is optimized; the amplitude spectrum is a fixed natural-image
//!   template ([`MagnitudeTemplate`]), so the image keeps the energy distribution of a
//!   photo across frequencies and cannot turn into high-frequency noise.
//!
//! Seeded from a photo (feature accentuation), each reproduces the photo at step 0: the
//! Fourier spectrum is the photo's (through the inverse sigmoid and colour matrix); MaCo
//! takes the photo's phase, with the template's magnitude or the photo's own
//! ([`Parameterization::Maco::seed_magnitude`]), and keeps the photo's mean and contrast.

use std::sync::Arc;

use actmax_modifiers::standard_normal;
use actmax_tensor::{Conv2dParams, Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::Rng;

use crate::{Error, Result};

/// lucid's colour correlation of ImageNet (the square root of its colour covariance, from
/// an SVD), normalized by its largest column norm 0.4619524.
const COLOR_CORRELATION: [[f32; 3]; 3] = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];
const MAX_COLUMN_NORM: f32 = 0.461_952_4;

fn color_matrix() -> [[f32; 3]; 3] {
    COLOR_CORRELATION.map(|row| row.map(|v| v / MAX_COLUMN_NORM))
}

/// How the optimized parameters become an image.
#[derive(Debug, Clone, PartialEq)]
pub enum Parameterization {
    /// The pixels themselves.
    Pixel,
    /// lucid's decorrelated Fourier parameterization.
    Fourier {
        /// Power of the `1/f` scaling (lucid: 1).
        decay: f32,
        /// Standard deviation of the initial spectrum (lucid: 0.01).
        init_sd: f32,
    },
    /// MaCo: the phase is optimized, the magnitude is fixed to `template`.
    Maco {
        /// The amplitude spectrum every image keeps.
        template: Arc<MagnitudeTemplate>,
        /// With a seed image: keep the photo's own amplitude spectrum (faccent; the
        /// default), so that step 0 is the photo itself, instead of the template (Horama).
        /// Measured on the shipped photos (`cargo xtask accentuate --param maco`, README):
        /// the photo's own magnitude ends 2.4–7.7 dB nearer the photo at the same held-out
        /// success; the template's makes step 0 another picture with the photo's layout.
        seed_magnitude: bool,
    },
}

impl Parameterization {
    /// lucid's defaults: decay 1, initial standard deviation 0.01.
    pub fn fourier() -> Self {
        Self::Fourier { decay: 1.0, init_sd: 0.01 }
    }

    /// MaCo with the natural-image template the project ships (and, from a seed image,
    /// the seed's own magnitude).
    pub fn maco() -> Self {
        Self::Maco { template: Arc::new(MagnitudeTemplate::natural()), seed_magnitude: true }
    }

    /// A parameterization by its CLI name, with its defaults.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "pixel" => Ok(Self::Pixel),
            "fourier" => Ok(Self::fourier()),
            "maco" => Ok(Self::maco()),
            other => Err(Error::Options(format!("unknown parameterization `{other}`; valid: pixel, fourier, maco"))),
        }
    }

    /// Checks the settings before a run.
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Self::Fourier { decay, init_sd } if !(decay.is_finite() && init_sd.is_finite() && *init_sd >= 0.0) => {
                Err(Error::Options(format!("Fourier needs a finite decay and init_sd >= 0, got {decay}, {init_sd}")))
            }
            _ => Ok(()),
        }
    }

    /// Initial parameters for `shape = [B, C, H, W]` images in `range`: from `seed` when
    /// given (an image in `range`), else random (the pixel image: keras-vis's noise) from
    /// `rngs` — one stream for the batch, or one per image (image `b` then starts from its
    /// own stream alone, whatever else is in the batch).
    pub fn init(
        &self,
        shape: [usize; 4],
        range: (f32, f32),
        seed: Option<&Tensor>,
        rngs: &mut [StdRng],
    ) -> Result<Tensor> {
        let [b, c, h, w] = shape;
        let wc = w / 2 + 1;
        if rngs.is_empty() || (rngs.len() != 1 && rngs.len() != b) {
            return Err(Error::Options(format!(
                "{} random streams for a batch of {b}: pass one for the batch or one per image",
                rngs.len()
            )));
        }
        Ok(match (self, seed) {
            (Self::Pixel, Some(s)) => s.clone(),
            (Self::Pixel, None) => {
                let seeds: Vec<u64> = rngs.iter_mut().map(|r| r.random()).collect();
                crate::run::pixel_noise(shape, range, &seeds)
            }
            (Self::Fourier { init_sd, .. }, None) => per_image_normal(vec![b, c, h, wc, 2], rngs, |v| init_sd * v),
            (Self::Fourier { decay, .. }, Some(s)) => {
                let mut spec = spectrum_of(&pre_sigmoid(s, range, c), h, w);
                let scale = fourier_scale(h, w, *decay);
                for (i, v) in spec.iter_mut().enumerate() {
                    *v /= scale[(i / 2) % (h * wc)];
                }
                spec
            }
            (Self::Maco { .. }, None) => per_image_normal(vec![b, c, h, wc], rngs, |v| v),
            (Self::Maco { .. }, Some(s)) => {
                // The photo's phase (a seeded MaCo image does not standardize it).
                let spec = spectrum_of(&pre_sigmoid(s, range, c), h, w);
                let phase: Vec<f32> =
                    spec.as_slice().expect("standard").chunks_exact(2).map(|p| p[1].atan2(p[0])).collect();
                Tensor::from_shape_vec(vec![b, c, h, wc], phase).expect("sized")
            }
        })
    }

    /// Makes the image `[B, C, H, W]` in `range` from the parameters on the tape (a
    /// one-off: a run prepares once with [`Parameterization::prepare`]).
    pub fn image(&self, tape: &mut Tape, p: Var, range: (f32, f32), hw: [usize; 2]) -> Result<Var> {
        let channels = tape.shape(p)?.get(1).copied().unwrap_or(1);
        self.prepare(channels, hw, range)?.image(tape, p)
    }

    /// The constants of this parameterization for `channels × H × W` images in `range`
    /// (spectrum scale, resampled magnitude, colour matrix), made once for a whole run.
    pub fn prepare(&self, channels: usize, hw: [usize; 2], range: (f32, f32)) -> Result<PreparedImage> {
        self.prepare_seeded(channels, hw, range, None)
    }

    /// [`Parameterization::prepare`] for parameters [`Parameterization::init`]ialized from
    /// `seed` (`[B, C, H, W]` in `range`): a seeded MaCo image keeps the seed's mean and
    /// contrast (and, with `seed_magnitude`, its amplitude spectrum).
    pub fn prepare_seeded(
        &self,
        channels: usize,
        hw: [usize; 2],
        range: (f32, f32),
        seed: Option<&Tensor>,
    ) -> Result<PreparedImage> {
        let [h, w] = hw;
        let wc = w / 2 + 1;
        let mut restore = None;
        let spectrum = match (self, seed) {
            (Self::Pixel, _) => None,
            (Self::Fourier { decay, .. }, _) => {
                Some(Tensor::from_shape_vec(vec![h, wc, 1], fourier_scale(h, w, *decay)).expect("sized"))
            }
            (Self::Maco { template, .. }, None) => Some(template.resized(channels, h, w)?),
            (Self::Maco { template, seed_magnitude }, Some(s)) => {
                let x0 = pre_sigmoid(s, range, channels);
                restore = Some(sample_moments(&x0).map(Arc::new));
                Some(match seed_magnitude {
                    true => magnitude_of(&spectrum_of(&x0, h, w)),
                    false => template.resized(channels, h, w)?,
                })
            }
        };
        let m = color_matrix();
        let colour = (channels == 3).then(|| Arc::new(Tensor::from_shape_fn(vec![3, 3, 1, 1], |i| m[i[0]][i[1]])));
        Ok(PreparedImage { param: self.clone(), w, range, spectrum: spectrum.map(Arc::new), colour, restore })
    }
}

/// A [`Parameterization`] with its constants made for one image size and range.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    param: Parameterization,
    w: usize,
    range: (f32, f32),
    /// Fourier: the `1/f` scale `[H, W/2+1, 1]`; MaCo: the magnitude `[C, H, W/2+1]`.
    spectrum: Option<Arc<Tensor>>,
    /// The colour matrix as a 1×1 conv weight (three-channel images only).
    colour: Option<Arc<Tensor>>,
    /// A seeded MaCo image: the seed's per-image mean and `std + 1e-4` (each
    /// `[B, 1, 1, 1]`), restored after the standardization; the phase is then not
    /// standardized.
    restore: Option<[Arc<Tensor>; 2]>,
}

impl PreparedImage {
    /// Makes the image `[B, C, H, W]` in the range from the parameters on the tape.
    pub fn image(&self, tape: &mut Tape, p: Var) -> Result<Var> {
        let spectrum = match &self.spectrum {
            Some(s) => tape.constant_shared(s.clone()),
            None => return Ok(p),
        };
        let spatial = match &self.param {
            Parameterization::Pixel => return Ok(p),
            Parameterization::Fourier { .. } => {
                let spec = tape.mul(p, spectrum)?;
                let img = tape.irfft2(spec, self.w)?;
                tape.mul_scalar(img, 0.25)?
            }
            Parameterization::Maco { .. } => {
                let phase = match self.restore {
                    Some(_) => p,
                    None => standardize(tape, p)?,
                };
                let (cos, sin) = (tape.cos(phase)?, tape.sin(phase)?);
                let (re, im) = (tape.mul(cos, spectrum)?, tape.mul(sin, spectrum)?);
                let mut one = tape.shape(p)?.to_vec();
                one.push(1);
                let (re, im) = (tape.reshape(re, &one)?, tape.reshape(im, &one)?);
                let spec = tape.concat(&[re, im], 4)?;
                let img = tape.irfft2(spec, self.w)?;
                let img = standardize(tape, img)?;
                match &self.restore {
                    Some([mean, sd]) => {
                        let (mean, sd) = (tape.constant_shared(mean.clone()), tape.constant_shared(sd.clone()));
                        let img = tape.mul(img, sd)?;
                        tape.add(img, mean)?
                    }
                    None => img,
                }
            }
        };
        let spatial = match &self.colour {
            Some(c) => {
                let wgt = tape.constant_shared(c.clone());
                tape.conv2d(spatial, wgt, None, Conv2dParams::new())?
            }
            None => spatial,
        };
        let unit = tape.sigmoid(spatial)?;
        let scaled = tape.mul_scalar(unit, self.range.1 - self.range.0)?;
        Ok(tape.add_scalar(scaled, self.range.0)?)
    }
}

/// Standard normal draws mapped by `f`, filled image by image in memory order: image `b`'s
/// block from `rngs[b]` (one stream per image), or all from `rngs[0]`.
fn per_image_normal(shape: Vec<usize>, rngs: &mut [StdRng], f: impl Fn(f32) -> f32) -> Tensor {
    let per: usize = shape[1..].iter().product();
    let mut data = Vec::with_capacity(shape[0] * per);
    for b in 0..shape[0] {
        let n = rngs.len();
        let rng = &mut rngs[b % n];
        data.extend((0..per).map(|_| f(standard_normal(rng))));
    }
    Tensor::from_shape_vec(shape, data).expect("sized")
}

/// `(x − mean) / (std + 1e-4)` of each sample over all its other axes (MaCo's
/// `standardize`, per image so the images of a batch stay independent).
fn standardize(tape: &mut Tape, x: Var) -> Result<Var> {
    let rank = tape.shape(x)?.len();
    let axes: Vec<usize> = (1..rank).collect();
    let mean = tape.mean(x, &axes, true)?;
    let d = tape.sub(x, mean)?;
    let sq = tape.mul(d, d)?;
    let var = tape.mean(sq, &axes, true)?;
    let var = tape.add_scalar(var, 1e-8)?;
    let sd = tape.sqrt(var)?;
    let sd = tape.add_scalar(sd, 1e-4)?;
    Ok(tape.div(d, sd)?)
}

/// Per-sample mean and `std + 1e-4` of `x` (`[B, ...]`), each `[B, 1, …, 1]`: what
/// [`standardize`] divides out (same `1e-8` variance floor), to multiply back in.
fn sample_moments(x: &Tensor) -> [Tensor; 2] {
    let mut shape = vec![x.shape()[0]];
    shape.extend(std::iter::repeat_n(1, x.ndim() - 1));
    let (mut means, mut sds) = (Vec::new(), Vec::new());
    for sample in x.outer_iter() {
        let n = sample.len().max(1) as f64;
        let mean = sample.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = sample.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        means.push(mean as f32);
        sds.push(((var + 1e-8).sqrt() + 1e-4) as f32);
    }
    [means, sds].map(|v| Tensor::from_shape_vec(shape.clone(), v).expect("one per sample"))
}

/// The amplitude `[B, C, H, W/2+1]` of a half spectrum `[B, C, H, W/2+1, 2]`.
fn magnitude_of(spec: &Tensor) -> Tensor {
    let s = spec.shape();
    let mag: Vec<f32> = spec.as_slice().expect("standard").chunks_exact(2).map(|p| p[0].hypot(p[1])).collect();
    Tensor::from_shape_vec(s[..4].to_vec(), mag).expect("sized")
}

/// lucid's spectrum scale `1 / max(f, 1/max(H, W))^decay` on the `H × (W/2 + 1)` grid.
fn fourier_scale(h: usize, w: usize, decay: f32) -> Vec<f32> {
    let floor = 1.0 / h.max(w) as f32;
    let mut out = Vec::with_capacity(h * (w / 2 + 1));
    for r in 0..h {
        for k in 0..w / 2 + 1 {
            out.push(1.0 / frequency(r, k, h, w).max(floor).powf(decay));
        }
    }
    out
}

/// `√(fy² + fx²)` in cycles per pixel of row `r`, half-spectrum column `k` (numpy's
/// `fftfreq` layout along rows).
pub(crate) fn frequency(r: usize, k: usize, h: usize, w: usize) -> f32 {
    let fy = if r <= h / 2 { r as f32 } else { r as f32 - h as f32 } / h as f32;
    let fx = k as f32 / w as f32;
    (fy * fy + fx * fx).sqrt()
}

/// The decorrelated, pre-sigmoid image whose rendering is `x` (`[B, C, H, W]` in `range`):
/// logit of the unit values, then the inverse colour matrix.
fn pre_sigmoid(x: &Tensor, range: (f32, f32), c: usize) -> Tensor {
    let logit = x.mapv(|v| {
        let u = ((v - range.0) / (range.1 - range.0)).clamp(1e-4, 1.0 - 1e-4);
        (u / (1.0 - u)).ln()
    });
    if c != 3 {
        return logit;
    }
    let inv = invert3(color_matrix());
    let mut out = logit.clone();
    let s = x.shape().to_vec();
    let plane = s[2] * s[3];
    let (src, dst) = (logit.as_slice().expect("standard"), out.as_slice_mut().expect("standard"));
    for b in 0..s[0] {
        for i in 0..plane {
            let v = [0, 1, 2].map(|ch| src[(b * 3 + ch) * plane + i]);
            for (ch, row) in inv.iter().enumerate() {
                dst[(b * 3 + ch) * plane + i] = row[0] * v[0] + row[1] * v[1] + row[2] * v[2];
            }
        }
    }
    out
}

/// The orthonormal half spectrum `[B, C, H, W/2+1, 2]` of `x` (`[B, C, H, W]`), × 4 (the
/// inverse of the Fourier image's `÷ 4`).
fn spectrum_of(x: &Tensor, h: usize, w: usize) -> Tensor {
    let s = x.shape();
    let planes = s[0] * s[1];
    let z = actmax_tensor::fft::rfft2(x.as_slice().expect("standard"), planes, h, w);
    let z: Vec<f32> = z.into_iter().map(|v| v * 4.0).collect();
    Tensor::from_shape_vec(vec![s[0], s[1], h, w / 2 + 1, 2], z).expect("sized")
}

fn invert3(m: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let cof = |r: usize, c: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
        m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]
    };
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = cof(c, r) / det;
        }
    }
    inv
}

/// The amplitude spectrum MaCo keeps fixed: per decorrelated colour channel, on a
/// `size × (size/2 + 1)` half-spectrum grid, resampled to any image size by normalized
/// frequency.
#[derive(Debug, Clone, PartialEq)]
pub struct MagnitudeTemplate {
    /// `[C, size, size/2 + 1]`.
    pub magnitude: Tensor,
    /// Where it came from (for logs and manifests).
    pub source: &'static str,
}

/// The template the project computed from its photos (`cargo xtask maco-template`):
/// 3 × 224 × 113 little-endian f32.
const NATURAL_TEMPLATE: &[u8] = include_bytes!("../../../models/maco_magnitude_224.f32");
const TEMPLATE_SIZE: usize = 224;

impl MagnitudeTemplate {
    /// The shipped natural-image template (see `models/README.md`).
    pub fn natural() -> Self {
        let wc = TEMPLATE_SIZE / 2 + 1;
        let v: Vec<f32> =
            NATURAL_TEMPLATE.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        match Tensor::from_shape_vec(vec![3, TEMPLATE_SIZE, wc], v) {
            Ok(magnitude) => Self { magnitude, source: "natural photos (models/maco_magnitude_224.f32)" },
            Err(_) => Self::one_over_f(3, TEMPLATE_SIZE),
        }
    }

    /// The fallback: `1 / max(f, 1/size)` in every channel.
    pub fn one_over_f(channels: usize, size: usize) -> Self {
        let wc = size / 2 + 1;
        let magnitude = Tensor::from_shape_fn(vec![channels, size, wc], |i| {
            1.0 / frequency(i[1], i[2], size, size).max(1.0 / size as f32)
        });
        Self { magnitude, source: "1/f" }
    }

    /// The template on an `h × (w/2 + 1)` grid for `channels` channels (a grey image takes
    /// the luminance channel), by bilinear interpolation in normalized frequency.
    pub fn resized(&self, channels: usize, h: usize, w: usize) -> Result<Tensor> {
        let s = self.magnitude.shape();
        if s.len() != 3 || s[1] < 2 || s[2] != s[1] / 2 + 1 {
            return Err(Error::Options(format!("a magnitude template is [C, S, S/2 + 1], got {s:?}")));
        }
        let (tc, size) = (s[0], s[1]);
        let wc = w / 2 + 1;
        let m = &self.magnitude;
        let at = |ch: usize, fy: f32, fx: f32| -> f32 {
            // Template coordinates: rows centred (fftshift), columns 0..=size/2.
            let y = fy * size as f32 + (size / 2) as f32;
            let x = (fx * size as f32).min((size / 2) as f32);
            let (y0, x0) = (y.floor().clamp(0.0, (size - 1) as f32), x.floor());
            let (dy, dx) = ((y - y0).clamp(0.0, 1.0), x - x0);
            let row = |yy: f32| {
                let shifted = (yy as usize + size - size / 2) % size;
                let (a, b) = (x0 as usize, (x0 as usize + 1).min(size / 2));
                m[[ch, shifted, a]] * (1.0 - dx) + m[[ch, shifted, b]] * dx
            };
            let y1 = (y0 + 1.0).min((size - 1) as f32);
            row(y0) * (1.0 - dy) + row(y1) * dy
        };
        Ok(Tensor::from_shape_fn(vec![channels, h, wc], |i| {
            let ch = if channels == tc { i[0] } else { 0 };
            let fy = if i[1] <= h / 2 { i[1] as f32 } else { i[1] as f32 - h as f32 } / h as f32;
            at(ch, fy, i[2] as f32 / w as f32)
        }))
    }
}
