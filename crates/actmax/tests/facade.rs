//! The facade on real and seeded models: determinism, filter visualization that works,
//! NaN detection, keras-vis's softmax advice.

use actmax::{visualize_activation, visualize_activation_with_losses, Error, Options};
use actmax_layers::zoo;
use actmax_losses::{lucid, ActivationMaximization, Loss, WeightedLosses};

fn mnist() -> actmax_layers::Model {
    let mut m = zoo::mnist_cnn();
    zoo::init_he_uniform(&mut m, 11);
    m
}

fn png_bytes(img: &image::DynamicImage) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn same_seed_same_png_other_seed_other_image() {
    let m = mnist();
    let run = |seed| {
        let opts = Options { max_iter: 8, seed, input_range: Some((0.0, 255.0)), ..Options::default() };
        png_bytes(&visualize_activation(&m, "preds", Some(vec![3]), opts).unwrap().image(0).unwrap())
    };
    assert_eq!(run(1), run(1), "same seed, same bytes");
    assert_ne!(run(1), run(2), "another seed, another image");
}

#[test]
fn softmax_targets_are_swapped_or_refused() {
    let m = mnist();
    let vis = visualize_activation(&m, -1, Some(vec![1, 7]), Options { max_iter: 3, ..Options::default() }).unwrap();
    assert!(vis.swapped_softmax);
    let refused =
        visualize_activation(&m, -1, Some(vec![1]), Options { max_iter: 3, swap_softmax: false, ..Options::default() });
    assert!(matches!(refused, Err(Error::Options(msg)) if msg.contains("softmax")));
}

#[test]
fn the_best_image_is_the_one_that_had_the_best_loss() {
    let m = mnist();
    let vis = visualize_activation(
        &m,
        "dense_1",
        Some(vec![5]),
        Options { max_iter: 20, input_range: Some((0.0, 1.0)), ..Options::default() },
    )
    .unwrap();
    assert_eq!(vis.history.len(), 20);
    let min = vis.history.iter().copied().fold(f32::INFINITY, f32::min);
    assert_eq!(vis.best_loss, min);
    assert_eq!(vis.history[vis.best_step], min);
    // Re-evaluating the returned image gives that loss (range 0..1 is not quantized).
    let losses = [
        (Box::new(ActivationMaximization::new("dense_1", vec![5])) as Box<dyn Loss>, 1.0),
        (Box::new(actmax_losses::LpNorm::keras_default()), 10.0),
        (Box::new(actmax_losses::TotalVariation::default()), 10.0),
    ];
    let again: f32 = losses.iter().map(|(l, w)| w * actmax::evaluate(&m, l.as_ref(), &vis.images).unwrap()).sum();
    assert!((again - min).abs() <= 1e-4 * min.abs().max(1.0), "{again} vs {min}");
    assert!(vis.images.iter().all(|&v| (0.0..=1.0).contains(&v)), "the image stays in the input range");
}

#[test]
fn a_conv_filter_lights_up() {
    let model = zoo::load("efficientnet_lite0", None).unwrap();
    // A ReLU6 output: activations are >= 0, so "10× the seed's" is meaningful.
    let layer = "_blocks.1.expand_relu6";
    let filter = 3;
    let seed = actmax::seed_noise(&[1, 3, 224, 224], (0.0, 255.0), 7);
    let am = ActivationMaximization::new(layer, vec![filter]);
    let before = -actmax::evaluate(&model, &am, &seed).unwrap();
    // The activation term alone: keras-vis's LP/TV weights of 10 outweigh a filter this
    // weak on a 0..255 image (its mean is ~0.003 on noise).
    let opts =
        Options { max_iter: 40, seed_input: Some(seed), lp_norm_weight: 0.0, tv_weight: 0.0, ..Options::default() };
    let vis = visualize_activation(&model, layer, Some(vec![filter]), opts).unwrap();
    let after = -actmax::evaluate(&model, &am, &vis.images).unwrap();
    assert!(before > 0.0, "filter {filter} is dead on the seed");
    assert!(after >= 10.0 * before, "filter mean {before} → {after}");
}

