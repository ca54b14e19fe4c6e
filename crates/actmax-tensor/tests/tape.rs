//! Backprop modes on hand-computed cases, gradients only where asked, typed errors.

use std::sync::Arc;

use actmax_tensor::{BackpropMode, Conv2dParams, PadMode, Tape, Tensor, TensorError, Var};

fn t(v: &[f32]) -> Tensor {
    Tensor::from_shape_vec(vec![v.len()], v.to_vec()).unwrap()
}

/// dL/dx of `L = Σ r·act(x)` under a backprop mode.
fn grad_under(mode: BackpropMode, x: &[f32], r: &[f32], act: impl Fn(&mut Tape, Var) -> Var) -> Vec<f32> {
    let mut tape = Tape::new();
    tape.set_backprop_mode(mode);
    let xv = tape.variable(t(x));
    let y = act(&mut tape, xv);
    let rv = tape.constant(t(r));
    let p = tape.mul(y, rv).unwrap();
    let l = tape.sum_all(p).unwrap();
    tape.backward(l).unwrap().get(xv).unwrap().iter().copied().collect()
}

#[test]
fn relu6_under_each_mode() {
    // x = [-1, 2, 3, 7]; upstream gradient g = r = [1, -1, 2, 1].
    let (x, r) = ([-1.0, 2.0, 3.0, 7.0], [1.0, -1.0, 2.0, 1.0]);
    let relu6 = |tp: &mut Tape, v| tp.relu6(v).unwrap();
    // Plain: g·[0 < x < 6].
    assert_eq!(grad_under(BackpropMode::Plain, &x, &r, relu6), [0.0, -1.0, 2.0, 0.0]);
    // Guided: g·[g > 0]·[x > 0].
    assert_eq!(grad_under(BackpropMode::Guided, &x, &r, relu6), [0.0, 0.0, 2.0, 1.0]);
    // Rectified: g·[g > 0].
    assert_eq!(grad_under(BackpropMode::Rectified, &x, &r, relu6), [1.0, 0.0, 2.0, 1.0]);
}

#[test]
fn redirected_relu_revives_dead_samples_only() {
    let relu6 = |tp: &mut Tape, v| tp.relu6(v).unwrap();
    // Some gradient gets through: the plain derivative.
    let (x, r) = ([-1.0, 2.0, 3.0, 7.0], [1.0, -1.0, 2.0, 1.0]);
    assert_eq!(grad_under(BackpropMode::Redirected, &x, &r, relu6), [0.0, -1.0, 2.0, 0.0]);
    // All dead: the gradient passes, except where a step would push deeper into a flat
    // side (x <= 0 with g > 0: down; x >= 6 with g < 0: up).
    let (x, r) = ([-1.0, -2.0, 7.0, 8.0], [-1.0, 2.0, 1.0, -3.0]);
    assert_eq!(grad_under(BackpropMode::Plain, &x, &r, relu6), [0.0, 0.0, 0.0, 0.0]);
    assert_eq!(grad_under(BackpropMode::Redirected, &x, &r, relu6), [-1.0, 0.0, 1.0, 0.0]);
    // Per sample: row 0 is alive and keeps its plain gradient, row 1 is dead and is redirected.
    let mut tape = Tape::new();
    tape.set_backprop_mode(BackpropMode::Redirected);
    let xv = tape.variable(Tensor::from_shape_vec(vec![2, 2], vec![1.0, -1.0, -1.0, -2.0]).unwrap());
    let y = tape.relu(xv).unwrap();
    let rv = tape.constant(Tensor::from_shape_vec(vec![2, 2], vec![-1.0, -1.0, -1.0, 1.0]).unwrap());
    let p = tape.mul(y, rv).unwrap();
    let l = tape.sum_all(p).unwrap();
    let g: Vec<f32> = tape.backward(l).unwrap().get(xv).unwrap().iter().copied().collect();
    assert_eq!(g, [-1.0, 0.0, -1.0, 0.0]);
}

