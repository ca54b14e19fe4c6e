//! Every op's backward against central finite differences, on random shapes and values.
//!
//! The loss is a fixed random projection `Σ rᵢ·outᵢ` of the op's output, so every output
//! element's gradient path is checked. Forward values are f32 (the engine's type); the
//! projection and the central differences are computed in f64. Inputs are kept away from
//! kinks (ReLU at 0, Clip bounds, |x| at 0, max-pool ties) by more than the step.

mod common;

use actmax_tensor::{Conv2dParams, ConvGeometry, PadMode, Padding2d, Pool2dParams, Result, Tape, Tensor, Var};
use common::{distinct, tensor, values};
use proptest::prelude::*;

const H: f32 = 1e-2;

fn projection(shape: &[usize]) -> Tensor {
    tensor(0xC0FFEE, shape)
}

fn project(out: &Tensor) -> f64 {
    let r = projection(out.shape());
    out.iter().zip(r.iter()).map(|(&o, &r)| o as f64 * r as f64).sum()
}

/// Checks the analytic gradient of every input against central differences.
fn check<F>(inputs: Vec<Tensor>, build: F)
where
    F: Fn(&mut Tape, &[Var]) -> Result<Var>,
{
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.variable(t.clone())).collect();
    let out = build(&mut tape, &vars).expect("forward");
    let r = tape.constant(projection(tape.shape(out).unwrap()));
    let prod = tape.mul(out, r).unwrap();
    let loss = tape.sum_all(prod).unwrap();
    let grads = tape.backward(loss).unwrap();

    let eval = |ins: &[Tensor]| -> f64 {
        let mut t = Tape::new();
        let vs: Vec<Var> = ins.iter().map(|x| t.constant(x.clone())).collect();
        let o = build(&mut t, &vs).expect("forward");
        project(t.value(o).unwrap())
    };
    for (k, input) in inputs.iter().enumerate() {
        let analytic = grads.get(vars[k]).cloned().unwrap_or_else(|| Tensor::zeros(input.raw_dim()));
        assert_eq!(analytic.shape(), input.shape(), "gradient shape of input {k}");
        let mut numeric = vec![0.0f64; input.len()];
        for (j, num) in numeric.iter_mut().enumerate() {
            let mut ins = inputs.to_vec();
            ins[k].as_slice_mut().unwrap()[j] += H;
            let up = eval(&ins);
            ins[k].as_slice_mut().unwrap()[j] -= 2.0 * H;
            let down = eval(&ins);
            *num = (up - down) / (2.0 * H as f64);
        }
        let scale = numeric.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        for (j, (&a, &n)) in analytic.iter().zip(&numeric).enumerate() {
            assert!(
                (a as f64 - n).abs() <= 3e-3 * scale,
                "input {k} element {j}: analytic {a}, numeric {n} (scale {scale})"
            );
        }
    }
}

/// Moves values at least `m` away from each kink.
fn away(t: Tensor, kinks: &[f32], m: f32) -> Tensor {
    t.mapv(|mut v| {
        for &k in kinks {
            if (v - k).abs() < m {
                v = if v >= k { k + m } else { k - m };
            }
        }
        v
    })
}

fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=max_dim, 1..=max_rank)
}

