//! ONNX nodes → layers (or constants folded at load time). One match over op types.

use std::collections::HashMap;
use std::sync::Arc;

use actmax_tensor::{Padding2d, Tensor};

use super::proto::{AttributeProto, NodeProto};
use super::{format_err, read_tensor, unsupported, Const, ExternalData, TorchScope, Value};
use crate::error::Result;
use crate::layer::{Activation, BinaryOp, Conv, Layer, Pool, WindowPadding};
use crate::model::{Model, ModelBuilder};

/// Converts one ONNX node: the converter, the node, its op type, its inputs, the model's
/// external data.
type Convert = fn(&mut Converter, &Ctx, &str, &Inputs, &mut ExternalData) -> Result<Value>;

/// Every single-output op the converter reads, with how: the one list behind
/// `Converter::convert` and the "supported" lists of errors and docs ([`supported_ops`]).
/// Adding an op is a row here (and its method, where it needs one).
const OPS: &[(&str, Convert)] = &[
    ("Conv", |c, ctx, _, ins, _| c.conv(ctx, ins.layer(ctx)?, ins.get(1), ins.get(2))),
    ("Gemm", |c, ctx, op, ins, _| c.gemm(ctx, op, ins)),
    ("MatMul", |c, ctx, op, ins, _| c.gemm(ctx, op, ins)),
    ("Identity", |c, ctx, op, ins, _| c.pass_through(ctx, op, ins)),
    ("Dropout", |c, ctx, op, ins, _| c.pass_through(ctx, op, ins)),
    ("Cast", |c, ctx, op, ins, _| c.pass_through(ctx, op, ins)),
    ("Relu", |c, ctx, _, ins, _| c.act(ctx, ins.layer(ctx)?, Activation::Relu)),
    ("Sigmoid", |c, ctx, _, ins, _| c.act(ctx, ins.layer(ctx)?, Activation::Sigmoid)),
    ("Tanh", |c, ctx, _, ins, _| c.act(ctx, ins.layer(ctx)?, Activation::Tanh)),
    ("LeakyRelu", |c, ctx, _, ins, _| c.act(ctx, ins.layer(ctx)?, Activation::LeakyRelu(ctx.float("alpha", 0.01)))),
    ("Elu", |c, ctx, _, ins, _| c.act(ctx, ins.layer(ctx)?, Activation::Elu(ctx.float("alpha", 1.0)))),
    ("Clip", |c, ctx, _, ins, _| c.clip(ctx, ins)),
    ("HardSigmoid", |c, ctx, _, ins, _| {
        let (alpha, beta) = (ctx.float("alpha", 0.2), ctx.float("beta", 0.5));
        c.hard_sigmoid(ctx, ins.layer(ctx)?, alpha, beta).map(Value::Layer)
    }),
    ("HardSwish", |c, ctx, _, ins, _| {
        // x · HardSigmoid(x) with α = 1/6, β = 1/2.
        let x = ins.layer(ctx)?;
        let gate_ctx = Ctx { name: format!("{}.gate", ctx.name), ..*ctx };
        let gate = c.hard_sigmoid(&gate_ctx, x, 1.0 / 6.0, 0.5)?;
        c.add(&ctx.name, Layer::Binary(BinaryOp::Mul), &[x, gate])
    }),
    ("Sum", |c, ctx, _, ins, _| {
        let layers = ins.layers(ctx)?;
        let first = c.shape(layers[0]);
        if layers.iter().any(|&l| c.shape(l) != first) {
            return Err(ctx.unsupported("Sum of tensors of different shapes"));
        }
        c.add(&ctx.name, Layer::Add, &layers)
    }),
    ("ReduceMean", |c, ctx, op, ins, _| c.reduce(ctx, op, ins)),
    ("ReduceSum", |c, ctx, op, ins, _| c.reduce(ctx, op, ins)),
    ("ReduceMax", |c, ctx, op, ins, _| c.reduce(ctx, op, ins)),
    ("Sqrt", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Reciprocal", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Erf", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Exp", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Log", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Abs", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Neg", |c, ctx, op, ins, _| c.unary(ctx, op, ins)),
    ("Pow", |c, ctx, _, ins, _| c.pow(ctx, ins)),
    ("Gelu", |c, ctx, _, ins, _| match ctx.string("approximate").as_deref() {
        None | Some("none") => c.act(ctx, ins.layer(ctx)?, Activation::Gelu),
        Some("tanh") => c.act(ctx, ins.layer(ctx)?, Activation::GeluTanh),
        Some(other) => Err(ctx.err(format!("approximate = `{other}` (none or tanh)"))),
    }),
    ("LayerNormalization", |c, ctx, _, ins, _| c.layer_norm(ctx, ins)),
    ("PRelu", |c, ctx, _, ins, _| c.prelu(ctx, ins)),
    ("GlobalMaxPool", |c, ctx, _, ins, _| c.global_max_pool(ctx, ins.layer(ctx)?, true)),
    ("Slice", |c, ctx, _, ins, _| c.slice(ctx, ins)),
    ("Resize", |c, ctx, op, ins, _| c.resize(ctx, op, ins)),
    ("Upsample", |c, ctx, op, ins, _| c.resize(ctx, op, ins)),
    ("Softmax", |c, ctx, _, ins, _| c.softmax(ctx, ins.layer(ctx)?)),
    ("Add", |c, ctx, op, ins, _| c.binary(ctx, op, ins)),
    ("Sub", |c, ctx, op, ins, _| c.binary(ctx, op, ins)),
    ("Mul", |c, ctx, op, ins, _| c.binary(ctx, op, ins)),
    ("Div", |c, ctx, op, ins, _| c.binary(ctx, op, ins)),
    ("BatchNormalization", |c, ctx, _, ins, _| c.batch_norm(ctx, ins)),
    ("MaxPool", |c, ctx, _, ins, _| c.pool(ctx, ins.layer(ctx)?, true)),
    ("AveragePool", |c, ctx, _, ins, _| c.pool(ctx, ins.layer(ctx)?, false)),
    // The GAP layer (named after the node) gives [N, C]; ONNX keeps [N, C, 1, 1].
    ("GlobalAveragePool", |c, ctx, _, ins, _| {
        c.mean_keepdims(ins.layer(ctx)?, &ctx.name, &format!("{}.keepdims", ctx.name))
    }),
    ("Flatten", |c, ctx, _, ins, _| match ctx.int("axis", 1) {
        1 => c.add(&ctx.name, Layer::Flatten, &[ins.layer(ctx)?]),
        _ => Err(ctx.unsupported("Flatten with axis ≠ 1")),
    }),
    ("Reshape", |c, ctx, op, ins, _| c.reshape(ctx, op, ins.get(0), ins.get(1))),
    ("Squeeze", |c, ctx, op, ins, _| c.reshape(ctx, op, ins.get(0), ins.get(1))),
    ("Unsqueeze", |c, ctx, op, ins, _| c.reshape(ctx, op, ins.get(0), ins.get(1))),
    ("Transpose", |c, ctx, _, ins, _| {
        let x = ins.layer(ctx).map_err(|_| ctx.unsupported("Transpose of a constant"))?;
        let rank = c.shape(x).len();
        let perm = ctx.ints("perm").map_or((0..rank).rev().collect(), |p| p.iter().map(|&v| v as usize).collect());
        c.add(&ctx.name, Layer::Permute(perm), &[x])
    }),
    ("Concat", |c, ctx, _, ins, _| c.concat(ctx, ins)),
    ("Pad", |c, ctx, _, ins, _| c.pad(ctx, ins.layer(ctx)?, ins.get(1), ins.get(2))),
    ("Constant", |_, ctx, _, _, data| constant(ctx, data)),
    ("Shape", |c, ctx, _, ins, _| {
        let shape = match ins.get(0) {
            Some(Value::Layer(i)) => c.shape(*i),
            Some(Value::Const(k)) => k.shape().to_vec(),
            Some(Value::Flat(i)) => vec![c.shape(*i).iter().product()],
            None => return Err(ctx.err("no input")),
        };
        Ok(shape_of(ctx, &shape))
    }),
    ("Gather", |c, ctx, _, ins, _| gather(c, ctx, ins)),
];