#[test]
fn a_nan_loss_stops_the_run_naming_step_and_term() {
    let m = mnist();
    let losses = WeightedLosses::new().with(lucid::l2("input", f32::NAN), 1.0);
    match visualize_activation_with_losses(&m, &losses, Options { max_iter: 5, ..Options::default() }) {
        Err(e @ Error::NonFinite { step: 0, .. }) => assert!(e.to_string().contains("L2(input, NaN)"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gif_generator_writes_numbered_frames() {
    let m = mnist();
    let path = std::env::temp_dir().join(format!("actmax-gif-{}.gif", std::process::id()));
    let gif = actmax::GifGenerator::new(&path, 2, (0.0, 1.0)).unwrap();
    let opts =
        Options { max_iter: 7, callbacks: vec![Box::new(gif)], input_range: Some((0.0, 1.0)), ..Options::default() };
    visualize_activation(&m, "dense_1", Some(vec![0]), opts).unwrap();
    let decoder =
        image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let frames = image::AnimationDecoder::into_frames(decoder).collect_frames().unwrap();
    assert_eq!(frames.len(), 4, "steps 0, 2, 4, 6");
    // The step number's box is black with white digit pixels in the corner.
    let f = frames[3].buffer();
    assert_eq!(f.get_pixel(0, 0).0[..3], [0, 0, 0]);
    assert!((0..14).any(|y| (0..10).any(|x| f.get_pixel(x, y).0[..3] == [255, 255, 255])), "no digit drawn");
    assert!(actmax::GifGenerator::new("/no/such/dir/x.gif", 1, (0.0, 1.0)).is_err());
    std::fs::remove_file(&path).ok();
}

#[test]
fn labelled_sheets_carry_their_captions() {
    let grey = image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(40, 30, image::Rgb([128, 128, 128])));
    let sheet =
        actmax::images::labelled_sheet(&[grey.clone(), grey], &["20 OUZEL".into(), "1 FISH".into()], 4, 2).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (84, 44), "two 40-wide tiles, a 4 px margin, a 14 px caption strip");
    let rgb = sheet.to_rgb8();
    let white = (30..44)
        .flat_map(|y| (0..40).map(move |x| (x, y)))
        .filter(|&(x, y)| rgb.get_pixel(x, y).0 == [255, 255, 255])
        .count();
    assert!(white > 20, "the caption should be drawn ({white} white pixels)");
    assert!(actmax::images::labelled_sheet(&[], &["x".into()], 4, 2).is_err());
}

/// The model's output on an image after the 8-bit PNG round trip.
fn output_on_png(model: &actmax_layers::Model, img: &image::DynamicImage, unit: usize) -> f32 {
    let x = actmax::images::from_image(img, model.input_spec());
    model.predict(&x).unwrap()[[0, unit]]
}

#[test]
fn regression_output_goes_up_plainly_and_down_under_negate() {
    let model = zoo::load("apple_counter", None).unwrap();
    let seed = actmax::seed_noise(&[1, 1, 48, 48], (0.0, 1.0), 42);
    let on_seed = model.predict(&seed).unwrap()[[0, 0]];
    let run = |modifier: &str| {
        let opts = Options {
            grad_modifier: actmax_modifiers::GradModifier::from_name(modifier).unwrap(),
            ..Options::default()
        };
        visualize_activation(&model, "count", Some(vec![0]), opts).unwrap()
    };
    let (up, down) = (run("identity"), run("negate"));
    let (up_count, down_count) =
        (output_on_png(&model, &up.image(0).unwrap(), 0), output_on_png(&model, &down.image(0).unwrap(), 0));
    assert!(up_count > on_seed + 1.0, "plain: {on_seed} → {up_count}");
    assert!(down_count < on_seed - 0.5, "negate: {on_seed} → {down_count}");

    // Negate on a hand-made loss flips the whole gradient: the steps ascend the loss, so
    // the kept image is the highest-loss one (keras-vis kept the lowest: its seed).
    let losses = WeightedLosses::new().with(ActivationMaximization::new("count", vec![0]), 1.0);
    let opts = Options { grad_modifier: actmax_modifiers::GradModifier::Negate, max_iter: 30, ..Options::default() };
    let vis = visualize_activation_with_losses(&model, &losses, opts).unwrap();
    let max = vis.history.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(vis.best_loss, max);
    assert!(vis.best_step > 0 && vis.history[vis.best_step] > vis.history[0]);
    assert!(model.predict(&vis.images).unwrap()[[0, 0]] < on_seed);
}

#[test]
fn trained_mnist_classes_are_recognised() {
    let model = zoo::load("mnist_cnn", None).unwrap();
    let targets: Vec<Vec<usize>> = (0..10).map(|c| vec![c]).collect();
    let vis = actmax::visualize_batch(&model, -1, targets, Options::default()).unwrap();
    let right = (0..10)
        .filter(|&c| {
            let x = actmax::images::from_image(&vis.image(c).unwrap(), model.input_spec());
            model.top_k(&x, 1).unwrap()[0].class == c
        })
        .count();
    assert!(right >= 9, "{right}/10 classes recognised on the saved PNGs");
}

#[test]
fn quality_preset_digits_are_read_by_a_classifier_that_never_saw_them() {
    // Made on the CNN, judged by the MLP (another architecture, trained apart, never
    // optimized on), on the saved 8-bit PNGs. 300 steps: a 28×28 digit is cheap, and at
    // the preset's 100 the background is still grey on some seeds (8 or 9 of 10).
    let (cnn, mlp) = (zoo::load("mnist_cnn", None).unwrap(), zoo::load("mnist_mlp", None).unwrap());
    let targets: Vec<Vec<usize>> = (0..10).map(|c| vec![c]).collect();
    let vis = actmax::visualize_batch(&cnn, -1, targets, Options { max_iter: 300, ..Options::actmax() }).unwrap();
    let read = (0..10)
        .filter(|&c| {
            let x = actmax::images::from_image(&vis.image(c).unwrap(), mlp.input_spec());
            mlp.top_k(&x, 1).unwrap()[0].class == c
        })
        .count();
    assert!(read >= 9, "the MLP reads {read}/10 of the CNN's digits");
}

/// With per-image seeds, an image comes out byte-identical alone, anywhere in a batch and
/// with 1, 2 or 8 threads, whether the step keeps the model's graphs or recomputes them —
/// what the atlas's shards and resumes rely on.
#[test]
fn an_image_does_not_depend_on_its_batch_or_the_thread_count() {
    let model = zoo::load("efficientnet_lite0", None).unwrap();
    let run_within = |layer: &str, targets: Vec<usize>, threads: usize, graph_memory: usize| {
        let seeds: Vec<u64> = targets.iter().map(|&t| 1000 + t as u64).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let targets = targets.into_iter().map(|t| vec![t]).collect();
        let vis = pool.install(|| {
            let opts = Options { max_iter: 3, image_seeds: Some(seeds), graph_memory, ..Options::actmax() };
            assert!(opts.images_independent());
            actmax::visualize_batch(&model, layer, targets, opts).map_err(|e| e.to_string())
        });
        let vis = vis.unwrap();
        (0..vis.images.shape()[0]).map(|b| vis.images.index_axis(ndarray::Axis(0), b).to_owned()).collect::<Vec<_>>()
    };
    let run = |layer: &str, targets: Vec<usize>, threads: usize| {
        run_within(layer, targets, threads, Options::actmax().graph_memory)
    };
    for layer in ["_blocks.5.expand_relu6", "_fc"] {
        let alone = run(layer, vec![7], 2);
        for threads in [1, 2, 8] {
            let batch = run(layer, vec![3, 7, 11], threads);
            assert_eq!(batch[1], alone[0], "{layer}: filter 7 in a batch of 3 on {threads} threads");
        }
        assert_eq!(run(layer, vec![7], 1)[0], alone[0], "{layer}: alone on 1 thread");
    }
    // Images whose graphs do not fit the memory budget run their forward without a graph
    // (an inference pass) and again with one before their backward: the same bits with
    // every graph kept (22 model inputs, ≈ 2 MB each), some (1 or 3 of each thread's 11),
    // or none.
    let alone = run("_fc", vec![7], 2);
    let all = run_within("_fc", (3..14).collect(), 2, 1 << 30);
    assert_eq!(all[4], alone[0], "_fc: filter 7 in a batch of 11, every graph kept");
    for kb in [0, 2048, 16384] {
        let some = run_within("_fc", (3..14).collect(), 2, kb << 10);
        assert!(some == all, "_fc: a batch of 11 with {kb} KB of graphs kept differs from all kept");
    }
}

/// Same seed, same bytes on 1, 2 or 8 threads in the default mode too (one random stream
/// for the batch), for the keras-vis and the actmax presets.
#[test]
fn same_seed_same_image_on_any_thread_count() {
    let model = zoo::load("efficientnet_lite0", None).unwrap();
    let run = |preset: &str, threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let opts = Options { max_iter: 3, seed: 7, ..Options::preset(preset).unwrap() };
            actmax::visualize_batch(&model, "_blocks.3.expand_relu6", vec![vec![2], vec![9]], opts)
                .map(|v| v.images)
                .map_err(|e| e.to_string())
        })
        .unwrap()
    };
    for preset in ["keras-vis", "actmax"] {
        let one = run(preset, 1);
        for threads in [2, 8] {
            assert!(run(preset, threads) == one, "{preset}: {threads} threads vs 1");
        }
    }
}

/// One dependency is enough: the facade re-exports its sub-crates.
#[test]
fn the_sub_crates_come_with_the_facade() {
    let model = actmax::layers::zoo::mnist_cnn();
    let mut tape = actmax::tensor::Tape::new();
    let x = tape.constant(actmax::tensor::Tensor::zeros(vec![1, 1, 28, 28]));
    let out = model.forward(&mut tape, x, &[model.find("conv2d_1").unwrap()]).unwrap();
    assert_eq!(tape.shape(out[0]).unwrap(), [1, 32, 26, 26]);
    let _ = actmax::losses::TotalVariation::default();
    assert_eq!(actmax::modifiers::GradModifier::from_name("negate").unwrap().name(), "negate");
}
