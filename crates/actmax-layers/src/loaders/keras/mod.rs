//! Keras 2 HDF5 models (`.h5`, `.hdf5`) → [`Model`]: the `model_config` JSON (Sequential
//! or functional) and the weights under `model_weights`, read with the pure-Rust
//! `hdf5-pure` (no C library).
//!
//! Keras works channels-last; actmax works NCHW. Kernels are transposed once here (HWIO →
//! OIHW, a dense `[in, out]` → `[out, in]`), `padding='same'` is TensorFlow's (the odd
//! pixel bottom/right, as [`WindowPadding::Same`]), and where Keras flattens or reshapes a
//! feature map it does so in HWC order — the loader puts a [`Layer::Permute`] to NHWC
//! first, so a Dense after a Flatten sees its inputs in the order it was trained on.
//!
//! Keras 3 `.keras` files (a zip of `config.json` and `model.weights.h5`, see
//! `archive`) go through the same converter: their config differs in how layers name
//! their inputs, and their weights are numbered per layer instead of named.

mod archive;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use actmax_tensor::{Padding2d, Tensor};
use hdf5_pure::{AttrValue, File, Group};
use serde_json::Value as Json;

use crate::error::{LayerError, LoadError, Result};
use crate::layer::{Activation, BinaryOp, Conv, Layer, Pool, WindowPadding};
use crate::model::{ChannelOrder, InputSpec, Model, ModelBuilder};

const FORMAT: &str = "keras";

fn format_err(msg: impl Into<String>) -> LayerError {
    LoadError::Format { format: FORMAT, msg: msg.into() }.into()
}

fn unsupported(msg: impl Into<String>) -> LayerError {
    LoadError::Unsupported { format: FORMAT, msg: msg.into() }.into()
}

fn h5(e: hdf5_pure::Error) -> LayerError {
    format_err(format!("not a readable HDF5 file: {e}"))
}

/// Loads a Keras model file: Keras 2 `.h5` / `.hdf5`, or a Keras 3 `.keras` archive.
pub fn load(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    from_vec(bytes)
}

/// Reads a Keras model (Keras 2 HDF5 or Keras 3 `.keras` zip) from bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
    from_vec(bytes.to_vec())
}

/// The reader owns its buffer: no second copy of a file already read.
fn from_vec(bytes: Vec<u8>) -> Result<Model> {
    if bytes.starts_with(b"PK\x03\x04") {
        let (config, weights) = archive::read(&bytes)?;
        let layers = config["config"].get("layers").unwrap_or(&config["config"]);
        let keys = archive::storage_keys(layers.as_array().map(Vec::as_slice).unwrap_or_default());
        return convert(&config, WeightStore::Numbered(weights, keys));
    }
    if !hdf5_pure::is_hdf5_bytes(&bytes) {
        return Err(format_err("not an HDF5 file (no HDF5 signature)"));
    }
    let file = File::from_bytes(bytes).map_err(h5)?;
    let root = file.root();
    let attrs = root.attrs().map_err(h5)?;
    let config = attrs
        .get("model_config")
        .and_then(attr_string)
        .ok_or_else(|| format_err("no `model_config` attribute: a weights-only file? actmax needs a whole model"))?;
    let config: Json = serde_json::from_str(&config).map_err(|e| format_err(format!("model_config: {e}")))?;
    let weights = file.group("model_weights").map_err(|_| format_err("no `model_weights` group"))?;
    convert(&config, WeightStore::Named(weights))
}

