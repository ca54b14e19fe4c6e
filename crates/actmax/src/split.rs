//! The model's share of a step, run image by image on worker tapes.
//!
//! Why: a CNN's forward and backward walk layer by layer. With the whole batch in one
//! graph, every layer's output is `B` images wide — at batch 8 several tens of MB, so
//! each layer reads its input back from memory instead of cache, and a batch made each
//! image *slower* than running it alone (1.2× on a 2-core Zen 4). Run one image at a time
//! instead, and let each of the pool's threads take its own images: a layer's working set
//! stays one image's, and the small 7×7 and 14×14 layers, whose kernels split poorly over
//! threads, no longer need to split at all.
//!
//! The step's main tape keeps the rest: parameterization, views, losses. It hands this
//! split the views' values; the losses read the model's outputs as leaves on the main
//! tape; their gradients come back here, run down each image's graph, and the gradient
//! of the views returns to the main tape ([`Tape::backward_seeded`]). Every image's graph
//! is a batch-1 graph whatever the batch and the thread count, so the bits of a result
//! depend on neither.

use actmax_layers::Model;
use actmax_tensor::{Tape, Tensor, Var};
use ndarray::{Axis, Slice};
use rayon::prelude::*;

use crate::error::Result;

/// Worker tapes, and what each holds of the current step.
pub(crate) struct SplitModel {
    workers: Vec<Worker>,
    rows: usize,
}

/// One worker's tape and, per image it ran, the image's leaf and the model's outputs.
struct Worker {
    tape: Tape,
    first_row: usize,
    runs: Vec<(Var, Vec<Var>)>,
}

impl SplitModel {
    /// Workers for `rows` images (one per pool thread, at most one per image), on tapes
    /// that share `main`'s packed weights and backprop mode.
    pub(crate) fn new(main: &Tape, rows: usize) -> Self {
        let count = rayon::current_num_threads().clamp(1, rows.max(1));
        let workers = (0..count).map(|_| Worker { tape: main.sibling(), first_row: 0, runs: Vec::new() }).collect();
        Self { workers, rows }
    }

    /// The rows worker `w` takes: contiguous blocks, as even as they come.
    fn block(&self, w: usize) -> std::ops::Range<usize> {
        let n = self.workers.len();
        (w * self.rows / n)..((w + 1) * self.rows / n)
    }

    /// Runs `net` on every image of `seen` (`[rows, C, H, W]`) up to the layers `idx`;
    /// per layer, the outputs of all images stacked in order.
    pub(crate) fn forward(&mut self, net: &Model, seen: &Tensor, idx: &[usize]) -> Result<Vec<Tensor>> {
        if seen.shape()[0] != self.rows {
            return Err(crate::Error::Options(format!(
                "the model split was made for {} images, the step has {}",
                self.rows,
                seen.shape()[0]
            )));
        }
        if idx.is_empty() {
            self.workers.iter_mut().for_each(|w| w.runs.clear());
            return Ok(Vec::new());
        }
        let blocks: Vec<_> = (0..self.workers.len()).map(|w| self.block(w)).collect();
        self.workers.par_iter_mut().zip(blocks).try_for_each(|(worker, rows)| -> Result<()> {
            worker.tape.reset();
            worker.runs.clear();
            worker.first_row = rows.start;
            for r in rows {
                let image = seen.slice_axis(Axis(0), Slice::from(r..r + 1)).to_owned();
                let x = worker.tape.variable(image);
                let outs = net.forward(&mut worker.tape, x, idx)?;
                worker.runs.push((x, outs));
            }
            Ok(())
        })?;
        (0..idx.len()).map(|k| self.stack(k)).collect()
    }

    /// Output `k` of every image, stacked along the batch axis.
    fn stack(&self, k: usize) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(self.rows);
        for worker in &self.workers {
            for (_, outs) in &worker.runs {
                parts.push(worker.tape.value(outs[k])?.view());
            }
        }
        stack_rows(&parts)
    }

    /// The gradient of the views, given the gradients of the outputs [`SplitModel::forward`]
    /// returned (`None`: that output does not reach the loss).
    pub(crate) fn backward(&self, grads: &[Option<Tensor>], seen_shape: &[usize]) -> Result<Tensor> {
        let blocks: Result<Vec<Vec<Tensor>>> = self
            .workers
            .par_iter()
            .map(|worker| {
                let mut seeds: Vec<(Var, Tensor)> = Vec::new();
                for (i, (_, outs)) in worker.runs.iter().enumerate() {
                    let r = worker.first_row + i;
                    for (out, g) in outs.iter().zip(grads) {
                        if let Some(g) = g {
                            seeds.push((*out, g.slice_axis(Axis(0), Slice::from(r..r + 1)).to_owned()));
                        }
                    }
                }
                let seeds: Vec<(Var, &Tensor)> = seeds.iter().map(|(v, g)| (*v, g)).collect();
                let mut got = worker.tape.backward_seeded(&seeds, &[])?;
                let mut one = seen_shape.to_vec();
                one[0] = 1;
                Ok(worker
                    .runs
                    .iter()
                    .map(|(x, _)| got.take(*x).unwrap_or_else(|| Tensor::zeros(one.clone())))
                    .collect())
            })
            .collect();
        let blocks = blocks?;
        let views: Vec<_> = blocks.iter().flatten().map(|t| t.view()).collect();
        stack_rows(&views)
    }
}

/// Per-image tensors (`[1, ...]` each) as one `[rows, ...]` tensor.
fn stack_rows(parts: &[ndarray::ArrayViewD<'_, f32>]) -> Result<Tensor> {
    // The parts come from one model on same-shaped images: a mismatch is a model whose
    // output shape depends on its input values, reported rather than assumed away.
    ndarray::concatenate(Axis(0), parts).map_err(|e| crate::Error::Options(format!("per-image outputs differ: {e}")))
}