/// Ops with several outputs, converted by `Converter::node` itself.
const MULTI_OUTPUT_OPS: &[&str] = &["Split"];

/// Every ONNX op actmax reads, in the order of its table.
pub fn supported_ops() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|(name, _)| *name).chain(MULTI_OUTPUT_OPS.iter().copied())
}

/// Builds the model node by node.
pub(crate) struct Converter {
    builder: ModelBuilder,
    opset: i64,
    /// Next suffix to try per repeated name (keeps naming linear in the node count).
    suffixes: HashMap<String, usize>,
    /// Per PyTorch module path (and every enclosing one), the last layer made from a node
    /// inside it: the module's output, which takes the path as its name (or as an alias,
    /// when a deeper module's path names it already) at the end.
    scoped: HashMap<String, usize>,
}

/// One node's view: its name, inputs and attributes.
pub(super) struct Ctx<'a> {
    pub(super) node: &'a NodeProto,
    pub(super) name: String,
    pub(super) opset: i64,
}

impl Ctx<'_> {
    pub(super) fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
    }
    pub(super) fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }
    pub(super) fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }
    pub(super) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }
    pub(super) fn string(&self, name: &str) -> Option<String> {
        self.attr(name).and_then(|a| a.s.as_ref()).map(|s| String::from_utf8_lossy(s).into_owned())
    }
    pub(super) fn err(&self, msg: impl std::fmt::Display) -> crate::error::LayerError {
        format_err(format!("node `{}` ({}): {msg}", self.name, self.node.op_type.as_deref().unwrap_or("?")))
    }
    pub(super) fn unsupported(&self, msg: impl std::fmt::Display) -> crate::error::LayerError {
        unsupported(format!(
            "node `{}` ({}, opset {}): {msg}",
            self.name,
            self.node.op_type.as_deref().unwrap_or("?"),
            self.opset
        ))
    }
    /// Two spatial values from an attribute (`[a, b]`), or the default.
    pub(super) fn pair(&self, name: &str, default: usize) -> Result<[usize; 2]> {
        match self.ints(name) {
            None => Ok([default, default]),
            Some(v) if v.len() == 2 && v.iter().all(|&x| x >= 0) => Ok([v[0] as usize, v[1] as usize]),
            Some(v) => Err(self.unsupported(format!("{name} = {v:?}: only 2-D images are supported"))),
        }
    }
}

