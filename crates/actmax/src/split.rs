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
//! Memory: a graph keeps what the backward will read — with frozen weights and the
//! built-in backprop modes a bit or two per activation (≈ 2 MB an image for
//! EfficientNet-Lite0 at 224), with a custom hook every activation (tens of MB). A step
//! keeps the graphs of as many images as
//! [`Options::graph_memory`](crate::Options::graph_memory) holds, shared out over the
//! workers; each worker measures its first image's graph and keeps that many of its
//! images. The rest run their forward without a graph (an inference
//! pass) and run it again with one right before their backward (gradient checkpointing at
//! the model's edges): one more forward per such image, and their memory bounded by one
//! graph per thread however large the batch. The bits are the same either way.

use actmax_layers::Model;
use actmax_tensor::{Tape, Tensor, Var};
use ndarray::{Axis, Slice};
use rayon::prelude::*;

use crate::error::Result;

/// Worker tapes, one per pool thread; how many images a step has decides which worker
/// takes which, and the memory budget how many graphs each keeps.
pub(crate) struct SplitModel {
    workers: Vec<Worker>,
    /// Bytes of kept graphs each worker may hold.
    budget: usize,
}

/// One worker's tapes and, per image it ran, the model's outputs.
struct Worker {
    /// The graphs of the images it keeps: the first `runs.len()` of its rows.
    tape: Tape,
    /// Where the other images run, one at a time.
    spare: Tape,
    /// Per kept image, its leaf and output nodes on `tape`.
    runs: Vec<(Var, Vec<Var>)>,
    outputs: Vec<Vec<Tensor>>,
}

/// The rows worker `w` of `n` takes of `rows`: contiguous blocks, as even as they come.
fn block(w: usize, n: usize, rows: usize) -> std::ops::Range<usize> {
    (w * rows / n)..((w + 1) * rows / n)
}

impl SplitModel {
    /// One worker per pool thread, on tapes that share `main`'s packed weights and
    /// backprop mode, keeping up to `graph_memory` bytes of graphs between them.
    pub(crate) fn new(main: &Tape, graph_memory: usize) -> Self {
        let count = rayon::current_num_threads().max(1);
        let worker = || Worker { tape: main.sibling(), spare: main.sibling(), runs: Vec::new(), outputs: Vec::new() };
        Self { workers: (0..count).map(|_| worker()).collect(), budget: graph_memory / count }
    }

    /// Runs `net` on every image of `seen` (`[rows, C, H, W]`) up to the layers `idx`;
    /// per layer, the outputs of all images stacked in order.
    pub(crate) fn forward(&mut self, net: &Model, seen: &Tensor, idx: &[usize]) -> Result<Vec<Tensor>> {
        let (rows, n, budget) = (seen.shape()[0], self.workers.len(), self.budget);
        self.workers.par_iter_mut().enumerate().try_for_each(|(w, worker)| -> Result<()> {
            worker.tape.reset();
            worker.runs.clear();
            worker.outputs.clear();
            if idx.is_empty() {
                return Ok(());
            }
            // The first image's graph tells how many fit (the images share one shape), so
            // the kept images are the first of the block, as `backward` reads them.
            let mut graph_bytes = None;
            for r in block(w, n, rows) {
                let keep = budget > 0 && graph_bytes.is_none_or(|b| (worker.runs.len() + 1) * b <= budget);
                let values = if keep {
                    let outs = worker.run_image(net, seen, r, idx)?;
                    graph_bytes.get_or_insert(worker.tape.graph_bytes());
                    values_of(&worker.tape, &outs)?
                } else {
                    worker.outputs_alone(net, seen, r, idx)?
                };
                worker.outputs.push(values);
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
        let mut one = seen.shape().to_vec();
        one[0] = 1;
        let per_worker: Result<Vec<Vec<Tensor>>> = self
            .workers
            .par_iter_mut()
            .enumerate()
            .map(|(w, worker)| {
                let rows = block(w, n, rows);
                let kept = rows.start..rows.start + worker.runs.len();
                let seeds = worker.runs.iter().zip(kept.clone()).flat_map(|((_, outs), r)| seeds_of(outs, grads, r));
                let mut out = if kept.is_empty() { Vec::new() } else { worker.input_grads(seeds.collect(), &one)? };
                for r in kept.end..rows.end {
                    out.push(worker.input_grad_again(net, seen, r, idx, grads, &one)?);
                }
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
        let x = image_on(&mut self.tape, seen, r, true);
        let outs = net.forward(&mut self.tape, x, idx)?;
        self.runs.push((x, outs.clone()));
        Ok(outs)
    }

    /// Reverse mode from `seeds` over the worker's tape: the gradient of each image it
    /// keeps (zeros where the loss does not reach it), in order.
    fn input_grads(&self, seeds: Vec<(Var, Tensor)>, one: &[usize]) -> Result<Vec<Tensor>> {
        let mut got = self.tape.backward_seeded(seeds, &[])?;
        Ok(self.runs.iter().map(|(x, _)| got.take(*x).unwrap_or_else(|| Tensor::zeros(one.to_vec()))).collect())
    }

    /// Image `r`'s outputs from a forward on the spare tape that keeps no graph.
    fn outputs_alone(&mut self, net: &Model, seen: &Tensor, r: usize, idx: &[usize]) -> Result<Vec<Tensor>> {
        self.spare.reset();
        let x = image_on(&mut self.spare, seen, r, false);
        let outs = net.forward(&mut self.spare, x, idx)?;
        values_of(&self.spare, &outs)
    }

    /// Image `r`'s gradient from its forward run again, with a graph, on the spare tape.
    fn input_grad_again(
        &mut self,
        net: &Model,
        seen: &Tensor,
        r: usize,
        idx: &[usize],
        grads: &[Option<Tensor>],
        one: &[usize],
    ) -> Result<Tensor> {
        self.spare.reset();
        let x = image_on(&mut self.spare, seen, r, true);
        let outs = net.forward(&mut self.spare, x, idx)?;
        let mut got = self.spare.backward_seeded(seeds_of(&outs, grads, r), &[])?;
        Ok(got.take(x).unwrap_or_else(|| Tensor::zeros(one.to_vec())))
    }
}

/// The values of `outs` on `tape`, copied out of it.
fn values_of(tape: &Tape, outs: &[Var]) -> Result<Vec<Tensor>> {
    outs.iter().map(|&o| Ok(tape.value(o)?.clone())).collect()
}

/// Image `r` of `seen` as a batch of one on `tape`, a variable or (no gradient will be
/// asked) a constant, in a buffer from the tape's pool so a step loop does not allocate it.
fn image_on(tape: &mut Tape, seen: &Tensor, r: usize, variable: bool) -> Var {
    let mut shape = seen.shape().to_vec();
    let len: usize = shape[1..].iter().product();
    shape[0] = 1;
    let src = &seen.as_slice().expect("tape values are in standard layout")[r * len..][..len];
    let mut buf = tape.scratch().take(len);
    buf.copy_from_slice(src);
    let image = Tensor::from_shape_vec(shape, buf).expect("one image's length");
    if variable {
        tape.variable(image)
    } else {
        tape.constant(image)
    }
}

/// Per-image tensors (`[1, ...]` each) as one `[rows, ...]` tensor.
fn stack_rows(parts: &[ndarray::ArrayViewD<'_, f32>]) -> Result<Tensor> {
    // The parts come from one model on same-shaped images: a mismatch is a model whose
    // output shape depends on its input values, reported rather than assumed away.
    ndarray::concatenate(Axis(0), parts).map_err(|e| crate::Error::Options(format!("per-image outputs differ: {e}")))
}
