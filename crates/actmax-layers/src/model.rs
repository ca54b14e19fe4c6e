//! The Model: a DAG of named layers in topological order, addressed by name or index.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actmax_tensor::{Tape, Tensor, Var};

use crate::error::{LayerError, LoadError, Result};
use crate::layer::{Activation, Conv, Layer};
use crate::train::{Binding, TrainingPass};

/// Channel order of a model's input images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe-era models).
    Bgr,
    /// One grey channel.
    Gray,
}

/// What a model expects as input: an image in `range`, which the model itself turns into
/// network input by `(x − mean[c]) / std[c]` (so gradients reach the image).
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// Channels, rows, columns.
    pub shape: [usize; 3],
    /// Channel order.
    pub channels: ChannelOrder,
    /// Pixel value range of an image, e.g. (0, 255).
    pub range: (f32, f32),
    /// Per-channel (or one shared) mean subtracted first.
    pub mean: Vec<f32>,
    /// Per-channel (or one shared) divisor.
    pub std: Vec<f32>,
}

impl InputSpec {
    /// An image in 0..255 fed as is.
    pub fn raw(shape: [usize; 3], channels: ChannelOrder) -> Self {
        Self { shape, channels, range: (0.0, 255.0), mean: vec![0.0], std: vec![1.0] }
    }

    /// Checks what a file or a user may get wrong: a non-empty image of at most
    /// [`MAX_ACTIVATION_ELEMS`] values, mean/std with one value or one per channel, a
    /// non-zero finite std, finite means and a range with low < high.
    pub fn validate(&self) -> Result<()> {
        let err = |msg: String| Err(LayerError::Build { layer: "input".into(), msg });
        let c = self.shape[0];
        let elems = self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if self.shape.contains(&0) || elems.is_none_or(|n| n > MAX_ACTIVATION_ELEMS) {
            return err(format!("an input image of shape {:?} is empty or too large", self.shape));
        }
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != 1 && v.len() != c {
                return err(format!("{what} needs one value, or one per channel ({c}); got {}", v.len()));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return err(format!("{what} must be finite"));
            }
        }
        let (lo, hi) = self.range;
        if self.std.contains(&0.0) || !(lo.is_finite() && hi.is_finite()) || lo >= hi {
            return err("std must be non-zero, the range finite with low < high".into());
        }
        Ok(())
    }

    /// Network input from an image tensor `[N, C, H, W]` in `range`, on the tape.
    pub fn preprocess(&self, tape: &mut Tape, image: Var) -> Result<Var> {
        if self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0) {
            return Ok(image);
        }
        let per_channel =
            |v: &[f32]| -> Vec<f32> { (0..self.shape[0]).map(|i| if v.len() == 1 { v[0] } else { v[i] }).collect() };
        let inv: Vec<f32> = per_channel(&self.std).iter().map(|s| 1.0 / s).collect();
        Ok(tape.channel_affine(image, &per_channel(&self.mean), &inv)?)
    }
}

/// One step of [`Model::forward_timed`]: the nodes it computed (the input's preprocessing
/// at node 0, one layer, or a conv and the identities and activation fused into it) and
/// its wall time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTime {
    /// Node indexes.
    pub nodes: std::ops::Range<usize>,
    /// Wall time.
    pub time: std::time::Duration,
}

/// One layer of a model and where its inputs come from.
#[derive(Debug, Clone)]
pub struct Node {
    /// Unique name (PyTorch module path for zoo models, Keras layer name for Keras ones).
    pub name: String,
    /// What it computes.
    pub layer: Layer,
    /// Indexes of the nodes it reads (all earlier in the list).
    pub inputs: Vec<usize>,
    /// Output shape for a batch of one.
    pub output_shape: Vec<usize>,
}

/// A layer address: a name, or an index where negative values count from the end
/// (`-1` is the last layer, as keras-vis's `layer_idx=-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerRef {
    /// By name.
    Name(String),
    /// By position.
    Index(isize),
}

impl From<&str> for LayerRef {
    fn from(s: &str) -> Self {
        match s.parse::<isize>() {
            Ok(i) => Self::Index(i),
            Err(_) => Self::Name(s.to_string()),
        }
    }
}

