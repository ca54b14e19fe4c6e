//! The layers the ONNX importer builds for torchvision's newer architectures (LayerNorm,
//! GELU, Reduce, Slice, PReLU, Dense over the last axis of NHWC, element-wise math,
//! ceil-mode pooling, Resize): values against direct f64 formulas, and the gradients of the input
//! and of every parameter against central finite differences, on random shapes.

use std::sync::Arc;

use actmax_layers::{Activation, Layer, Pool, ReduceOp, UnaryOp, WindowPadding};
use actmax_tensor::{Padding2d, Tape, Tensor};
use proptest::prelude::*;

/// Uniform values in `[-1, 1)` from a seed (xorshift).
fn tensor(seed: u64, shape: &[usize]) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Tensor::from_shape_fn(shape.to_vec(), |_| {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
}

fn forward(layer: &Layer, x: &Tensor) -> Tensor {
    let mut tape = Tape::new();
    let v = tape.constant(x.clone());
    let y = layer.forward(&mut tape, &[v]).unwrap();
    tape.value(y).unwrap().clone()
}

/// `Σ r·layer(x)` for a fixed random `r`, in f64.
fn projected(layer: &Layer, x: &Tensor) -> f64 {
    let y = forward(layer, x);
    let r = tensor(77, y.shape());
    y.iter().zip(r.iter()).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// The analytic gradients (input first, then each parameter) vs central differences.
fn check_gradients(layer: &Layer, x: &Tensor) {
    let mut tape = Tape::new();
    let xv = tape.variable(x.clone());
    let params: Vec<(String, Arc<Tensor>)> =
        layer.clone().params_mut().into_iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    let y = layer.forward(&mut tape, &[xv]).unwrap();
    let r = tape.constant(tensor(77, tape.shape(y).unwrap()));
    let p = tape.mul(y, r).unwrap();
    let loss = tape.sum_all(p).unwrap();
    let g = tape.backward(loss).unwrap().get(xv).unwrap().clone();
    let h = 1e-2f32;
    let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
    let scale = g.iter().fold(1e-3f32, |m, v| m.max(v.abs())) as f64;
    for j in 0..x.len() {
        let numeric = fd(&|d| {
            let mut x2 = x.clone();
            x2.as_slice_mut().unwrap()[j] += d;
            projected(layer, &x2)
        });
        let analytic = g.as_slice().unwrap()[j] as f64;
        assert!((analytic - numeric).abs() <= 5e-3 * scale, "{layer:?} input {j}: {analytic} vs {numeric}");
    }
    for (name, t) in params {
        let pass_grad = parameter_gradient(layer, x, &name);
        for j in 0..t.len() {
            let numeric = fd(&|d| {
                let mut l2 = layer.clone();
                for (n, p) in l2.params_mut() {
                    if n == name {
                        Arc::make_mut(p).as_slice_mut().unwrap()[j] += d;
                    }
                }
                projected(&l2, x)
            });
            let analytic = pass_grad.as_slice().unwrap()[j] as f64;
            let scale = pass_grad.iter().fold(1e-3f32, |m, v| m.max(v.abs())) as f64;
            assert!((analytic - numeric).abs() <= 5e-3 * scale, "{layer:?} {name}[{j}]: {analytic} vs {numeric}");
        }
    }
}

/// The gradient of a parameter, through a one-layer model trained on the tape.
fn parameter_gradient(layer: &Layer, x: &Tensor, name: &str) -> Tensor {
    let spec =
        actmax_layers::InputSpec::raw([x.shape()[1], x.shape()[2], x.shape()[3]], actmax_layers::ChannelOrder::Rgb);
    let mut b = actmax_layers::ModelBuilder::new(spec);
    b.push("l", layer.clone()).unwrap();
    let m = b.build();
    let mut tape = Tape::new();
    let mut pass = actmax_layers::TrainingPass::new(0);
    let xv = tape.constant(x.clone());
    let y = m.forward_training(&mut tape, xv, &[1], &mut pass).unwrap()[0];
    let r = tape.constant(tensor(77, tape.shape(y).unwrap()));
    let p = tape.mul(y, r).unwrap();
    let loss = tape.sum_all(p).unwrap();
    pass.gradients(&tape.backward(loss).unwrap()).remove(&format!("l.{name}")).unwrap()
}

fn nchw() -> impl Strategy<Value = Vec<usize>> {
    (1usize..=2, 1usize..=4, 2usize..=5, 2usize..=5).prop_map(|(n, c, h, w)| vec![n, c, h, w])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn layer_norm_matches_its_formula_and_its_gradients(s in nchw(), axis in 1usize..=3, seed in any::<u64>()) {
        let normalized = s[axis..].to_vec();
        let gamma = tensor(seed ^ 1, &normalized).mapv(|v| v + 1.5);
        let beta = tensor(seed ^ 2, &normalized);
        // A large eps keeps the FD step (1e-2) small against the variance of two near-equal values.
        let eps = 0.1;
        let layer = Layer::LayerNorm { axis, gamma: Arc::new(gamma.clone()), beta: Some(Arc::new(beta.clone())), eps };
        let x = tensor(seed, &s) * 2.0;
        let y = forward(&layer, &x);
        let inner: usize = normalized.iter().product();
        let (xs, ys) = (x.as_slice().unwrap(), y.as_slice().unwrap());
        for (row, (xr, yr)) in xs.chunks(inner).zip(ys.chunks(inner)).enumerate() {
            let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / inner as f64;
            let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / inner as f64;
            for k in 0..inner {
                let want = (xr[k] as f64 - mean) / (var + eps as f64).sqrt() * gamma.as_slice().unwrap()[k] as f64
                    + beta.as_slice().unwrap()[k] as f64;
                prop_assert!((yr[k] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "row {row}: {} vs {want}", yr[k]);
            }
        }
        check_gradients(&layer, &x);
    }

    #[test]
    fn reductions_and_slices(s in nchw(), mask in 1u8..8, keepdims in any::<bool>(), a in 1usize..=3, seed in any::<u64>()) {
        let axes: Vec<usize> = (1..=3).filter(|k| mask >> (k - 1) & 1 == 1).collect();
        let x = tensor(seed, &s);
        for op in [ReduceOp::Mean, ReduceOp::Sum] {
            let layer = Layer::Reduce { op, axes: axes.clone(), keepdims };
            let y = forward(&layer, &x);
            // Reduce the highest axis first so the lower indexes stay put.
            let mut want = x.mapv(f64::from);
            for &k in axes.iter().rev() {
                want = want.sum_axis(ndarray::Axis(k));
                if op == ReduceOp::Mean {
                    want /= s[k] as f64;
                }
                if keepdims {
                    want.insert_axis_inplace(ndarray::Axis(k));
                }
            }
            prop_assert_eq!(y.shape(), want.shape());
            for (a, b) in y.iter().zip(want.iter()) {
                prop_assert!((*a as f64 - b).abs() < 1e-5 * (1.0 + b.abs()));
            }
            let shape = layer.output_shape(std::slice::from_ref(&s)).unwrap();
            prop_assert_eq!(y.shape(), shape.as_slice());
            check_gradients(&layer, &x);
        }
        let (start, end) = (s[a] / 3, s[a] - s[a] / 4);
        prop_assume!(start < end);
        let layer = Layer::Slice { axis: a, start, end };
        let y = forward(&layer, &x);
        let want = x.slice_axis(ndarray::Axis(a), ndarray::Slice::from(start..end));
        prop_assert_eq!(y.view(), want);
        check_gradients(&layer, &x);
    }

    #[test]
    fn element_wise_layers(s in nchw(), p in 0.5f32..3.0, seed in any::<u64>()) {
        let x = tensor(seed, &s) * 2.0;
        let positive = x.mapv(|v| v.abs() + 0.5);
        for (op, input) in [
            (UnaryOp::Neg, &x), (UnaryOp::Exp, &x), (UnaryOp::Erf, &x),
            (UnaryOp::Sqrt, &positive), (UnaryOp::Reciprocal, &positive), (UnaryOp::Log, &positive),
            (UnaryOp::Pow(p), &positive), (UnaryOp::Pow(2.0), &x),
        ] {
            let f: Box<dyn Fn(f64) -> f64> = match op {
                UnaryOp::Neg => Box::new(|v| -v),
                UnaryOp::Exp => Box::new(f64::exp),
                UnaryOp::Sqrt => Box::new(f64::sqrt),
                UnaryOp::Reciprocal => Box::new(|v| 1.0 / v),
                UnaryOp::Log => Box::new(f64::ln),
                UnaryOp::Pow(p) => Box::new(move |v| v.powf(p as f64)),
                // Tabulated in actmax-tensor's tests; odd and bounded here.
                _ => Box::new(|v| v),
            };
            let y = forward(&Layer::Unary(op), input);
            for (&a, &v) in y.iter().zip(input.iter()) {
                if op == UnaryOp::Erf {
                    prop_assert!(a.abs() < 1.0 && a.signum() == v.signum() || v == 0.0);
                } else {
                    let want = f(v as f64);
                    prop_assert!((a as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{:?}({}): {} vs {}", op, v, a, want);
                }
            }
            check_gradients(&Layer::Unary(op), input);
        }
        let away = x.mapv(|v| if v.abs() < 0.05 { 0.05f32.copysign(v) } else { v });
        check_gradients(&Layer::Unary(UnaryOp::Abs), &away);
        for act in [Activation::Gelu, Activation::GeluTanh, Activation::Swish] {
            check_gradients(&Layer::Activation(act), &x);
        }
        let slope = tensor(seed ^ 3, &[s[1], 1, 1]);
        check_gradients(&Layer::PRelu(Arc::new(slope.clone())), &away);
        let y = forward(&Layer::PRelu(Arc::new(slope.clone())), &away);
        for (ix, &v) in away.indexed_iter() {
            let a = slope[[ix[1], 0, 0]];
            let want = if v > 0.0 { v } else { a * v };
            prop_assert!((y[&ix] - want).abs() < 1e-6, "{:?}: {} vs {}", ix, y[&ix], want);
        }
    }

    #[test]
    fn dense_over_the_last_axis(s in nchw(), out in 1usize..=4, seed in any::<u64>()) {
        let inp = s[3];
        let weight = tensor(seed ^ 5, &[out, inp]);
        let bias = tensor(seed ^ 6, &[out]);
        let layer = Layer::Dense { weight: Arc::new(weight.clone()), bias: Some(Arc::new(bias.clone())), activation: Activation::Linear };
        let x = tensor(seed, &s);
        let y = forward(&layer, &x);
        prop_assert_eq!(y.shape(), &[s[0], s[1], s[2], out][..]);
        for (ix, &v) in y.indexed_iter() {
            let want: f32 = (0..inp).map(|k| x[[ix[0], ix[1], ix[2], k]] * weight[[ix[3], k]]).sum::<f32>() + bias[ix[3]];
            prop_assert!((v - want).abs() < 1e-5);
        }
        check_gradients(&layer, &x);
    }

    #[test]
    fn resize_is_its_two_matrices(s in nchw(), ho in 1usize..=7, wo in 1usize..=7, seed in any::<u64>()) {
        let rows = tensor(seed ^ 8, &[ho, s[2]]);
        let cols = tensor(seed ^ 9, &[wo, s[3]]);
        let layer = Layer::Resize { rows: Arc::new(rows.clone()), cols: Arc::new(cols.clone()) };
        let x = tensor(seed, &s);
        let y = forward(&layer, &x);
        prop_assert_eq!(y.shape(), &[s[0], s[1], ho, wo][..]);
        for (ix, &v) in y.indexed_iter() {
            let mut want = 0.0f64;
            for i in 0..s[2] {
                for j in 0..s[3] {
                    want += rows[[ix[2], i]] as f64 * x[[ix[0], ix[1], i, j]] as f64 * cols[[ix[3], j]] as f64;
                }
            }
            prop_assert!((v as f64 - want).abs() < 1e-5, "{:?}: {} vs {}", ix, v, want);
        }
        check_gradients(&layer, &x);
    }

    #[test]
    fn ceil_mode_pooling_follows_pytorch(h in 3usize..=9, w in 3usize..=9, k in 2usize..=3, s in 1usize..=3, pad in 0usize..=1, seed in any::<u64>()) {
        prop_assume!(pad < k);
        let x = tensor(seed, &[1, 2, h, w]);
        let pool = Pool {
            kernel: [k, k], stride: [s, s], padding: WindowPadding::Explicit(Padding2d { top: pad, left: pad, bottom: pad, right: pad }),
            count_include_pad: false, ceil_mode: true,
        };
        // PyTorch: round up, then drop a last window that starts in the right padding.
        let out_len = |n: usize| {
            let mut o = (n + 2 * pad - k).div_ceil(s) + 1;
            if (o - 1) * s >= n + pad { o -= 1; }
            o
        };
        for max in [true, false] {
            let layer = if max { Layer::MaxPool(pool) } else { Layer::AvgPool(pool) };
            let y = forward(&layer, &x);
            prop_assert_eq!(y.shape(), &[1, 2, out_len(h), out_len(w)][..]);
            for (ix, &v) in y.indexed_iter() {
                let rows = (ix[2] * s).saturating_sub(pad)..(ix[2] * s + k - pad).min(h);
                let cols = (ix[3] * s).saturating_sub(pad)..(ix[3] * s + k - pad).min(w);
                let vals: Vec<f32> = rows.flat_map(|r| cols.clone().map(move |c| (r, c))).map(|(r, c)| x[[0, ix[1], r, c]]).collect();
                let want = if max { vals.iter().copied().fold(f32::NEG_INFINITY, f32::max) } else { vals.iter().sum::<f32>() / vals.len() as f32 };
                prop_assert!((v - want).abs() < 1e-6, "{ix:?}: {v} vs {want}");
            }
        }
    }
}

#[test]
fn gelu_matches_tabulated_values() {
    // x·Φ(x) with Φ the standard normal CDF.
    let x = Tensor::from_shape_vec(vec![1, 4], vec![-1.0, 0.0, 1.0, 2.0]).unwrap();
    let y = forward(&Layer::Activation(Activation::Gelu), &x);
    for (got, want) in y.iter().zip([-0.158_655_3, 0.0, 0.841_344_7, 1.954_5]) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn avg_pool_with_ceil_mode_and_counted_padding_is_refused_where_it_would_differ() {
    let pool = Pool {
        kernel: [3, 3],
        stride: [2, 2],
        padding: WindowPadding::Valid,
        count_include_pad: true,
        ceil_mode: true,
    };
    // 6 − 3 = 3 is odd: the last window overhangs, and PyTorch divides by less than 9.
    assert!(Layer::AvgPool(pool).output_shape(&[vec![1, 1, 6, 6]]).is_err());
    // 7 − 3 = 4: every window fits, ceil and floor agree.
    assert_eq!(Layer::AvgPool(pool).output_shape(&[vec![1, 1, 7, 7]]).unwrap(), [1, 1, 3, 3]);
}