/// Two shapes that broadcast: `b` is `a` with some dims set to 1 and maybe leading dims dropped.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (shape(4, 4), any::<u8>(), 0usize..=2).prop_map(|(a, mask, drop)| {
        let b: Vec<usize> = a.iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect();
        let drop = drop.min(b.len() - 1);
        (a, b[drop..].to_vec())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn arithmetic_with_broadcasting((sa, sb) in broadcast_pair(), seed in any::<u64>(), swap in any::<bool>()) {
        let (sa, sb) = if swap { (sb, sa) } else { (sa, sb) };
        let a = tensor(seed, &sa);
        let b = tensor(seed ^ 9, &sb);
        let b_nonzero = b.mapv(|v| v.signum() * (0.5 + v.abs()));
        check(vec![a.clone(), b.clone()], |t, v| t.add(v[0], v[1]));
        check(vec![a.clone(), b.clone()], |t, v| t.sub(v[0], v[1]));
        check(vec![a.clone(), b.clone()], |t, v| t.mul(v[0], v[1]));
        check(vec![a, b_nonzero], |t, v| t.div(v[0], v[1]));
    }

    #[test]
    fn scalar_and_unary(s in shape(3, 5), seed in any::<u64>(), c in -3.0f32..3.0, p in 0.5f32..3.0) {
        let x = tensor(seed, &s);
        let pos = x.mapv(|v| 0.5 + v.abs());
        check(vec![x.clone()], |t, v| t.add_scalar(v[0], c));
        check(vec![x.clone()], |t, v| t.mul_scalar(v[0], c));
        check(vec![x.clone()], |t, v| t.neg(v[0]));
        check(vec![pos.clone()], |t, v| t.powf(v[0], p));
        check(vec![away(x.clone(), &[0.0], 2.0 * H)], |t, v| t.abs(v[0]));
        check(vec![pos.clone()], |t, v| t.sqrt(v[0]));
        check(vec![x.clone()], |t, v| t.exp(v[0]));
        check(vec![pos], |t, v| t.log(v[0]));
        check(vec![x.clone() * 3.0], |t, v| t.sigmoid(v[0]));
        check(vec![x.clone()], |t, v| t.tanh(v[0]));
        check(vec![x.clone() * 3.0], |t, v| t.sin(v[0]));
        check(vec![x.clone() * 3.0], |t, v| t.cos(v[0]));
        check(vec![x * 2.0], |t, v| t.erf(v[0]));
    }

    #[test]
    fn real_ffts(lead in prop::collection::vec(1usize..=2, 0..=2), h in 1usize..=6, w in 1usize..=7, seed in any::<u64>()) {
        let mut xs = lead.clone();
        xs.extend([h, w]);
        check(vec![tensor(seed, &xs)], |t, v| t.rfft2(v[0]));
        let mut zs = lead;
        zs.extend([h, w / 2 + 1, 2]);
        // Every free value of the spectrum, the ignored DC/Nyquist imaginary parts included.
        check(vec![tensor(seed ^ 1, &zs)], |t, v| t.irfft2(v[0], w));
    }

    #[test]
    fn relu_family(s in shape(3, 5), seed in any::<u64>(), alpha in 0.01f32..1.5) {
        let x = tensor(seed, &s) * 8.0;
        check(vec![away(x.clone(), &[0.0], 2.0 * H)], |t, v| t.relu(v[0]));
        check(vec![away(x.clone(), &[0.0, 6.0], 2.0 * H)], |t, v| t.relu6(v[0]));
        check(vec![away(x.clone(), &[-2.0, 3.0], 2.0 * H)], |t, v| t.clip(v[0], -2.0, 3.0));
        check(vec![away(x.clone(), &[0.0], 2.0 * H)], |t, v| t.leaky_relu(v[0], alpha));
        check(vec![away(x, &[0.0], 2.0 * H)], |t, v| t.elu(v[0], alpha));
    }

    #[test]
    fn reductions(s in shape(4, 4), seed in any::<u64>(), mask in any::<u8>(), keep in any::<bool>()) {
        let x = tensor(seed, &s);
        let axes: Vec<usize> = (0..s.len()).filter(|i| mask >> i & 1 == 1).collect();
        check(vec![x.clone()], |t, v| t.sum(v[0], &axes, keep));
        check(vec![x.clone()], |t, v| t.mean(v[0], &axes, keep));
        check(vec![x.clone()], |t, v| t.sum_all(v[0]));
        check(vec![x], |t, v| t.mean_all(v[0]));
    }

    #[test]
    fn softmax_family(s in shape(3, 5), seed in any::<u64>(), axis_pick in any::<usize>()) {
        let x = tensor(seed, &s) * 3.0;
        let axis = axis_pick % s.len();
        check(vec![x.clone()], |t, v| t.softmax(v[0], axis));
        check(vec![x], |t, v| t.log_softmax(v[0], axis));
    }

    #[test]
    fn cross_entropy(b in 1usize..=4, c in 2usize..=6, seed in any::<u64>()) {
        let x = tensor(seed, &[b, c]) * 3.0;
        let targets: Vec<usize> = (0..b).map(|i| (seed as usize >> i) % c).collect();
        check(vec![x], |t, v| t.cross_entropy(v[0], &targets));
    }

    #[test]
    fn matmul_and_linear(m in 1usize..=5, k in 1usize..=6, n in 1usize..=5, seed in any::<u64>()) {
        let a = tensor(seed, &[m, k]);
        check(vec![a.clone(), tensor(seed ^ 1, &[k, n])], |t, v| t.matmul(v[0], v[1], false));
        check(vec![a.clone(), tensor(seed ^ 2, &[n, k])], |t, v| t.matmul(v[0], v[1], true));
        check(vec![a, tensor(seed ^ 3, &[n, k]), tensor(seed ^ 4, &[n])], |t, v| t.linear(v[0], v[1], Some(v[2])));
    }

    #[test]
    fn conv2d(n in 1usize..=2, groups in 1usize..=2, cin_g in 1usize..=2, cout_g in 1usize..=2, k in 1usize..=3, s in 1usize..=2, d in 1usize..=2,
              pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2), h in 3usize..=6, w in 3usize..=6, bias in any::<bool>(), seed in any::<u64>()) {
        let p = Conv2dParams { stride: [s, 1 + (s % 2)], padding: Padding2d { top: pads.0, bottom: pads.1, left: pads.2, right: pads.3 }, dilation: [d, 1], groups };
        let xs = [n, cin_g * groups, h, w];
        let ws = [cout_g * groups, cin_g, k, k];
        prop_assume!(ConvGeometry::new("t", &xs, &ws, p).is_ok());
        let mut ins = vec![tensor(seed, &xs), tensor(seed ^ 1, &ws)];
        if bias {
            ins.push(tensor(seed ^ 2, &[cout_g * groups]));
        }
        check(ins.to_vec(), |t, v| t.conv2d(v[0], v[1], v.get(2).copied(), p));
    }

    #[test]
    fn depthwise_conv2d(c in 1usize..=3, k in 2usize..=5, s in 1usize..=2, h in 5usize..=7, seed in any::<u64>()) {
        let p = Conv2dParams::new().stride(s).groups(c).padding(Padding2d::tf_same([h, h], [k, k], [s, s], [1, 1]));
        check(vec![tensor(seed, &[2, c, h, h]), tensor(seed ^ 1, &[c, 1, k, k]), tensor(seed ^ 2, &[c])], |t, v| t.conv2d(v[0], v[1], Some(v[2]), p));
    }

    #[test]
    fn pooling(n in 1usize..=2, c in 1usize..=2, k in 1usize..=3, s in 1usize..=2, pad in 0usize..=1, h in 3usize..=6, w in 3usize..=6, include in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(pad < k);
        let mut p = Pool2dParams::new(k, s).padding(Padding2d { top: pad, bottom: 0, left: 0, right: pad });
        p.count_include_pad = include;
        // Distinct values 0.05 apart: a step of 0.01 never changes a window's winner.
        let x = Tensor::from_shape_vec(vec![n, c, h, w], distinct(seed, n * c * h * w, 0.05)).unwrap();
        check(vec![x.clone()], |t, v| t.max_pool2d(v[0], p));
        check(vec![x.clone()], |t, v| t.avg_pool2d(v[0], p));
        check(vec![x], |t, v| t.global_avg_pool(v[0]));
    }

    #[test]
    fn batch_norm(n in 1usize..=2, c in 1usize..=3, hw in 1usize..=3, seed in any::<u64>()) {
        let var = tensor(seed ^ 4, &[c]).mapv(|v| 0.5 + v.abs());
        let ins = [tensor(seed, &[n, c, hw, hw]), tensor(seed ^ 1, &[c]), tensor(seed ^ 2, &[c]), tensor(seed ^ 3, &[c]), var];
        check(ins.to_vec(), |t, v| t.batch_norm(v[0], v[1], v[2], v[3], v[4], 1e-3));
    }

    #[test]
    fn channel_affine(n in 1usize..=2, c in 1usize..=3, hw in 1usize..=3, seed in any::<u64>()) {
        let (shift, scale) = (tensor(seed ^ 1, &[c]).into_raw_vec_and_offset().0, tensor(seed ^ 2, &[c]).into_raw_vec_and_offset().0);
        check(vec![tensor(seed, &[n, c, hw, hw])], |t, v| t.channel_affine(v[0], &shift, &scale));
    }

    #[test]
    fn pad_and_slice(s in shape(3, 5), seed in any::<u64>(), pads in prop::collection::vec((0usize..=3, 0usize..=3), 1..=3), c in -1.0f32..1.0) {
        let x = tensor(seed, &s);
        let pads: Vec<(usize, usize)> = pads.into_iter().take(s.len()).collect();
        check(vec![x.clone()], |t, v| t.pad(v[0], &pads, PadMode::Constant(c)));
        let tail = &s[s.len() - pads.len()..];
        let reflect: Vec<(usize, usize)> = pads.iter().zip(tail).map(|(&(a, b), &d)| (a.min(d - 1), b.min(d - 1))).collect();
        check(vec![x.clone()], |t, v| t.pad(v[0], &reflect, PadMode::Reflect));
        let ranges: Vec<(usize, usize)> = s.iter().map(|&d| (d / 3, d - d / 4)).collect();
        check(vec![x], |t, v| t.slice(v[0], &ranges));
    }

    #[test]
    fn layout_ops(s in shape(4, 4), seed in any::<u64>(), shifts in prop::collection::vec(-7isize..=7, 1..=4), perm_seed in any::<u64>()) {
        let x = tensor(seed, &s);
        let total: usize = s.iter().product();
        check(vec![x.clone()], |t, v| t.reshape(v[0], &[total]));
        check(vec![x.clone()], |t, v| t.flatten(v[0]));
        let mut perm: Vec<usize> = (0..s.len()).collect();
        let keys = values(perm_seed, s.len());
        perm.sort_by(|&a, &b| keys[a].total_cmp(&keys[b]));
        check(vec![x.clone()], |t, v| t.permute(v[0], &perm));
        let shifts: Vec<isize> = shifts.into_iter().take(s.len()).collect();
        check(vec![x.clone()], |t, v| t.roll(v[0], &shifts));
        // And its values: element `i` of each axis lands at `i + shift` (mod the size).
        let mut tape = Tape::new();
        let xv = tape.constant(x.clone());
        let rolled = tape.roll(xv, &shifts).unwrap();
        let y = tape.value(rolled).unwrap();
        for (idx, &v) in x.indexed_iter() {
            let to: Vec<usize> = (0..s.len())
                .map(|a| {
                    let sh = shifts.get(a).copied().unwrap_or(0);
                    (idx[a] as isize + sh).rem_euclid(s[a] as isize) as usize
                })
                .collect();
            prop_assert_eq!(y[to.as_slice()], v);
        }
        let mut s2 = s.clone();
        s2[0] += 1;
        check(vec![x, tensor(seed ^ 1, &s2)], |t, v| t.concat(&[v[0], v[1], v[0]], 0));
    }

    #[test]
    fn affine_warp(n in 1usize..=2, c in 1usize..=2, h in 2usize..=6, w in 2usize..=6, deg in -40.0f32..40.0, scale in 0.7f32..1.4, ty in -1.3f32..1.3, reflect in any::<bool>(), seed in any::<u64>()) {
        let mut map = actmax_tensor::Affine::rotate_scale(deg, scale);
        map.shift = [ty, -ty * 0.5];
        let maps = vec![map; n];
        let border = if reflect { actmax_tensor::WarpBorder::Reflect } else { actmax_tensor::WarpBorder::Zeros };
        // Linear in x for fixed maps: the finite differences are exact up to rounding.
        check(vec![tensor(seed, &[n, c, h, w])], |t, v| t.affine_warp(v[0], &maps, [h, w + 1], border));
        // Three views of each image, each through its own map.
        let views: Vec<_> = (0..3 * n).map(|i| { let mut m = map; m.shift[1] += i as f32 * 0.37; m }).collect();
        check(vec![tensor(seed, &[n, c, h, w])], |t, v| t.affine_warp(v[0], &views, [h + 1, w], border));
    }

    #[test]
    fn image_regularizers(s in prop::collection::vec(2usize..=5, 2..=4), seed in any::<u64>(), mask in 1u8..16, beta in 2.0f32..4.0, p in 1.0f32..8.0) {
        let x = tensor(seed, &s);
        let axes: Vec<usize> = (0..s.len()).filter(|a| mask & (1 << a) != 0).collect();
        prop_assume!(!axes.is_empty());
        check(vec![x.clone()], |t, v| t.total_variation(v[0], &axes, beta));
        check(vec![x.clone()], |t, v| t.total_variation(v[0], &axes, 2.0));
        // |x|^p bends hardest at 0: keep the values a little away from it.
        check(vec![away(x, &[0.0], 0.05)], |t, v| t.lp_norm(v[0], p));
    }
}

