#![doc = include_str!("../README.md")]

mod error;
mod keras_vis;
pub mod lucid;
mod objective;

use std::collections::HashMap;

use actmax_tensor::{Tape, Var};

pub use error::LossError;
pub use keras_vis::{ActivationMaximization, ChannelAxis, LpNorm, TotalVariation};
pub use objective::Objective;

/// Result alias of the losses crate.
pub type Result<T, E = LossError> = std::result::Result<T, E>;

/// What a loss can read: the input image (also reachable as the layer `"input"`) and the
/// activations the caller computed, by layer name.
#[derive(Debug, Clone, Copy)]
pub struct LossContext<'a> {
    /// The image being optimized.
    pub input: Var,
    activations: &'a HashMap<String, Var>,
}

impl<'a> LossContext<'a> {
    /// A context over an input and named activations.
    pub fn new(input: Var, activations: &'a HashMap<String, Var>) -> Self {
        Self { input, activations }
    }

    /// The activation of `layer` (`"input"` is the image), or an error listing what exists.
    pub fn activation(&self, layer: &str) -> Result<Var> {
        if layer == "input" {
            return Ok(self.input);
        }
        self.activations.get(layer).copied().ok_or_else(|| {
            let mut known: Vec<String> = self.activations.keys().cloned().collect();
            known.sort();
            LossError::UnknownLayer { layer: layer.to_string(), known }
        })
    }
}

/// A differentiable quantity to minimize.
pub trait Loss: Send + Sync {
    /// Name for logs (`ActivationMaximization(fc, [20])`, ...).
    fn name(&self) -> String;
    /// The layers whose activations it reads (besides `"input"`), so a caller computes them.
    fn layers(&self) -> Vec<String>;
    /// Adds the loss to the tape: a scalar (shape `[]`) or one value per sample (`[B]`).
    fn build(&self, tape: &mut Tape, ctx: &LossContext<'_>) -> Result<Var>;
}

/// The built terms of a [`WeightedLosses`].
#[derive(Debug, Clone)]
pub struct BuiltLosses {
    /// `Σ weight · loss`, summed over the batch: the scalar to minimize.
    pub total: Var,
    /// Each term's name and (unweighted) value, scalar or per sample.
    pub terms: Vec<(String, Var)>,
}

/// `Σ weight · loss`; terms with weight 0 are not built at all.
#[derive(Default)]
pub struct WeightedLosses {
    terms: Vec<(Box<dyn Loss>, f32)>,
}

impl WeightedLosses {
    /// No terms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a term.
    pub fn with(mut self, loss: impl Loss + 'static, weight: f32) -> Self {
        self.push(Box::new(loss), weight);
        self
    }

    /// Adds a boxed term.
    pub fn push(&mut self, loss: Box<dyn Loss>, weight: f32) {
        self.terms.push((loss, weight));
    }

    /// The terms that count (non-zero weight), with their weights.
    pub fn active(&self) -> impl Iterator<Item = (&dyn Loss, f32)> {
        self.terms.iter().filter(|(_, w)| *w != 0.0).map(|(l, w)| (l.as_ref(), *w))
    }

    /// Every layer an active term reads.
    pub fn layers(&self) -> Vec<String> {
        let mut v: Vec<String> = self.active().flat_map(|(l, _)| l.layers()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Builds every active term and their weighted sum.
    pub fn build(&self, tape: &mut Tape, ctx: &LossContext<'_>) -> Result<BuiltLosses> {
        if !self.terms.iter().all(|(_, w)| w.is_finite()) {
            return Err(LossError::Param("loss weights must be finite".into()));
        }
        let mut total: Option<Var> = None;
        let mut terms = Vec::new();
        for (loss, weight) in self.active() {
            let v = loss.build(tape, ctx)?;
            terms.push((loss.name(), v));
            let s = tape.sum_all(v)?;
            let s = tape.mul_scalar(s, weight)?;
            total = Some(match total {
                Some(t) => tape.add(t, s)?,
                None => s,
            });
        }
        let total = match total {
            Some(t) => t,
            None => return Err(LossError::Param("no loss term has a non-zero weight".into())),
        };
        Ok(BuiltLosses { total, terms })
    }
}
