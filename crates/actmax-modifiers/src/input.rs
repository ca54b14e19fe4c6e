//! Input modifiers: change the image before a step, undo the change after it.

use actmax_tensor::Tensor;
use rand::{Rng, RngCore};

use crate::ModifierError;

/// A change made to the image before each step and undone after it.
pub trait InputModifier: Send {
    /// Name for logs.
    fn name(&self) -> String;
    /// Before the step (`x` is `[N, C, H, W]`).
    fn pre(&mut self, x: &mut Tensor, rng: &mut dyn RngCore) -> Result<(), ModifierError>;
    /// After the step: undoes this step's `pre`. It may be applied to more than one tensor
    /// of the image's shape (the image, and its gradient).
    fn post(&mut self, x: &mut Tensor) -> Result<(), ModifierError>;
}

/// keras-vis's `Jitter`: a random circular roll of the image, per spatial axis up to `j`
/// pixels (`j < 1`: a fraction of that axis's size), undone exactly by `post`.
#[derive(Debug, Clone)]
pub struct Jitter {
    amount: [f32; 2],
    last: [isize; 2],
}

impl Jitter {
    /// The same jitter on both axes.
    pub fn new(j: f32) -> Result<Self, ModifierError> {
        Self::per_axis([j, j])
    }

    /// Jitter per axis (rows, columns).
    pub fn per_axis(amount: [f32; 2]) -> Result<Self, ModifierError> {
        if amount.iter().any(|a| !a.is_finite() || *a < 0.0) {
            return Err(ModifierError::Param(format!("jitter must be >= 0 and finite, got {amount:?}")));
        }
        Ok(Self { amount, last: [0, 0] })
    }

    fn limit(&self, axis: usize, size: usize) -> isize {
        let j = self.amount[axis];
        (if j < 1.0 { j * size as f32 } else { j }).round() as isize
    }
}

fn roll_spatial(x: &mut Tensor, shift: [isize; 2]) -> Result<(), ModifierError> {
    let s = x.shape().to_vec();
    if s.len() != 4 {
        return Err(ModifierError::Param(format!("Jitter expects an NCHW image, got {s:?}")));
    }
    let mut tape = actmax_tensor::Tape::new();
    let v = tape.constant(std::mem::take(x));
    let r = tape.roll(v, &[0, 0, shift[0], shift[1]])?;
    *x = tape.value(r)?.clone();
    Ok(())
}

impl InputModifier for Jitter {
    fn name(&self) -> String {
        format!("Jitter({:?})", self.amount)
    }

    fn pre(&mut self, x: &mut Tensor, rng: &mut dyn RngCore) -> Result<(), ModifierError> {
        let s = x.shape().to_vec();
        if s.len() != 4 {
            return Err(ModifierError::Param(format!("Jitter expects an NCHW image, got {s:?}")));
        }
        for axis in 0..2 {
            let l = self.limit(axis, s[2 + axis]);
            self.last[axis] = if l == 0 { 0 } else { rng.random_range(-(l as i64)..=l as i64) as isize };
        }
        roll_spatial(x, self.last)
    }

    fn post(&mut self, x: &mut Tensor) -> Result<(), ModifierError> {
        roll_spatial(x, [-self.last[0], -self.last[1]])
    }
}