/// A string attribute, whatever its HDF5 string flavour.
fn attr_string(v: &AttrValue) -> Option<String> {
    match v {
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s) => Some(s.clone()),
        AttrValue::StringSized { value, .. } | AttrValue::AsciiStringSized { value, .. } => Some(value.clone()),
        AttrValue::U8Array(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// A list-of-strings attribute (`weight_names`); a weightless layer's may be an empty
/// float array (Keras 2.0).
fn attr_strings(v: &AttrValue) -> Vec<String> {
    match v {
        AttrValue::StringArray(s)
        | AttrValue::AsciiStringArray(s)
        | AttrValue::VarLenStringArray(s)
        | AttrValue::VarLenAsciiStringArray(s)
        | AttrValue::VarLenAsciiCharArray(s) => s.clone(),
        AttrValue::StringArraySized { values, .. } | AttrValue::AsciiStringArraySized { values, .. } => values.clone(),
        other => attr_string(other).into_iter().collect(),
    }
}

/// Where a layer's weights are.
enum WeightStore {
    /// Keras 2: `model_weights/<layer>/` with a `weight_names` attribute.
    Named(Group),
    /// Keras 3: `layers/<key>/vars/0`, `1`, ... in the order the layer made them (`None`:
    /// no layer has weights), with each layer's key.
    Numbered(Option<Group>, HashMap<String, String>),
}

struct Converter {
    weights: WeightStore,
    builder: ModelBuilder,
    /// Keras layer name → model node (its output).
    nodes: HashMap<String, usize>,
}

/// One Keras layer's view: its class, name and config.
struct Ctx<'a> {
    class: &'a str,
    name: &'a str,
    config: &'a Json,
}

impl Ctx<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> LayerError {
        format_err(format!("layer `{}` ({}): {msg}", self.name, self.class))
    }
    fn unsupported(&self, msg: impl std::fmt::Display) -> LayerError {
        unsupported(format!("layer `{}` ({}): {msg}", self.name, self.class))
    }
    fn str(&self, key: &str, default: &str) -> String {
        self.config.get(key).and_then(Json::as_str).unwrap_or(default).to_string()
    }
    fn f32(&self, key: &str, default: f32) -> f32 {
        self.config.get(key).and_then(Json::as_f64).map_or(default, |v| v as f32)
    }
    fn bool(&self, key: &str, default: bool) -> bool {
        self.config.get(key).and_then(Json::as_bool).unwrap_or(default)
    }
    /// `[a, b]` from an int or a pair.
    fn pair(&self, key: &str, default: usize) -> Result<[usize; 2]> {
        match self.config.get(key) {
            None | Some(Json::Null) => Ok([default, default]),
            Some(Json::Number(n)) => {
                n.as_u64().map(|v| [v as usize; 2]).ok_or_else(|| self.err(format!("{key} = {n}")))
            }
            Some(Json::Array(a)) if a.len() == 2 => {
                let v: Vec<u64> = a.iter().filter_map(Json::as_u64).collect();
                if v.len() == 2 {
                    Ok([v[0] as usize, v[1] as usize])
                } else {
                    Err(self.err(format!("{key} = {a:?}")))
                }
            }
            Some(other) => Err(self.unsupported(format!("{key} = {other} (only 2-D layers)"))),
        }
    }
    fn padding(&self) -> Result<WindowPadding> {
        match self.str("padding", "valid").as_str() {
            "valid" => Ok(WindowPadding::Valid),
            "same" => Ok(WindowPadding::Same),
            other => Err(self.unsupported(format!("padding `{other}`"))),
        }
    }
    /// The `activation` entry: a name, or Keras 3's serialized function (`{"class_name":
    /// "function", "config": "swish", ...}`).
    fn activation(&self) -> Result<Activation> {
        match self.config.get("activation") {
            None | Some(Json::Null) => Ok(Activation::Linear),
            Some(Json::String(name)) => keras_activation(self, name),
            Some(Json::Object(o)) => match o.get("config").and_then(Json::as_str) {
                Some(name) => keras_activation(self, name),
                None => Err(self.unsupported(format!("activation {}", Json::Object(o.clone())))),
            },
            Some(other) => Err(self.err(format!("activation {other}"))),
        }
    }
    /// A number, or one per channel (`Rescaling`'s `scale`), as a constant that broadcasts
    /// against NCHW: `[1]` or `[C, 1, 1]`.
    fn per_channel(&self, key: &str, default: f32) -> Result<Arc<Tensor>> {
        match self.config.get(key) {
            None | Some(Json::Null) => Ok(Arc::new(Tensor::from_elem(vec![1], default))),
            Some(Json::Number(n)) => Ok(Arc::new(Tensor::from_elem(vec![1], n.as_f64().unwrap_or(0.0) as f32))),
            Some(Json::Array(a)) => {
                let v: Vec<f32> = a.iter().filter_map(Json::as_f64).map(|v| v as f32).collect();
                if v.len() != a.len() || v.is_empty() {
                    return Err(self.err(format!("{key} = {a:?}")));
                }
                let c = v.len();
                Ok(Arc::new(Tensor::from_shape_vec(vec![c, 1, 1], v).map_err(|e| self.err(e))?))
            }
            Some(other) => Err(self.err(format!("{key} = {other}"))),
        }
    }
}

fn keras_activation(ctx: &Ctx, name: &str) -> Result<Activation> {
    Ok(match name {
        "linear" => Activation::Linear,
        "relu" => Activation::Relu,
        "relu6" => Activation::Relu6,
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "softmax" => Activation::Softmax,
        "elu" => Activation::Elu(1.0),
        "swish" | "silu" => Activation::Swish,
        "gelu" => Activation::Gelu,
        other => return Err(ctx.unsupported(format!("activation `{other}`"))),
    })
}

