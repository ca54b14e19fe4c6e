//! Training a model with the same tape: parameters become variables, dropout is live, and
//! [`Adam`] updates the weights in place. Activation maximization never needs this (its
//! weights are constants); the project uses it to train its own small models (MNIST, the
//! regression example) without a Python framework.

use std::collections::BTreeMap;
use std::sync::Arc;

use actmax_tensor::{AdamConfig, AdamState, Gradients, Tape, Tensor, TensorError, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Model;

/// How a forward pass puts a layer's parameters on the tape.
pub enum Binding<'a> {
    /// Parameters are shared constants (no gradients); dropout is the identity.
    Inference,
    /// Parameters are variables recorded by name; dropout draws masks.
    Training(&'a mut TrainingPass),
}

impl Binding<'_> {
    /// The parameter `local` (e.g. `weight`) of the current layer on the tape. Training
    /// names it `<layer>.<local>` from the node [`crate::Model::forward_training`] is at.
    pub(crate) fn param(&mut self, tape: &mut Tape, local: &str, t: &Arc<Tensor>) -> Var {
        match self {
            Self::Inference => tape.constant_shared(t.clone()),
            Self::Training(pass) => {
                let v = tape.variable_shared(t.clone());
                pass.params.push((format!("{}.{local}", pass.layer), v));
                v
            }
        }
    }

    /// Inverted dropout: keeps each value with probability `1 − rate`, scaled by
    /// `1 / (1 − rate)`, so inference needs no rescaling.
    pub(crate) fn dropout(&mut self, tape: &mut Tape, x: Var, rate: f32) -> Result<Var, TensorError> {
        let Self::Training(pass) = self else { return Ok(x) };
        if rate <= 0.0 {
            return Ok(x);
        }
        let keep = 1.0 - rate.min(0.999);
        let shape = tape.shape(x)?.to_vec();
        let mask = Tensor::from_shape_fn(shape, |_| if pass.rng.random::<f32>() < keep { 1.0 / keep } else { 0.0 });
        let m = tape.constant(mask);
        tape.mul(x, m)
    }
}

/// The state of one training forward pass: the parameter variables it put on the tape
/// (full names, as [`crate::Model::state_dict`] spells them) and the dropout noise.
pub struct TrainingPass {
    /// `(full name, variable)` for every parameter the pass used.
    pub params: Vec<(String, Var)>,
    pub(crate) layer: String,
    rng: StdRng,
}

impl TrainingPass {
    /// A pass whose dropout masks follow from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { params: Vec::new(), layer: String::new(), rng: StdRng::seed_from_u64(seed) }
    }

    /// The gradient of every recorded parameter, by full name; a parameter used more than
    /// once in the pass (two forwards on one tape) gets the sum of its gradients.
    pub fn gradients(&self, grads: &Gradients) -> BTreeMap<String, Tensor> {
        let mut out: BTreeMap<String, Tensor> = BTreeMap::new();
        for (name, v) in &self.params {
            let Some(g) = grads.get(*v) else { continue };
            match out.get_mut(name) {
                Some(sum) => *sum += g,
                None => {
                    out.insert(name.clone(), g.clone());
                }
            }
        }
        out
    }
}

/// Adam (Kingma & Ba) over named parameters, with PyTorch's defaults for β and ε (the
/// update itself is [`actmax_tensor::AdamState`], shared with the visualization optimizer).
pub struct Adam {
    config: AdamConfig,
    states: BTreeMap<String, AdamState>,
}

impl Adam {
    /// Adam with learning rate `lr`, β = (0.9, 0.999), ε = 1e-8.
    pub fn new(lr: f32) -> Self {
        Self { config: AdamConfig::new(lr), states: BTreeMap::new() }
    }

    /// Changes the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    /// One update of the model's parameters from `grads` (by full name); parameters
    /// without a gradient, or with one of another shape, are left alone. Reset the tape
    /// first, or each weight is copied.
    pub fn step(&mut self, model: &mut Model, grads: &BTreeMap<String, Tensor>) {
        let config = self.config;
        model.for_each_parameter_mut(|name, p| {
            let Some(g) = grads.get(name) else { return };
            let state = self.states.entry(name.to_string()).or_insert_with(|| AdamState::new(g.shape()));
            // A shape mismatch cannot come from a TrainingPass of this model; skip it.
            let _ = state.update(Arc::make_mut(p), g, &config);
        });
    }
}
