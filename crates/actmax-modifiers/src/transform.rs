//! lucid's robustness transforms, applied inside the graph each step: the model sees a
//! randomly moved, scaled and rotated image, and the gradient flows back through the move.

use actmax_tensor::{Affine, PadMode, Tape, Var, WarpBorder};
use rand::{Rng, RngCore};

use crate::ModifierError;

/// One random, differentiable change of an NCHW image.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// Translate by up to `d` per axis (reflect-padded, same size out): pixels when
    /// `d >= 1`, a fraction of the axis when `d < 1` (keras-vis's `Jitter` convention).
    Jitter(f32),
    /// Zoom about the centre by a factor drawn from `[lo, hi]` (same size out).
    Scale(f32, f32),
    /// Rotate about the centre by an angle drawn from `[-deg, deg]` (same size out).
    Rotate(f32),
    /// Pad every side by `n` pixels of `value` (the output grows: only for models that
    /// take any input size).
    Pad(usize, f32),
}

impl Transform {
    /// Applies the transform on the tape. `rngs` holds one random stream for the whole
    /// batch (a jitter then moves every image alike) or one per image.
    pub fn apply<R: RngCore>(&self, tape: &mut Tape, x: Var, rngs: &mut [R]) -> Result<Var, ModifierError> {
        let s = tape.shape(x)?.to_vec();
        if s.len() != 4 {
            return Err(ModifierError::Param(format!("transforms expect an NCHW image, got {s:?}")));
        }
        let (n, h, w) = (s[0], s[2], s[3]);
        crate::check_streams(rngs.len(), n)?;
        Ok(match *self {
            Self::Jitter(j) => {
                let (jy, jx) = jitter_pixels(j, h, w)?;
                if jy == 0 && jx == 0 {
                    return Ok(x);
                }
                let padded = tape.pad(x, &[(jy, jy), (jx, jx)], PadMode::Reflect)?;
                let mut shifted = Vec::with_capacity(rngs.len());
                // One shift for the batch, or one per image (each cut from its own row).
                let rows = if rngs.len() == 1 { vec![(0, n)] } else { (0..n).map(|b| (b, b + 1)).collect() };
                for (rng, rows) in rngs.iter_mut().zip(rows) {
                    let (dy, dx) = (rng.random_range(0..=2 * jy), rng.random_range(0..=2 * jx));
                    shifted.push(tape.slice(padded, &[rows, (0, s[1]), (dy, dy + h), (dx, dx + w)])?);
                }
                match shifted.as_slice() {
                    [one] => *one,
                    _ => tape.concat(&shifted, 0)?,
                }
            }
            Self::Scale(lo, hi) => {
                if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                    return Err(ModifierError::Param(format!(
                        "scale range must satisfy 0 < lo <= hi, got [{lo}, {hi}]"
                    )));
                }
                let maps: Vec<Affine> =
                    (0..n).map(|b| Affine::rotate_scale(0.0, crate::stream(rngs, b).random_range(lo..=hi))).collect();
                tape.affine_warp(x, &maps, [h, w], WarpBorder::Reflect)?
            }
            Self::Rotate(deg) => {
                if !(deg.is_finite() && deg >= 0.0) {
                    return Err(ModifierError::Param(format!("rotation must be >= 0 degrees, got {deg}")));
                }
                let maps: Vec<Affine> = (0..n)
                    .map(|b| Affine::rotate_scale(crate::stream(rngs, b).random_range(-deg..=deg), 1.0))
                    .collect();
                tape.affine_warp(x, &maps, [h, w], WarpBorder::Reflect)?
            }
            Self::Pad(p, value) => tape.pad(x, &[(p, p), (p, p)], PadMode::Constant(value))?,
        })
    }
}

/// Transforms applied in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TransformSet(pub Vec<Transform>);

impl TransformSet {
    /// lucid's `standard_transforms` made size-preserving (so models with a fixed input
    /// size take it): jitter 8 px, scale 0.9–1.1, rotate ±10°, jitter 4 px — at 224 px;
    /// the jitters are fractions of the side (8/224, 4/224), so a 28 px MNIST image moves
    /// by 1 px, not by a third of itself. lucid also pads by 12 first; add
    /// [`Transform::Pad`] for models that take any size.
    pub fn lucid_standard() -> Self {
        Self(vec![
            Transform::Jitter(8.0 / 224.0),
            Transform::Scale(0.9, 1.1),
            Transform::Rotate(10.0),
            Transform::Jitter(4.0 / 224.0),
        ])
    }