pub(super) fn f32_const<'v>(ctx: &Ctx, v: &'v Value, what: &str) -> Result<&'v Tensor> {
    match v {
        Value::Const(Const::F32(t)) => Ok(t),
        Value::Const(Const::I64(..)) => Err(ctx.err(format!("{what} must be a float tensor"))),
        Value::Layer(_) | Value::Flat(_) => {
            Err(ctx.unsupported(format!("{what} must be a constant (an initializer), not computed")))
        }
    }
}

pub(super) fn i64_const<'v>(ctx: &Ctx, v: &'v Value, what: &str) -> Result<&'v [i64]> {
    match v {
        Value::Const(Const::I64(d, _)) => Ok(d),
        _ => Err(ctx.unsupported(format!("{what} must be a constant integer tensor"))),
    }
}

impl Converter {
    pub(crate) fn new(builder: ModelBuilder, opset: i64) -> Self {
        Self { builder, opset, suffixes: HashMap::new(), scoped: HashMap::new() }
    }

    /// The finished model, its last node being the graph output.
    pub(crate) fn finish(mut self, output: usize, output_name: &str) -> Result<Model> {
        // Deepest modules first: `layer1.0.relu_1` names the layer, `layer1.0` is its alias.
        let mut paths: Vec<(String, usize)> = std::mem::take(&mut self.scoped).into_iter().collect();
        paths.sort_by(|a, b| b.0.matches('.').count().cmp(&a.0.matches('.').count()).then(a.0.cmp(&b.0)));
        let mut named = std::collections::HashSet::new();
        for (path, idx) in paths {
            if self.builder.has_name(&path) {
                continue;
            }
            if named.insert(idx) {
                self.builder.rename(idx, path)?;
            } else {
                self.builder.alias(path, idx)?;
            }
        }
        if output + 1 != self.builder.len() {
            let name = self.unique(output_name);
            self.builder.add(name, Layer::Identity, &[output])?;
        }
        Ok(self.builder.build())
    }

    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let k = self.suffixes.entry(base.to_string()).or_insert(1);
        while self.builder.has_name(&name) {
            name = format!("{base}_{k}");
            *k += 1;
        }
        name
    }

    pub(super) fn add(&mut self, name: &str, layer: Layer, inputs: &[usize]) -> Result<Value> {
        self.node_index(name, layer, inputs).map(Value::Layer)
    }

    /// Adds a layer under a unique name; returns its node.
    pub(super) fn node_index(&mut self, name: &str, layer: Layer, inputs: &[usize]) -> Result<usize> {
        let name = self.unique(name);
        self.builder.add(name, layer, inputs)
    }

    pub(super) fn shape(&self, idx: usize) -> Vec<usize> {
        self.builder.shape(idx).map(<[usize]>::to_vec).unwrap_or_default()
    }

    /// Converts one node, recording its outputs in `values`.
    pub(crate) fn node(
        &mut self,
        node: &NodeProto,
        index: usize,
        scope: Option<&TorchScope>,
        values: &mut HashMap<String, Value>,
        data: &mut ExternalData,
    ) -> Result<()> {
        let op = node.op_type.clone().unwrap_or_default();
        if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            return Err(unsupported(format!(
                "node `{}`: op `{op}` of domain `{}` (only the default ONNX domain is supported)",
                node.name.as_deref().unwrap_or(""),
                node.domain.as_deref().unwrap_or("")
            )));
        }
        // Inside a PyTorch module: `<path>.<op>` until the module's last layer takes `<path>`.
        let name = match (scope, node.name.as_deref()) {
            (Some(TorchScope::Module(path)), _) => format!("{path}.{}", op.to_ascii_lowercase()),
            (Some(TorchScope::TopLevel(local)), _) => local.clone(),
            (None, Some(n)) if !n.is_empty() => n.to_string(),
            _ => format!("{}_{index}", op.to_ascii_lowercase()),
        };
        let module = match scope {
            Some(TorchScope::Module(path)) => Some(path.as_str()),
            _ => None,
        };
        let before = self.builder.len();
        let ctx = Ctx { node, name, opset: self.opset };
        let inputs: Vec<Option<Value>> = node
            .input
            .iter()
            .map(|i| {
                if i.is_empty() {
                    Ok(None)
                } else {
                    values
                        .get(i)
                        .cloned()
                        .map(Some)
                        .ok_or_else(|| ctx.err(format!("input `{i}` is not defined before")))
                }
            })
            .collect::<Result<_>>()?;
        if MULTI_OUTPUT_OPS.contains(&op.as_str()) {
            let outs = self.split(&ctx, &Inputs(&inputs), node.output.len())?;
            for (name, v) in node.output.iter().zip(outs) {
                values.insert(name.clone(), v);
            }
        } else {
            let out = self.convert(&ctx, &op, &inputs, data)?;
            let first = node.output.first().ok_or_else(|| ctx.err("no output"))?;
            values.insert(first.clone(), out);
        }
        if let Some(path) = module.filter(|_| self.builder.len() > before) {
            let last = self.builder.len() - 1;
            let ends = path.match_indices('.').map(|(k, _)| k).chain(std::iter::once(path.len()));
            for end in ends {
                self.scoped.insert(path[..end].to_string(), last);
            }
        }
        Ok(())
    }

    /// One node: layers for ops on values computed from the image, constants for ops on
    /// constants only — through the op's entry in [`OPS`].
    fn convert(&mut self, ctx: &Ctx, op: &str, inputs: &[Option<Value>], data: &mut ExternalData) -> Result<Value> {
        match OPS.iter().find(|(name, _)| *name == op) {
            Some((_, convert)) => convert(self, ctx, op, &Inputs(inputs), data),
            None => Err(unsupported(format!(
                "op `{op}` (node `{}`, opset {}) is not supported; actmax reads {}",
                ctx.name,
                ctx.opset,
                supported_ops().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Identity, Dropout and Cast: a layer on image values, the constant itself (or cast)
    /// on constants.
    fn pass_through(&mut self, ctx: &Ctx, op: &str, ins: &Inputs) -> Result<Value> {
        match (op, ins.get(0)) {
            (_, None) => Err(ctx.err("no input")),
            ("Dropout", Some(Value::Layer(i))) => {
                let rate = match ins.get(1) {
                    Some(Value::Const(Const::F32(t))) => t.iter().next().copied().unwrap_or(0.5),
                    _ => ctx.float("ratio", 0.5),
                };
                self.add(&ctx.name, Layer::Dropout(rate), &[*i])
            }
            (_, Some(Value::Layer(i))) => self.add(&ctx.name, Layer::Identity, &[*i]),
            ("Cast", Some(Value::Const(Const::F32(t)))) if ctx.int("to", 1) == 7 => {
                let shape = t.shape().to_vec();
                Ok(Value::Const(Const::I64(t.iter().map(|&v| v as i64).collect(), shape)))
            }
            ("Cast", Some(Value::Const(Const::I64(d, s)))) if ctx.int("to", 7) == 1 => {
                let t =
                    Tensor::from_shape_vec(s.clone(), d.iter().map(|&v| v as f32).collect()).map_err(|e| ctx.err(e))?;
                Ok(Value::Const(Const::F32(t)))
            }
            (_, Some(c)) => Ok(c.clone()),
        }
    }

    /// Clip: bounds as attributes before opset 11, as optional inputs after; (0, 6) is ReLU6.
    fn clip(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let (lo, hi) = if ctx.opset < 11 {
            (ctx.float("min", f32::NEG_INFINITY), ctx.float("max", f32::INFINITY))
        } else {
            let bound = |i: usize, d: f32| -> Result<f32> {
                match ins.get(i) {
                    None => Ok(d),
                    Some(v) => Ok(f32_const(ctx, v, "a Clip bound")?.iter().next().copied().unwrap_or(d)),
                }
            };
            (bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?)
        };
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(ctx.unsupported(format!("Clip bounds {lo}, {hi} (min must not exceed max)")));
        }
        let a = if (lo, hi) == (0.0, 6.0) { Activation::Relu6 } else { Activation::Clip(lo, hi) };
        self.act(ctx, ins.layer(ctx)?, a)
    }

    /// `clip(α·x + β, 0, 1)` as three layers: `<name>.scale`, `<name>.shift`, `<name>`.
    fn hard_sigmoid(&mut self, ctx: &Ctx, x: usize, alpha: f32, beta: f32) -> Result<usize> {
        let scalar = |v: f32| Arc::new(Tensor::from_elem(vec![1], v));
        let op = |op, c| Layer::BinaryConst { op, constant: scalar(c), constant_first: false };
        let scaled = self.node_index(&format!("{}.scale", ctx.name), op(BinaryOp::Mul, alpha), &[x])?;
        let shifted = self.node_index(&format!("{}.shift", ctx.name), op(BinaryOp::Add, beta), &[scaled])?;
        self.node_index(&ctx.name, Layer::Activation(Activation::Clip(0.0, 1.0)), &[shifted])
    }

    /// A global average pool named `pool`, then its `[N, C, 1, 1]` view named `out`.
    pub(super) fn mean_keepdims(&mut self, x: usize, pool: &str, out: &str) -> Result<Value> {
        let c = self.shape(x).get(1).copied().unwrap_or(0);
        let gap = self.node_index(pool, Layer::GlobalAvgPool, &[x])?;
        self.add(out, Layer::Reshape(vec![c, 1, 1]), &[gap])
    }

    /// Softmax over the channels. Before opset 13 it flattens everything from `axis` on, so
    /// it is over channels only when nothing follows them; from 13 on it is along `axis`.
    fn softmax(&mut self, ctx: &Ctx, x: usize) -> Result<Value> {
        let shape = self.shape(x);
        let rank = shape.len() as i64;
        let axis = ctx.int("axis", if ctx.opset >= 13 { -1 } else { 1 });
        let axis = if axis < 0 { axis + rank } else { axis };
        let channels_only = ctx.opset >= 13 || shape.iter().skip(2).all(|&d| d == 1);
        if axis != 1 || !channels_only {
            return Err(ctx.unsupported(format!("softmax over axis {axis} of a {shape:?} tensor")));
        }
        self.act(ctx, x, Activation::Softmax)
    }

    /// Gemm (`alpha · A · B' + beta · C`, B' = B or Bᵀ) and MatMul with a constant B → Dense.
    fn gemm(&mut self, ctx: &Ctx, op: &str, ins: &Inputs) -> Result<Value> {
        let x = ins.layer(ctx)?;
        let b = f32_const(ctx, ins.get(1).ok_or_else(|| ctx.err("no B"))?, "B")?;
        if op == "MatMul" {
            return self.dense(ctx, x, b.t().to_owned(), None);
        }
        if self.shape(x).len() != 2 {
            return Err(ctx.unsupported(format!("Gemm of a {:?} input (only [N, K])", self.shape(x))));
        }
        if ctx.int("transA", 0) != 0 {
            return Err(ctx.unsupported("transA = 1"));
        }
        let (alpha, beta) = (ctx.float("alpha", 1.0), ctx.float("beta", 1.0));
        let w = if ctx.int("transB", 0) != 0 { b.clone() } else { b.t().to_owned() };
        let bias = match ins.get(2) {
            Some(c) => Some(f32_const(ctx, c, "C")?.mapv(|v| v * beta)),
            None => None,
        };
        self.dense(ctx, x, w.mapv(|v| v * alpha), bias)
    }

    /// Add/Sub/Mul/Div: of two image values, of one and a constant (either side), or of two
    /// constants (folded).
    fn binary(&mut self, ctx: &Ctx, op: &str, ins: &Inputs) -> Result<Value> {
        let bop = match op {
            "Add" => BinaryOp::Add,
            "Sub" => BinaryOp::Sub,
            "Mul" => BinaryOp::Mul,
            _ => BinaryOp::Div,
        };
        match (ins.get(0), ins.get(1)) {
            (Some(Value::Layer(a)), Some(Value::Layer(b))) => {
                let same = self.shape(*a) == self.shape(*b);
                let layer = if bop == BinaryOp::Add && same { Layer::Add } else { Layer::Binary(bop) };
                self.add(&ctx.name, layer, &[*a, *b])
            }
            (Some(Value::Layer(a)), Some(c)) | (Some(c), Some(Value::Layer(a))) => {
                let constant_first = matches!(ins.get(0), Some(Value::Const(_)));
                let constant = Arc::new(f32_const(ctx, c, "the constant operand")?.clone());
                self.add(&ctx.name, Layer::BinaryConst { op: bop, constant, constant_first }, &[*a])
            }
            (Some(Value::Const(a)), Some(Value::Const(b))) => fold_binary(ctx, bop, a, b),
            _ => Err(ctx.err("needs two inputs")),
        }
    }

    fn batch_norm(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let x = ins.layer(ctx)?;
        let get = |k: usize, what: &str| -> Result<Arc<Tensor>> {
            let v = ins.get(k).ok_or_else(|| ctx.err(format!("no {what}")))?;
            Ok(Arc::new(f32_const(ctx, v, what)?.clone()))
        };
        let layer = Layer::BatchNorm {
            gamma: get(1, "scale")?,
            beta: get(2, "B")?,
            mean: get(3, "mean")?,
            var: get(4, "var")?,
            eps: ctx.float("epsilon", 1e-5),
        };
        self.add(&ctx.name, layer, &[x])
    }

    /// Concat of image values (a layer), or of integer constants (a shape being built).
    fn concat(&mut self, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
        let all = ins.all();
        let layers: Vec<usize> =
            all.iter().filter_map(|v| if let Value::Layer(i) = v { Some(*i) } else { None }).collect();
        if layers.is_empty() {
            let mut out = Vec::new();
            for v in &all {
                out.extend_from_slice(i64_const(ctx, v, "every Concat input")?);
            }
            let n = out.len();
            return if n == 0 { Err(ctx.err("no inputs")) } else { Ok(Value::Const(Const::I64(out, vec![n]))) };
        }
        if layers.len() != all.len() {
            return Err(ctx.unsupported("a Concat of image values and constants"));
        }
        let rank = self.shape(layers[0]).len() as i64;
        let axis = ctx.int("axis", 1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis < 1 || axis >= rank {
            return Err(ctx.unsupported(format!("Concat along axis {axis} of a rank-{rank} tensor")));
        }
        self.add(&ctx.name, Layer::Concat(axis as usize), &layers)
    }

    pub(super) fn act(&mut self, ctx: &Ctx, x: usize, a: Activation) -> Result<Value> {
        self.add(&ctx.name, Layer::Activation(a), &[x])
    }

    fn dense(&mut self, ctx: &Ctx, x: usize, weight: Tensor, bias: Option<Tensor>) -> Result<Value> {
        if weight.ndim() != 2 || self.shape(x).len() < 2 {
            return Err(ctx.unsupported(format!(
                "a {}-D weight on a {:?} input: only [N, ..., K] × [K, M] products are supported",
                weight.ndim(),
                self.shape(x)
            )));
        }
        let out = weight.shape()[0];
        let bias = match bias {
            Some(b) if b.len() == out => Some(Arc::new(b.into_shape_with_order(vec![out]).expect("len checked"))),
            Some(b) => return Err(ctx.err(format!("bias of shape {:?} for {out} outputs", b.shape()))),
            None => None,
        };
        let weight = Arc::new(weight.as_standard_layout().into_owned());
        self.add(&ctx.name, Layer::Dense { weight, bias, activation: Activation::Linear }, &[x])
    }

    /// Padding from `pads` ([top, left, bottom, right]) and `auto_pad`.
    fn window_padding(
        &self,
        ctx: &Ctx,
        x: usize,
        k: [usize; 2],
        stride: [usize; 2],
        dil: [usize; 2],
    ) -> Result<WindowPadding> {
        let auto = ctx.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" => {
                let p = ctx.ints("pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 || p.iter().any(|&v| v < 0) {
                    return Err(ctx.unsupported(format!("pads {p:?}: only 2-D, non-negative")));
                }
                let p: Vec<usize> = p.iter().map(|&v| v as usize).collect();
                Ok(WindowPadding::Explicit(Padding2d { top: p[0], left: p[1], bottom: p[2], right: p[3] }))
            }
            "VALID" => Ok(WindowPadding::Valid),
            "SAME_UPPER" => Ok(WindowPadding::Same),
            "SAME_LOWER" => {
                let s = self.shape(x);
                if s.len() != 4 {
                    return Err(ctx.unsupported(format!("a window over a {s:?} input (NCHW only)")));
                }
                let p = Padding2d::tf_same([s[2], s[3]], k, stride, dil);
                // SAME_LOWER puts the odd pixel first.
                Ok(WindowPadding::Explicit(Padding2d { top: p.bottom, left: p.right, bottom: p.top, right: p.left }))
            }
            other => Err(ctx.err(format!("auto_pad `{other}`"))),
        }
    }

    fn conv(&mut self, ctx: &Ctx, x: usize, w: Option<&Value>, b: Option<&Value>) -> Result<Value> {
        let w = f32_const(ctx, w.ok_or_else(|| ctx.err("no weight"))?, "the weight")?;
        if w.ndim() != 4 {
            return Err(ctx.unsupported(format!("a weight of shape {:?}: only 2-D convolutions", w.shape())));
        }
        let k = [w.shape()[2], w.shape()[3]];
        if let Some(ks) = ctx.ints("kernel_shape") {
            if ks.iter().map(|&v| v as usize).collect::<Vec<_>>() != k {
                return Err(ctx.err(format!("kernel_shape {ks:?} disagrees with the weight {:?}", w.shape())));
            }
        }
        let stride = ctx.pair("strides", 1)?;
        let dilation = ctx.pair("dilations", 1)?;
        let groups =
            usize::try_from(ctx.int("group", 1)).ok().filter(|&g| g >= 1).ok_or_else(|| ctx.err("group < 1"))?;
        let padding = self.window_padding(ctx, x, k, stride, dilation)?;
        let bias = match b {
            Some(v) => Some(Arc::new(f32_const(ctx, v, "the bias")?.clone())),
            None => None,
        };
        let c_in = self.shape(x).get(1).copied().unwrap_or(0);
        let conv = Conv { weight: Arc::new(w.clone()), bias, stride, padding, dilation, groups };
        let layer = if groups > 1 && groups == c_in && w.shape()[1] == 1 {
            Layer::DepthwiseConv2d(conv, Activation::Linear)
        } else {
            Layer::Conv2d(conv, Activation::Linear)
        };
        self.add(&ctx.name, layer, &[x])
    }

    fn pool(&mut self, ctx: &Ctx, x: usize, max: bool) -> Result<Value> {
        let kernel = ctx.pair("kernel_shape", 0)?;
        if kernel.contains(&0) {
            return Err(ctx.err("kernel_shape is required"));
        }
        if ctx.pair("dilations", 1)? != [1, 1] {
            return Err(ctx.unsupported("dilated pooling"));
        }
        let stride = ctx.pair("strides", 1)?;
        let padding = self.window_padding(ctx, x, kernel, stride, [1, 1])?;
        let count_include_pad = ctx.int("count_include_pad", 0) != 0;
        let pool = Pool { kernel, stride, padding, count_include_pad, ceil_mode: ctx.int("ceil_mode", 0) != 0 };
        self.add(&ctx.name, if max { Layer::MaxPool(pool) } else { Layer::AvgPool(pool) }, &[x])
    }

    fn pad(&mut self, ctx: &Ctx, x: usize, pads: Option<&Value>, value: Option<&Value>) -> Result<Value> {
        let mode = ctx.string("mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(ctx.unsupported(format!("Pad mode `{mode}` (only constant)")));
        }
        let (p, v) = if ctx.opset < 11 {
            (ctx.ints("pads").ok_or_else(|| ctx.err("no pads"))?, ctx.float("value", 0.0))
        } else {
            let p = i64_const(ctx, pads.ok_or_else(|| ctx.err("no pads"))?, "pads")?.to_vec();
            let v = match value {
                Some(c) => f32_const(ctx, c, "constant_value")?.iter().next().copied().unwrap_or(0.0),
                None => 0.0,
            };
            (p, v)
        };
        // [n_begin, c_begin, h_begin, w_begin, n_end, c_end, h_end, w_end]
        if p.len() != 8 || p[0] != 0 || p[1] != 0 || p[4] != 0 || p[5] != 0 || p.iter().any(|&q| q < 0) {
            return Err(ctx.unsupported(format!("pads {p:?}: only non-negative padding of the two spatial axes")));
        }
        let pad = Padding2d { top: p[2] as usize, left: p[3] as usize, bottom: p[6] as usize, right: p[7] as usize };
        self.add(&ctx.name, Layer::Pad(pad, v), &[x])
    }

    fn reshape(&mut self, ctx: &Ctx, op: &str, x: Option<&Value>, arg: Option<&Value>) -> Result<Value> {
        let axes = || -> Result<Vec<i64>> {
            match arg {
                Some(v) => Ok(i64_const(ctx, v, "axes")?.to_vec()),
                None => Ok(ctx.ints("axes").unwrap_or_default()),
            }
        };
        let (shape, layer_in) = match x {
            Some(Value::Layer(i)) => (self.shape(*i), Some(*i)),
            Some(Value::Const(c)) => (c.shape().to_vec(), None),
            Some(Value::Flat(_)) => return Err(flat_read(ctx)),
            None => return Err(ctx.err("no input")),
        };
        let rank = shape.len() as i64;
        let target: Vec<usize> = match op {
            "Reshape" => {
                let spec = i64_const(ctx, arg.ok_or_else(|| ctx.err("no shape"))?, "the shape")?;
                if ctx.int("allowzero", 0) != 0 && spec.contains(&0) {
                    return Err(ctx.unsupported("allowzero = 1 with a zero in the shape (an empty tensor)"));
                }
                let total: usize = shape.iter().product();
                let mut out: Vec<usize> = Vec::with_capacity(spec.len().min(16));
                let mut infer = None;
                for (k, &d) in spec.iter().enumerate() {
                    match d {
                        0 => out.push(*shape.get(k).ok_or_else(|| ctx.err("0 copies a dimension that is not there"))?),
                        -1 if infer.is_none() => {
                            infer = Some(k);
                            out.push(1);
                        }
                        d if d > 0 => out.push(d as usize),
                        d => return Err(ctx.err(format!("shape entry {d}"))),
                    }
                }
                let known = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                let Some(known) = known else { return Err(ctx.err(format!("shape {spec:?} is too large"))) };
                if let Some(k) = infer {
                    if known == 0 || !total.is_multiple_of(known) {
                        return Err(ctx.err(format!("cannot reshape {shape:?} to {spec:?}")));
                    }
                    out[k] = total / known;
                }
                out
            }
            "Squeeze" => {
                let ax: Vec<i64> = axes()?.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
                shape
                    .iter()
                    .enumerate()
                    .filter(|(k, &d)| !(if ax.is_empty() { d == 1 } else { ax.contains(&(*k as i64)) }))
                    .map(|(_, &d)| d)
                    .collect()
            }
            _ => {
                let out_rank = rank + axes()?.len() as i64;
                let mut ax: Vec<i64> = axes()?.iter().map(|&a| if a < 0 { a + out_rank } else { a }).collect();
                ax.sort_unstable();
                let mut out = shape.clone();
                for a in ax {
                    if a < 0 || a as usize > out.len() {
                        return Err(ctx.err(format!("axis {a} out of range")));
                    }
                    out.insert(a as usize, 1);
                }
                out
            }
        };
        match (x, layer_in) {
            (Some(Value::Const(c)), _) => Ok(Value::Const(match c {
                Const::F32(t) => Const::F32(
                    t.as_standard_layout().into_owned().into_shape_with_order(target).map_err(|e| ctx.err(e))?,
                ),
                Const::I64(d, _) if d.len() == target.iter().product::<usize>() => Const::I64(d.clone(), target),
                Const::I64(d, _) => return Err(ctx.err(format!("cannot reshape {} values to {target:?}", d.len()))),
            })),
            (_, Some(i))
                if target.len() == 1 && shape.first() == Some(&1) && target[0] == shape.iter().product::<usize>() =>
            {
                Ok(Value::Flat(i))
            }
            (_, Some(i)) => {
                if target.first() != shape.first()
                    || target.iter().product::<usize>() != shape.iter().product::<usize>()
                {
                    return Err(ctx.unsupported(format!("reshaping {shape:?} to {target:?} moves the batch axis")));
                }
                let layer = if target.len() == 2 { Layer::Flatten } else { Layer::Reshape(target[1..].to_vec()) };
                self.add(&ctx.name, layer, &[i])
            }
            _ => Err(ctx.err("no input")),
        }
    }
}

/// A node's inputs (`None` where ONNX leaves an optional input out with an empty name).
pub(super) struct Inputs<'a>(pub(super) &'a [Option<Value>]);

impl<'a> Inputs<'a> {
    pub(super) fn get(&self, i: usize) -> Option<&'a Value> {
        self.0.get(i).and_then(Option::as_ref)
    }
    /// The first input, which must be computed from the image.
    pub(super) fn layer(&self, ctx: &Ctx) -> Result<usize> {
        match self.get(0) {
            Some(Value::Layer(i)) => Ok(*i),
            Some(Value::Flat(_)) => Err(flat_read(ctx)),
            _ => Err(ctx.unsupported("the first input must be computed from the image")),
        }
    }
    fn all(&self) -> Vec<&'a Value> {
        self.0.iter().flatten().collect()
    }
    /// Every input, each computed from the image.
    fn layers(&self, ctx: &Ctx) -> Result<Vec<usize>> {
        let all = self.all();
        if all.is_empty() {
            return Err(ctx.err("no inputs"));
        }
        all.iter()
            .map(|v| match v {
                Value::Layer(i) => Ok(*i),
                Value::Const(_) => Err(ctx.unsupported("an input that is a constant")),
                Value::Flat(_) => Err(flat_read(ctx)),
            })
            .collect()
    }
}