impl From<isize> for LayerRef {
    fn from(i: isize) -> Self {
        Self::Index(i)
    }
}

impl From<i32> for LayerRef {
    fn from(i: i32) -> Self {
        Self::Index(i as isize)
    }
}

/// One row of [`Model::layers`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Position (topological).
    pub index: usize,
    /// Name.
    pub name: String,
    /// Type name.
    pub kind: &'static str,
    /// Output shape for a batch of one.
    pub output_shape: Vec<usize>,
    /// Addressable filters/units (output channels), if any.
    pub filters: Option<usize>,
    /// Parameter count.
    pub params: usize,
    /// Activation, for layers that carry one.
    pub activation: Option<&'static str>,
    /// Other names that address this layer (the PyTorch block it ends: `layer4.1`).
    pub aliases: Vec<String>,
}

/// One row of [`Model::top_k`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Class index.
    pub class: usize,
    /// The last layer's raw output (a logit for linear heads).
    pub output: f32,
    /// Its probability.
    pub probability: f32,
}

/// A network: named layers in topological order, node 0 the input.
#[derive(Debug, Clone)]
pub struct Model {
    nodes: Vec<Node>,
    input: InputSpec,
    /// Second names of layers, by name (none is also a layer's name).
    aliases: BTreeMap<String, usize>,
}

/// Builds a [`Model`] layer by layer, checking shapes as it goes.
#[derive(Debug)]
pub struct ModelBuilder {
    nodes: Vec<Node>,
    names: HashSet<String>,
    input: InputSpec,
    aliases: BTreeMap<String, usize>,
}

/// The most values one layer's output (for one image) may hold: 2²⁸ floats, 1 GiB. Files
/// that declare more are refused when they load, not when the first image is run.
pub const MAX_ACTIVATION_ELEMS: usize = 1 << 28;

impl ModelBuilder {
    /// A builder whose node 0 is the input described by `spec`.
    pub fn new(spec: InputSpec) -> Self {
        let shape = vec![1, spec.shape[0], spec.shape[1], spec.shape[2]];
        Self {
            nodes: vec![Node { name: "input".into(), layer: Layer::Input, inputs: vec![], output_shape: shape }],
            names: HashSet::from(["input".to_string()]),
            input: spec,
            aliases: BTreeMap::new(),
        }
    }

    /// The input node.
    pub fn input(&self) -> usize {
        0
    }

