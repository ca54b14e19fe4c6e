//! Jitter undoes itself exactly, transforms have checked gradients, gradient modifiers and
//! backprop modifiers do what their formulas say.

use actmax_modifiers::{
    backprop_mode, resize_to, GradModifier, InputModifier, Jitter, ModifierError, RandomCrops, Transform, TransformSet,
};
use actmax_tensor::{Tape, Tensor, Var};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn image(seed: u64, shape: &[usize]) -> Tensor {
    let mut s = seed | 1;
    Tensor::from_shape_fn(shape.to_vec(), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 255.0
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// pre then post is the identity, bit for bit, however many steps.
    #[test]
    fn jitter_post_undoes_pre_exactly(h in 1usize..20, w in 1usize..20, j in prop_oneof![0.0f32..1.0, 1.0f32..30.0], seed in any::<u64>()) {
        let x = image(seed, &[2, 3, h, w]);
        let mut y = x.clone();
        let mut jitter = Jitter::new(j).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..5 {
            jitter.pre(&mut y, &mut rng).unwrap();
            jitter.post(&mut y).unwrap();
        }
        prop_assert_eq!(&x, &y);
    }
}

#[test]
fn jitter_fractions_bound_the_shift_and_seeds_repeat() {
    let mut x = Tensor::zeros(vec![1, 1, 16, 16]);
    x[[0, 0, 8, 8]] = 1.0;
    let moved = |seed: u64| {
        let mut y = x.clone();
        let mut j = Jitter::new(0.25).unwrap();
        j.pre(&mut y, &mut StdRng::seed_from_u64(seed)).unwrap();
        let at = y.iter().position(|&v| v == 1.0).unwrap();
        (at / 16, at % 16)
    };
    let mut seen = std::collections::HashSet::new();
    for seed in 0..200 {
        let (r, c) = moved(seed);
        assert!((4..=12).contains(&r) && (4..=12).contains(&c), "0.25 of 16 px is at most 4 px: got ({r}, {c})");
        assert_eq!(moved(seed), (r, c), "same seed, same shift");
        seen.insert((r, c));
    }
    assert!(seen.len() > 20, "the shifts should vary with the seed");
    assert!(Jitter::new(-1.0).is_err());
}

#[test]
fn identity_transforms_are_exact() {
    let x = image(3, &[2, 3, 7, 9]);
    let mut tape = Tape::new();
    let v = tape.constant(x.clone());
    let mut rng = StdRng::seed_from_u64(1);
    for t in [Transform::Rotate(0.0), Transform::Scale(1.0, 1.0), Transform::Jitter(0.0)] {
        let y = t.apply(&mut tape, v, std::slice::from_mut(&mut rng)).unwrap();
        assert_eq!(tape.value(y).unwrap(), &x, "{t:?}");
    }
    let padded = Transform::Pad(2, 0.5).apply(&mut tape, v, std::slice::from_mut(&mut rng)).unwrap();
    assert_eq!(tape.shape(padded).unwrap(), [2, 3, 11, 13]);
    let std = TransformSet::lucid_standard().apply(&mut tape, v, std::slice::from_mut(&mut rng)).unwrap();
    assert_eq!(tape.shape(std).unwrap(), [2, 3, 7, 9], "the standard set keeps the size");
}

/// dΣ(r·T(x))/dx by central differences, with the same random draw in every evaluation,
/// from one stream for the batch and from one per image.
fn check_transform(t: &TransformSet, x: Tensor, seed: u64) {
    for per_image in [false, true] {
        check_linear(&format!("{t:?}"), |tape, v, rngs| t.apply(tape, v, rngs).unwrap(), x.clone(), seed, per_image);
    }
}

/// The streams of a check: one for the batch, or one per image.
fn streams(seed: u64, images: usize, per_image: bool) -> Vec<StdRng> {
    (0..if per_image { images } else { 1 }).map(|b| StdRng::seed_from_u64(seed ^ b as u64)).collect()
}

/// The same check for any seeded, differentiable map of an image.
fn check_linear(
    what: &str,
    apply: impl Fn(&mut Tape, Var, &mut [StdRng]) -> Var,
    x: Tensor,
    seed: u64,
    per_image: bool,
) {
    let build = |tape: &mut Tape, v: Var| {
        let images = tape.shape(v).unwrap()[0];
        let y = apply(tape, v, &mut streams(seed, images, per_image));
        let r = tape.constant(image(99, tape.shape(y).unwrap()).mapv(|v| v / 255.0 - 0.5));
        let p = tape.mul(y, r).unwrap();
        tape.sum_all(p).unwrap()
    };
    let mut tape = Tape::new();
    let v = tape.variable(x.clone());
    let l = build(&mut tape, v);
    let g = tape.backward(l).unwrap().get(v).unwrap().clone();
    let h = 0.5f32;
    for j in 0..x.len() {
        let mut p = x.clone();
        p.as_slice_mut().unwrap()[j] += h;
        let mut m = x.clone();
        m.as_slice_mut().unwrap()[j] -= h;
        let eval = |z: Tensor| {
            let mut t2 = Tape::new();
            let c = t2.constant(z);
            let l = build(&mut t2, c);
            t2.value(l).unwrap().iter().next().copied().unwrap() as f64
        };
        let num = (eval(p) - eval(m)) / (2.0 * h as f64);
        assert!(
            (g.as_slice().unwrap()[j] as f64 - num).abs() < 1e-3,
            "{what} element {j}: {} vs {num}",
            g.as_slice().unwrap()[j]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The transforms are linear in the image for a fixed draw, so differences are exact.
    #[test]
    fn transforms_have_checked_gradients(h in 3usize..8, w in 3usize..8, seed in any::<u64>()) {
        let x = image(seed, &[2, 2, h, w]);
        check_transform(&TransformSet(vec![Transform::Jitter(2.0)]), x.clone(), seed);
        check_transform(&TransformSet(vec![Transform::Scale(0.8, 1.25)]), x.clone(), seed);
        check_transform(&TransformSet(vec![Transform::Rotate(30.0)]), x.clone(), seed);
        check_transform(&TransformSet::lucid_standard(), x, seed);
    }

    /// MaCo's crops: resampling (with average pooling when a crop shrinks by 2× or more)
    /// is linear for a fixed draw; the noise is a constant.
    #[test]
    fn random_crops_have_checked_gradients(h in 6usize..12, w in 6usize..12, big in any::<bool>(), seed in any::<u64>()) {
        let crops = RandomCrops { count: 3, size: if big { (0.9, 1.0) } else { (0.3, 0.8) }, spread: 0.2, noise: 0.1 };
        let out = if big { [2, 3] } else { [4, 5] };
        let x = image(seed, &[2, 2, h, w]);
        check_linear("crops", |tape, v, rngs| crops.apply(tape, v, out, 255.0, rngs).unwrap(), x.clone(), seed, big);
        check_linear("resize", |tape, v, _| resize_to(tape, v, out).unwrap(), x.clone(), seed, false);
        let moved = |tape: &mut Tape, v: Var, rngs: &mut [StdRng]| {
            let moves = TransformSet::lucid_standard().draw_maps(2, [h, w], rngs).unwrap().unwrap();
            crops.apply_after(tape, v, &moves, out, 255.0, rngs).unwrap()
        };
        check_linear("crops after fused moves", moved, x, seed, !big);
    }
}

#[test]
fn crops_are_view_major_batches_and_refuse_bad_settings() {
    let mut tape = Tape::new();
    let x = Tensor::from_shape_fn(vec![2, 1, 8, 8], |i| i[0] as f32 * 100.0);
    let v = tape.variable(x);
    let crops = RandomCrops { noise: 0.0, ..RandomCrops::maco() };
    let views = crops.apply(&mut tape, v, [4, 4], 255.0, &mut [StdRng::seed_from_u64(1)]).unwrap();
    let y = tape.value(views).unwrap();
    assert_eq!(y.shape(), &[12, 1, 4, 4]);
    for r in 0..12 {
        let want = (r % 2) as f32 * 100.0;
        assert!(
            y.index_axis(ndarray::Axis(0), r).iter().all(|&p| (p - want).abs() < 1e-3),
            "row {r} is a view of image {}",
            r % 2
        );
    }
    for bad in [
        RandomCrops { count: 0, ..RandomCrops::maco() },
        RandomCrops { size: (0.0, 0.5), ..RandomCrops::maco() },
        RandomCrops { size: (0.7, 0.5), ..RandomCrops::maco() },
        RandomCrops { size: (0.5, 1.5), ..RandomCrops::maco() },
        RandomCrops { noise: f32::NAN, ..RandomCrops::maco() },
    ] {
        assert!(matches!(bad.validate(), Err(ModifierError::Param(_))), "{bad:?}");
    }
}

#[test]
fn gradient_modifiers_follow_their_formulas() {
    let g = Tensor::from_shape_vec(vec![4], vec![-2.0, -0.5, 0.25, 4.0]).unwrap();
    let run =
        |name: &str| GradModifier::from_name(name).unwrap().apply(&g).unwrap().iter().copied().collect::<Vec<f32>>();
    assert_eq!(run("negate"), [2.0, 0.5, -0.25, -4.0]);
    assert_eq!(run("absolute"), [2.0, 0.5, 0.25, 4.0]);
    assert_eq!(run("relu"), [0.0, 0.0, 0.25, 4.0]);
    assert_eq!(run("identity"), [-2.0, -0.5, 0.25, 4.0]);
    let inv = run("invert");
    let small = run("small_values");
    for (i, &v) in g.iter().enumerate() {
        assert!((inv[i] - 1.0 / (v + 1e-7)).abs() < 1e-6);
        assert!((small[i] - (1.0 / (v + 1e-7)).abs()).abs() < 1e-6);
    }
    match GradModifier::from_name("negative") {
        Err(e @ ModifierError::UnknownName { .. }) => {
            let m = e.to_string();
            assert!(m.contains("negate") && m.contains("small_values"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let custom = GradModifier::Custom(std::sync::Arc::new(|g: &Tensor| g * 3.0));
    assert_eq!(custom.apply(&g).unwrap().iter().copied().collect::<Vec<f32>>(), [-6.0, -1.5, 0.75, 12.0]);
    let bad = GradModifier::Custom(std::sync::Arc::new(|_: &Tensor| Tensor::zeros(vec![1])));
    assert!(bad.apply(&g).is_err());
}

/// x → LeakyReLU(0.1) → ·a → ReLU6 → Σ r·(·), with hand-computed gradients per mode.
#[test]
fn backprop_modifiers_on_a_net_with_leaky_relu_and_relu6() {
    let run = |name: &str| {
        let mut tape = Tape::new();
        tape.set_backprop_mode(backprop_mode(name).unwrap());
        let x = tape.variable(Tensor::from_shape_vec(vec![4], vec![-1.0, 2.0, 3.0, 4.0]).unwrap());
        let y1 = tape.leaky_relu(x, 0.1).unwrap();
        let a = tape.constant(Tensor::from_shape_vec(vec![4], vec![1.0, -1.0, 1.0, 1.0]).unwrap());
        let z = tape.mul(y1, a).unwrap();
        let y2 = tape.relu6(z).unwrap();
        let r = tape.constant(Tensor::from_shape_vec(vec![4], vec![1.0, 1.0, -1.0, 1.0]).unwrap());
        let p = tape.mul(y2, r).unwrap();
        let l = tape.sum_all(p).unwrap();
        tape.backward(l).unwrap().get(x).unwrap().iter().copied().collect::<Vec<f32>>()
    };
    // z = (−0.1, −2, 3, 4); upstream r = (1, 1, −1, 1).
    assert_eq!(run("none"), [0.0, 0.0, -1.0, 1.0]);
    // Guided: at ReLU6, g·[g>0]·[z>0] = (0, 0, 0, 1); at LeakyReLU, ·[x>0] keeps (0, 0, 0, 1).
    assert_eq!(run("guided"), [0.0, 0.0, 0.0, 1.0]);
    // Rectified: at ReLU6, g·[g>0] = (1, 1, 0, 1); ·a → (1, −1, 0, 1); at LeakyReLU, (1, 0, 0, 1).
    assert_eq!(run("rectified"), [1.0, 0.0, 0.0, 1.0]);
    assert_eq!(run("deconv"), run("rectified"));
    assert!(backprop_mode("guidde").unwrap_err().to_string().contains("guided"));
}

#[test]
fn fused_moves_sample_where_the_chain_does() {
    // Bilinear sampling reproduces a linear ramp exactly, so away from the borders one
    // fused warp and the chain of jitter/scale/rotate/jitter must agree (batch of one:
    // both draw in the same order).
    let (h, w) = (40, 48);
    let ramp = Tensor::from_shape_fn(vec![1, 1, h, w], |i| 2.0 * i[2] as f32 - 0.5 * i[3] as f32 + 10.0);
    let set = TransformSet::lucid_standard();
    let mut tape = Tape::new();
    let x = tape.variable(ramp);
    let chain = set.apply(&mut tape, x, &mut [StdRng::seed_from_u64(9)]).unwrap();
    let maps = set.draw_maps(1, [h, w], &mut [StdRng::seed_from_u64(9)]).unwrap().expect("all moves");
    let fused = tape.affine_warp(x, &maps, [h, w], actmax_tensor::WarpBorder::Reflect).unwrap();
    let (a, b) = (tape.value(chain).unwrap(), tape.value(fused).unwrap());
    for i in 10..h - 10 {
        for j in 10..w - 10 {
            let (p, q) = (a[[0, 0, i, j]], b[[0, 0, i, j]]);
            assert!((p - q).abs() < 1e-3, "({i}, {j}): chain {p}, fused {q}");
        }
    }
    // A set with a pad is not a move of the plane: nothing is drawn.
    let padded = TransformSet(vec![Transform::Pad(2, 0.0)]);
    assert!(padded.draw_maps(1, [h, w], &mut [StdRng::seed_from_u64(9)]).unwrap().is_none());
}

/// With one stream per image, what an image's views are depends on its own stream alone:
/// image `x1` alone and behind `x0` in a batch gets the same crops, moves, jitter and noise.
#[test]
fn per_image_streams_make_views_independent_of_the_batch() {
    let (x0, x1) = (image(5, &[1, 2, 12, 14]), image(6, &[1, 2, 12, 14]));
    let both = ndarray::concatenate(ndarray::Axis(0), &[x0.view(), x1.view()]).unwrap();
    let crops = RandomCrops { count: 3, ..RandomCrops::maco() };
    let jittered = TransformSet(vec![Transform::Pad(1, 0.0), Transform::Jitter(2.0), Transform::Rotate(20.0)]);
    let views = |x: &Tensor, seeds: &[u64]| {
        let mut rngs: Vec<StdRng> = seeds.iter().map(|&s| StdRng::seed_from_u64(s)).collect();
        let mut tape = Tape::new();
        let v = tape.constant(x.clone());
        let moves = TransformSet::lucid_standard().draw_maps(seeds.len(), [12, 14], &mut rngs).unwrap().unwrap();
        let fused = crops.apply_after(&mut tape, v, &moves, [6, 7], 255.0, &mut rngs).unwrap();
        let chained = jittered.apply(&mut tape, v, &mut rngs).unwrap();
        (tape.value(fused).unwrap().clone(), tape.value(chained).unwrap().clone())
    };
    let (alone, alone_chain) = views(&x1, &[77]);
    let (batch, batch_chain) = views(&both, &[76, 77]);
    for v in 0..3 {
        assert_eq!(alone.index_axis(ndarray::Axis(0), v), batch.index_axis(ndarray::Axis(0), 2 * v + 1), "view {v}");
    }
    assert_eq!(alone_chain.index_axis(ndarray::Axis(0), 0), batch_chain.index_axis(ndarray::Axis(0), 1));
    // One stream per image is checked against the batch.
    let mut tape = Tape::new();
    let v = tape.constant(both);
    let mut three = vec![StdRng::seed_from_u64(1); 3];
    assert!(crops.apply(&mut tape, v, [6, 7], 255.0, &mut three).is_err());
}