/// The error for a [`Value::Flat`] read by anything but the Gather that restores it.
pub(super) fn flat_read(ctx: &Ctx) -> crate::error::LayerError {
    ctx.unsupported(
        "an image value flattened over the batch axis (Reshape to [-1]) read by an op other than an identity Gather",
    )
}

/// A Constant node's value (`value` tensor, or the scalar/list attribute forms).
fn constant(ctx: &Ctx, data: &mut ExternalData) -> Result<Value> {
    if let Some(t) = ctx.attr("value").and_then(|a| a.t.as_ref()) {
        return Ok(Value::Const(read_tensor(t, data)?));
    }
    if let Some(f) = ctx.attr("value_float").and_then(|a| a.f) {
        return Ok(Value::Const(Const::F32(Tensor::from_elem(vec![], f))));
    }
    if let Some(a) = ctx.attr("value_floats") {
        return Ok(Value::Const(Const::F32(ndarray::Array1::from(a.floats.clone()).into_dyn())));
    }
    if let Some(i) = ctx.attr("value_int").and_then(|a| a.i) {
        return Ok(Value::Const(Const::I64(vec![i], vec![])));
    }
    if let Some(a) = ctx.attr("value_ints") {
        return Ok(Value::Const(Const::I64(a.ints.clone(), vec![a.ints.len()])));
    }
    Err(ctx.unsupported("a Constant without a value, value_float(s) or value_int(s) attribute"))
}