    /// Adds a layer reading `inputs`; returns its index.
    pub fn add(&mut self, name: impl Into<String>, layer: Layer, inputs: &[usize]) -> Result<usize> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(LayerError::DuplicateName(name));
        }
        if inputs.is_empty() || inputs.iter().any(|&i| i >= self.nodes.len()) {
            return Err(LayerError::Build { layer: name, msg: format!("inputs {inputs:?} must name earlier layers") });
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|&i| self.nodes[i].output_shape.clone()).collect();
        let output_shape =
            layer.output_shape(&shapes).map_err(|e| LayerError::Build { layer: name.clone(), msg: e.to_string() })?;
        let elems = output_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if elems.is_none_or(|n| n > MAX_ACTIVATION_ELEMS) {
            return Err(LayerError::Build {
                layer: name,
                msg: format!("its output {output_shape:?} would hold more than 2^28 values"),
            });
        }
        self.names.insert(name.clone());
        self.nodes.push(Node { name, layer, inputs: inputs.to_vec(), output_shape });
        Ok(self.nodes.len() - 1)
    }

    /// The output shape (batch 1) of node `idx`.
    pub fn shape(&self, idx: usize) -> Option<&[usize]> {
        self.nodes.get(idx).map(|n| n.output_shape.as_slice())
    }

    /// Number of nodes so far (the input included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: the input node is there from the start.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether a node has this name.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Renames node `idx`; the input (node 0) keeps its name, and a name in use is an error.
    pub fn rename(&mut self, idx: usize, name: impl Into<String>) -> Result<()> {
        let name = name.into();
        if self.names.contains(&name) {
            return Err(LayerError::DuplicateName(name));
        }
        let node = self
            .nodes
            .get_mut(idx)
            .filter(|_| idx > 0)
            .ok_or_else(|| LayerError::Build { layer: name.clone(), msg: format!("no layer {idx} to rename") })?;
        self.names.remove(&node.name);
        node.name = name.clone();
        self.names.insert(name);
        Ok(())
    }

    /// Gives node `idx` a second name (a PyTorch block's path for the layer that ends it);
    /// a name in use, as a layer's or another alias, is an error.
    pub fn alias(&mut self, name: impl Into<String>, idx: usize) -> Result<()> {
        let name = name.into();
        if self.names.contains(&name) || idx >= self.nodes.len() {
            return Err(LayerError::DuplicateName(name));
        }
        self.names.insert(name.clone());
        self.aliases.insert(name, idx);
        Ok(())
    }

    /// Adds a layer reading the most recent one.
    pub fn push(&mut self, name: impl Into<String>, layer: Layer) -> Result<usize> {
        let last = self.nodes.len() - 1;
        self.add(name, layer, &[last])
    }

    /// The finished model.
    pub fn build(self) -> Model {
        Model { nodes: self.nodes, input: self.input, aliases: self.aliases }
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Model {
    /// The input spec.
    pub fn input_spec(&self) -> &InputSpec {
        &self.input
    }

    /// Replaces how images become network input (range, mean, std, channel order) — for
    /// imported models whose files do not say. The shape must stay the same.
    pub fn set_input_spec(&mut self, spec: InputSpec) -> Result<()> {
        if spec.shape != self.input.shape {
            return Err(LayerError::Build {
                layer: "input".into(),
                msg: format!("the input shape is {:?}, not {:?}", self.input.shape, spec.shape),
            });
        }
        spec.validate()?;
        self.input = spec;
        Ok(())
    }

    /// All nodes, input first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of layers (the input included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a model with no layer besides its input.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }

    /// One row per layer: index, name, type, output shape, filters, parameters.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, n)| LayerInfo {
                index,
                name: n.name.clone(),
                kind: n.layer.type_name(),
                output_shape: n.output_shape.clone(),
                filters: n.layer.filters(&n.output_shape),
                params: n.layer.param_count(),
                activation: n.layer.activation().map(Activation::name),
                aliases: self.aliases.iter().filter(|(_, &i)| i == index).map(|(a, _)| a.clone()).collect(),
            })
            .collect()
    }

    /// Forward FLOPs (multiply-adds × 2 of convs and dense layers) for one image.
    pub fn flops(&self) -> f64 {
        self.nodes.iter().map(|n| n.layer.flops(&n.output_shape)).sum()
    }

    /// A copy with every inference batch norm that directly follows a linear conv (and is
    /// its only reader) folded into that conv's weights and bias; the batch norm becomes
    /// [`Layer::Identity`], so names and indexes stay. Faster, and the same outputs —
    /// except at the folded convs themselves, which now output the normalized values:
    /// fold only when no loss reads a conv that gets folded, or use
    /// [`Model::fold_batch_norms_keeping`].
    pub fn fold_batch_norms(&self) -> Model {
        self.fold_batch_norms_keeping(&[])
    }

    /// [`Model::fold_batch_norms`], except after the convs in `read` (layer indices whose
    /// own outputs someone reads, e.g. a loss on a conv filter): those keep their batch
    /// norm, so every layer outputs what the unfolded model does.
    pub fn fold_batch_norms_keeping(&self, read: &[usize]) -> Model {
        let mut m = self.clone();
        let readers = |m: &Model, j: usize| m.nodes.iter().filter(|n| n.inputs.contains(&j)).count();
        for i in 0..m.nodes.len() {
            let Layer::BatchNorm { gamma, beta, mean, var, eps } = &m.nodes[i].layer else { continue };
            let j = m.nodes[i].inputs[0];
            let foldable = matches!(
                &m.nodes[j].layer,
                Layer::Conv2d(_, Activation::Linear) | Layer::DepthwiseConv2d(_, Activation::Linear)
            );
            if !foldable || readers(&m, j) != 1 || read.contains(&j) {
                continue;
            }
            let scale: Vec<f32> = gamma.iter().zip(var.iter()).map(|(g, v)| g / (v + eps).sqrt()).collect();
            let shift: Vec<f32> = (0..scale.len()).map(|c| beta[c] - mean[c] * scale[c]).collect();
            let (Layer::Conv2d(conv, _) | Layer::DepthwiseConv2d(conv, _)) = &mut m.nodes[j].layer else {
                unreachable!()
            };
            let per_out = conv.weight.len() / scale.len();
            let mut w = (*conv.weight).clone();
            for (k, v) in w.as_slice_mut().expect("standard layout").iter_mut().enumerate() {
                *v *= scale[k / per_out];
            }
            let b: Vec<f32> =
                (0..scale.len()).map(|c| conv.bias.as_ref().map_or(0.0, |b| b[c]) * scale[c] + shift[c]).collect();
            conv.weight = Arc::new(w);
            conv.bias = Some(Arc::new(Tensor::from_shape_vec(vec![scale.len()], b).expect("c values")));
            m.nodes[i].layer = Layer::Identity;
        }
        m
    }

    /// Total parameter count.
    pub fn param_count(&self) -> usize {
        self.nodes.iter().map(|n| n.layer.param_count()).sum()
    }

    /// The index of a layer by name or (possibly negative) index.
    pub fn find(&self, r: impl Into<LayerRef>) -> Result<usize> {
        match r.into() {
            LayerRef::Index(i) => {
                let n = self.nodes.len() as isize;
                let j = if i < 0 { n + i } else { i };
                if (0..n).contains(&j) {
                    Ok(j as usize)
                } else {
                    Err(LayerError::IndexOutOfRange { index: i, count: self.nodes.len() })
                }
            }
            LayerRef::Name(name) => {
                let found = self.nodes.iter().position(|n| n.name == name);
                found.or_else(|| self.aliases.get(&name).copied()).ok_or_else(|| {
                    let names =
                        self.nodes.iter().map(|n| n.name.as_str()).chain(self.aliases.keys().map(String::as_str));
                    let mut by_distance: Vec<(usize, &str)> = names.map(|n| (edit_distance(&name, n), n)).collect();
                    by_distance.sort();
                    LayerError::UnknownLayer {
                        name,
                        suggestions: by_distance.iter().take(5).map(|(_, s)| s.to_string()).collect(),
                    }
                })
            }
        }
    }

    /// Replaces the activation of a layer (keras-vis's `swap_activation`, typically softmax
    /// → linear before maximizing a class).
    pub fn swap_activation(&mut self, r: impl Into<LayerRef>, activation: Activation) -> Result<()> {
        let i = self.find(r)?;
        let node = &mut self.nodes[i];
        if node.layer.set_activation(activation) {
            Ok(())
        } else {
            Err(LayerError::Build {
                layer: node.name.clone(),
                msg: format!("a {} layer has no activation to swap", node.layer.type_name()),
            })
        }
    }

    /// Runs the model on an image `[N, C, H, W]` in the input spec's range, stopping at the
    /// deepest layer in `outputs`; returns those layers' values in the same order.
    pub fn forward(&self, tape: &mut Tape, image: Var, outputs: &[usize]) -> Result<Vec<Var>> {
        self.forward_bound(tape, image, outputs, &mut Binding::Inference, None)
    }

    /// [`Model::forward`], and the wall time of each step it took, in order: a profile of
    /// the model as it really runs (a conv with its activation fused in is one step; the
    /// first step, node 0, is the input's preprocessing).
    pub fn forward_timed(&self, tape: &mut Tape, image: Var, outputs: &[usize]) -> Result<(Vec<Var>, Vec<StepTime>)> {
        let mut times = Vec::new();
        let vals = self.forward_bound(tape, image, outputs, &mut Binding::Inference, Some(&mut times))?;
        Ok((vals, times))
    }

    /// [`Model::forward`] for training: every parameter becomes a tape variable (listed in
    /// `pass.params`), dropout is live. Batch norms still use their running statistics.
    pub fn forward_training(
        &self,
        tape: &mut Tape,
        image: Var,
        outputs: &[usize],
        pass: &mut TrainingPass,
    ) -> Result<Vec<Var>> {
        self.forward_bound(tape, image, outputs, &mut Binding::Training(pass), None)
    }

    fn forward_bound(
        &self,
        tape: &mut Tape,
        image: Var,
        outputs: &[usize],
        bind: &mut Binding,
        times: Option<&mut Vec<StepTime>>,
    ) -> Result<Vec<Var>> {
        // Its parallel regions opened on a worker thread, not woken from outside each time.
        actmax_tensor::on_worker_thread(|| self.forward_here(tape, image, outputs, bind, times))
    }

    fn forward_here(
        &self,
        tape: &mut Tape,
        image: Var,
        outputs: &[usize],
        bind: &mut Binding,
        mut times: Option<&mut Vec<StepTime>>,
    ) -> Result<Vec<Var>> {
        let last = outputs.iter().copied().max().unwrap_or(0);
        if last >= self.nodes.len() {
            return Err(LayerError::IndexOutOfRange { index: last as isize, count: self.nodes.len() });
        }
        let mut vals: Vec<Option<Var>> = vec![None; last + 1];
        let started = times.is_some().then(Instant::now);
        vals[0] = Some(self.input.preprocess(tape, image)?);
        if let (Some(times), Some(t0)) = (times.as_deref_mut(), started) {
            times.push(StepTime { nodes: 0..1, time: t0.elapsed() });
        }
        let readers = self.readers(outputs, last);
        let fusions = match bind {
            Binding::Inference => self.activation_fusions(&readers, last),
            Binding::Training(_) => Vec::new(),
        };
        // An inference pass gives each value back once its last reader has run, unless a
        // gradient will read it (with frozen weights, few are: `Tape::release_unneeded`):
        // the next layer's output takes that buffer while it is still in cache instead of
        // one last touched an iteration ago, and a graph for the image's gradient keeps a
        // fraction of its values.
        // Reads still to come per tape value (a layer may return its input's value, so
        // the count is per value, not per layer).
        let mut unread: Option<HashMap<Var, usize>> = match bind {
            Binding::Inference => Some(HashMap::new()),
            _ => None,
        };
        if let (Some(unread), Some(v)) = (unread.as_mut(), vals[0]) {
            unread.insert(v, readers[0]);
        }
        let mut i = 1;
        while i <= last {
            let node = &self.nodes[i];
            let mut ins: Vec<Var> = node.inputs.iter().map(|&j| vals[j].expect("topological order")).collect();
            let started = times.is_some().then(Instant::now);
            let fused = node.layer.plain_conv().zip(fusions.get(i).copied().flatten());
            // The value at j is the pair's own (only the depthwise conv reads it): with no
            // gradient it is never kept, with one the tape keeps it with its ReLU6's bits.
            let pair = fused.and_then(|(_, (j, _))| self.conv_reading(j, &fusions, &readers, last, true));
            let next = if let (Some((conv, (_, act))), Some((dw, end, next_act))) = (fused, pair) {
                // A conv, its activation at j, and the depthwise conv at j + 1 (with its
                // activation, ending at `end`): one op; with the pointwise conv reading
                // only the depthwise conv's value (ending at `last_of_three`), one op too.
                match self.conv_reading(end, &fusions, &readers, last, false) {
                    Some((third, last_of_three, third_act)) => {
                        // And the residual connection's addition right after, if any.
                        let sum = self.residual_after(last_of_three, &readers, last, &vals);
                        let out = sum.map_or(last_of_three, |(at, _)| at);
                        let then = Some((third, third_act, sum.map(|(_, r)| r)));
                        vals[out] = Some(conv.pair_then(tape, ins[0], bind, act, dw, next_act, then)?);
                        // The residual is read here too: counted as one of this step's inputs.
                        ins.extend(sum.map(|(_, r)| r));
                        out + 1
                    }
                    None => {
                        vals[end] = Some(conv.pair_then(tape, ins[0], bind, act, dw, next_act, None)?);
                        end + 1
                    }
                }
            } else if let Some((conv, (j, act))) = fused {
                // Layers i+1 ..= j are identities and the activation: their one value is
                // computed here, and nobody reads the values in between.
                vals[j] = Some(conv.forward_then(tape, ins[0], bind, ["weight", "bias"], act)?);
                j + 1
            } else {
                if let Binding::Training(pass) = bind {
                    pass.layer.clone_from(&node.name);
                }
                vals[i] = Some(node.layer.forward_bound(tape, &ins, bind)?);
                i + 1
            };
            if let (Some(times), Some(t0)) = (times.as_deref_mut(), started) {
                times.push(StepTime { nodes: i..next, time: t0.elapsed() });
            }
            if let Some(unread) = unread.as_mut() {
                if let Some(v) = vals[next - 1] {
                    *unread.entry(v).or_default() += readers[next - 1];
                }
                for v in ins {
                    let left = unread.get_mut(&v).expect("counted when computed");
                    *left -= 1;
                    if *left == 0 && v != image {
                        tape.release_unneeded(v)?;
                    }
                }
            }
            i = next;
        }
        Ok(outputs.iter().map(|&i| vals[i].expect("computed")).collect())
    }

    /// The conv at `j + 1` — a depthwise one, or with `depthwise` false any other — when
    /// it reads the value at `j` (a conv's fused activation, or its output) and nothing
    /// else does, nor is it asked for: that conv, the last node it computes (its own
    /// fused activation, or itself) and that activation. For an inference binding:
    /// [`Tape::conv2d_pair`] computes a conv and such a depthwise conv a block of
    /// channels at a time where the shapes pay, [`Tape::conv2d_triple`] the project conv
    /// after them with the two.
    fn conv_reading(
        &self,
        j: usize,
        fusions: &[Option<(usize, Activation)>],
        readers: &[usize],
        last: usize,
        depthwise: bool,
    ) -> Option<(&Conv, usize, Activation)> {
        let k = j + 1;
        let node = self.nodes.get(k).filter(|n| k <= last && readers[j] == 1 && n.inputs == [j])?;
        let conv = match (&node.layer, depthwise) {
            (Layer::DepthwiseConv2d(c, Activation::Linear), true) | (Layer::Conv2d(c, Activation::Linear), false) => c,
            _ => return None,
        };
        Some(match fusions.get(k).copied().flatten() {
            Some((end, act)) => (conv, end, act),
            None => (conv, k, Activation::Linear),
        })
    }

    /// The two-input addition reading the value at `j` (through identities, each read
    /// once) and a value already computed, when nothing else reads `j`'s value: the
    /// addition's index and that other value (a residual connection).
    fn residual_after(&self, j: usize, readers: &[usize], last: usize, vals: &[Option<Var>]) -> Option<(usize, Var)> {
        let k = self.past_identities(j, readers, last);
        let node = self.nodes.get(k).filter(|n| k <= last && readers[k - 1] == 1 && matches!(n.layer, Layer::Add))?;
        match node.inputs[..] {
            [a, b] if a == k - 1 && b != a => Some((k, vals[b]?)),
            [a, b] if b == k - 1 && a != b => Some((k, vals[a]?)),
            _ => None,
        }
    }

    /// The first node after `j` that is not one of a chain of identities (folded batch
    /// norms, dropout at inference) each reading only the one before, whose value only it
    /// reads and no one asks for.
    fn past_identities(&self, j: usize, readers: &[usize], last: usize) -> usize {
        let mut k = j + 1;
        while k <= last
            && readers[k - 1] == 1
            && self.nodes[k].inputs == [k - 1]
            && matches!(self.nodes[k].layer, Layer::Identity | Layer::Dropout(_))
        {
            k += 1;
        }
        k
    }

    /// How many reads of each value a forward to `last` makes, plus one for each time it is
    /// asked for as an output (a value at zero is read by no one after that).
    fn readers(&self, outputs: &[usize], last: usize) -> Vec<usize> {
        let mut readers = vec![0usize; last + 1];
        for n in &self.nodes[1..=last] {
            for &j in &n.inputs {
                readers[j] += 1;
            }
        }
        for &o in outputs {
            readers[o] += 1;
        }
        readers
    }

    /// Convs whose activation can run in their own store: at each conv's index, the
    /// index of the activation and its kind, for each conv with no activation of its own,
    /// followed only by identities ([`Model::past_identities`]) and then a ReLU or ReLU6,
    /// where nothing but the next layer reads any value in between and none of them is an
    /// output asked for. The layer list stays as it is: names, indexes and every
    /// requested value are unchanged.
    /// `readers` as [`Model::readers`] gives them (a requested output counts as a read).
    fn activation_fusions(&self, readers: &[usize], last: usize) -> Vec<Option<(usize, Activation)>> {
        // Read once, by the next layer, and not asked for.
        let private = |k: usize| readers[k] == 1;
        let chained = |k: usize| self.nodes[k].inputs == [k - 1];
        let mut out = vec![None; last + 1];
        for (i, slot) in out.iter_mut().enumerate().skip(1) {
            if self.nodes[i].layer.plain_conv().is_none() {
                continue;
            }
            let j = self.past_identities(i, readers, last);
            if j <= last && chained(j) && private(j - 1) {
                if let Layer::Activation(act) = self.nodes[j].layer {
                    if act.fusable().is_some() {
                        *slot = Some((j, act));
                    }
                }
            }
        }
        out
    }

    /// Calls `f` with every parameter's full name and a mutable handle (for optimizers).
    pub fn for_each_parameter_mut(&mut self, mut f: impl FnMut(&str, &mut Arc<Tensor>)) {
        for n in &mut self.nodes {
            for (p, t) in n.layer.params_mut() {
                f(&format!("{}.{p}", n.name), t);
            }
        }
    }

    /// The last layer's output for an image batch, without gradients.
    pub fn predict(&self, image: &Tensor) -> Result<Tensor> {
        let mut tape = Tape::new();
        let x = tape.constant(image.clone());
        let out = self.forward(&mut tape, x, &[self.nodes.len() - 1])?[0];
        Ok(tape.value(out)?.clone())
    }

    /// The `k` best classes of the first image: index, raw output and probability (a
    /// softmax of the outputs, or the outputs themselves when the last layer is a softmax).
    pub fn top_k(&self, image: &Tensor, k: usize) -> Result<Vec<Prediction>> {
        let out = self.predict(image)?;
        let width = out.shape().get(1).copied().unwrap_or(out.len());
        let z: Vec<f32> = out.iter().take(width).copied().collect();
        let is_softmax = self.nodes.last().and_then(|n| n.layer.activation()) == Some(Activation::Softmax);
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
        let mut order: Vec<usize> = (0..z.len()).collect();
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
        Ok(order
            .into_iter()
            .take(k)
            .map(|i| Prediction {
                class: i,
                output: z[i],
                probability: if is_softmax { z[i] } else { (z[i] - max).exp() / sum },
            })
            .collect())
    }

    /// Every parameter by its full name (`<layer>.<param>`).
    pub fn parameter_shapes(&mut self) -> BTreeMap<String, Vec<usize>> {
        let mut out = BTreeMap::new();
        for n in &mut self.nodes {
            for (p, t) in n.layer.params_mut() {
                out.insert(format!("{}.{p}", n.name), t.shape().to_vec());
            }
        }
        out
    }

    /// Loads named tensors onto the parameters of the same names. Every parameter must be
    /// found with its shape, and every tensor must find a parameter — except PyTorch's
    /// `num_batches_tracked` counters, which inference does not use. Nothing changes unless
    /// everything fits.
    pub fn load_state_dict(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let shapes = self.parameter_shapes();
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        for (name, shape) in &shapes {
            match tensors.get(name) {
                None => missing.push(name.clone()),
                Some(t) if t.shape() != shape.as_slice() => {
                    misshaped.push(format!("{name}: file {:?} vs model {shape:?}", t.shape()))
                }
                Some(_) => {}
            }
        }
        let known: BTreeSet<&String> = shapes.keys().collect();
        let unexpected: Vec<String> =
            tensors.keys().filter(|k| !known.contains(k) && !k.ends_with("num_batches_tracked")).cloned().collect();
        if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() {
            return Err(LoadError::Mismatch { missing, unexpected, misshaped }.into());
        }
        for n in &mut self.nodes {
            let name = n.name.clone();
            for (p, t) in n.layer.params_mut() {
                *t = Arc::new(tensors[&format!("{name}.{p}")].clone());
            }
        }
        Ok(())
    }

    /// Every parameter by its full name, shared (no copy).
    pub fn state_dict(&mut self) -> BTreeMap<String, Arc<Tensor>> {
        let mut out = BTreeMap::new();
        for n in &mut self.nodes {
            let name = n.name.clone();
            for (p, t) in n.layer.params_mut() {
                out.insert(format!("{name}.{p}"), t.clone());
            }
        }
        out
    }
}
