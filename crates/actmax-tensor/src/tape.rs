//! The tape: a Wengert list that owns every value, and reverse-mode differentiation.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use crate::backprop_modes::BackpropMode;
use crate::error::{Result, TensorError};
use crate::op::{next_epoch, Node, Op, Var};
use crate::packs::PackCache;
use crate::scratch::ScratchPool;
use crate::tensor::{recycle, Tensor};

/// Owns every value of a computation, in creation order, and differentiates it.
///
/// ```
/// use actmax_tensor::{Tape, Tensor};
/// let mut tape = Tape::new();
/// let x = tape.variable(Tensor::from_shape_vec(vec![2], vec![1.0, -2.0]).unwrap());
/// let y = tape.relu(x).unwrap();
/// let loss = tape.sum_all(y).unwrap();
/// let grads = tape.backward(loss).unwrap();
/// assert_eq!(grads.get(x).unwrap().as_slice().unwrap(), &[1.0, 0.0]);
/// ```
#[derive(Debug)]
pub struct Tape {
    pub(crate) nodes: Vec<Node>,
    pub(crate) mode: BackpropMode,
    pub(crate) scratch: ScratchPool,
    pub(crate) packs: Arc<PackCache>,
    epoch: u64,
    /// The last node that requires a gradient (what [`Tape::release`] asks).
    last_grad: Option<usize>,
    /// The value every released node holds in place of its own: one empty tensor, shared,
    /// so that a release allocates nothing (a node's `released_dim` says it is released).
    released: Arc<Tensor>,
    /// Pass-bit buffers of the nodes a reset dropped, for the next iteration's.
    spare_bits: Vec<Vec<u16>>,
}

impl Default for Tape {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            mode: BackpropMode::Plain,
            scratch: ScratchPool::new(),
            packs: Arc::default(),
            epoch: next_epoch(),
            last_grad: None,
            released: Arc::new(Tensor::zeros(IxDyn(&[0]))),
            spare_bits: Vec::new(),
        }
    }
}

/// Gradients of a loss with respect to the tape's leaves that require them.
#[derive(Debug)]
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    epoch: u64,
}

impl Gradients {
    /// dL/dv, if `v` requires a gradient and the loss depends on it.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.grads.get(v.index).filter(|_| v.epoch == self.epoch).and_then(Option::as_ref)
    }
    /// Moves dL/dv out.
    pub fn take(&mut self, v: Var) -> Option<Tensor> {
        self.grads.get_mut(v.index).filter(|_| v.epoch == self.epoch).and_then(Option::take)
    }
}

impl Tape {
    /// An empty tape with plain backprop.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every node but keeps their buffers and the packed conv weights, so the next
    /// iteration of the same graph neither allocates nor re-packs. Old `Var`s become
    /// invalid.
    pub fn reset(&mut self) {
        for node in self.nodes.drain(..) {
            // A value nobody else holds goes back to the pool; the next iteration's ops
            // take their outputs from there (already faulted in, never zeroed).
            if let Ok(t) = Arc::try_unwrap(node.value) {
                recycle(&self.scratch, t);
            }
            self.spare_bits.extend(node.pass_bits);
        }
        self.scratch.trim_to_demand();
        self.epoch = next_epoch();
        self.last_grad = None;
    }

    /// Floats held by the values of the tape's nodes that it alone owns (what a forward
    /// pass keeps for the backward; shared constants such as weights are not counted).
    pub fn value_floats(&self) -> usize {
        self.nodes.iter().filter(|n| Arc::strong_count(&n.value) == 1).map(|n| n.value.len()).sum()
    }

    /// Bytes a forward keeps for the backward: [`Tape::value_floats`]' values and the
    /// activations' pass bits.
    pub fn graph_bytes(&self) -> usize {
        let bits: usize = self.nodes.iter().filter_map(|n| n.pass_bits.as_ref()).map(Vec::len).sum();
        4 * self.value_floats() + 2 * bits
    }

    /// Number of conv weights the tape holds packed for its GEMMs (kept across
    /// [`Tape::reset`] for constant weights).
    pub fn packed_weights(&self) -> usize {
        self.packs.len()
    }

    /// A new empty tape with this one's backprop mode that shares its packed conv weights:
    /// for tapes that run the same model side by side (one per worker thread), so each
    /// constant weight is packed once, not once per tape.
    pub fn sibling(&self) -> Tape {
        Tape { packs: self.packs.clone(), mode: self.mode.clone(), ..Tape::default() }
    }

