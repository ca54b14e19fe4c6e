//! Model graph: addressing layers, early-stopping forward, swapping activations, loading
//! state dicts, zoo shapes.

use std::collections::BTreeMap;

use actmax_layers::{zoo, Activation, LayerError, LoadError, Model};
use actmax_tensor::{Tape, Tensor};

fn small() -> Model {
    let mut m = zoo::mnist_cnn();
    zoo::init_he_uniform(&mut m, 7);
    m
}

#[test]
fn layers_are_found_by_name_and_by_index() {
    let m = small();
    assert_eq!(m.find("conv2d_2").unwrap(), 2);
    assert_eq!(m.find(-1).unwrap(), m.len() - 1);
    assert_eq!(m.find("-1").unwrap(), m.len() - 1, "a numeric string is an index, as on the CLI");
    assert_eq!(m.find(0).unwrap(), 0);
    assert_eq!(m.nodes()[m.find(-1).unwrap()].name, "preds");
    match m.find(9) {
        Err(e @ LayerError::IndexOutOfRange { index: 9, count: 9 }) => {
            assert!(e.to_string().contains("-9 ..= 8"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(m.find(-10).is_err());
    match m.find("conv2d_3") {
        Err(LayerError::UnknownLayer { suggestions, .. }) => {
            assert!(suggestions[..2].contains(&"conv2d_1".to_string()), "{suggestions:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn listing_gives_types_shapes_filters_and_parameters() {
    let m = small();
    let rows = m.layers();
    let conv = &rows[1];
    assert_eq!(
        (conv.kind, conv.output_shape.as_slice(), conv.filters, conv.params),
        ("Conv2D", &[1, 32, 26, 26][..], Some(32), 320)
    );
    assert_eq!(rows[3].output_shape, [1, 64, 12, 12]);
    assert_eq!(rows.last().unwrap().activation, Some("softmax"));
    // keras-vis's MNIST CNN: 1,199,882 parameters.
    assert_eq!(m.param_count(), 1_199_882);
}

#[test]
fn forward_stops_at_the_deepest_layer_asked_for() {
    let m = small();
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::from_elem(vec![2, 1, 28, 28], 0.5));
    let outs = m.forward(&mut tape, x, &[1]).unwrap();
    let short = tape.len();
    assert_eq!(tape.shape(outs[0]).unwrap(), [2, 32, 26, 26]);
    let mut tape2 = Tape::new();
    let x2 = tape2.constant(Tensor::from_elem(vec![2, 1, 28, 28], 0.5));
    let both = m.forward(&mut tape2, x2, &[m.len() - 1, 1]).unwrap();
    assert!(tape2.len() > short + 5, "the full forward should record more ops");
    assert_eq!(tape2.value(both[1]).unwrap(), tape.value(outs[0]).unwrap(), "same early activation either way");
    let p = tape2.value(both[0]).unwrap();
    assert!((p.sum() - 2.0).abs() < 1e-5, "softmax rows sum to one");
}

#[test]
fn swapping_softmax_for_linear_exposes_logits() {
    let mut m = small();
    let x = Tensor::from_shape_fn(vec![1, 1, 28, 28], |i| ((i[2] * 28 + i[3]) % 7) as f32 / 7.0);
    let p = m.predict(&x).unwrap();
    m.swap_activation(-1, Activation::Linear).unwrap();
    let z = m.predict(&x).unwrap();
    let zmax = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let denom: f32 = z.iter().map(|v| (v - zmax).exp()).sum();
    for (pi, zi) in p.iter().zip(z.iter()) {
        assert!((pi - (zi - zmax).exp() / denom).abs() < 1e-6);
    }
    assert!(m.swap_activation("max_pooling2d_1", Activation::Linear).is_err());
}

#[test]
fn state_dict_mismatches_are_listed() {
    let mut m = small();
    let mut sd: BTreeMap<String, Tensor> = m.state_dict().into_iter().map(|(k, v)| (k, (*v).clone())).collect();
    sd.remove("conv2d_1.bias");
    sd.insert("conv2d_9.weight".into(), Tensor::zeros(vec![1]));
    sd.insert("preds.weight".into(), Tensor::zeros(vec![3, 3]));
    sd.insert("bn.num_batches_tracked".into(), Tensor::zeros(vec![]));
    match m.load_state_dict(&sd) {
        Err(LayerError::Load(LoadError::Mismatch { missing, unexpected, misshaped })) => {
            assert_eq!(missing, ["conv2d_1.bias"]);
            assert_eq!(unexpected, ["conv2d_9.weight"], "num_batches_tracked is ignored");
            assert_eq!(misshaped.len(), 1);
            assert!(misshaped[0].starts_with("preds.weight: file [3, 3] vs model [10, 128]"), "{misshaped:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zoo_architectures_have_their_published_sizes() {
    let e = zoo::efficientnet_lite0();
    assert_eq!(e.param_count(), 4_694_024);
    assert_eq!(e.nodes().last().unwrap().output_shape, [1, 1000]);
    // The PyPI package's efficientnet-lite1 .pth holds 5,470,344 parameters (checked when
    // `cargo xtask fetch` brought it: it loads with no missing or unexpected keys).
    let l1 = zoo::efficientnet_lite1();
    assert_eq!(l1.param_count(), 5_470_344);
    assert_eq!(l1.input_spec().shape, [3, 240, 240]);
    assert_eq!(
        l1.find("_blocks.20._project_conv").map(|i| l1.nodes()[i].output_shape.clone()).unwrap(),
        [1, 320, 8, 8]
    );
    assert!(l1.find("_blocks.21._project_conv").is_err(), "Lite1 has 21 blocks");
    let mlp = zoo::mnist_mlp();
    assert_eq!(mlp.param_count(), 203_530);
    let v = zoo::vgg16();
    assert_eq!(v.param_count(), 138_357_544, "Keras VGG16 parameter count");
    assert_eq!(v.find("block5_conv3").map(|i| v.nodes()[i].output_shape.clone()).unwrap(), [1, 512, 14, 14]);
    let f = zoo::vgg16_features(128).unwrap();
    assert_eq!(f.nodes().last().unwrap().output_shape, [1, 512, 4, 4]);
}

#[test]
fn folded_batch_norms_give_the_same_outputs() {
    let mut m = zoo::efficientnet_lite0();
    zoo::init_he_uniform(&mut m, 3);
    // Non-trivial batch-norm statistics, so folding has something to do.
    let mut sd: BTreeMap<String, Tensor> = m.state_dict().into_iter().map(|(k, v)| (k, (*v).clone())).collect();
    for (k, v) in sd.iter_mut() {
        let seed = k.len() as f32;
        if k.ends_with("running_mean") || k.ends_with("bias") {
            v.iter_mut().enumerate().for_each(|(i, x)| *x = ((i as f32 * 0.37 + seed).sin()) * 0.1);
        } else if k.ends_with("running_var") {
            v.iter_mut().enumerate().for_each(|(i, x)| *x = 1.0 + ((i as f32 * 0.11 + seed).cos()).abs());
        }
    }
    m.load_state_dict(&sd).unwrap();
    let folded = m.fold_batch_norms();
    let identities = folded.layers().iter().filter(|l| l.kind == "Identity").count();
    assert_eq!(identities, 49, "every EfficientNet-Lite0 batch norm follows a conv");
    assert_eq!(folded.len(), m.len());
    let x = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32);
    let (a, b) = (m.predict(&x).unwrap(), folded.predict(&x).unwrap());
    let scale = a.iter().fold(0.0f32, |s, v| s.max(v.abs()));
    for (p, q) in a.iter().zip(b.iter()) {
        assert!((p - q).abs() <= 1e-4 * scale, "{p} vs {q} (scale {scale})");
    }
    let flops = m.flops();
    assert!((0.7e9..0.9e9).contains(&flops), "EfficientNet-Lite0 is ~0.4 G multiply-adds, got {flops} FLOPs");
    // Keeping the batch norm after a conv whose output is read: that conv outputs what
    // the unfolded model's does, and every other batch norm is still folded.
    let read = m.find("_blocks.3._project_conv").unwrap();
    let kept = m.fold_batch_norms_keeping(&[read]);
    assert_eq!(kept.layers().iter().filter(|l| l.kind == "Identity").count(), 48);
    let outputs = |model: &actmax_layers::Model| {
        let mut tape = Tape::new();
        let v = tape.constant(x.clone());
        let y = model.forward(&mut tape, v, &[read]).unwrap();
        tape.value(y[0]).unwrap().clone()
    };
    let (a, b) = (outputs(&m), outputs(&kept));
    let scale = a.iter().fold(0.0f32, |s, v| s.max(v.abs()));
    assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() <= 1e-4 * scale), "the read conv is unchanged");
}

#[test]
fn layers_from_files_are_checked_when_added() {
    use actmax_layers::{BinaryOp, ChannelOrder, InputSpec, Layer, ModelBuilder};
    use std::sync::Arc;
    let mut b = ModelBuilder::new(InputSpec::raw([3, 8, 8], ChannelOrder::Rgb));
    let v = |n: usize| Arc::new(Tensor::ones(vec![n]));
    // A batch norm whose shift is shorter than its scale (a corrupt file) is refused at
    // load time, not when the facade folds it.
    let bad = Layer::BatchNorm { gamma: v(3), beta: v(2), mean: v(3), var: v(3), eps: 1e-3 };
    assert!(matches!(b.push("bn", bad), Err(LayerError::Build { .. })));
    // A constant that would change the batch axis, and a permutation moving it.
    let c = Arc::new(Tensor::ones(vec![2, 3, 1, 1]));
    let bad = Layer::BinaryConst { op: BinaryOp::Mul, constant: c, constant_first: false };
    assert!(matches!(b.push("mul", bad), Err(LayerError::Build { .. })));
    assert!(matches!(b.push("perm", Layer::Permute(vec![1, 0, 2, 3])), Err(LayerError::Build { .. })));
    let ok = b.push("perm", Layer::Permute(vec![0, 2, 3, 1])).unwrap();
    assert_eq!(b.shape(ok), Some(&[1, 8, 8, 3][..]));

    // A conv bias that is not one per output channel (folding would index past it).
    let mut b = ModelBuilder::new(InputSpec::raw([3, 8, 8], ChannelOrder::Rgb));
    let mut conv = actmax_layers::Conv::zeros(4, 3, 3);
    conv.bias = Some(v(2));
    assert!(matches!(b.push("conv", Layer::Conv2d(conv, Activation::Linear)), Err(LayerError::Build { .. })));
    // Padding that overflows, outputs over 2^28 values, dropout rates outside [0, 1).
    let huge = actmax_tensor::Padding2d { top: usize::MAX, bottom: 1, left: 0, right: 0 };
    assert!(matches!(b.push("pad", Layer::Pad(huge, 0.0)), Err(LayerError::Build { .. })));
    let big = actmax_tensor::Padding2d::symmetric(20_000, 20_000);
    match b.push("pad", Layer::Pad(big, 0.0)) {
        Err(LayerError::Build { msg, .. }) => assert!(msg.contains("2^28"), "{msg}"),
        other => panic!("{other:?}"),
    }
    for rate in [1.0, -0.1, f32::NAN] {
        assert!(matches!(b.push("drop", Layer::Dropout(rate)), Err(LayerError::Build { .. })), "{rate}");
    }
    // Input specs from files are validated too.
    let mut spec = InputSpec::raw([3, 8, 8], ChannelOrder::Rgb);
    spec.mean = vec![1.0, 2.0];
    assert!(spec.validate().is_err());
    assert!(InputSpec::raw([3, 100_000, 100_000], ChannelOrder::Rgb).validate().is_err());
    assert!(InputSpec::raw([3, 8, 8], ChannelOrder::Rgb).validate().is_ok());
}

/// Logits and the input gradient of one logit under `mode`; asking for every layer's
/// value keeps the conv → activation fusion off (each intermediate is an output) and every
/// value on the tape.
fn logit_and_grad(
    m: &Model,
    image: &Tensor,
    every_layer: bool,
    mode: actmax_tensor::BackpropMode,
) -> (Vec<f32>, Vec<f32>, usize) {
    let last = m.len() - 1;
    let outputs: Vec<usize> = if every_layer { (0..=last).collect() } else { vec![last] };
    let mut tape = Tape::new();
    tape.set_backprop_mode(mode);
    let x = tape.variable(image.clone());
    let out = *m.forward(&mut tape, x, &outputs).unwrap().last().unwrap();
    let logits: Vec<f32> = tape.value(out).unwrap().iter().copied().collect();
    let l = tape.slice(out, &[(0, 1), (3, 4)]).unwrap();
    let l = tape.sum_all(l).unwrap();
    let g = tape.backward(l).unwrap();
    (logits, g.get(x).unwrap().iter().copied().collect(), tape.len())
}

/// Fused activations, fused blocks and the values a forward gives back because no
/// backward reads them change no logit or input gradient of Lite0, in every backprop mode
/// (each reads different values: bits, outputs, or both).
#[test]
fn fused_activations_change_no_value_or_gradient_of_a_real_model() {
    use actmax_tensor::BackpropMode;
    let m = zoo::load("efficientnet_lite0", None).unwrap().fold_batch_norms();
    let image = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3] * 5) % 255) as f32);
    for mode in [BackpropMode::Redirected, BackpropMode::Plain, BackpropMode::Guided, BackpropMode::Rectified] {
        let (fused, gf, fused_ops) = logit_and_grad(&m, &image, false, mode.clone());
        let (plain, gp, plain_ops) = logit_and_grad(&m, &image, true, mode.clone());
        // Lite0 has 33 conv → ReLU6 pairs: each fused one records one op fewer.
        assert_eq!(plain_ops - fused_ops, 33, "{mode:?}: the fusion did not run");
        let scale = plain.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (a, b) in fused.iter().zip(&plain) {
            assert!((a - b).abs() <= 1e-5 * scale, "{mode:?}: logit {a} vs {b}");
        }
        let gscale = gp.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(gscale > 0.0, "{mode:?}: no gradient");
        for (a, b) in gf.iter().zip(&gp) {
            assert!((a - b).abs() <= 1e-5 * gscale, "{mode:?}: gradient {a} vs {b}");
        }
    }
}

/// The values a forward gives back change no input gradient of other architectures
/// either — VGG16's convs and max pools, the MNIST CNN, the apple counter (He-uniform
/// weights) — under every backprop mode: the gradient of the last layer's first unit with
/// the model's values given back equals the one with every layer kept (asked for).
#[test]
fn given_back_values_change_no_gradient_of_other_architectures() {
    use actmax_tensor::BackpropMode;
    let models = [
        ("vgg16", zoo::vgg16_features(64).unwrap()),
        ("mnist_cnn", zoo::mnist_cnn()),
        ("apple_counter", zoo::apple_counter()),
    ];
    for (seed, (name, mut m)) in models.into_iter().enumerate() {
        zoo::init_he_uniform(&mut m, seed as u64 + 3);
        let spec = m.input_spec().clone();
        let image = Tensor::from_shape_fn(vec![2, spec.shape[0], spec.shape[1], spec.shape[2]], |i| {
            ((i[0] * 13 + i[1] * 7 + i[2] * 3 + i[3] * 5) % 17) as f32 / 17.0 * (spec.range.1 - spec.range.0)
                + spec.range.0
        });
        let last = m.len() - 1;
        for mode in [BackpropMode::Plain, BackpropMode::Redirected, BackpropMode::Guided, BackpropMode::Rectified] {
            let grad = |outputs: &[usize]| {
                let mut tape = Tape::new();
                tape.set_backprop_mode(mode.clone());
                let x = tape.variable(image.clone());
                let out = *m.forward(&mut tape, x, outputs).unwrap().last().unwrap();
                let first = vec![(0, 1); tape.shape(out).unwrap().len()];
                let one = tape.slice(out, &first).unwrap();
                let l = tape.sum_all(one).unwrap();
                (tape.backward(l).unwrap().get(x).unwrap().clone(), tape.value_floats())
            };
            let (given_back, kept) = grad(&[last]);
            let (every, all) = grad(&(0..=last).collect::<Vec<_>>());
            assert!(every.iter().any(|&v| v != 0.0), "{name} {mode:?}: no gradient");
            assert_eq!(given_back, every, "{name} {mode:?}: the gradient changed");
            assert!(kept < all, "{name} {mode:?}: nothing given back ({kept} of {all} floats)");
        }
    }
}

/// A layer called with the wrong number of inputs says so instead of indexing past them.
#[test]
fn layers_refuse_the_wrong_number_of_inputs() {
    use actmax_layers::{BinaryOp, Layer};
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::ones(vec![1, 2, 3, 3]));
    for (layer, inputs) in [
        (Layer::Binary(BinaryOp::Mul), vec![x]),
        (Layer::Flatten, vec![]),
        (Layer::Flatten, vec![x, x]),
        (Layer::Add, vec![]),
        (Layer::Concat(1), vec![]),
    ] {
        let name = layer.type_name();
        let err = layer.forward(&mut tape, &inputs).unwrap_err().to_string();
        assert!(err.contains("input(s), got"), "{name} forward: {err}");
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|_| vec![1, 2, 3, 3]).collect();
        assert!(layer.output_shape(&shapes).is_err(), "{name} output_shape");
    }
    assert!(Layer::Binary(BinaryOp::Mul).forward(&mut tape, &[x, x]).is_ok());
    assert_eq!(Layer::Add.forward(&mut tape, &[x]).map(|v| tape.value(v).unwrap().sum()).unwrap(), 18.0);
}