/// Shape: the (static) shape as an integer constant, `start..end` of it from opset 15.
fn shape_of(ctx: &Ctx, shape: &[usize]) -> Value {
    let rank = shape.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (start, end) = (clamp(ctx.int("start", 0)), clamp(ctx.int("end", rank)));
    let dims: Vec<i64> = shape[start..end.max(start)].iter().map(|&d| d as i64).collect();
    let n = dims.len();
    Value::Const(Const::I64(dims, vec![n]))
}

/// Gather along axis 0 of an integer constant (picking dimensions out of a shape), or
/// the identity Gather that turns a [`Value::Flat`] back into `[1, ...]` (a reshape).
fn gather(conv: &mut Converter, ctx: &Ctx, ins: &Inputs) -> Result<Value> {
    if let Some(Value::Flat(x)) = ins.get(0) {
        let per_image: usize = conv.shape(*x).iter().product();
        return match ins.get(1) {
            Some(Value::Const(Const::I64(d, s)))
                if s.first() == Some(&1)
                    && d.len() == per_image
                    && d.iter().enumerate().all(|(k, &v)| v == k as i64) =>
            {
                conv.add(&ctx.name, Layer::Reshape(s[1..].to_vec()), &[*x])
            }
            _ => Err(ctx.unsupported("a Gather of a flattened image value that is not the identity (as_strided)")),
        };
    }
    let data = i64_const(ctx, ins.get(0).ok_or_else(|| ctx.err("no data"))?, "Gather data")?;
    let (idx, idx_shape) = match ins.get(1) {
        Some(Value::Const(Const::I64(d, s))) => (d, s),
        _ => return Err(ctx.unsupported("Gather indices must be constant integers")),
    };
    if ctx.int("axis", 0) != 0 {
        return Err(ctx.unsupported("Gather along an axis other than 0"));
    }
    let n = data.len() as i64;
    let out = idx
        .iter()
        .map(|&k| {
            let k = if k < 0 { k + n } else { k };
            data.get(k as usize).copied().ok_or_else(|| ctx.err(format!("index {k} out of 0..{n}")))
        })
        .collect::<Result<Vec<i64>>>()?;
    Ok(Value::Const(Const::I64(out, idx_shape.clone())))
}

