//! Adam, the one update rule both training (weights) and visualization (image parameters)
//! use: the state of one tensor, updated in place.

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;

/// Adam's hyper-parameters (Kingma & Ba); β and ε default to PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
}

impl AdamConfig {
    /// Adam with learning rate `lr`, β = (0.9, 0.999), ε = 1e-8.
    pub fn new(lr: f32) -> Self {
        Self { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// The moments of one tensor and how many updates it had.
#[derive(Debug, Clone)]
pub struct AdamState {
    m: Tensor,
    v: Tensor,
    step: i32,
}

impl AdamState {
    /// Zero moments for a tensor of `shape`.
    pub fn new(shape: &[usize]) -> Self {
        Self { m: Tensor::zeros(shape), v: Tensor::zeros(shape), step: 0 }
    }

    /// One bias-corrected Adam update of `p` from its gradient `g`.
    pub fn update(&mut self, p: &mut Tensor, g: &Tensor, cfg: &AdamConfig) -> Result<()> {
        if p.shape() != self.m.shape() || g.shape() != self.m.shape() {
            return Err(shape_err(
                "adam",
                format!("parameter and gradient must have shape {:?}", self.m.shape()),
                g.shape(),
            ));
        }
        self.step += 1;
        let (b1, b2) = (cfg.beta1, cfg.beta2);
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        ndarray::Zip::from(p).and(&mut self.m).and(&mut self.v).and(g).for_each(|p, m, v, &g| {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            *p -= cfg.lr * (*m / c1) / ((*v / c2).sqrt() + cfg.eps);
        });
        Ok(())
    }
}