#[test]
fn aliases_address_layers_and_share_their_names_namespace() {
    use actmax_layers::{ChannelOrder, InputSpec, Layer, ModelBuilder};
    let mut b = ModelBuilder::new(InputSpec::raw([1, 4, 4], ChannelOrder::Gray));
    let relu = b.push("block.relu", Layer::Activation(Activation::Relu)).unwrap();
    b.push("head", Layer::Flatten).unwrap();
    b.alias("block", relu).unwrap();
    assert!(matches!(b.alias("head", relu), Err(LayerError::DuplicateName(_))), "a layer's name");
    assert!(matches!(b.alias("block", relu), Err(LayerError::DuplicateName(_))), "an alias twice");
    assert!(matches!(b.push("block", Layer::Flatten), Err(LayerError::DuplicateName(_))), "a layer named as an alias");
    b.rename(relu, "block.relu_1").unwrap();
    let m = b.build();
    assert_eq!(m.find("block").unwrap(), relu);
    assert_eq!(m.layers()[relu].aliases, ["block"]);
    match m.find("blok") {
        Err(LayerError::UnknownLayer { suggestions, .. }) => assert_eq!(suggestions[0], "block"),
        other => panic!("{other:?}"),
    }
}

/// An inference forward (a constant image) gives each value back after its last reader:
/// the same outputs, bit for bit, as a forward a gradient runs through, holding only
/// what was asked for; and any layer can still be asked for. With a gradient to the
/// image, it gives back what reverse mode will not read: under plain, redirected, guided
/// and rectified backprop every conv's output, whose activation's gradient reads bits
/// instead (where the gradient passes, and for lucid's redirect and guided backprop
/// whether an element is above 0) or nothing.
#[test]
fn inference_forward_releases_what_no_one_reads_again() {
    use actmax_tensor::BackpropMode;
    let m = zoo::load("efficientnet_lite0", None).unwrap().fold_batch_norms();
    let image = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3] * 5) % 255) as f32);
    let last = m.len() - 1;
    let mid = last / 2;
    let run = |variable: bool, outputs: &[usize], mode: BackpropMode| {
        let mut tape = Tape::new();
        tape.set_backprop_mode(mode);
        let x = if variable { tape.variable(image.clone()) } else { tape.constant(image.clone()) };
        let outs = m.forward(&mut tape, x, outputs).unwrap();
        let vals: Vec<Vec<f32>> = outs.iter().map(|&o| tape.value(o).unwrap().iter().copied().collect()).collect();
        assert_eq!(tape.value(x).unwrap(), &image, "the caller's image was released");
        (vals, tape.value_floats())
    };
    let (kept, kept_floats) = run(true, &[mid, last], BackpropMode::Plain);
    let (freed, freed_floats) = run(false, &[mid, last], BackpropMode::Plain);
    assert_eq!(kept, freed, "releasing changed a value");
    // Left: the image, the outputs, and what a layer makes inside itself (preprocessing's
    // first step, a dense layer's product before its bias), under one image more.
    let asked = image.len() + kept.iter().map(Vec::len).sum::<usize>();
    assert!((asked..asked + image.len() + 2000).contains(&freed_floats), "{freed_floats} floats kept, {asked} asked");
    let every: Vec<usize> = (0..=last).collect();
    let (_, all_floats) = run(true, &every, BackpropMode::Plain);
    let (_, redirected_floats) = run(true, &[mid, last], BackpropMode::Redirected);
    let (_, guided_floats) = run(true, &[mid, last], BackpropMode::Guided);
    let (_, rectified_floats) = run(true, &[mid, last], BackpropMode::Rectified);
    let hook: actmax_tensor::BackpropHook = std::sync::Arc::new(|r: &actmax_tensor::ReluGrad<'_>| r.grad.to_owned());
    let (_, custom_floats) = run(true, &[mid, last], BackpropMode::Custom(hook));
    // Plain, redirected and guided backprop mask with bits, rectification with nothing of
    // the forward: the graph keeps hardly more than an inference pass does. A custom
    // hook is handed the activations' inputs and outputs.
    for (mode, floats) in [
        ("plain", kept_floats),
        ("redirected", redirected_floats),
        ("guided", guided_floats),
        ("rectified", rectified_floats),
    ] {
        assert!(floats < freed_floats + image.len(), "{floats} floats kept for {mode} backprop");
    }
    assert!(custom_floats > 10 * kept_floats, "{custom_floats} floats kept for a custom hook");
    assert!(all_floats > custom_floats / 2, "{all_floats} floats in all, {custom_floats} kept for a custom hook");
}