/// A layer entry's class, name (generated when missing) and config.
fn describe(layer: &Json, k: usize) -> (&str, String, &Json) {
    let class = layer.get("class_name").and_then(Json::as_str).unwrap_or("");
    let config = layer.get("config").unwrap_or(&Json::Null);
    let name = layer.get("name").or_else(|| config.get("name")).and_then(Json::as_str);
    (class, name.map_or_else(|| format!("{}_{k}", class.to_ascii_lowercase()), str::to_string), config)
}

/// `model_config` → Model: the input from the first layer (an InputLayer, or a Sequential
/// model's first layer with its `batch_input_shape`), then one layer after the other.
fn convert(config: &Json, weights: WeightStore) -> Result<Model> {
    let class = config.get("class_name").and_then(Json::as_str).unwrap_or("");
    let inner = config.get("config").ok_or_else(|| format_err("model_config has no `config`"))?;
    // Sequential configs are a list of layers (Keras 2.0) or {"layers": [...]}.
    let layers = inner.get("layers").unwrap_or(inner).as_array().ok_or_else(|| format_err("no layer list"))?;
    let sequential = class == "Sequential";
    if !sequential && class != "Model" && class != "Functional" {
        return Err(unsupported(format!("model class `{class}` (Sequential or functional Model)")));
    }
    let first = layers.first().ok_or_else(|| format_err("the model has no layers"))?;
    let (first_class, first_name, first_config) = describe(first, 0);
    let spec = input_spec(&Ctx { class: first_class, name: &first_name, config: first_config })?;
    // An InputLayer is the model's input node; otherwise the first layer reads it.
    let skip = usize::from(first_class == "InputLayer");
    let mut previous = if skip == 1 { first_name } else { "input".to_string() };
    let mut conv =
        Converter { weights, builder: ModelBuilder::new(spec), nodes: HashMap::from([(previous.clone(), 0)]) };
    let mut last = 0;
    for (k, layer) in layers.iter().enumerate().skip(skip) {
        let (lclass, name, lconfig) = describe(layer, k);
        let ctx = Ctx { class: lclass, name: &name, config: lconfig };
        let inputs = if sequential { vec![conv.nodes[&previous]] } else { conv.inbound(&ctx, layer)? };
        last = conv.layer(&ctx, &inputs)?;
        conv.nodes.insert(name.clone(), last);
        previous = name;
    }
    if !sequential {
        // `[["name", 0, 0]]` (Keras 2, and Keras 3 with several outputs) or `["name", 0, 0]`.
        let outputs = &inner["output_layers"];
        let out = outputs[0][0].as_str().or(outputs[0].as_str()).unwrap_or("");
        if let Some(&o) = conv.nodes.get(out) {
            if o != last {
                conv.add(&format!("{out}_output"), Layer::Identity, &[o])?;
            }
        }
    }
    Ok(conv.builder.build())
}

/// A float dataset of a layer's weight group, checked against its shape.
fn read_weight(ctx: &Ctx, group: &Group, name: &str) -> Result<Tensor> {
    let ds = group.dataset(name).map_err(|e| ctx.err(format!("weight `{name}`: {e}")))?;
    let shape: Vec<usize> = ds.shape().map_err(h5)?.iter().map(|&d| d as usize).collect();
    let data = ds.read_f32().map_err(|e| ctx.err(format!("weight `{name}`: {e}")))?;
    Tensor::from_shape_vec(shape.clone(), data)
        .map_err(|_| ctx.err(format!("weight `{name}` does not fill its shape {shape:?}")))
}

/// Every `keras_history` in a Keras 3 call's arguments, in order.
fn keras_histories<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
    match v {
        Json::Array(items) => items.iter().for_each(|i| keras_histories(i, out)),
        Json::Object(o) if o.get("class_name").and_then(Json::as_str) == Some("__keras_tensor__") => {
            out.extend(o.get("config").and_then(|c| c.get("keras_history")));
        }
        _ => {}
    }
}

/// The input spec from `batch_input_shape` `[null, H, W, C]`: images in 0..1 fed as
/// is (the file does not say how its images were scaled; see `Model::set_input_spec`).
fn input_spec(ctx: &Ctx) -> Result<InputSpec> {
    let shape = ctx
        .config
        .get("batch_input_shape")
        .or_else(|| ctx.config.get("batch_shape"))
        .and_then(Json::as_array)
        .ok_or_else(|| ctx.err("the first layer has no batch_input_shape (Keras 2) or batch_shape (Keras 3)"))?;
    let dims: Vec<Option<u64>> = shape.iter().map(Json::as_u64).collect();
    let [_, Some(h), Some(w), Some(c)] = dims[..] else {
        return Err(ctx.unsupported(format!("input shape {shape:?}: actmax needs a fixed [H, W, C] image")));
    };
    if ctx.str("data_format", "channels_last") != "channels_last" || h == 0 || w == 0 || c == 0 {
        return Err(ctx.unsupported("channels_first or empty inputs"));
    }
    let channels = if c == 1 { ChannelOrder::Gray } else { ChannelOrder::Rgb };
    let dim = |v: u64| usize::try_from(v).map_err(|_| ctx.err("input size out of range"));
    let spec =
        InputSpec { shape: [dim(c)?, dim(h)?, dim(w)?], channels, range: (0.0, 1.0), mean: vec![0.0], std: vec![1.0] };
    spec.validate()?;
    Ok(spec)
}