    /// Applies every transform in order (`rngs`: one stream, or one per image).
    pub fn apply<R: RngCore>(&self, tape: &mut Tape, x: Var, rngs: &mut [R]) -> Result<Var, ModifierError> {
        self.0.iter().try_fold(x, |v, t| t.apply(tape, v, rngs))
    }

    /// The set as one sampling map per image, when every transform is a move of the plane
    /// (jitter, scale, rotate: not pad), drawn for `n` images of `h × w`: output pixel `q`
    /// (from the centre) samples the input at `centre + A·q + t`. One warp then does what
    /// the chain does in several (one bilinear resampling instead of three, and less
    /// blur), and random crops can fold it into their own warp. `None` (nothing drawn)
    /// when a transform is not a move. `rngs`: one stream for the batch, or one per image.
    pub fn draw_maps<R: RngCore>(
        &self,
        n: usize,
        [h, w]: [usize; 2],
        rngs: &mut [R],
    ) -> Result<Option<Vec<Affine>>, ModifierError> {
        crate::check_streams(rngs.len(), n)?;
        if self.0.iter().any(|t| matches!(t, Transform::Pad(..))) {
            return Ok(None);
        }
        let mut maps = vec![Affine::identity(); n];
        for t in &self.0 {
            for (b, m) in maps.iter_mut().enumerate() {
                // The chain x → T1 → … → Tk samples x at T1(T2(…Tk(q))): compose on the right.
                *m = compose(m, &t.draw_map([h, w], crate::stream(rngs, b))?);
            }
        }
        Ok(Some(maps))
    }
}

/// The largest shift per axis of a jitter `j` (pixels, or a fraction of the side when
/// `j < 1`), kept below the side.
fn jitter_pixels(j: f32, h: usize, w: usize) -> Result<(usize, usize), ModifierError> {
    if !(j.is_finite() && j >= 0.0) {
        return Err(ModifierError::Param(format!("jitter must be >= 0 and finite, got {j}")));
    }
    let pixels = |size: usize| (if j < 1.0 { j * size as f32 } else { j }).round() as usize;
    Ok((pixels(h).min(h - 1), pixels(w).min(w - 1)))
}

/// `a ∘ b`: first `b`, then `a` (both sampling maps in centred coordinates).
pub fn compose(a: &Affine, b: &Affine) -> Affine {
    let mul = |r: [f32; 2], m: &Affine| [r[0] * m.row[0] + r[1] * m.col[0], r[0] * m.row[1] + r[1] * m.col[1]];
    Affine {
        row: mul(a.row, b),
        col: mul(a.col, b),
        shift: [
            a.row[0] * b.shift[0] + a.row[1] * b.shift[1] + a.shift[0],
            a.col[0] * b.shift[0] + a.col[1] * b.shift[1] + a.shift[1],
        ],
    }
}

impl Transform {
    /// This transform's random draw as a sampling map (same-size moves only).
    fn draw_map<R: RngCore>(&self, [h, w]: [usize; 2], rng: &mut R) -> Result<Affine, ModifierError> {
        Ok(match *self {
            Self::Jitter(j) => {
                let (jy, jx) = jitter_pixels(j, h, w)?;
                let (dy, dx) = (rng.random_range(0..=2 * jy), rng.random_range(0..=2 * jx));
                Affine { shift: [dy as f32 - jy as f32, dx as f32 - jx as f32], ..Affine::identity() }
            }
            Self::Scale(lo, hi) => {
                if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
                    return Err(ModifierError::Param(format!(
                        "scale range must satisfy 0 < lo <= hi, got [{lo}, {hi}]"
                    )));
                }
                Affine::rotate_scale(0.0, rng.random_range(lo..=hi))
            }
            Self::Rotate(deg) => {
                if !(deg.is_finite() && deg >= 0.0) {
                    return Err(ModifierError::Param(format!("rotation must be >= 0 degrees, got {deg}")));
                }
                Affine::rotate_scale(rng.random_range(-deg..=deg), 1.0)
            }
            Self::Pad(..) => return Err(ModifierError::Param("pad is not a move of the plane".into())),
        })
    }
}
