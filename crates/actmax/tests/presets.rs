//! Image parameterizations and the quality presets: a Fourier parameter made from an image
//! renders that image, MaCo moves only the phase, every preset is deterministic for a
//! seed, grey models and images larger than the model's input work.

use actmax::{visualize_activation, visualize_batch, Options, Parameterization};
use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn mnist() -> actmax_layers::Model {
    let mut m = zoo::mnist_cnn();
    zoo::init_he_uniform(&mut m, 11);
    m
}

fn render(param: &Parameterization, p: &Tensor, range: (f32, f32), hw: [usize; 2]) -> Tensor {
    let mut tape = Tape::new();
    let v = tape.constant(p.clone());
    let img = param.image(&mut tape, v, range, hw).unwrap();
    tape.value(img).unwrap().clone()
}

/// A smooth colour image in 0..255 with its values away from the sigmoid's ends.
fn photo_like(h: usize, w: usize) -> Tensor {
    Tensor::from_shape_fn(vec![1, 3, h, w], |i| {
        let (c, y, x) = (i[1] as f32, i[2] as f32, i[3] as f32);
        128.0 + 100.0 * ((0.3 + 0.2 * c) * x + 0.17 * y).sin() * (0.11 * y - 0.05 * c * x).cos()
    })
}

#[test]
fn a_fourier_parameter_made_from_an_image_renders_that_image() {
    for (h, w) in [(24, 32), (17, 15)] {
        let img = photo_like(h, w);
        let param = Parameterization::fourier();
        let p = param.init([1, 3, h, w], (0.0, 255.0), Some(&img), &mut [StdRng::seed_from_u64(1)]).unwrap();
        assert_eq!(p.shape(), &[1, 3, h, w / 2 + 1, 2]);
        let back = render(&param, &p, (0.0, 255.0), [h, w]);
        let worst = back.iter().zip(img.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.5, "{h}×{w}: step 0 is {worst} grey levels off the seed image");
    }
}

#[test]
fn maco_keeps_the_magnitude_and_moves_the_phase() {
    let (h, w) = (16, 16);
    let param = Parameterization::maco();
    let mut rng = StdRng::seed_from_u64(3);
    let (a, b) = (
        param.init([1, 1, h, w], (0.0, 1.0), None, std::slice::from_mut(&mut rng)).unwrap(),
        param.init([1, 1, h, w], (0.0, 1.0), None, std::slice::from_mut(&mut rng)).unwrap(),
    );
    let (ia, ib) = (render(&param, &a, (0.0, 1.0), [h, w]), render(&param, &b, (0.0, 1.0), [h, w]));
    assert!(ia.iter().zip(ib.iter()).any(|(x, y)| (x - y).abs() > 0.05), "two phases, two images");
    // Undo the sigmoid: what is left is a standardized irfft2 of template·e^{iφ}, so on the
    // free (interior) columns |rfft2| is the template over one constant.
    let template = match &param {
        Parameterization::Maco { template, .. } => template.resized(1, h, w).unwrap(),
        _ => unreachable!(),
    };
    for img in [ia, ib] {
        let z: Vec<f32> = img.iter().map(|&u| (u / (1.0 - u)).ln()).collect();
        let spec = actmax_tensor::fft::rfft2(&z, 1, h, w);
        let ratios: Vec<f32> = (0..h)
            .flat_map(|r| (1..w / 2).map(move |k| (r, k)))
            .map(|(r, k)| {
                let i = (r * (w / 2 + 1) + k) * 2;
                spec[i].hypot(spec[i + 1]) / template[[0, r, k]]
            })
            .collect();
        let mean = ratios.iter().sum::<f32>() / ratios.len() as f32;
        assert!(ratios.iter().all(|r| (r - mean).abs() <= 2e-3 * mean), "the magnitude moved: {ratios:?}");
    }
}

fn png_bytes(vis: &actmax::Visualization, k: usize) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    vis.image(k).unwrap().write_to(&mut buf, image::ImageFormat::Png).unwrap();
    buf.into_inner()
}

