//! Each loss's value on small arrays (expected numbers written out by hand), its gradient
//! by finite differences, the per-sample shape rules and the typed errors.

use std::collections::HashMap;

use actmax_losses::{
    lucid, ActivationMaximization, Loss, LossContext, LossError, LpNorm, Objective, TotalVariation, WeightedLosses,
};
use actmax_tensor::{Tape, Tensor, Var};
use proptest::prelude::*;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap()
}

/// Builds `loss` with `layer` bound to `act` (and the input to `input`); returns its values.
fn eval(loss: &dyn Loss, input: Tensor, act: Option<Tensor>) -> Result<Vec<f32>, LossError> {
    let mut tape = Tape::new();
    let x = tape.variable(input);
    let mut acts = HashMap::new();
    if let Some(a) = act {
        let v = tape.variable(a);
        acts.insert("layer".to_string(), v);
    }
    let ctx = LossContext::new(x, &acts);
    let v = loss.build(&mut tape, &ctx)?;
    Ok(tape.value(v).unwrap().iter().copied().collect())
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

fn dummy() -> Tensor {
    Tensor::zeros(vec![1, 1, 2, 2])
}

#[test]
fn activation_maximization_matches_keras_vis() {
    let dense = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    close(&eval(&ActivationMaximization::new("layer", vec![2]), dummy(), Some(dense.clone())).unwrap(), &[-4.5]);
    close(&eval(&ActivationMaximization::new("layer", vec![0, 2]), dummy(), Some(dense.clone())).unwrap(), &[-7.0]);
    close(&eval(&ActivationMaximization::whole("layer"), dummy(), Some(dense.clone())).unwrap(), &[-3.5]);
    // One target per sample: a [B] vector.
    close(
        &eval(&ActivationMaximization::per_sample("layer", vec![vec![0], vec![1, 2]]), dummy(), Some(dense)).unwrap(),
        &[-1.0, -11.0],
    );
    // Two views of each of two images (view-major rows 0, 1 | 2, 3): each image's loss is
    // the mean over its views.
    let views = t(&[4, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.]);
    close(
        &eval(&ActivationMaximization::per_sample("layer", vec![vec![0], vec![1, 2]]), dummy(), Some(views)).unwrap(),
        &[-(1.0 + 7.0) / 2.0, -((5.0 + 6.0) + (11.0 + 12.0)) / 2.0],
    );
    // Conv: channel 1 of [1, 2, 2, 2] holds 1, 2, 3, 4.
    let conv = t(&[1, 2, 2, 2], &[9., 9., 9., 9., 1., 2., 3., 4.]);
    close(&eval(&ActivationMaximization::new("layer", vec![1]), dummy(), Some(conv)).unwrap(), &[-2.5]);
    // Channels last: [1, 2, 2, 2] as NHWC, channel 1 = 1, 2, 3, 4 at the odd positions.
    let nhwc = t(&[1, 2, 2, 2], &[9., 1., 9., 2., 9., 3., 9., 4.]);
    close(&eval(&ActivationMaximization::new("layer", vec![1]).channels_last(), dummy(), Some(nhwc)).unwrap(), &[-2.5]);
}

#[test]
fn total_variation_and_lp_norm_match_keras_vis() {
    let img = t(&[1, 1, 3, 3], &[0., 1., 2., 3., 4., 5., 6., 7., 8.]);
    // Crop [:-1, :-1]: four positions, each (3² + 1²) = 10; 40 / (C·H·W = 9).
    close(&eval(&TotalVariation::default(), img.clone(), None).unwrap(), &[40.0 / 9.0]);
    // β = 1: four times √10.
    close(&eval(&TotalVariation::new(1.0), img.clone(), None).unwrap(), &[4.0 * 10f32.sqrt() / 9.0]);
    // 1-D signals: [1, 1, 4] = 0, 1, 3, 6 → with one spatial axis every neighbour
    // difference counts (1, 2, 3) → 1 + 4 + 9 = 14, over C·L = 4.
    close(&eval(&TotalVariation::default(), t(&[1, 1, 4], &[0., 1., 3., 6.]), None).unwrap(), &[14.0 / 4.0]);
    let v = t(&[1, 1, 1, 2], &[3., -4.]);
    close(&eval(&LpNorm::new(2.0).unwrap(), v.clone(), None).unwrap(), &[5.0 / 2.0]);
    close(&eval(&LpNorm::new(f32::INFINITY).unwrap(), v.clone(), None).unwrap(), &[4.0 / 2.0]);
    close(&eval(&LpNorm::keras_default(), v, None).unwrap(), &[(729.0f32 + 4096.0).powf(1.0 / 6.0) / 2.0]);
    assert!(matches!(LpNorm::new(0.5), Err(LossError::Param(_))));
}

#[test]
fn lucid_objectives_on_small_arrays() {
    let v = t(&[1, 1, 1, 2], &[3., 4.]);
    close(&eval(&lucid::l1("input", 1.0), v.clone(), None).unwrap(), &[5.0]);
    close(&eval(&lucid::l2("input", 1.0), v.clone(), None).unwrap(), &[(13.0f32 + 1e-6).sqrt()]);
    close(&eval(&lucid::deepdream("input"), v, None).unwrap(), &[-12.5]);
    let img = t(&[1, 1, 3, 3], &[0., 1., 2., 3., 4., 5., 6., 7., 8.]);
    // |vertical| 3 × 6 + |horizontal| 1 × 6.
    close(&eval(&lucid::total_variation("input"), img.clone(), None).unwrap(), &[24.0]);
    // Centre neuron of channel 0: x[0, 0, 1, 1] = 4.
    close(&eval(&lucid::neuron("input", 0, None), img.clone(), None).unwrap(), &[-4.0]);
    close(&eval(&lucid::neuron("input", 0, Some((2, 0))), img.clone(), None).unwrap(), &[-6.0]);
    close(&eval(&lucid::channel("input", 0), img.clone(), None).unwrap(), &[-4.0]);
    // Direction (1, 1) over two channels: dot = 1 + 3 and 2 + 4 → mean 5.
    let two = t(&[1, 2, 1, 2], &[1., 2., 3., 4.]);
    close(&eval(&lucid::direction("input", vec![1.0, 1.0], 0.0), two, None).unwrap(), &[-5.0]);
    // A constant image is its own blur.
    close(&eval(&lucid::blur("input"), Tensor::from_elem(vec![1, 1, 3, 3], 2.0), None).unwrap(), &[0.0]);
    // Diversity: identical images → cos 1 for both ordered pairs, over B = 2.
    let same = t(&[2, 2, 1, 2], &[1., 2., 3., 4., 1., 2., 3., 4.]);
    close(&eval(&lucid::diversity("input"), same, None).unwrap(), &[1.0]);
    // Orthogonal Gram matrices (channel 0 only vs channel 1 only) → 0.
    let apart = t(&[2, 2, 1, 2], &[1., 2., 0., 0., 0., 0., 3., 4.]);
    close(&eval(&lucid::diversity("input"), apart, None).unwrap(), &[0.0]);
}

#[test]
fn objectives_compose_with_generated_names() {
    let obj: Objective = lucid::channel("layer", 1) - 0.5 * lucid::l1("input", 0.0);
    assert_eq!(obj.name(), "channel(layer, 1) - 0.5*L1(input, 0)");
    let mut layers = obj.layers();
    layers.sort();
    assert_eq!(layers, ["input", "layer"]);
    let act = t(&[1, 2], &[5., 7.]);
    // −7 − 0.5·(|1| + |−2|) = −8.5
    close(&eval(&obj, t(&[1, 1, 1, 2], &[1., -2.]), Some(act.clone())).unwrap(), &[-8.5]);
    let neg = -lucid::channel("layer", 1);
    assert_eq!(neg.name(), "-(channel(layer, 1))");
    close(&eval(&neg, dummy(), Some(act.clone())).unwrap(), &[7.0]);
    close(
        &eval(&(lucid::channel("layer", 0) + lucid::channel("layer", 1) * 2.0), dummy(), Some(act)).unwrap(),
        &[-19.0],
    );
}

#[test]
fn weights_sum_and_zero_weights_drop_terms() {
    let mut tape = Tape::new();
    let x = tape.variable(t(&[1, 1, 1, 2], &[3., -4.]));
    let act = tape.constant(t(&[1, 2], &[5., 7.]));
    let acts = HashMap::from([("fc".to_string(), act)]);
    let ctx = LossContext::new(x, &acts);
    let losses = WeightedLosses::new()
        .with(ActivationMaximization::new("fc", vec![1]), 1.0)
        .with(LpNorm::new(2.0).unwrap(), 10.0)
        // A term reading a missing layer, with weight 0: never built, so no error.
        .with(ActivationMaximization::new("missing", vec![0]), 0.0);
    assert_eq!(losses.layers(), ["fc", "input"]);
    let built = losses.build(&mut tape, &ctx).unwrap();
    assert_eq!(built.terms.len(), 2);
    assert_eq!(built.terms[0].0, "ActivationMaximization(fc, [1])");
    // −7 + 10 · 5/2
    close(&tape.value(built.total).unwrap().iter().copied().collect::<Vec<_>>(), &[18.0]);
    assert!(WeightedLosses::new().with(LpNorm::keras_default(), 0.0).build(&mut tape, &ctx).is_err());
}

#[test]
fn bad_indexes_and_layers_are_typed_errors() {
    let dense = t(&[1, 3], &[1., 2., 3.]);
    match eval(&ActivationMaximization::new("layer", vec![3]), dummy(), Some(dense.clone())) {
        Err(e @ LossError::FilterOutOfRange { index: 3, count: 3, .. }) => {
            assert!(e.to_string().contains("0..=2"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    match eval(&ActivationMaximization::new("nope", vec![0]), dummy(), Some(dense.clone())) {
        Err(e @ LossError::UnknownLayer { .. }) => assert!(e.to_string().contains("layer"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        eval(&ActivationMaximization::per_sample("layer", vec![vec![0], vec![1]]), dummy(), Some(dense.clone())),
        Err(LossError::Param(_))
    ));
    assert!(matches!(eval(&lucid::channel("layer", 5), dummy(), Some(dense)), Err(LossError::FilterOutOfRange { .. })));
    assert!(matches!(eval(&lucid::diversity("input"), dummy(), None), Err(LossError::Param(_))));
    assert!(matches!(eval(&TotalVariation::new(-1.0), dummy(), None), Err(LossError::Param(_))));
}

/// blur's gradient is `x − blur(x)` by design (the blur is held constant, as in lucid), so
/// it is checked against that, not against finite differences of the whole expression.
#[test]
fn blur_pulls_pixels_toward_their_neighbours() {
    let mut img = Tensor::zeros(vec![1, 1, 3, 3]);
    img[[0, 0, 1, 1]] = 9.0;
    let mut tape = Tape::new();
    let x = tape.variable(img);
    let acts = HashMap::new();
    let v = lucid::blur("input").build(&mut tape, &LossContext::new(x, &acts)).unwrap();
    let g = tape.backward(v).unwrap().get(x).unwrap().clone();
    // Centre: 9 − 9·4/16; corner: 0 − 9·1/9 (its window holds weights 4, 2, 2, 1).
    assert!((g[[0, 0, 1, 1]] - 6.75).abs() < 1e-6, "{g}");
    assert!((g[[0, 0, 0, 0]] + 1.0).abs() < 1e-6, "{g}");
    // Edge (0, 1): window weights 2,4,2 / 1,2,1 → norm 12, centre weight 2 → 0 − 18/12.
    assert!((g[[0, 0, 0, 1]] + 1.5).abs() < 1e-6, "{g}");
}

// ---- gradients by central finite differences ----

fn seeded(seed: u64, shape: &[usize]) -> Tensor {
    let mut s = seed | 1;
    Tensor::from_shape_fn(shape.to_vec(), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    })
}

/// dLoss/dinput against central differences (the loss summed if per-sample).
fn check_grad(loss: &dyn Loss, x: Tensor) {
    let build = |tape: &mut Tape, x: Var| -> f64 {
        let acts = HashMap::from([("layer".to_string(), x)]);
        let ctx = LossContext::new(x, &acts);
        let v = loss.build(tape, &ctx).unwrap();
        tape.value(v).unwrap().iter().map(|&v| v as f64).sum()
    };
    let mut tape = Tape::new();
    let xv = tape.variable(x.clone());
    let acts = HashMap::from([("layer".to_string(), xv)]);
    let ctx = LossContext::new(xv, &acts);
    let v = loss.build(&mut tape, &ctx).unwrap();
    let s = tape.sum_all(v).unwrap();
    let g = tape.backward(s).unwrap().get(xv).cloned().unwrap_or_else(|| Tensor::zeros(x.raw_dim()));
    let h = 1e-2f32;
    let mut numeric = Vec::new();
    for j in 0..x.len() {
        let mut p = x.clone();
        p.as_slice_mut().unwrap()[j] += h;
        let mut m = x.clone();
        m.as_slice_mut().unwrap()[j] -= h;
        let (mut tp, mut tm) = (Tape::new(), Tape::new());
        let (vp, vm) = (tp.constant(p), tm.constant(m));
        numeric.push((build(&mut tp, vp) - build(&mut tm, vm)) / (2.0 * h as f64));
    }
    let scale = numeric.iter().fold(1.0f64, |a, v| a.max(v.abs()));
    for (j, (&a, n)) in g.iter().zip(&numeric).enumerate() {
        assert!((a as f64 - n).abs() <= 5e-3 * scale, "{}: element {j}: analytic {a}, numeric {n}", loss.name());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn gradients_match_finite_differences(b in 2usize..=3, c in 1usize..=3, h in 2usize..=4, w in 2usize..=4, seed in any::<u64>(), p in 1.5f32..8.0, beta in 2.0f32..3.0) {
        let x = seeded(seed, &[b, c, h, w]) + 0.05;
        let n = (seed as usize) % c;
        check_grad(&ActivationMaximization::new("layer", vec![n, 0]), x.clone());
        check_grad(&ActivationMaximization::per_sample("layer", (0..b).map(|i| vec![i % c]).collect()), x.clone());
        check_grad(&TotalVariation::default(), x.clone());
        // β >= 2: below it (Σd²)^(β/2) has an unbounded slope where neighbours are nearly
        // equal, and a central difference of step 1e-2 cannot follow it (a flaky CI run).
        check_grad(&TotalVariation::new(beta), x.clone());
        check_grad(&LpNorm::new(p).unwrap(), x.clone());
        check_grad(&lucid::deepdream("layer"), x.clone());
        check_grad(&lucid::l2("input", 0.3), x.clone());
        check_grad(&lucid::diversity("layer"), x.clone().mapv(|v| v + 1.5));
        check_grad(&lucid::direction("layer", (0..c).map(|i| 1.0 + i as f32).collect(), 1.0), x.clone().mapv(|v| v + 1.5));
        check_grad(&lucid::neuron("layer", n, None), x.clone());
        // |·| has a kink at 0: keep the differences away from it.
        // Values on a 0.05 grid, the constant between grid points: every |x − c| and every
        // non-zero neighbour difference stays >= 0.025 from the kink (equal neighbours sit
        // exactly on it, where both the analytic and the central difference are 0).
        let spaced = Tensor::from_shape_fn(vec![b, c, h, w], |i| ((i[0] * 7 + i[1] * 5 + i[2] * 3 + i[3] * 11) * 37 % 38) as f32 * 0.05);
        check_grad(&lucid::l1("input", 0.525), spaced.clone());
        check_grad(&lucid::total_variation("input"), spaced);
    }
}