/// `forward_timed` is `forward` with a profile: the same values, and one step per layer
/// run, covering every node up to the deepest output once, in order (the input's
/// preprocessing first, a fused conv and its activation as one step).
#[test]
fn a_timed_forward_accounts_for_every_node_once() {
    let m = zoo::load("efficientnet_lite0", None).unwrap().fold_batch_norms();
    let image = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 5 + i[2] + i[3] * 3) % 255) as f32);
    let last = m.len() - 1;
    let mut tape = Tape::new();
    let x = tape.constant(image.clone());
    let out = m.forward(&mut tape, x, &[last]).unwrap()[0];
    let plain = tape.value(out).unwrap().clone();
    tape.reset();
    let x = tape.constant(image);
    let (outs, steps) = m.forward_timed(&mut tape, x, &[last]).unwrap();
    assert_eq!(tape.value(outs[0]).unwrap(), &plain);
    assert_eq!(steps[0].nodes, 0..1, "the input's preprocessing is not the first step");
    let mut next = 0;
    for s in &steps {
        assert_eq!(s.nodes.start, next, "steps out of order or overlapping: {steps:?}");
        next = s.nodes.end;
    }
    assert_eq!(next, last + 1, "the steps stop short of the output");
    assert!(steps.iter().any(|s| s.nodes.len() > 1), "no conv had its activation fused");
}

/// At inference the pointwise → depthwise pairs (and, on AVX-512, the expand →
/// depthwise → project triples of the 7×7 and 14×14 blocks, pixel-major between them)
/// give the logits' bits of the convs run one by one (every value asked for: nothing
/// fuses).
#[test]
fn fused_inference_gives_the_bits_of_the_layers_one_by_one() {
    let m = zoo::load("efficientnet_lite0", None).unwrap().fold_batch_norms();
    let image = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3] * 5) % 255) as f32);
    let last = m.len() - 1;
    let logits = |outputs: Vec<usize>| {
        let mut tape = Tape::new();
        let x = tape.constant(image.clone());
        let (ys, steps) = m.forward_timed(&mut tape, x, &outputs).unwrap();
        let bits: Vec<u32> = tape.value(*ys.last().unwrap()).unwrap().iter().map(|v| v.to_bits()).collect();
        (bits, steps.len())
    };
    let (fused, fused_steps) = logits(vec![last]);
    let (plain, plain_steps) = logits((0..=last).collect());
    assert!(fused_steps < plain_steps, "nothing fused: {fused_steps} steps");
    assert!(fused == plain, "the fused forward's logits differ");
}