#[test]
fn every_preset_is_deterministic_for_a_seed_on_a_grey_model() {
    let m = mnist();
    for name in actmax::PRESETS {
        let run = |seed| {
            let opts = Options { max_iter: 4, seed, ..Options::preset(name).unwrap() };
            let vis = visualize_batch(&m, "preds", vec![vec![3], vec![8]], opts).unwrap();
            assert_eq!(vis.images.shape(), &[2, 1, 28, 28], "{name}");
            assert!(vis.images.iter().all(|v| (0.0..=1.0).contains(v)), "{name}: the image stays in range");
            (png_bytes(&vis, 0), png_bytes(&vis, 1))
        };
        assert_eq!(run(5), run(5), "{name}: same seed, same bytes");
        assert_ne!(run(5), run(6), "{name}: another seed, another image");
    }
}

#[test]
fn an_image_larger_than_the_input_is_made_whole() {
    let m = mnist();
    for crops in [false, true] {
        let mut opts = Options { max_iter: 3, image_size: Some([56, 40]), ..Options::maco() };
        if !crops {
            opts.crops = None;
        }
        let vis = visualize_activation(&m, "preds", Some(vec![2]), opts).unwrap();
        assert_eq!(vis.images.shape(), &[1, 1, 56, 40]);
    }
}

#[test]
fn a_seed_image_starts_the_fourier_and_maco_runs() {
    let m = mnist();
    let seed = Tensor::from_shape_fn(vec![1, 1, 28, 28], |i| if (i[2] / 4 + i[3] / 4) % 2 == 0 { 0.2 } else { 0.8 });
    // A tiny Adam step: one update barely moves the image away from its seed.
    let opts = Options {
        max_iter: 1,
        seed_input: Some(seed.clone()),
        optimizer: actmax::Optimizer::Adam(1e-4),
        ..Options::lucid()
    };
    let vis = visualize_activation(&m, "preds", Some(vec![2]), opts).unwrap();
    let off = vis.images.iter().zip(seed.iter()).map(|(a, b)| (a - b).abs()).sum::<f32>() / seed.len() as f32;
    assert!(off < 0.05, "the first image is {off} off its seed");
}

#[test]
fn diversity_makes_the_images_of_one_target_differ() {
    // The trained CNN: a random one's features can be near-identical for any two digits,
    // and then there is nothing for diversity to pull apart.
    let m = zoo::load("mnist_cnn", None).unwrap();
    let run = |weight: f32| {
        let opts = Options { max_iter: 30, batch: Some(3), diversity_weight: weight, ..Options::lucid() };
        visualize_activation(&m, "preds", Some(vec![4]), opts).unwrap().images
    };
    // The default diversity layer of a dense target: the deepest feature map before it.
    let similarity =
        |images: &Tensor| actmax::evaluate(&m, &actmax_losses::lucid::diversity("dropout_1"), images).unwrap();
    let (with, without) = (run(10.0), run(0.0));
    assert_eq!(with.shape()[0], 3);
    assert!(
        similarity(&with) < similarity(&without),
        "Gram cosines with diversity {} vs without {}",
        similarity(&with),
        similarity(&without)
    );
}

#[test]
fn bad_settings_are_refused_before_the_run() {
    let m = mnist();
    let refuse = |opts: Options| match visualize_activation(&m, "preds", Some(vec![1]), opts) {
        Err(actmax::Error::Options(msg))
        | Err(actmax::Error::Modifier(actmax_modifiers::ModifierError::Param(msg))) => msg,
        other => panic!("{:?}", other.map(|v| v.best_loss)),
    };
    assert!(refuse(Options { optimizer: actmax::Optimizer::Adam(-1.0), ..Options::lucid() }).contains("learning rate"));
    assert!(
        refuse(Options { optimizer: actmax::Optimizer::Adam(f32::NAN), ..Options::lucid() }).contains("learning rate")
    );
    let mut crops = actmax_modifiers::RandomCrops::maco();
    crops.count = 0;
    assert!(refuse(Options { crops: Some(crops), ..Options::maco() }).contains("at least 1"));
    let jitter: Vec<Box<dyn actmax_modifiers::InputModifier>> =
        vec![Box::new(actmax_modifiers::Jitter::new(2.0).unwrap())];
    assert!(refuse(Options { input_modifiers: jitter, ..Options::lucid() }).contains("transforms"));
    assert!(
        matches!(Options::preset("lucent"), Err(actmax::Error::Options(m)) if m.contains("keras-vis, lucid, maco, actmax"))
    );
}
