//! The update rules: keras-vis's learning-rate-free RMSProp and Adam (the same Adam as
//! training's, [`actmax_tensor::AdamState`]).

use actmax_tensor::{AdamConfig, AdamState, Tensor};

use crate::{Error, Result};

/// How the parameters are updated from their gradient.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// keras-vis: L2-normalized gradient, RMSProp without a learning rate. The norm is
    /// each image's own (keras-vis took one over the batch, which made an image depend on
    /// the others it was optimized with).
    KerasRmsprop,
    /// Adam with this learning rate (in the parameters' units: pixels of the input range
    /// for [`crate::Parameterization::Pixel`]).
    Adam(f32),
}

impl Optimizer {
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Self::Adam(lr) if !(lr.is_finite() && *lr > 0.0) => {
                Err(Error::Options(format!("the learning rate must be finite and > 0, got {lr}")))
            }
            _ => Ok(()),
        }
    }
}

/// An optimizer with its state for one parameter tensor.
pub(crate) enum OptimizerState {
    Rmsprop { cache: Tensor, unit: f32 },
    Adam { state: AdamState, config: AdamConfig },
}

impl OptimizerState {
    /// `unit` sizes keras-vis's steps: its RMSProp moves pixels by ~4.5 at first, sized for
    /// 0..255, so steps are scaled by `(high − low) / 255` (1 on a 0..255 model) and a 0..1
    /// model takes the same relative steps instead of saturating every pixel at step one.
    pub(crate) fn new(optimizer: Optimizer, shape: &[usize], unit: f32) -> Self {
        match optimizer {
            Optimizer::KerasRmsprop => Self::Rmsprop { cache: Tensor::zeros(shape), unit },
            Optimizer::Adam(lr) => Self::Adam { state: AdamState::new(shape), config: AdamConfig::new(lr) },
        }
    }

    /// One update of `p` from its gradient `g` (the loss is minimized).
    pub(crate) fn step(&mut self, p: &mut Tensor, g: &Tensor) -> Result<()> {
        match self {
            Self::Rmsprop { cache, unit } => {
                let unit = *unit;
                let axis = ndarray::Axis(0);
                for ((mut p, g), mut cache) in
                    p.axis_iter_mut(axis).zip(g.axis_iter(axis)).zip(cache.axis_iter_mut(axis))
                {
                    let norm = g.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    ndarray::Zip::from(&mut p).and(&g).and(&mut cache).for_each(|x, &g, c| {
                        let g = g / norm;
                        *c = 0.95 * *c + 0.05 * g * g;
                        *x -= unit * g / (*c + 1e-7).sqrt();
                    });
                }
                Ok(())
            }
            Self::Adam { state, config } => Ok(state.update(p, g, config)?),
        }
    }
}