/// Add/Sub/Mul/Div of two constants (integer shape arithmetic, or float constants).
fn fold_binary(ctx: &Ctx, op: BinaryOp, a: &Const, b: &Const) -> Result<Value> {
    match (a, b) {
        (Const::I64(x, sx), Const::I64(y, sy)) if sx == sy || y.len() == 1 => {
            let out = x
                .iter()
                .enumerate()
                .map(|(k, &p)| {
                    let q = if y.len() == 1 { y[0] } else { y[k] };
                    match op {
                        BinaryOp::Add => Ok(p.wrapping_add(q)),
                        BinaryOp::Sub => Ok(p.wrapping_sub(q)),
                        BinaryOp::Mul => Ok(p.wrapping_mul(q)),
                        BinaryOp::Div => p.checked_div(q).ok_or_else(|| ctx.err("integer division by zero")),
                    }
                })
                .collect::<Result<Vec<i64>>>()?;
            Ok(Value::Const(Const::I64(out, sx.clone())))
        }
        (Const::F32(x), Const::F32(y)) => {
            let mut tape = actmax_tensor::Tape::new();
            let (xv, yv) = (tape.constant(x.clone()), tape.constant(y.clone()));
            let r = match op {
                BinaryOp::Add => tape.add(xv, yv),
                BinaryOp::Sub => tape.sub(xv, yv),
                BinaryOp::Mul => tape.mul(xv, yv),
                BinaryOp::Div => tape.div(xv, yv),
            }?;
            Ok(Value::Const(Const::F32(tape.value(r)?.clone())))
        }
        _ => Err(ctx.unsupported("arithmetic on constants of different types or shapes")),
    }
}