#[test]
fn leaky_relu_elu_and_clip_under_each_mode() {
    let (x, r) = ([-1.0, 2.0, -3.0, 7.0], [1.0, -1.0, 2.0, 1.0]);
    let leaky = |tp: &mut Tape, v| tp.leaky_relu(v, 0.1).unwrap();
    assert_eq!(grad_under(BackpropMode::Plain, &x, &r, leaky), [0.1, -1.0, 0.2, 1.0]);
    assert_eq!(grad_under(BackpropMode::Guided, &x, &r, leaky), [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(grad_under(BackpropMode::Rectified, &x, &r, leaky), [1.0, 0.0, 2.0, 1.0]);
    let clip = |tp: &mut Tape, v| tp.clip(v, -2.0, 5.0).unwrap();
    assert_eq!(grad_under(BackpropMode::Plain, &x, &r, clip), [1.0, -1.0, 0.0, 0.0]);
    assert_eq!(grad_under(BackpropMode::Guided, &x, &r, clip), [0.0, 0.0, 0.0, 1.0]);
    let elu = |tp: &mut Tape, v| tp.elu(v, 1.0).unwrap();
    // ELU'(−1) = e⁻¹, ELU'(−3) = e⁻³.
    let plain = grad_under(BackpropMode::Plain, &x, &r, elu);
    let want = [(-1.0f32).exp(), -1.0, 2.0 * (-3.0f32).exp(), 1.0];
    for (a, b) in plain.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{plain:?} vs {want:?}");
    }
    assert_eq!(grad_under(BackpropMode::Guided, &x, &r, elu), [0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn custom_hook_sees_grad_input_and_output() {
    let hook = BackpropMode::Custom(Arc::new(|a: &actmax_tensor::ReluGrad<'_>| {
        // 2·g where the output is positive, g + x elsewhere.
        let mut out = a.grad.to_owned();
        for ((o, &x), &y) in out.iter_mut().zip(a.input.iter()).zip(a.output.iter()) {
            *o = if y > 0.0 { 2.0 * *o } else { *o + x };
        }
        out
    }));
    let g = grad_under(hook, &[-1.0, 2.0, 3.0], &[1.0, -1.0, 2.0], |tp, v| tp.relu(v).unwrap());
    assert_eq!(g, [0.0, -2.0, 4.0]);
}

#[test]
fn custom_hook_with_wrong_shape_is_an_error() {
    let mut tape = Tape::new();
    tape.set_backprop_mode(BackpropMode::Custom(Arc::new(|_: &actmax_tensor::ReluGrad<'_>| Tensor::zeros(vec![7]))));
    let x = tape.variable(t(&[1.0, 2.0]));
    let y = tape.relu(x).unwrap();
    let l = tape.sum_all(y).unwrap();
    assert!(matches!(tape.backward(l), Err(TensorError::Param { op: "backprop hook", .. })));
}

#[test]
fn modes_act_through_a_small_net() {
    // x → conv(1×1, w = [1, −1]) → relu → sum. With x = [2] and w: y = [2, −2].
    // Plain: dL/dx = 1·1 + 0·(−1) = 1. Rectified passes both branches: 1 − 1 = 0.
    let run = |mode: BackpropMode| {
        let mut tape = Tape::new();
        tape.set_backprop_mode(mode);
        let x = tape.variable(Tensor::from_elem(vec![1, 1, 1, 1], 2.0));
        let w = tape.constant(Tensor::from_shape_vec(vec![2, 1, 1, 1], vec![1.0, -1.0]).unwrap());
        let y = tape.conv2d(x, w, None, Conv2dParams::new()).unwrap();
        let y = tape.relu(y).unwrap();
        let l = tape.sum_all(y).unwrap();
        tape.backward(l).unwrap().get(x).unwrap()[[0, 0, 0, 0]]
    };
    assert_eq!(run(BackpropMode::Plain), 1.0);
    assert_eq!(run(BackpropMode::Guided), 1.0);
    assert_eq!(run(BackpropMode::Rectified), 0.0);
}

#[test]
fn constants_get_no_gradient_and_reset_keeps_scratch() {
    let mut tape = Tape::new();
    for _ in 0..3 {
        tape.reset();
        let x = tape.variable(Tensor::ones(vec![1, 3, 9, 9]));
        let w = tape.constant(Tensor::ones(vec![4, 3, 3, 3]));
        let y = tape.conv2d(x, w, None, Conv2dParams::new()).unwrap();
        let l = tape.mean_all(y).unwrap();
        assert!(!tape.requires_grad(w));
        let g = tape.backward(l).unwrap();
        assert!(g.get(w).is_none(), "a constant weight got a gradient");
        // Corner pixel takes part in one window per output channel: 4 · 1 / (4·7·7).
        assert!((g.get(x).unwrap()[[0, 0, 0, 0]] - 4.0 / 196.0).abs() < 1e-7);
    }
    assert!(!tape.scratch().is_empty(), "im2col buffers were not kept for the next iteration");
}

#[test]
fn shape_errors_are_typed_and_name_the_op() {
    let mut tape = Tape::new();
    let a = tape.constant(Tensor::zeros(vec![2, 3]));
    let b = tape.constant(Tensor::zeros(vec![4]));
    let e = tape.add(a, b).unwrap_err();
    assert_eq!(e, TensorError::Broadcast { op: "add", lhs: vec![2, 3], rhs: vec![4] });
    assert!(e.to_string().contains("add"));
    assert!(matches!(tape.matmul(a, a, false), Err(TensorError::Shape { op: "matmul", .. })));
    let x = tape.constant(Tensor::zeros(vec![1, 3, 4, 4]));
    let w = tape.constant(Tensor::zeros(vec![8, 2, 3, 3]));
    assert!(matches!(tape.conv2d(x, w, None, Conv2dParams::new()), Err(TensorError::Param { op: "conv2d", .. })));
    let w5 = tape.constant(Tensor::zeros(vec![8, 3, 5, 5]));
    assert!(matches!(tape.conv2d(x, w5, None, Conv2dParams::new()), Err(TensorError::Param { op: "conv2d", .. })));
    let w3 = tape.constant(Tensor::zeros(vec![8, 3, 3, 3]));
    assert!(matches!(tape.conv2d(x, w3, None, Conv2dParams::new().stride(0)), Err(TensorError::Param { .. })));
    assert!(matches!(tape.conv2d(x, w3, Some(b), Conv2dParams::new()), Err(TensorError::Shape { op: "conv2d", .. })));
    assert!(matches!(tape.pad(x, &[(4, 0)], PadMode::Reflect), Err(TensorError::Shape { op: "pad", .. })));
    assert!(matches!(tape.reshape(x, &[5, 5]), Err(TensorError::Shape { op: "reshape", .. })));
    assert!(matches!(tape.permute(x, &[0, 0, 1, 2]), Err(TensorError::Shape { op: "permute", .. })));
    assert!(matches!(tape.sum(x, &[4], false), Err(TensorError::Shape { op: "sum", .. })));
    assert!(matches!(tape.softmax(x, 9), Err(TensorError::Shape { op: "softmax", .. })));
    assert!(matches!(tape.clip(x, 2.0, 1.0), Err(TensorError::Param { op: "clip", .. })));
    assert!(matches!(tape.slice(x, &[(0, 2)]), Err(TensorError::Shape { op: "slice", .. })));
    let logits = tape.constant(Tensor::zeros(vec![2, 3]));
    assert!(matches!(tape.cross_entropy(logits, &[0, 3]), Err(TensorError::Param { op: "cross_entropy", .. })));
    assert!(matches!(
        tape.max_pool2d(x, actmax_tensor::Pool2dParams::new(5, 1)),
        Err(TensorError::Param { op: "max_pool2d", .. })
    ));
    assert!(matches!(tape.backward(a), Err(TensorError::NonScalarLoss(_))));
    tape.reset();
    assert_eq!(tape.value(a).unwrap_err(), TensorError::UnknownVar(0));
    // Same index after the reset, but a stale handle: still refused.
    let _fresh = tape.constant(Tensor::zeros(vec![2, 3]));
    assert_eq!(tape.value(a).unwrap_err(), TensorError::UnknownVar(0));
    let other = Tape::new();
    assert!(other.value(a).is_err());
}

/// Tensors large enough for the parallel element-wise path give the scalar formulas.
#[test]
fn large_tensors_take_the_parallel_path_correctly() {
    let n = 3 * 17 * 40 * 41; // > 2^15 elements, not a multiple of the chunk size
    let xs: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
    let mut tape = Tape::new();
    let x = tape.variable(Tensor::from_shape_vec(vec![3, 17, 40, 41], xs.clone()).unwrap());
    let y = tape.relu6(x).unwrap();
    let y2 = tape.mul(y, x).unwrap();
    let y3 = tape.mul_scalar(y2, 0.5).unwrap();
    let c = 17;
    let ones = tape.constant(Tensor::ones(vec![c]));
    let zeros = tape.constant(Tensor::zeros(vec![c]));
    let bn = tape.batch_norm(y3, ones, zeros, zeros, ones, 0.0).unwrap();
    let l = tape.sum_all(bn).unwrap();
    let got = tape.value(y3).unwrap().iter().copied().collect::<Vec<_>>();
    let g = tape.backward(l).unwrap().get(x).unwrap().iter().copied().collect::<Vec<_>>();
    for (i, &v) in xs.iter().enumerate() {
        let r6 = v.clamp(0.0, 6.0);
        assert_eq!(got[i], 0.5 * r6 * v, "forward at {i}");
        // d/dx (0.5·relu6(x)·x) = 0.5·(relu6'(x)·x + relu6(x)).
        let d = if v > 0.0 && v < 6.0 { 1.0 } else { 0.0 };
        assert!((g[i] - 0.5 * (d * v + r6)).abs() < 1e-5, "gradient at {i}: {} vs {}", g[i], 0.5 * (d * v + r6));
    }
}

/// Sizes that would overflow, empty dimensions and extreme parameters are errors.
#[test]
fn extreme_sizes_are_errors_not_panics() {
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::zeros(vec![1, 1, 4, 4]));
    let w = tape.constant(Tensor::zeros(vec![1, 1, 1, 2]));
    assert!(tape.conv2d(x, w, None, Conv2dParams::new().dilation(usize::MAX)).is_err());
    let big_pad = actmax_tensor::Padding2d { top: usize::MAX, bottom: 1, left: 0, right: 0 };
    assert!(tape.conv2d(x, w, None, Conv2dParams::new().padding(big_pad)).is_err());
    let empty = tape.constant(Tensor::zeros(vec![1, 2, 0, 4]));
    let w2 = tape.constant(Tensor::zeros(vec![2, 2, 3, 3]));
    let pad1 = Conv2dParams::new().padding(actmax_tensor::Padding2d::uniform(1));
    assert!(tape.conv2d(empty, w2, None, pad1).is_err());
    assert!(tape.max_pool2d(empty, actmax_tensor::Pool2dParams::new(2, 1)).is_err());
    let no_out = tape.constant(Tensor::zeros(vec![0, 2, 3, 3]));
    assert!(tape.conv2d(x, no_out, None, Conv2dParams::new()).is_err());
    let wide = tape.constant(Tensor::zeros(vec![1 << 32, 0]));
    let tall = tape.constant(Tensor::zeros(vec![0, 1 << 32]));
    assert!(tape.matmul(wide, tall, false).is_err());
    let nothing = tape.constant(Tensor::zeros(vec![0]));
    assert!(tape.reshape(nothing, &[1 << 32, 1 << 32, 0]).is_err(), "the shape product overflows before the 0");
}

/// A matmul's gradient (column-major out of ndarray's `dot`) feeds the next op fine.
#[test]
fn matmul_gradient_layout_feeds_the_next_op() {
    let mut tape = Tape::new();
    let h = tape.variable(Tensor::from_shape_vec(vec![2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap());
    let r = tape.relu(h).unwrap();
    let v = tape.constant(Tensor::ones(vec![3, 1]));
    let y = tape.matmul(r, v, false).unwrap();
    let l = tape.sum_all(y).unwrap();
    let g = tape.backward(l).unwrap();
    assert_eq!(g.get(h).unwrap().iter().copied().collect::<Vec<_>>(), [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
}

/// Extreme roll shifts wrap like small ones, forwards and backwards.
#[test]
fn roll_with_extreme_shift() {
    let mut tape = Tape::new();
    let x = tape.variable(t(&[1.0, 2.0, 3.0]));
    let y = tape.roll(x, &[isize::MIN]).unwrap();
    // isize::MIN mod 3 = 1: every element moves one place right.
    assert_eq!(tape.value(y).unwrap().iter().copied().collect::<Vec<_>>(), [3.0, 1.0, 2.0]);
    let w = tape.constant(t(&[1.0, 10.0, 100.0]));
    let p = tape.mul(y, w).unwrap();
    let l = tape.sum_all(p).unwrap();
    let g = tape.backward(l).unwrap();
    assert_eq!(g.get(x).unwrap().iter().copied().collect::<Vec<_>>(), [10.0, 100.0, 1.0]);
}

/// A conv + ReLU6 net's loss and input gradient, the activation fused or as its own op;
/// `depthwise` with `stride`, else a dense 3 → 5 channel conv.
fn conv_relu_net(
    mode: &BackpropMode,
    fused: bool,
    kind: actmax_tensor::ReluKind,
    depthwise: Option<usize>,
) -> (f32, Vec<f32>) {
    let mut tape = Tape::new();
    tape.set_backprop_mode(mode.clone());
    let x = tape.variable(Tensor::from_shape_fn(vec![2, 3, 9, 7], |i| {
        ((i[1] * 31 + i[2] * 7 + i[3] * 3 + i[0]) % 17) as f32 - 8.0
    }));
    let (c_out, cin_g) = if depthwise.is_some() { (3, 1) } else { (5, 3) };
    let w = tape.constant(Tensor::from_shape_fn(vec![c_out, cin_g, 3, 3], |i| {
        ((i[0] * 5 + i[1] * 3 + i[2] + i[3] * 2) % 7) as f32 / 7.0 - 0.4
    }));
    let b = tape.constant(Tensor::from_shape_fn(vec![c_out], |i| i[0] as f32 - 2.0));
    let p = Conv2dParams::new().padding(actmax_tensor::Padding2d::uniform(1));
    let p = match depthwise {
        Some(stride) => p.groups(3).stride(stride),
        None => p,
    };
    let y = if fused {
        tape.conv2d_activated(x, w, Some(b), p, kind).unwrap()
    } else {
        let y = tape.conv2d(x, w, Some(b), p).unwrap();
        tape.relu_family(y, kind).unwrap()
    };
    // A loss whose gradient has both signs, so every mode's rule matters.
    let r = tape
        .constant(Tensor::from_shape_fn(tape.shape(y).unwrap().to_vec(), |i| ((i[1] + i[2] + i[3]) % 3) as f32 - 1.0));
    let l = tape.mul(y, r).unwrap();
    let l = tape.sum_all(l).unwrap();
    let loss = tape.value(l).unwrap().iter().next().copied().unwrap();
    let g = tape.backward(l).unwrap();
    (loss, g.get(x).unwrap().iter().copied().collect())
}

#[test]
fn fused_conv_activation_equals_the_two_ops_in_every_mode() {
    use actmax_tensor::ReluKind;
    // Depthwise at stride 1 masks the gradient inside its kernel (plain mode, ReLU6).
    for (mode, depthwise) in
        [BackpropMode::Plain, BackpropMode::Guided, BackpropMode::Rectified, BackpropMode::Redirected]
            .into_iter()
            .flat_map(|m| [None, Some(1), Some(2)].map(|d| (m.clone(), d)))
    {
        for kind in [ReluKind::Relu, ReluKind::Relu6] {
            let (l1, g1) = conv_relu_net(&mode, true, kind, depthwise);
            let (l2, g2) = conv_relu_net(&mode, false, kind, depthwise);
            assert!((l1 - l2).abs() <= 1e-4 * (1.0 + l2.abs()), "{mode:?} {kind:?} {depthwise:?}: loss {l1} vs {l2}");
            assert!(g2.iter().any(|&v| v != 0.0), "{mode:?} {kind:?} {depthwise:?}: the check needs a gradient");
            for (a, b) in g1.iter().zip(&g2) {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{mode:?} {kind:?} {depthwise:?}: {a} vs {b}");
            }
        }
    }
    let mut tape = Tape::new();
    let x = tape.variable(Tensor::ones(vec![1, 1, 3, 3]));
    let w = tape.constant(Tensor::ones(vec![1, 1, 1, 1]));
    let err = tape.conv2d_activated(x, w, None, Conv2dParams::new(), ReluKind::Elu { alpha: 1.0 }).unwrap_err();
    assert!(matches!(err, TensorError::Param { .. }), "{err}");
}

#[test]
fn packed_weights_follow_a_changed_weight_and_buffers_do_not_pile_up() {
    let mut weight = Arc::new(Tensor::from_elem(vec![4, 3, 1, 1], 1.0));
    let mut tape = Tape::new();
    let run = |tape: &mut Tape, w: &Arc<Tensor>| {
        tape.reset();
        let x = tape.variable(Tensor::from_elem(vec![1, 3, 5, 5], 2.0));
        let w = tape.constant_shared(w.clone());
        let y = tape.conv2d(x, w, None, Conv2dParams::new()).unwrap();
        let y = tape.relu(y).unwrap();
        let l = tape.sum_all(y).unwrap();
        tape.backward(l).unwrap();
        tape.value(l).unwrap().iter().next().copied().unwrap()
    };
    assert_eq!(run(&mut tape, &weight), 4.0 * 25.0 * 6.0);
    assert_eq!(tape.packed_weights(), 2, "one pack forward, one backward");
    // Changed in place: the tape's pack holds the old Arc, so make_mut copies.
    Arc::make_mut(&mut weight).fill(2.0);
    assert_eq!(run(&mut tape, &weight), 4.0 * 25.0 * 12.0, "a stale pack would give the old value");
    // Steady state: the pool holds what one iteration uses, however many run.
    run(&mut tape, &weight);
    let (bufs, floats) = (tape.scratch().len(), tape.scratch().floats());
    for _ in 0..20 {
        run(&mut tape, &weight);
    }
    assert!(tape.scratch().len() <= bufs && tape.scratch().floats() <= floats, "the pool grew over iterations");
    assert!(tape.packed_weights() <= 4, "packs of dropped weights are let go");
}

#[test]
fn erf_matches_tabulated_values() {
    // Abramowitz & Stegun, table 7.1 (and erf(−x) = −erf(x)).
    let xs = [0.0, 0.5, 1.0, -2.0, 3.5];
    let want = [0.0, 0.520_499_9, 0.842_700_8, -0.995_322_3, 0.999_999_3];
    let mut tape = Tape::new();
    let x = tape.constant(t(&xs));
    let y = tape.erf(x).unwrap();
    for (got, want) in tape.value(y).unwrap().iter().zip(want) {
        assert!((got - want).abs() < 1e-6, "erf: {got} vs {want}");
    }
}

/// A seeded backward is the vector–Jacobian product: seeding `y` with `s` gives the
/// gradient of `Σ y·s`; two seeds add; a seed of the wrong shape is a typed error.
#[test]
fn seeded_backward_is_the_gradient_of_the_seed_dot_product() {
    let xs = [0.5, -1.5, 2.0, 3.0];
    let s = t(&[1.0, -2.0, 0.25, 4.0]);
    let build = |tape: &mut Tape| {
        let x = tape.variable(t(&xs));
        let sq = tape.mul(x, x).unwrap();
        let y = tape.relu(sq).unwrap();
        let z = tape.mul_scalar(x, 3.0).unwrap();
        (x, y, z)
    };
    let mut tape = Tape::new();
    let (x, y, z) = build(&mut tape);
    let seeded = tape.backward_seeded(vec![(y, s.clone()), (z, s.clone())], &[]).unwrap();
    let mut reference = Tape::new();
    let (rx, ry, rz) = build(&mut reference);
    let sv = reference.constant(s.clone());
    let yz = reference.add(ry, rz).unwrap();
    let dot = reference.mul(yz, sv).unwrap();
    let loss = reference.sum_all(dot).unwrap();
    let want = reference.backward(loss).unwrap();
    assert_eq!(seeded.get(x).unwrap(), want.get(rx).unwrap());
    let wrong = t(&[1.0, 2.0]);
    assert!(matches!(tape.backward_seeded(vec![(y, wrong)], &[]), Err(TensorError::Shape { .. })));
    assert!(tape.backward_seeded(Vec::new(), &[]).unwrap().get(x).is_none());
}

/// A sibling tape shares the packed conv weights of the tape it came from.
#[test]
fn sibling_tapes_share_packed_weights() {
    let mut tape = Tape::new();
    let w = Arc::new(Tensor::from_shape_fn(vec![4, 2, 3, 3], |i| (i[0] + i[1] + i[2] * i[3]) as f32 * 0.1));
    let x0 = Tensor::from_shape_fn(vec![1, 2, 6, 6], |i| (i[2] * 6 + i[3]) as f32 * 0.01);
    let sibling = tape.sibling();
    let (x, wv) = (tape.constant(x0), tape.constant_shared(w.clone()));
    tape.conv2d(x, wv, None, Conv2dParams::default()).unwrap();
    assert_eq!(tape.packed_weights(), 1);
    assert_eq!(sibling.packed_weights(), 1);
}

#[test]
fn released_values_go_back_to_the_pool_and_cannot_be_read() {
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::ones(vec![1, 2, 8, 8]));
    let y = tape.relu(x).unwrap();
    let z = tape.mul_scalar(y, 2.0).unwrap();
    let (floats, pooled) = (tape.value_floats(), tape.scratch().floats());
    tape.release(y).unwrap();
    assert_eq!(tape.value(y).unwrap_err(), TensorError::Released(y.index()));
    assert!(tape.shape(y).is_err() && tape.relu(y).is_err(), "an op read a released value");
    assert_eq!(tape.value_floats(), floats - 128, "the value was not dropped");
    assert_eq!(tape.scratch().floats(), pooled + 128, "its buffer did not go to the pool");
    assert_eq!(tape.value(z).unwrap()[[0, 1, 7, 7]], 2.0);
    // The caller's own leaf is released the same way, and once only.
    tape.release(x).unwrap();
    assert!(matches!(tape.release(x), Err(TensorError::Released(_))));

    // A value a gradient may need stays: the node, or one recorded after it, wants one.
    let mut tape = Tape::new();
    let a = tape.constant(t(&[1.0, -2.0]));
    let v = tape.variable(t(&[3.0, 4.0]));
    let p = tape.mul(a, v).unwrap();
    assert!(matches!(tape.release(a), Err(TensorError::Param { op: "release", .. })));
    assert!(matches!(tape.release(p), Err(TensorError::Param { .. })));
    let l = tape.sum_all(p).unwrap();
    let g = tape.backward(l).unwrap();
    assert_eq!(g.get(v).unwrap().as_slice().unwrap(), &[1.0, -2.0]);
}

/// `release_unneeded` gives back what no backward reads — a conv's output whose ReLU6
/// masks by pass bits, the conv's input with constant weights — and keeps what one does
/// (a product's factor, the input with trainable weights, the output a custom hook is
/// handed): the gradients are those of a tape that released nothing.
#[test]
fn values_no_backward_reads_go_back_and_the_gradients_stay() {
    use actmax_tensor::{BackpropMode, ReluKind};
    let x0 = Tensor::from_shape_fn(vec![1, 3, 8, 8], |i| ((i[1] * 5 + i[2] * 3 + i[3]) % 11) as f32 - 4.0);
    let w0 = Tensor::from_shape_fn(vec![4, 3, 3, 3], |i| ((i[0] + 2 * i[1] + i[2] * i[3]) % 5) as f32 * 0.3 - 0.5);
    let run = |mode: BackpropMode, train: bool, release: bool| {
        let mut tape = Tape::new();
        tape.set_backprop_mode(mode);
        let x = tape.variable(x0.clone());
        let w = if train { tape.variable(w0.clone()) } else { tape.constant(w0.clone()) };
        let p = Conv2dParams { padding: actmax_tensor::Padding2d::uniform(1), ..Default::default() };
        let pre = tape.mul_scalar(x, 1.5).unwrap();
        let y = tape.conv2d_activated(pre, w, None, p, ReluKind::Relu6).unwrap();
        let c = tape.constant(tape.value(y).unwrap().mapv(|v| v - 1.0));
        let scaled = tape.mul(y, c).unwrap();
        let l = tape.sum_all(scaled).unwrap();
        let released = if release { [pre, y, c].map(|v| tape.release_unneeded(v).unwrap()) } else { [false; 3] };
        assert!(tape.requires_grad(pre), "a value given back still carries its gradient");
        let g = tape.backward(l).unwrap();
        (released, g.get(x).unwrap().clone())
    };
    for (mode, train, want) in [
        (BackpropMode::Plain, false, [true, false, false]),
        (BackpropMode::Redirected, false, [true, false, false]),
        (BackpropMode::Plain, true, [false, false, false]),
        (BackpropMode::Guided, false, [true, false, false]),
    ] {
        let (released, got) = run(mode.clone(), train, true);
        assert_eq!(released, want, "{mode:?}, trainable weights {train}");
        assert_eq!(got, run(mode.clone(), train, false).1, "{mode:?}: the gradient changed");
    }
    // The conv's own output, once nothing but a shape-only op reads it: given back under
    // plain, guided and rectified backprop (bits, or nothing), kept for a custom hook
    // (handed the activation's output).
    let hook: actmax_tensor::BackpropHook = std::sync::Arc::new(|r: &actmax_tensor::ReluGrad<'_>| r.grad.to_owned());
    for (mode, want) in [
        (BackpropMode::Plain, true),
        (BackpropMode::Guided, true),
        (BackpropMode::Rectified, true),
        (BackpropMode::Custom(hook), false),
    ] {
        let mut tape = Tape::new();
        tape.set_backprop_mode(mode.clone());
        let x = tape.variable(x0.clone());
        let w = tape.constant(w0.clone());
        let p = Conv2dParams { padding: actmax_tensor::Padding2d::uniform(1), ..Default::default() };
        let y = tape.conv2d_activated(x, w, None, p, ReluKind::Relu6).unwrap();
        let l = tape.sum_all(y).unwrap();
        let before = tape.backward(l).unwrap().get(x).unwrap().clone();
        assert_eq!(tape.release_unneeded(y).unwrap(), want, "{mode:?}");
        assert_eq!(tape.backward(l).unwrap().get(x).unwrap(), &before, "{mode:?}: the gradient changed");
    }
}

/// `conv2d_pair`: with no gradient wanted, the fused blocks (a constant result, the same
/// bits as two `conv2d_activated`); with one to the input only, the fused blocks keeping
/// the first conv's output (and its ReLU's pass bits where planes are multiples of 16
/// pixels), recorded as the two convs: the same values and the same input gradient
/// bits, under plain and guided backprop; with trainable weights, the two ops. The
/// input gradient masked by pass bits (the pair's, and those a dense conv keeps after
/// its forward) equals the one masked by the outputs (with trainable weights, no bits).
#[test]
fn a_conv_pair_gives_the_two_convs_values_and_gradients() {
    use actmax_tensor::{BackpropMode, ConvStage, ReluKind};
    let (cin, c) = (5, 30);
    let val =
        |n: usize, s: usize| Tensor::from_shape_fn(vec![n], |i| (((i[0] * 37 + s * 11) % 23) as f32 - 11.0) / 9.0);
    let w1 = val(c * cin, 2).into_shape_with_order(vec![c, cin, 1, 1]).unwrap();
    let w2 = val(c * 9, 3).into_shape_with_order(vec![c, 1, 3, 3]).unwrap();
    let b1 = val(c, 4).mapv(|v| v * 2.0);
    let p2 =
        Conv2dParams { stride: [2, 2], groups: c, padding: actmax_tensor::Padding2d::uniform(1), ..Default::default() };
    // 24² planes take pass bits, 18² (324 pixels) keep only the output. Redirected
    // backprop reads the bits too, and for a sample whose plain gradient is all zero
    // which side of the band each element is on, from a second plane of bits (a bias of
    // −100 holds every ReLU below, +100 every ReLU6 at 6: the redirected branch).
    for (n, hw, act, mode, shift) in [
        (1, 24, Some(ReluKind::Relu6), BackpropMode::Plain, 0.0),
        (2, 24, Some(ReluKind::Relu), BackpropMode::Plain, 0.0),
        (1, 24, None, BackpropMode::Plain, 0.0),
        (1, 18, Some(ReluKind::Relu6), BackpropMode::Plain, 0.0),
        (2, 24, Some(ReluKind::Relu6), BackpropMode::Guided, 0.0),
        (2, 24, Some(ReluKind::Relu6), BackpropMode::Redirected, 0.0),
        (2, 24, Some(ReluKind::Relu6), BackpropMode::Redirected, -100.0),
        (2, 24, Some(ReluKind::Relu6), BackpropMode::Redirected, 100.0),
        (1, 24, Some(ReluKind::Relu), BackpropMode::Redirected, -100.0),
    ] {
        let b1 = b1.mapv(|v| v + shift);
        let x = val(n * cin * hw * hw, 1).into_shape_with_order(vec![n, cin, hw, hw]).unwrap();
        let run = |fused_pair: bool, grad: bool, train: bool| {
            let mut tape = Tape::new();
            tape.set_backprop_mode(mode.clone());
            let xv = if grad { tape.variable(x.clone()) } else { tape.constant(x.clone()) };
            let param =
                |tape: &mut Tape, t: &Tensor| if train { tape.variable(t.clone()) } else { tape.constant(t.clone()) };
            let (a, b, bias) = (param(&mut tape, &w1), param(&mut tape, &w2), param(&mut tape, &b1));
            let first = ConvStage { w: a, b: Some(bias), p: Conv2dParams::default(), act };
            let second = ConvStage { w: b, b: None, p: p2, act: Some(ReluKind::Relu6) };
            let y = if fused_pair {
                tape.conv2d_pair(xv, first, second).unwrap()
            } else {
                let m = match act {
                    Some(k) => tape.conv2d_activated(xv, a, Some(bias), first.p, k).unwrap(),
                    None => tape.conv2d(xv, a, Some(bias), first.p).unwrap(),
                };
                tape.conv2d_activated(m, b, None, p2, ReluKind::Relu6).unwrap()
            };
            assert_eq!(tape.requires_grad(y), grad || train);
            let value = tape.value(y).unwrap().clone();
            let grads = (grad || train).then(|| {
                // A loss that weighs outputs unevenly, so masks matter.
                let wts = tape.constant(value.mapv(|v| v * 0.5 - 1.0));
                let l = tape.mul(y, wts).unwrap();
                let l = tape.sum_all(l).unwrap();
                let g = tape.backward(l).unwrap();
                [g.get(xv).cloned(), g.get(a).cloned()]
            });
            (value, grads, tape.len())
        };
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        // Trainable weights and the input: no pass bits anywhere, the masks read outputs.
        let (_, reference, _) = run(false, true, true);
        let reference_dx = reference.unwrap()[0].as_ref().map(bits);
        let (two, _, two_nodes) = run(false, false, false);
        let (pair, _, pair_nodes) = run(true, false, false);
        assert_eq!(bits(&pair), bits(&two), "the fused pair changed a value");
        assert_eq!(pair_nodes + 1, two_nodes, "the fused pair recorded its first conv's output");
        for train in [false, true] {
            let (two, two_g, two_nodes) = run(false, !train, train);
            let (pair, pair_g, pair_nodes) = run(true, !train, train);
            let case = format!("n {n}, {hw}², {act:?}, {mode:?}, bias shift {shift}, training {train}");
            assert_eq!(pair_nodes, two_nodes, "{case}: with a gradient the pair records both convs");
            assert_eq!(bits(&pair), bits(&two), "{case}: values");
            let (two_g, pair_g) = (two_g.unwrap(), pair_g.unwrap());
            for (t, p) in two_g.iter().zip(&pair_g) {
                assert_eq!(t.as_ref().map(bits), p.as_ref().map(bits), "{case}: gradients");
            }
            if !train {
                assert_eq!(
                    pair_g[0].as_ref().map(bits),
                    reference_dx,
                    "{case}: the masks by bits differ from the outputs'"
                );
            }
            let wanted = &pair_g[usize::from(train)];
            let live = !(shift < 0.0 && matches!(mode, BackpropMode::Plain));
            assert!(!live || wanted.as_ref().is_some_and(|g| g.iter().any(|&v| v != 0.0)), "{case}: no gradient");
        }
    }
}

/// `channel_affine` is the subtraction and multiplication it replaces, to the bit, forward
/// and backward, on an image large enough for the parallel chunks (which cut across
/// planes); lengths that are not one per channel are typed errors.
#[test]
fn channel_affine_gives_the_bits_of_sub_then_mul() {
    let shape = vec![2, 3, 97, 101];
    let n: usize = shape.iter().product();
    let x = Tensor::from_shape_vec(shape.clone(), (0..n).map(|i| ((i * 7919) % 2003) as f32 / 7.0 - 100.0).collect())
        .unwrap();
    let (mean, inv) = ([0.485f32, 0.456, 0.406], [1.0f32 / 0.229, 1.0 / 0.224, 1.0 / 0.225]);
    let r = Tensor::from_shape_vec(shape, (0..n).map(|i| ((i * 104729) % 997) as f32 / 31.0 - 16.0).collect()).unwrap();
    let run = |fused: bool| {
        let mut tape = Tape::new();
        let xv = tape.variable(x.clone());
        let y = if fused {
            tape.channel_affine(xv, &mean, &inv).unwrap()
        } else {
            let per = |v: &[f32; 3]| Tensor::from_shape_vec(vec![1, 3, 1, 1], v.to_vec()).unwrap();
            let (m, s) = (tape.constant(per(&mean)), tape.constant(per(&inv)));
            let c = tape.sub(xv, m).unwrap();
            tape.mul(c, s).unwrap()
        };
        let rv = tape.constant(r.clone());
        let p = tape.mul(y, rv).unwrap();
        let l = tape.sum_all(p).unwrap();
        let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        let yv = bits(tape.value(y).unwrap());
        (yv, bits(tape.backward(l).unwrap().get(xv).unwrap()))
    };
    assert!(run(true) == run(false), "channel_affine differs from sub then mul");
    let mut tape = Tape::new();
    let xv = tape.constant(x);
    for (shift, scale) in [(&[0.0f32; 2][..], &[1.0f32; 3][..]), (&[0.0; 3][..], &[1.0; 4][..])] {
        let e = tape.channel_affine(xv, shift, scale);
        assert!(matches!(e, Err(TensorError::Shape { .. })), "{e:?}");
    }
}
