//! Feature accentuation and transparency maps: a photo-seeded Fourier or MaCo image is the
//! photo at step 0, the accentuation distance is faccent's and has the gradient its value
//! implies, an accentuated image stays nearer its seed than plain seeding, the map is
//! deterministic for a seed, and bad requests are typed errors.

use actmax::{feature_distance, visualize_activation, Accentuation, Error, Options, Parameterization};
use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn photo(name: &str, spec: &actmax_layers::InputSpec) -> Tensor {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name);
    actmax::images::load(&path, spec).unwrap()
}

fn spec(channels: usize, h: usize, w: usize, range: (f32, f32)) -> actmax_layers::InputSpec {
    let order = if channels == 1 { actmax_layers::ChannelOrder::Gray } else { actmax_layers::ChannelOrder::Rgb };
    actmax_layers::InputSpec { range, ..actmax_layers::InputSpec::raw([channels, h, w], order) }
}

/// Step 0 of `param` seeded with `seed`, as 8-bit levels of the range.
fn step_zero(param: &Parameterization, seed: &Tensor, range: (f32, f32)) -> Tensor {
    let s = seed.shape().to_vec();
    let shape = [s[0], s[1], s[2], s[3]];
    let p = param.init(shape, range, Some(seed), &mut [StdRng::seed_from_u64(1)]).unwrap();
    let maker = param.prepare_seeded(s[1], [s[2], s[3]], range, Some(seed)).unwrap();
    let mut tape = Tape::new();
    let v = tape.constant(p);
    let img = maker.image(&mut tape, v).unwrap();
    tape.value(img).unwrap().clone()
}

fn template_maco() -> Parameterization {
    let template = std::sync::Arc::new(actmax::MagnitudeTemplate::natural());
    Parameterization::Maco { template, seed_magnitude: false }
}

#[test]
fn step_zero_of_a_photo_seeded_fourier_or_maco_image_is_the_photo() {
    for (channels, h, w, range) in [(3, 224, 224, (0.0, 255.0)), (3, 61, 90, (-1.0, 1.0)), (1, 48, 37, (0.0, 1.0))] {
        let seed = photo("chelsea.png", &spec(channels, h, w, range));
        let level = (range.1 - range.0) / 255.0;
        for param in [Parameterization::fourier(), Parameterization::maco()] {
            let back = step_zero(&param, &seed, range);
            // In 8-bit levels, after both are rounded as a saved PNG would be.
            let to_level = |v: f32| ((v - range.0) / level).round();
            let worst =
                back.iter().zip(seed.iter()).map(|(a, b)| (to_level(*a) - to_level(*b)).abs()).fold(0.0, f32::max);
            assert!(worst <= 1.0, "{param:?} {channels}×{h}×{w}: step 0 is {worst} levels off the photo");
        }
    }
}

#[test]
fn a_photo_seeded_maco_image_with_the_template_keeps_the_photo_layout_and_contrast() {
    let range = (0.0, 255.0);
    let seed = photo("coffee.png", &spec(3, 96, 96, range));
    let img = step_zero(&template_maco(), &seed, range);
    let (a, b): (Vec<f64>, Vec<f64>) = img.iter().zip(seed.iter()).map(|(x, y)| (*x as f64, *y as f64)).unzip();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(&a), mean(&b));
    let cov = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum::<f64>();
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    let corr = cov / (var(&a, ma) * var(&b, mb)).sqrt();
    // The photo's phase carries its layout; a standardized phase would not.
    assert!(corr > 0.6, "correlation with the photo {corr}");
    assert!((ma - mb).abs() < 25.0, "mean {ma} vs the photo's {mb}");
}

