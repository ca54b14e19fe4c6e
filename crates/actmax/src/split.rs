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
//!
//! Memory: a graph keeps every layer's output for the backward, ≈ 60 MB per image for
//! EfficientNet-Lite0 at 224. Up to [`KEEP_GRAPHS_UP_TO`] images the workers keep every
//! image's graph from the forward to the backward; past it, a worker keeps none, and the
//! backward runs each image's forward again right before its backward (gradient
//! checkpointing at the model's edges): one more forward per image, and memory bounded by
//! one graph per thread however large the batch. The bits are the same either way.

use actmax_layers::Model;
use actmax_tensor::{Tape, Tensor, Var};
use ndarray::{Axis, Slice};
use rayon::prelude::*;

use crate::error::Result;

/// The largest number of model inputs (images × views) a step keeps the graphs of;
/// larger steps recompute each image's forward in the backward.
pub(crate) const KEEP_GRAPHS_UP_TO: usize = 8;

/// Worker tapes, one per pool thread; how many images a step has decides the rest
/// (which worker takes which, whether graphs are kept).
pub(crate) struct SplitModel {
    workers: Vec<Worker>,
}

/// One worker's tape; per image it ran, the model's outputs, and (when graphs are kept)
/// the image's leaf and output nodes on that tape.
struct Worker {
    tape: Tape,
    runs: Vec<(Var, Vec<Var>)>,
    outputs: Vec<Vec<Tensor>>,
}

/// The rows worker `w` of `n` takes of `rows`: contiguous blocks, as even as they come.
fn block(w: usize, n: usize, rows: usize) -> std::ops::Range<usize> {
    (w * rows / n)..((w + 1) * rows / n)
}

impl SplitModel {
    /// One worker per pool thread, on tapes that share `main`'s packed weights and
    /// backprop mode.
    pub(crate) fn new(main: &Tape) -> Self {
        let count = rayon::current_num_threads().max(1);
        Self {
            workers: (0..count)
                .map(|_| Worker { tape: main.sibling(), runs: Vec::new(), outputs: Vec::new() })
                .collect(),
        }
    }

    /// Runs `net` on every image of `seen` (`[rows, C, H, W]`) up to the layers `idx`;
    /// per layer, the outputs of all images stacked in order.
    pub(crate) fn forward(&mut self, net: &Model, seen: &Tensor, idx: &[usize]) -> Result<Vec<Tensor>> {
        let (rows, n) = (seen.shape()[0], self.workers.len());
        let keep = rows <= KEEP_GRAPHS_UP_TO;
        self.workers.par_iter_mut().enumerate().try_for_each(|(w, worker)| -> Result<()> {
            worker.tape.reset();
            worker.runs.clear();
            worker.outputs.clear();
            if idx.is_empty() {
                return Ok(());
            }
            for r in block(w, n, rows) {
                if !keep {
                    worker.tape.reset();
                    worker.runs.clear();
                }
                let outs = worker.run_image(net, seen, r, idx)?;
                let values = outs.iter().map(|&o| Ok(worker.tape.value(o)?.clone())).collect::<Result<_>>()?;
                worker.outputs.push(values);
            }
            if !keep {
                worker.tape.reset();
                worker.runs.clear();
            }
            Ok(())
        })?;
        (0..idx.len())
            .map(|k| {
                let parts: Vec<_> = self.workers.iter().flat_map(|w| w.outputs.iter().map(|o| o[k].view())).collect();
                stack_rows(&parts)
            })
            .collect()
    }

    /// The gradient of the views `seen` (the input [`SplitModel::forward`] ran on), given
    /// the gradients of the outputs it returned (`None`: that output does not reach the
    /// loss); `None` when no output does.
    pub(crate) fn backward(
        &mut self,
        net: &Model,
        seen: &Tensor,
        idx: &[usize],
        grads: &[Option<Tensor>],
    ) -> Result<Option<Tensor>> {
        if grads.iter().all(Option::is_none) {
            return Ok(None);
        }
        let (rows, n) = (seen.shape()[0], self.workers.len());
        let keep = rows <= KEEP_GRAPHS_UP_TO;
        let mut one = seen.shape().to_vec();
        one[0] = 1;
        let per_worker: Result<Vec<Vec<Tensor>>> = self
            .workers
            .par_iter_mut()
            .enumerate()
            .map(|(w, worker)| {
                let rows = block(w, n, rows);
                if keep {
                    let seeds = worker.runs.iter().zip(rows).flat_map(|((_, outs), r)| seeds_of(outs, grads, r));
                    return worker.input_grads(seeds.collect(), &one);
                }
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    worker.tape.reset();
                    worker.runs.clear();
                    let outs = worker.run_image(net, seen, r, idx)?;
                    out.extend(worker.input_grads(seeds_of(&outs, grads, r), &one)?);
                }
                worker.tape.reset();
                worker.runs.clear();
                Ok(out)
            })
            .collect();
        let per_worker = per_worker?;
        let views: Vec<_> = per_worker.iter().flatten().map(|t| t.view()).collect();
        stack_rows(&views).map(Some)
    }
}

/// Image `r`'s share of the output gradients, paired with its output nodes.
fn seeds_of(outs: &[Var], grads: &[Option<Tensor>], r: usize) -> Vec<(Var, Tensor)> {
    let row = |g: &Tensor| g.slice_axis(Axis(0), Slice::from(r..r + 1)).to_owned();
    outs.iter().zip(grads).filter_map(|(o, g)| g.as_ref().map(|g| (*o, row(g)))).collect()
}

impl Worker {
    /// Image `r` of `seen` as a batch of one on this worker's tape (its buffer from the
    /// tape's pool, so a step loop does not allocate it), run up to `idx`; returns the
    /// output nodes and records the run.
    fn run_image(&mut self, net: &Model, seen: &Tensor, r: usize, idx: &[usize]) -> Result<Vec<Var>> {
        let mut shape = seen.shape().to_vec();
        let len: usize = shape[1..].iter().product();
        shape[0] = 1;
        let src = &seen.as_slice().expect("tape values are in standard layout")[r * len..][..len];
        let mut buf = self.tape.scratch().take(len);
        buf.copy_from_slice(src);
        let image = Tensor::from_shape_vec(shape, buf).expect("one image's length");
        let x = self.tape.variable(image);
        let outs = net.forward(&mut self.tape, x, idx)?;
        self.runs.push((x, outs.clone()));
        Ok(outs)
    }

    /// Reverse mode from `seeds` over the worker's tape: the gradient of each image it
    /// holds (zeros where the loss does not reach it), in order.
    fn input_grads(&self, seeds: Vec<(Var, Tensor)>, one: &[usize]) -> Result<Vec<Tensor>> {
        let mut got = self.tape.backward_seeded(seeds, &[])?;
        Ok(self.runs.iter().map(|(x, _)| got.take(*x).unwrap_or_else(|| Tensor::zeros(one.to_vec()))).collect())
    }
}

/// Per-image tensors (`[1, ...]` each) as one `[rows, ...]` tensor.
fn stack_rows(parts: &[ndarray::ArrayViewD<'_, f32>]) -> Result<Tensor> {
    // The parts come from one model on same-shaped images: a mismatch is a model whose
    // output shape depends on its input values, reported rather than assumed away.
    ndarray::concatenate(Axis(0), parts).map_err(|e| crate::Error::Options(format!("per-image outputs differ: {e}")))
}