    /// Drops the packed conv weights (they are rebuilt on next use).
    pub fn forget_packed_weights(&self) {
        self.packs.clear();
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the tape holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sets how ReLU-family ops pass gradients backwards (see [`BackpropMode`]). Set it
    /// before recording a graph: a forward keeps what this mode's backward reads (its
    /// activations' bits, or their outputs) and may give back the rest, so a graph
    /// differentiated under another mode can miss a value (a typed error, not a wrong
    /// gradient).
    pub fn set_backprop_mode(&mut self, mode: BackpropMode) {
        self.mode = mode;
    }

    /// The current backprop mode.
    pub fn backprop_mode(&self) -> &BackpropMode {
        &self.mode
    }

    /// The scratch buffers kernels borrow from.
    pub fn scratch(&self) -> &ScratchPool {
        &self.scratch
    }

    /// A value that needs no gradient (a parameter, a target, a constant).
    pub fn constant(&mut self, t: Tensor) -> Var {
        self.leaf(Arc::new(t), false)
    }

    /// A shared constant, e.g. a model weight reused every iteration without a copy.
    pub fn constant_shared(&mut self, t: Arc<Tensor>) -> Var {
        self.leaf(t, false)
    }

    /// A value whose gradient `backward` computes (the input image, or a weight being
    /// trained).
    pub fn variable(&mut self, t: Tensor) -> Var {
        self.leaf(Arc::new(t), true)
    }

    /// A shared leaf that requires a gradient (trainable weights without a copy).
    pub fn variable_shared(&mut self, t: Arc<Tensor>) -> Var {
        self.leaf(t, true)
    }

    fn leaf(&mut self, t: Arc<Tensor>, requires_grad: bool) -> Var {
        let t = if t.is_standard_layout() { t } else { Arc::new(t.as_standard_layout().into_owned()) };
        self.record(Node { value: t, op: Op::Leaf, requires_grad, pass_bits: None, released_dim: None })
    }

    fn node(&self, v: Var) -> Result<&Node> {
        match self.nodes.get(v.index) {
            Some(n) if v.epoch == self.epoch && n.released_dim.is_some() => Err(TensorError::Released(v.index)),
            Some(n) if v.epoch == self.epoch => Ok(n),
            _ => Err(TensorError::UnknownVar(v.index)),
        }
    }

    /// Gives the value of `v` back to the tape's pool before the next [`Tape::reset`], so
    /// the next op's output can take its buffer while it is still in cache; later reads
    /// of `v` are [`TensorError::Released`]. What an inference pass does with a value
    /// once its last reader has run (as onnxruntime's and PyTorch's no-grad passes do).
    /// Refused, with the value kept, where a gradient could need it: when `v` or any node
    /// recorded after it requires a gradient.
    pub fn release(&mut self, v: Var) -> Result<()> {
        self.node(v)?;
        if self.last_grad.is_some_and(|i| i >= v.index) {
            return Err(crate::error::param_err(
                "release",
                "a gradient may need this value (it, or a node after it, requires one); keep it until reset",
            ));
        }
        self.give_back(v.index);
        Ok(())
    }

    /// Gives the value of `v` back to the tape's pool, as [`Tape::release`] does, unless
    /// a backward will read it: true when released. For a value no forward op will read
    /// any more (the caller knows; the tape does not). Reverse mode reads few values —
    /// a conv's input only for its weights' gradient, a ReLU6's output not at all where
    /// its pass bits say where it passes — so a graph for a gradient to the image alone
    /// keeps a fraction of its values (each op's needs: `Tape::backward_reads`).
    pub fn release_unneeded(&mut self, v: Var) -> Result<bool> {
        self.node(v)?;
        if (v.index..self.nodes.len()).any(|at| self.backward_reads(at, v.index)) {
            return Ok(false);
        }
        self.give_back(v.index);
        Ok(true)
    }

    /// Swaps node `i`'s value for the shared released one, keeping its shape, and
    /// recycles the buffer if nobody else holds it.
    fn give_back(&mut self, i: usize) {
        let value = std::mem::replace(&mut self.nodes[i].value, self.released.clone());
        self.nodes[i].released_dim = Some(value.raw_dim());
        if let Ok(t) = Arc::try_unwrap(value) {
            recycle(&self.scratch, t);
        }
    }

    /// The value of `v`.
    pub fn value(&self, v: Var) -> Result<&Tensor> {
        self.node(v).map(|n| &*n.value)
    }

    /// The shared value of `v` (no copy).
    pub fn value_shared(&self, v: Var) -> Result<Arc<Tensor>> {
        self.node(v).map(|n| n.value.clone())
    }

    /// The shape of `v`.
    pub fn shape(&self, v: Var) -> Result<&[usize]> {
        self.value(v).map(|t| t.shape())
    }

    /// Whether `backward` will compute a gradient flowing through `v`.
    pub fn requires_grad(&self, v: Var) -> bool {
        // A value given back still carries its gradient (its node stays).
        v.epoch == self.epoch && self.nodes.get(v.index).is_some_and(|n| n.requires_grad)
    }

    /// Records a new node; it requires a gradient when any input does.
    pub(crate) fn push(&mut self, value: Tensor, op: Op, inputs: &[Var]) -> Var {
        let requires_grad = inputs.iter().any(|&v| self.requires_grad(v));
        let value = if value.is_standard_layout() { value } else { value.as_standard_layout().into_owned() };
        self.record(Node { value: Arc::new(value), op, requires_grad, pass_bits: None, released_dim: None })
    }

    /// A pass-bit buffer of `words` words (contents unspecified): one a reset dropped,
    /// of that length if there is one.
    pub(crate) fn take_bits(&mut self, words: usize) -> Vec<u16> {
        let at = self.spare_bits.iter().position(|b| b.len() == words).or((!self.spare_bits.is_empty()).then_some(0));
        let mut bits = at.map(|i| self.spare_bits.swap_remove(i)).unwrap_or_default();
        bits.resize(words, 0);
        bits
    }

    /// Gives `v`'s node the pass bits of its fused activation.
    pub(crate) fn set_pass_bits(&mut self, v: Var, bits: Vec<u16>) {
        self.nodes[v.index].pass_bits = Some(bits);
    }

    fn record(&mut self, node: Node) -> Var {
        if node.requires_grad {
            self.last_grad = Some(self.nodes.len());
        }
        self.nodes.push(node);
        Var { index: self.nodes.len() - 1, epoch: self.epoch }
    }

    /// Reverse mode: dL/dv for every leaf `v` that requires a gradient. Walks the tape
    /// once, backwards from `loss`; nodes that need no gradient cost nothing.
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        self.backward_keeping(loss, &[])
    }