/// Converts one Keras layer: the converter, the layer, its first input, all its inputs,
/// its weights.
type ConvertLayer = fn(&mut Converter, &Ctx, usize, &[usize], &Weights) -> Result<usize>;

/// Every Keras layer class actmax reads, with how: the one list behind
/// `Converter::layer` and the "supported" lists of errors and docs
/// ([`supported_layers`]). Adding a class is a row here.
const CLASSES: &[(&str, ConvertLayer)] = &[
    ("InputLayer", |_, ctx, _, _, _| Err(ctx.unsupported("a second input (actmax models take one image)"))),
    ("Conv2D", conv2d),
    ("Convolution2D", conv2d),
    ("DepthwiseConv2D", |c, ctx, x, _, w| c.depthwise(ctx, x, w)),
    ("SeparableConv2D", |c, ctx, x, _, w| c.depthwise(ctx, x, w)),
    ("Dense", |c, ctx, x, _, w| {
        let k = w.take(ctx, "kernel")?;
        if k.ndim() != 2 || c.shape(x).len() != 2 {
            return Err(ctx.unsupported("Dense on a feature map (add a Flatten)"));
        }
        let weight = Arc::new(k.t().as_standard_layout().into_owned());
        c.add(ctx.name, Layer::Dense { weight, bias: w.bias(), activation: ctx.activation()? }, &[x])
    }),
    ("BatchNormalization", |c, ctx, x, _, w| c.batch_norm(ctx, x, w)),
    ("Activation", |c, ctx, x, _, _| {
        let a = ctx.activation()?;
        // Keras's softmax runs over the last axis: ours (axis 1) is the same for [N, F]
        // and for NCHW feature maps (channels), not for other ranks.
        if a == Activation::Softmax && ![2, 4].contains(&c.shape(x).len()) {
            return Err(ctx.unsupported(format!("softmax on a {:?} tensor", c.shape(x))));
        }
        c.add(ctx.name, Layer::Activation(a), &[x])
    }),
    ("ReLU", |c, ctx, x, _, _| c.add(ctx.name, Layer::Activation(relu_activation(ctx)?), &[x])),
    ("LeakyReLU", |c, ctx, x, _, _| {
        let a = ctx.config.get("alpha").or(ctx.config.get("negative_slope")).and_then(Json::as_f64);
        c.add(ctx.name, Layer::Activation(Activation::LeakyRelu(a.unwrap_or(0.3) as f32)), &[x])
    }),
    ("MaxPooling2D", pool2d),
    ("AveragePooling2D", pool2d),
    ("GlobalAveragePooling2D", |c, ctx, x, _, _| {
        if !ctx.bool("keepdims", false) {
            return c.add(ctx.name, Layer::GlobalAvgPool, &[x]);
        }
        let ch = c.shape(x).get(1).copied().unwrap_or(0);
        let gap = c.add(&format!("{}.mean", ctx.name), Layer::GlobalAvgPool, &[x])?;
        c.add(ctx.name, Layer::Reshape(vec![ch, 1, 1]), &[gap])
    }),
    ("Rescaling", |c, ctx, x, _, _| {
        let (scale, offset) = (ctx.per_channel("scale", 1.0)?, ctx.per_channel("offset", 0.0)?);
        let mul = |k| Layer::BinaryConst { op: BinaryOp::Mul, constant: k, constant_first: false };
        if offset.iter().all(|&v| v == 0.0) {
            return c.add(ctx.name, mul(scale), &[x]);
        }
        let scaled = c.add(&format!("{}.scale", ctx.name), mul(scale), &[x])?;
        let add = Layer::BinaryConst { op: BinaryOp::Add, constant: offset, constant_first: false };
        c.add(ctx.name, add, &[scaled])
    }),
    ("Normalization", |c, ctx, x, _, w| c.normalization(ctx, x, w)),
    ("Multiply", |c, ctx, x, inputs, _| {
        let mut acc = x;
        for (k, &y) in inputs.iter().enumerate().skip(1) {
            let name = if k + 1 == inputs.len() { ctx.name.to_string() } else { format!("{}.{k}", ctx.name) };
            acc = c.add(&name, Layer::Binary(BinaryOp::Mul), &[acc, y])?;
        }
        Ok(acc)
    }),
    ("Flatten", |c, ctx, x, _, _| c.flatten_or_reshape(ctx, x)),
    ("Reshape", |c, ctx, x, _, _| c.flatten_or_reshape(ctx, x)),
    ("Dropout", dropout),
    ("SpatialDropout2D", dropout),
    ("ZeroPadding2D", |c, ctx, x, _, _| c.add(ctx.name, Layer::Pad(zero_padding(ctx)?, 0.0), &[x])),
    ("Add", |c, ctx, _, inputs, _| c.add(ctx.name, Layer::Add, inputs)),
    ("Concatenate", |c, ctx, x, inputs, _| {
        let rank = c.shape(x).len() as i64;
        let axis = ctx.config.get("axis").and_then(Json::as_i64).unwrap_or(-1);
        let axis = if axis < 0 { axis + rank } else { axis };
        if axis < 0 || axis >= rank {
            return Err(ctx.err(format!("axis {axis} of a rank-{rank} tensor")));
        }
        // NHWC axis → NCHW axis (a 2-D [N, F] keeps its axis).
        let axis = if rank == 4 { [0, 2, 3, 1][axis as usize] } else { axis as usize };
        if axis == 0 {
            return Err(ctx.unsupported("concatenation along the batch axis"));
        }
        c.add(ctx.name, Layer::Concat(axis), inputs)
    }),
];