/// faccent's distance, in f64, straight from its definition.
fn direct_distance(x: &[f32], r: &[f32], shape: &[usize], batch: usize) -> Vec<f64> {
    let (rows, c) = (shape[0], shape[1]);
    let positions: usize = shape[2..].iter().product();
    let mut out = vec![0.0; batch];
    for row in 0..rows {
        let mut sum = 0.0;
        for p in 0..positions {
            let sq: f64 = (0..c)
                .map(|ch| (x[(row * c + ch) * positions + p] - r[(row * c + ch) * positions + p]) as f64)
                .map(|d| d * d)
                .sum();
            sum += (sq + 1e-12).sqrt();
        }
        out[row % batch] += sum / positions as f64 / (rows / batch) as f64;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn feature_distance_is_faccents_and_its_gradient_matches_finite_differences(
        batch in 1usize..3, views in 1usize..3, c in 1usize..4, hw in 1usize..4, flat in any::<bool>(), seed in 0u64..1000,
    ) {
        let shape: Vec<usize> = if flat { vec![batch * views, c] } else { vec![batch * views, c, hw, hw + 1] };
        let mut rng = StdRng::seed_from_u64(seed);
        let x = Tensor::from_shape_simple_fn(shape.clone(), || rand::Rng::random_range(&mut rng, -1.0f32..1.0));
        // Every difference at least 0.2 from zero: a one-channel norm is |x − r|, whose
        // kink would sit inside the finite-difference step.
        let gap = Tensor::from_shape_simple_fn(shape.clone(), || {
            let m = rand::Rng::random_range(&mut rng, 0.2f32..1.0);
            if rand::Rng::random_bool(&mut rng, 0.5) { m } else { -m }
        });
        let r = &x - &gap;
        let dir = Tensor::from_shape_simple_fn(shape.clone(), || rand::Rng::random_range(&mut rng, -1.0f32..1.0));
        let value = |x: &Tensor| -> (Tensor, Option<Tensor>) {
            let mut tape = Tape::new();
            let (xv, rv) = (tape.variable(x.clone()), tape.constant(r.clone()));
            let d = feature_distance(&mut tape, xv, rv, batch).unwrap();
            let s = tape.sum_all(d).unwrap();
            let g = tape.backward(s).unwrap().take(xv);
            (tape.value(d).unwrap().clone(), g)
        };
        let (d, g) = value(&x);
        let want = direct_distance(x.as_slice().unwrap(), r.as_slice().unwrap(), &shape, batch);
        prop_assert_eq!(d.shape(), &[batch]);
        for (got, want) in d.iter().zip(&want) {
            prop_assert!((*got as f64 - want).abs() <= 1e-4 * (1.0 + want.abs()), "{} vs {}", got, want);
        }
        let eps = 1e-3f32;
        let shifted = |s: f32| value(&(&x + &(&dir * s))).0.sum() as f64;
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
        let analytic: f64 = g.unwrap().iter().zip(dir.iter()).map(|(a, b)| (*a * *b) as f64).sum();
        prop_assert!((numeric - analytic).abs() <= 2e-2 * (1.0 + numeric.abs()), "FD {} vs backward {}", numeric, analytic);
    }
}

fn mnist() -> actmax_layers::Model {
    let mut m = zoo::mnist_cnn();
    zoo::init_he_uniform(&mut m, 11);
    m
}

/// A blob of "ink" on the left half: a seed with something to keep.
fn digit_like() -> Tensor {
    Tensor::from_shape_fn(vec![1, 1, 28, 28], |i| {
        let (y, x) = (i[2] as f32 - 14.0, i[3] as f32 - 9.0);
        if (y * y / 60.0 + x * x / 12.0) < 1.0 {
            0.9
        } else {
            0.1
        }
    })
}

fn mse(a: &Tensor, b: &Tensor) -> f32 {
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / a.len() as f32
}

#[test]
fn an_accentuated_image_stays_nearer_its_seed_than_plain_seeding_and_still_moves_the_target() {
    let m = mnist();
    let seed = digit_like();
    let logit = |img: &Tensor| m.predict(img).unwrap()[[0, 3]];
    let run = |accent: Option<Accentuation>| {
        let opts = Options { seed_input: Some(seed.clone()), max_iter: 40, accent, ..Options::actmax() };
        visualize_activation(&m, "preds", Some(vec![3]), opts).unwrap()
    };
    let (plain, accented) = (run(None), run(Some(Accentuation::default())));
    let w = accented.accent_weight.expect("the balanced weight is reported");
    assert!(w.is_finite() && w > 0.0, "weight {w}");
    assert_eq!(plain.accent_weight, None);
    assert!(mse(&accented.images, &seed) < mse(&plain.images, &seed), "accentuation drifted as far as plain seeding");
    assert!(logit(&accented.images) > logit(&seed), "{} → {}", logit(&seed), logit(&accented.images));
    let term = accented.history.len();
    assert_eq!(term, 40);

    // A fixed weight is used as given; zero weight is plain seeding again.
    let zero = run(Some(Accentuation { weight: Some(0.0), ..Default::default() }));
    assert_eq!(zero.images, plain.images);
    assert_eq!(zero.accent_weight, Some(0.0));
}

#[test]
fn the_transparency_map_is_deterministic_for_a_seed_and_normalized() {
    let m = mnist();
    let run = |seed: u64, accent: Option<Accentuation>| {
        let opts = Options { seed, max_iter: 8, seed_input: Some(digit_like()), accent, ..Options::actmax() };
        visualize_activation(&m, "preds", Some(vec![5]), opts).unwrap().transparency.expect("a Fourier run has a map")
    };
    for accent in [None, Some(Accentuation::default())] {
        let (a, b, c) = (run(3, accent.clone()), run(3, accent.clone()), run(4, accent.clone()));
        assert_eq!(a.shape(), &[1, 28, 28]);
        assert_eq!(a, b, "same seed, same map");
        assert_ne!(a, c, "another seed, another map");
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        let top = a.iter().filter(|&&v| v == 1.0).count();
        assert!(top >= 1 && top < a.len() / 10, "{top} pixels at the top of the map");
        assert!(a.iter().any(|&v| v < 0.5), "a flat map");
    }
    let pixel =
        visualize_activation(&m, "preds", Some(vec![5]), Options { max_iter: 2, ..Options::default() }).unwrap();
    assert!(pixel.transparency.is_none() && pixel.transparency_map(0).unwrap().is_none());
    let vis = visualize_activation(&m, "preds", Some(vec![5]), Options { max_iter: 2, ..Options::actmax() }).unwrap();
    let rgba = vis.image_with_alpha(0).unwrap().to_rgba8();
    let map = vis.transparency_map(0).unwrap().unwrap();
    assert!(rgba.pixels().zip(map.pixels()).all(|(p, a)| p.0[3] == a.0[0]), "alpha is the map");
}

#[test]
fn bad_accentuation_requests_are_typed_errors() {
    let m = mnist();
    let run = |seed: Option<Tensor>, accent: Accentuation| {
        let opts = Options { seed_input: seed, max_iter: 2, accent: Some(accent), ..Options::actmax() };
        visualize_activation(&m, "preds", Some(vec![1]), opts).map(|_| ()).unwrap_err()
    };
    let options = |e: Error| match e {
        Error::Options(msg) => msg,
        other => panic!("not an options error: {other}"),
    };
    assert!(options(run(None, Accentuation::default())).contains("seed image"));
    let seed = Some(digit_like());
    for w in [-1.0, f32::NAN, f32::INFINITY] {
        let msg = options(run(seed.clone(), Accentuation { weight: Some(w), ..Default::default() }));
        assert!(msg.contains("accent weight"), "{msg}");
    }
    let msg = options(run(seed.clone(), Accentuation { balance: f32::NAN, ..Default::default() }));
    assert!(msg.contains("balance"), "{msg}");
    let msg = options(run(seed.clone(), Accentuation { depth: 1.5, ..Default::default() }));
    assert!(msg.contains("depth"), "{msg}");
    // The default layer's rule: depth 0 is the first feature map, 1 the last before the target.
    let target = m.find("preds").unwrap();
    let maps: Vec<usize> = (1..=target).filter(|&i| m.nodes()[i].output_shape.len() == 4).collect();
    assert_eq!(actmax::feature_map_at_depth(&m, target, 0.0), maps[0]);
    assert_eq!(actmax::feature_map_at_depth(&m, target, 1.0), *maps.last().unwrap());
    let e = run(seed.clone(), Accentuation { layer: Some("conv2d_x".into()), ..Default::default() });
    assert!(matches!(e, Error::Layer(_)) && e.to_string().contains("conv2d"), "{e}");
    let msg = options(run(seed, Accentuation { layer: Some("input".into()), ..Default::default() }));
    assert!(msg.contains("input"), "{msg}");
}
