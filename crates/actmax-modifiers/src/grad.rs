//! Gradient modifiers (on dL/dinput) and backprop modifiers (inside ReLU-family backward).

use std::fmt;
use std::sync::Arc;

use actmax_tensor::{BackpropMode, Tensor};

use crate::ModifierError;

/// keras-vis's `K.epsilon()`, guarding the reciprocals.
const EPS: f32 = 1e-7;

/// Names [`GradModifier::from_name`] accepts.
pub const GRAD_MODIFIERS: &[&str] = &["identity", "negate", "absolute", "invert", "relu", "small_values"];

/// Names [`backprop_mode`] accepts.
pub const BACKPROP_MODIFIERS: &[&str] = &["none", "guided", "rectified", "deconv", "relu", "redirected"];

/// A function applied to dL/dinput before the optimizer step.
#[derive(Clone, Default)]
pub enum GradModifier {
    /// `g`.
    #[default]
    Identity,
    /// `−g`: drives the output down instead of up (regression "decrease").
    Negate,
    /// `|g|`.
    Absolute,
    /// `1 / (g + ε)`.
    Invert,
    /// `max(g, 0)`.
    Relu,
    /// `|1 / (g + ε)|`: favours pixels with small gradients.
    SmallValues,
    /// Any function of the gradient (same shape out).
    Custom(Arc<dyn Fn(&Tensor) -> Tensor + Send + Sync>),
}

impl fmt::Debug for GradModifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl GradModifier {
    /// The modifier of a name (as the CLI's `--grad-modifier`).
    pub fn from_name(name: &str) -> Result<Self, ModifierError> {
        Ok(match name {
            "identity" | "none" => Self::Identity,
            "negate" => Self::Negate,
            "absolute" => Self::Absolute,
            "invert" => Self::Invert,
            "relu" => Self::Relu,
            "small_values" => Self::SmallValues,
            _ => {
                return Err(ModifierError::UnknownName {
                    kind: "gradient modifier",
                    name: name.into(),
                    valid: GRAD_MODIFIERS.to_vec(),
                })
            }
        })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Negate => "negate",
            Self::Absolute => "absolute",
            Self::Invert => "invert",
            Self::Relu => "relu",
            Self::SmallValues => "small_values",
            Self::Custom(_) => "custom",
        }
    }

    /// Which way the steps move the loss: `Some(1.0)` when they descend it (identity),
    /// `Some(-1.0)` when they ascend it (negate), `None` when the modified gradient is no
    /// gradient of the loss at all (the other modifiers). The optimizer keeps the image
    /// with the best `sign · loss`, or the last image when there is no sign — keras-vis
    /// kept the lowest loss always, so `negate` returned (almost) its seed.
    pub fn loss_sign(&self) -> Option<f32> {
        match self {
            Self::Identity => Some(1.0),
            Self::Negate => Some(-1.0),
            _ => None,
        }
    }

    /// The modified gradient.
    pub fn apply(&self, g: &Tensor) -> Result<Tensor, ModifierError> {
        let out = match self {
            Self::Identity => g.clone(),
            Self::Negate => g.mapv(|v| -v),
            Self::Absolute => g.mapv(f32::abs),
            Self::Invert => g.mapv(|v| 1.0 / (v + EPS)),
            Self::Relu => g.mapv(|v| v.max(0.0)),
            Self::SmallValues => g.mapv(|v| (1.0 / (v + EPS)).abs()),
            Self::Custom(f) => f(g),
        };
        if out.shape() != g.shape() {
            return Err(ModifierError::Param(format!(
                "custom gradient modifier returned shape {:?} for {:?}",
                out.shape(),
                g.shape()
            )));
        }
        Ok(out)
    }
}

/// The backprop mode of a name: `guided`, `rectified` (aliases `deconv`, `relu`), `none`.
/// A closure is `BackpropMode::Custom` directly. They act on every ReLU-family op.
pub fn backprop_mode(name: &str) -> Result<BackpropMode, ModifierError> {
    Ok(match name {
        "none" | "plain" => BackpropMode::Plain,
        "guided" => BackpropMode::Guided,
        "rectified" | "deconv" | "relu" => BackpropMode::Rectified,
        "redirected" => BackpropMode::Redirected,
        _ => {
            return Err(ModifierError::UnknownName {
                kind: "backprop modifier",
                name: name.into(),
                valid: BACKPROP_MODIFIERS.to_vec(),
            })
        }
    })
}