/// Every Keras layer class actmax reads, in the order of its table.
pub fn supported_layers() -> impl Iterator<Item = &'static str> {
    CLASSES.iter().map(|(name, _)| *name)
}

fn conv2d(c: &mut Converter, ctx: &Ctx, x: usize, _: &[usize], w: &Weights) -> Result<usize> {
    if ctx.pair("dilation_rate", 1)? != [1, 1] && ctx.pair("strides", 1)? != [1, 1] {
        return Err(ctx.unsupported("dilation with strides"));
    }
    let conv = Conv {
        weight: Arc::new(hwio_to_oihw(&w.kernel4(ctx, "kernel")?)),
        bias: w.bias(),
        stride: ctx.pair("strides", 1)?,
        padding: ctx.padding()?,
        dilation: ctx.pair("dilation_rate", 1)?,
        groups: 1,
    };
    c.add(ctx.name, Layer::Conv2d(conv, ctx.activation()?), &[x])
}

fn pool2d(c: &mut Converter, ctx: &Ctx, x: usize, _: &[usize], _: &Weights) -> Result<usize> {
    let kernel = ctx.pair("pool_size", 2)?;
    let stride = match ctx.config.get("strides") {
        None | Some(Json::Null) => kernel,
        _ => ctx.pair("strides", 1)?,
    };
    // Keras averages over the real pixels only.
    let pool = Pool { kernel, stride, padding: ctx.padding()?, count_include_pad: false, ceil_mode: false };
    let layer = if ctx.class == "MaxPooling2D" { Layer::MaxPool(pool) } else { Layer::AvgPool(pool) };
    c.add(ctx.name, layer, &[x])
}

fn dropout(c: &mut Converter, ctx: &Ctx, x: usize, _: &[usize], _: &Weights) -> Result<usize> {
    c.add(ctx.name, Layer::Dropout(ctx.f32("rate", ctx.f32("p", 0.5))), &[x])
}

impl Converter {
    /// A functional layer's inputs: Keras 2's `inbound_nodes[0]` = `[[name, node, tensor,
    /// {}], ...]`, or Keras 3's `inbound_nodes[0]` = `{"args": [...], "kwargs": {}}` whose
    /// tensors (`__keras_tensor__`, alone or in a list) carry `keras_history` = `[name,
    /// node, tensor]`.
    fn inbound(&mut self, ctx: &Ctx, layer: &Json) -> Result<Vec<usize>> {
        let nodes = layer.get("inbound_nodes").and_then(Json::as_array).ok_or_else(|| ctx.err("no inbound_nodes"))?;
        if nodes.len() > 1 {
            return Err(ctx.unsupported("a layer called more than once (shared layers)"));
        }
        let first = nodes.first().ok_or_else(|| ctx.err("no inbound node"))?;
        let mut history: Vec<&Json> = Vec::new();
        match first.get("args") {
            Some(args) => keras_histories(args, &mut history),
            None => history.extend(first.as_array().ok_or_else(|| ctx.err("no inbound node"))?),
        }
        if history.is_empty() {
            return Err(ctx.err("no inbound tensors"));
        }
        history
            .iter()
            .map(|t| {
                let src = t.get(0).and_then(Json::as_str).ok_or_else(|| ctx.err("bad inbound entry"))?;
                if t.get(2).and_then(Json::as_u64).unwrap_or(0) != 0 {
                    return Err(ctx.unsupported("inputs from a multi-output layer"));
                }
                self.nodes.get(src).copied().ok_or_else(|| ctx.err(format!("input `{src}` comes before it is made")))
            })
            .collect()
    }