    /// [`Tape::backward`] that also keeps dL/dv for the inner nodes in `keep` (e.g. the
    /// image a parameterization made, for a transparency map), which reverse mode would
    /// otherwise consume on its way down. The copies come from the tape's scratch pool:
    /// give them back ([`ScratchPool::give`]) to keep a step loop allocation-free.
    pub fn backward_keeping(&self, loss: Var, keep: &[Var]) -> Result<Gradients> {
        let l = self.value(loss)?;
        if l.len() != 1 {
            return Err(TensorError::NonScalarLoss(l.shape().to_vec()));
        }
        let one = ArrayD::ones(IxDyn(l.shape()));
        self.backward_seeded(vec![(loss, one)], keep)
    }

    /// Reverse mode from given gradients: `seeds` pairs nodes with dL/d(node), as if a
    /// loss downstream of them had sent those (a vector–Jacobian product). What a split
    /// computation needs: a model run on another tape hands back the gradient of its
    /// input, and this tape carries it on to its own leaves. The seeds are taken by value:
    /// they become the first gradients, with no copy. `keep` as in
    /// [`Tape::backward_keeping`].
    pub fn backward_seeded(&self, seeds: Vec<(Var, Tensor)>, keep: &[Var]) -> Result<Gradients> {
        // Its parallel regions opened on a worker thread (see `threads`).
        crate::threads::on_worker_thread(|| self.backward_here(seeds, keep))
    }

    fn backward_here(&self, seeds: Vec<(Var, Tensor)>, keep: &[Var]) -> Result<Gradients> {
        for &v in keep {
            self.node(v)?;
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        let mut top = None;
        for (v, g) in seeds {
            let shape = self.shape(v)?;
            if shape != g.shape() {
                let msg = format!("the seed gradient must have the node's shape {shape:?}");
                return Err(crate::error::shape_err("backward_seeded", msg, g.shape()));
            }
            self.accumulate(&mut grads, v, g);
            top = top.max(Some(v.index));
        }
        let mut kept = Vec::with_capacity(keep.len());
        let Some(top) = top else { return Ok(Gradients { grads, epoch: self.epoch }) };
        for i in (0..=top).rev() {
            let node = &self.nodes[i];
            if matches!(node.op, Op::Leaf) {
                continue;
            }
            let Some(g) = grads[i].take() else { continue };
            if keep.iter().any(|v| v.index == i) {
                let mut copy = self.scratch.take(g.len());
                copy.iter_mut().zip(g.iter()).for_each(|(c, v)| *c = *v);
                kept.push((i, ArrayD::from_shape_vec(g.raw_dim(), copy).expect("same length")));
            }
            self.backward_op(node, g, &mut grads)?;
        }
        for (i, g) in kept {
            grads[i] = Some(g);
        }
        Ok(Gradients { grads, epoch: self.epoch })
    }

    /// Adds `g` to the gradient of `v`, if `v` wants one.
    pub(crate) fn accumulate(&self, grads: &mut [Option<Tensor>], v: Var, g: Tensor) {
        if !self.nodes[v.index].requires_grad {
            return;
        }
        // Kernels read gradients as contiguous slices (ndarray's `dot` may return
        // column-major results, a hook anything).
        let g = if g.is_standard_layout() { g } else { g.as_standard_layout().into_owned() };
        match &mut grads[v.index] {
            Some(acc) => {
                *acc += &g;
                recycle(&self.scratch, g);
            }
            slot => *slot = Some(g),
        }
    }

    pub(crate) fn val(&self, v: Var) -> &Tensor {
        &self.nodes[v.index].value
    }

    /// The shape of `v`'s value, also once released (what a backward that does not read
    /// the value asks).
    pub(crate) fn dims(&self, v: Var) -> &[usize] {
        self.nodes[v.index].dims()
    }
}