/// The fused regularizers equal the ops they replace (slices, differences, powers, sums).
#[test]
fn image_regularizers_equal_their_composed_forms() {
    let s = [2, 3, 5, 4];
    let x = tensor(7, &s);
    for (axes, beta) in [(vec![2, 3], 2.0f32), (vec![2, 3], 1.3), (vec![1], 3.0), (vec![0, 2, 3], 2.5)] {
        let mut t = Tape::new();
        let v = t.constant(x.clone());
        let fused = t.total_variation(v, &axes, beta).unwrap();
        let base: Vec<(usize, usize)> =
            s.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { (0, d - 1) } else { (0, d) }).collect();
        let origin = t.slice(v, &base).unwrap();
        let mut acc = None;
        for &a in &axes {
            let mut r = base.clone();
            r[a] = (1, s[a]);
            let next = t.slice(v, &r).unwrap();
            let d = t.sub(next, origin).unwrap();
            let sq = t.mul(d, d).unwrap();
            acc = Some(match acc {
                Some(p) => t.add(p, sq).unwrap(),
                None => sq,
            });
        }
        let pw = t.powf(acc.unwrap(), beta / 2.0).unwrap();
        let composed = t.sum_all(pw).unwrap();
        let (f, c) = (t.value(fused).unwrap().sum(), t.value(composed).unwrap().sum());
        assert!((f - c).abs() <= 1e-5 * c.abs(), "TV over {axes:?}, beta {beta}: {f} vs {c}");
    }
    for p in [1.0f32, 2.0, 6.0, 2.5] {
        let mut t = Tape::new();
        let v = t.constant(x.clone());
        let fused = t.lp_norm(v, p).unwrap();
        let want = x.iter().map(|&e| (e.abs() as f64).powf(p as f64)).sum::<f64>().powf(1.0 / p as f64);
        let got = t.value(fused).unwrap().sum() as f64;
        assert!((got - want).abs() <= 1e-6 * want, "L{p}: {got} vs {want}");
    }
    // Bad arguments are typed errors.
    let mut t = Tape::new();
    let v = t.constant(x);
    assert!(t.total_variation(v, &[], 2.0).is_err());
    assert!(t.total_variation(v, &[2, 2], 2.0).is_err());
    assert!(t.total_variation(v, &[4], 2.0).is_err());
    assert!(t.total_variation(v, &[2], f32::NAN).is_err());
    assert!(t.lp_norm(v, 0.5).is_err());
    assert!(t.lp_norm(v, f32::INFINITY).is_err());
}