    /// The layer's weights by Keras name (`kernel`, `bias`, `gamma`, ...), with shapes.
    fn weights(&self, ctx: &Ctx) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        let group = match &self.weights {
            WeightStore::Numbered(layers, keys) => {
                return archive::layer_weights(ctx, layers.as_ref(), keys.get(ctx.name).map(String::as_str))
            }
            WeightStore::Named(g) => g,
        };
        let Ok(group) = group.group(ctx.name) else { return Ok(out) };
        let attrs = group.attrs().map_err(h5)?;
        // Keras splits an attribute over 64 KB into `weight_names0`, `weight_names1`, ...
        let names: Vec<String> = match attrs.get("weight_names") {
            Some(v) => attr_strings(v),
            None => (0..).map_while(|k| attrs.get(&format!("weight_names{k}"))).flat_map(attr_strings).collect(),
        };
        for full in names {
            let t = read_weight(ctx, &group, &full)?;
            // `conv2d_1_1/kernel:0` → `kernel`
            let short = full.rsplit('/').next().unwrap_or(&full).split(':').next().unwrap_or(&full).to_string();
            out.insert(short, t);
        }
        Ok(out)
    }

    fn shape(&self, idx: usize) -> Vec<usize> {
        self.builder.shape(idx).map(<[usize]>::to_vec).unwrap_or_default()
    }

    fn add(&mut self, name: &str, layer: Layer, inputs: &[usize]) -> Result<usize> {
        self.builder.add(name, layer, inputs)
    }

    /// One Keras layer → one model node (two for a Flatten/Reshape of a feature map).
    fn layer(&mut self, ctx: &Ctx, inputs: &[usize]) -> Result<usize> {
        let &x = inputs.first().ok_or_else(|| ctx.err("no inputs"))?;
        if ctx.str("data_format", "channels_last") != "channels_last" {
            return Err(ctx.unsupported("data_format channels_first (actmax reads channels_last Keras models)"));
        }
        let w = Weights::new(ctx, self.weights(ctx)?)?;
        match CLASSES.iter().find(|(name, _)| *name == ctx.class) {
            Some((_, convert)) => convert(self, ctx, x, inputs, &w),
            None => Err(unsupported(format!(
                "layer `{}`: class `{}` is not supported; actmax reads {}",
                ctx.name,
                ctx.class,
                supported_layers().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// DepthwiseConv2D, or SeparableConv2D (the depthwise conv, then a 1×1 one).
    fn depthwise(&mut self, ctx: &Ctx, x: usize, w: &Weights) -> Result<usize> {
        let c = self.shape(x).get(1).copied().unwrap_or(0);
        let dk = w.kernel4(ctx, "depthwise_kernel")?; // [kh, kw, in, multiplier]
        if dk.shape()[2] != c {
            return Err(ctx.err(format!("depthwise kernel {:?} for {c} input channels", dk.shape())));
        }
        let depthwise = Conv {
            weight: Arc::new(depthwise_to_oihw(&dk)),
            bias: None,
            stride: ctx.pair("strides", 1)?,
            padding: ctx.padding()?,
            dilation: ctx.pair("dilation_rate", 1)?,
            groups: c,
        };
        if ctx.class == "DepthwiseConv2D" {
            let conv = Conv { bias: w.bias(), ..depthwise };
            return self.add(ctx.name, Layer::DepthwiseConv2d(conv, ctx.activation()?), &[x]);
        }
        let pointwise = Conv {
            weight: Arc::new(hwio_to_oihw(&w.kernel4(ctx, "pointwise_kernel")?)),
            bias: w.bias(),
            stride: [1, 1],
            padding: WindowPadding::Valid,
            dilation: [1, 1],
            groups: 1,
        };
        let activation = ctx.activation()?;
        self.add(ctx.name, Layer::SeparableConv2d { depthwise, pointwise, activation }, &[x])
    }

    /// Normalization over the channel axis, `(x − mean) / max(√variance, 1e-7)` as Keras
    /// computes it: the statistics from the weights (adapted) or the config (given).
    fn normalization(&mut self, ctx: &Ctx, x: usize, w: &Weights) -> Result<usize> {
        let c = self.shape(x).get(1).copied().unwrap_or(0);
        let axis = match ctx.config.get("axis") {
            Some(Json::Array(a)) if a.len() == 1 => a[0].as_i64(),
            Some(v) => v.as_i64(),
            None => Some(-1),
        };
        if !matches!(axis, Some(-1) | Some(3)) || self.shape(x).len() != 4 {
            return Err(
                ctx.unsupported(format!("axis {:?} (only the channel axis of an image)", ctx.config.get("axis")))
            );
        }
        let stat = |k: &str| -> Result<Vec<f32>> {
            let v: Vec<f32> = match (w.0.get(k), ctx.config.get(k)) {
                (Some(t), _) => t.iter().copied().collect(),
                (None, Some(Json::Array(a))) => a.iter().filter_map(Json::as_f64).map(|v| v as f32).collect(),
                (None, Some(Json::Number(n))) => vec![n.as_f64().unwrap_or(0.0) as f32; c],
                _ => return Err(ctx.err(format!("no `{k}` weight or config entry"))),
            };
            if v.len() == c {
                Ok(v)
            } else {
                Err(ctx.err(format!("{} `{k}` values for {c} channels", v.len())))
            }
        };
        let (mean, var) = (stat("mean")?, stat("variance")?);
        if ctx.bool("invert", false) {
            return Err(ctx.unsupported("invert = true"));
        }
        let column = |v: Vec<f32>| Arc::new(Tensor::from_shape_vec(vec![c, 1, 1], v).expect("c values"));
        let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-7)).collect();
        let sub = Layer::BinaryConst { op: BinaryOp::Sub, constant: column(mean), constant_first: false };
        let centred = self.add(&format!("{}.centre", ctx.name), sub, &[x])?;
        let div = Layer::BinaryConst { op: BinaryOp::Div, constant: column(std), constant_first: false };
        self.add(ctx.name, div, &[centred])
    }

    /// BatchNormalization over the channel axis; `center`/`scale` off mean no beta/gamma.
    fn batch_norm(&mut self, ctx: &Ctx, x: usize, w: &Weights) -> Result<usize> {
        let c = self.shape(x).get(1).copied().unwrap_or(0);
        let rank = self.shape(x).len() as i64;
        // An int, or a one-element list (tf.keras); the channel axis is the last.
        let axis = match ctx.config.get("axis") {
            Some(Json::Array(a)) if a.len() == 1 => a[0].as_i64(),
            Some(v) => v.as_i64(),
            None => Some(-1),
        };
        if axis.map(|a| if a < 0 { a + rank } else { a }) != Some(rank - 1) {
            return Err(ctx.unsupported(format!("axis {:?} (only the channel axis)", ctx.config.get("axis"))));
        }
        let vector = |t: Tensor| {
            if t.shape() == [c] {
                Ok(Arc::new(t))
            } else {
                Err(ctx.err(format!("a parameter of shape {:?} for {c} channels", t.shape())))
            }
        };
        let gamma = if ctx.bool("scale", true) { w.take(ctx, "gamma")? } else { Tensor::from_elem(vec![c], 1.0) };
        let beta = if ctx.bool("center", true) { w.take(ctx, "beta")? } else { Tensor::zeros(vec![c]) };
        let layer = Layer::BatchNorm {
            gamma: vector(gamma)?,
            beta: vector(beta)?,
            mean: vector(w.take(ctx, "moving_mean")?)?,
            var: vector(w.take(ctx, "moving_variance")?)?,
            eps: ctx.f32("epsilon", 1e-3),
        };
        self.add(ctx.name, layer, &[x])
    }

    /// Keras flattens and reshapes in NHWC order: permute a feature map to NHWC first.
    fn flatten_or_reshape(&mut self, ctx: &Ctx, x: usize) -> Result<usize> {
        let shape = self.shape(x);
        let mut src = x;
        if shape.len() == 4 && shape[2] * shape[3] > 1 {
            src = self.add(&format!("{}.to_nhwc", ctx.name), Layer::Permute(vec![0, 2, 3, 1]), &[x])?;
        }
        if ctx.class == "Flatten" {
            return self.add(ctx.name, Layer::Flatten, &[src]);
        }
        let target: Vec<i64> = ctx
            .config
            .get("target_shape")
            .and_then(Json::as_array)
            .map(|a| a.iter().filter_map(Json::as_i64).collect())
            .ok_or_else(|| ctx.err("no target_shape"))?;
        let total: usize = shape[1..].iter().product();
        let known = target.iter().filter(|&&d| d > 0).try_fold(1usize, |a, &d| a.checked_mul(d as usize));
        let known = known.filter(|&k| k > 0).ok_or_else(|| ctx.err(format!("target_shape {target:?}")))?;
        let dims: Vec<usize> = target.iter().map(|&d| if d < 0 { total / known } else { d as usize }).collect();
        match dims.len() {
            1 => self.add(ctx.name, Layer::Flatten, &[src]),
            3 => {
                // Keras's [H, W, C] → ours [C, H, W]: reshape in NHWC, then back to NCHW.
                let nhwc = self.add(&format!("{}.nhwc", ctx.name), Layer::Reshape(dims), &[src])?;
                self.add(ctx.name, Layer::Permute(vec![0, 3, 1, 2]), &[nhwc])
            }
            _ => self.add(ctx.name, Layer::Reshape(dims), &[src]),
        }
    }
}

/// A layer's weights by Keras name (`kernel`, `bias`, `gamma`, ...).
struct Weights(HashMap<String, Tensor>);

impl Weights {
    /// Checks that a bias fits its kernel's output channels.
    fn new(ctx: &Ctx, w: HashMap<String, Tensor>) -> Result<Self> {
        if let (Some(b), Some(k)) = (w.get("bias"), w.get("kernel").or(w.get("pointwise_kernel"))) {
            if b.ndim() != 1 || k.shape().last() != Some(&b.len()) {
                return Err(ctx.err(format!("bias {:?} does not fit kernel {:?}", b.shape(), k.shape())));
            }
        }
        Ok(Self(w))
    }
    fn take(&self, ctx: &Ctx, k: &str) -> Result<Tensor> {
        self.0.get(k).cloned().ok_or_else(|| ctx.err(format!("no `{k}` weight")))
    }
    /// A 4-D kernel `[kh, kw, in, out]`.
    fn kernel4(&self, ctx: &Ctx, k: &str) -> Result<Tensor> {
        let t = self.take(ctx, k)?;
        if t.ndim() == 4 {
            Ok(t)
        } else {
            Err(ctx.err(format!("`{k}` has shape {:?}, not [kh, kw, in, out]", t.shape())))
        }
    }
    fn bias(&self) -> Option<Arc<Tensor>> {
        self.0.get("bias").cloned().map(Arc::new)
    }
}

/// The activation of a ReLU layer: `max_value` and `negative_slope` select ReLU, ReLU6,
/// a clip or a leaky ReLU.
fn relu_activation(ctx: &Ctx) -> Result<Activation> {
    let max = ctx.config.get("max_value").and_then(Json::as_f64);
    let slope = ctx.f32("negative_slope", 0.0);
    Ok(match (max, slope, ctx.f32("threshold", 0.0)) {
        (None, 0.0, 0.0) => Activation::Relu,
        (Some(6.0), 0.0, 0.0) => Activation::Relu6,
        (Some(m), 0.0, 0.0) => Activation::Clip(0.0, m as f32),
        (None, s, 0.0) => Activation::LeakyRelu(s),
        _ => return Err(ctx.unsupported("ReLU with a threshold, or a slope and a maximum")),
    })
}

/// ZeroPadding2D's `padding`: `n`, `(rows, cols)` or `((top, bottom), (left, right))`.
fn zero_padding(ctx: &Ctx) -> Result<Padding2d> {
    let num = |j: &Json| j.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| ctx.err("padding"));
    let p = match ctx.config.get("padding") {
        None => [1; 4],
        Some(n @ Json::Number(_)) => [num(n)?; 4],
        Some(Json::Array(a)) if a.len() == 2 && a.iter().all(Json::is_number) => {
            let (r, c) = (num(&a[0])?, num(&a[1])?);
            [r, r, c, c]
        }
        Some(Json::Array(a)) if a.len() == 2 => {
            let pair = |j: &Json| -> Result<[usize; 2]> {
                match j.as_array().map(Vec::as_slice) {
                    Some([x, y]) => Ok([num(x)?, num(y)?]),
                    _ => Err(ctx.err("padding must be ((top, bottom), (left, right))")),
                }
            };
            let ([t, b], [l, r]) = (pair(&a[0])?, pair(&a[1])?);
            [t, b, l, r]
        }
        Some(other) => return Err(ctx.err(format!("padding {other}"))),
    };
    Ok(Padding2d { top: p[0], bottom: p[1], left: p[2], right: p[3] })
}

/// `[kh, kw, in, out]` → `[out, in, kh, kw]`.
fn hwio_to_oihw(k: &Tensor) -> Tensor {
    k.view().permuted_axes(vec![3, 2, 0, 1]).as_standard_layout().into_owned()
}

/// A depthwise kernel `[kh, kw, in, mult]` → `[in · mult, 1, kh, kw]` (channel `i·mult + m`).
fn depthwise_to_oihw(k: &Tensor) -> Tensor {
    let s = k.shape();
    let (kh, kw, cin, mult) = (s[0], s[1], s[2], s[3]);
    Tensor::from_shape_fn(vec![cin * mult, 1, kh, kw], |ix| k[[ix[2], ix[3], ix[0] / mult, ix[0] % mult]])
}
