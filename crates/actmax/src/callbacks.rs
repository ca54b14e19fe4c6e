//! Callbacks: what happens after every optimization step.

use actmax_tensor::Tensor;

use crate::Result;

/// One step of a run, as callbacks see it.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    /// Step number, from 0.
    pub step: usize,
    /// Each named loss term (summed over the batch) and its weight.
    pub terms: &'a [(String, f32, f32)],
    /// The weighted total being minimized.
    pub total: f32,
    /// The current images `[B, C, H, W]`, in the input range.
    pub images: &'a Tensor,
}

/// Called after every step.
pub trait Callback {
    /// One step happened.
    fn on_step(&mut self, step: &Step<'_>) -> Result<()>;
    /// The run ended.
    fn on_end(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<F: FnMut(&Step<'_>) -> Result<()>> Callback for F {
    fn on_step(&mut self, step: &Step<'_>) -> Result<()> {
        self(step)
    }
}

/// keras-vis's `Print`: every named loss and the total, one line per step, on stderr.
#[derive(Debug, Default)]
pub struct Print;

impl Callback for Print {
    fn on_step(&mut self, s: &Step<'_>) -> Result<()> {
        let terms: Vec<String> = s.terms.iter().map(|(n, v, w)| format!("{n}: {v:.5} (×{w})")).collect();
        eprintln!("step {:>4}: total {:.5} | {}", s.step, s.total, terms.join(" | "));
        Ok(())
    }
}
