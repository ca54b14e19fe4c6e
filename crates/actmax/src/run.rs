//! The optimization loop shared by every entry point: parameters → image (on the tape) →
//! transforms and crops → model → losses → gradient of the parameters → update.

use std::collections::HashMap;

use actmax_layers::Model;
use actmax_losses::{Loss, LossContext, WeightedLosses};
use actmax_modifiers::{resize_to, RandomCrops, TransformSet};
use actmax_tensor::{Tape, Tensor, Var};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::optim::OptimizerState;
use crate::split::SplitModel;
use crate::{Error, Keep, Options, Parameterization, PreparedImage, Result, Step, Visualization};

/// What a run checks before its first step; returns the input range.
fn validate(model: &Model, opts: &Options) -> Result<(f32, f32)> {
    let range = opts.input_range.unwrap_or(model.input_spec().range);
    if !(range.0.is_finite() && range.1.is_finite() && range.0 < range.1) {
        return Err(Error::Options(format!("input range must be finite with low < high, got {range:?}")));
    }
    if opts.max_iter == 0 {
        return Err(Error::Options("max_iter must be at least 1".into()));
    }
    if opts.image_size.is_some_and(|s| s.contains(&0)) {
        return Err(Error::Options("the image size must be at least 1×1".into()));
    }
    if !matches!(opts.param, Parameterization::Pixel) && !opts.input_modifiers.is_empty() {
        return Err(Error::Options(
            "input modifiers (keras-vis Jitter) move pixels; with a Fourier or MaCo image use transforms instead"
                .into(),
        ));
    }
    if let Some(a) = &opts.accent {
        a.validate()?;
        if opts.seed_input.is_none() {
            return Err(Error::Options(
                "accentuation starts from a photo: give a seed image (Options::seed_input, --seed-image)".into(),
            ));
        }
    }
    opts.param.validate()?;
    opts.optimizer.validate()?;
    if let Some(c) = &opts.crops {
        c.validate()?;
    }
    Ok(range)
}

/// The seed image `[B, C, H, W]`, checked against the image shape, clamped to the range.
fn seed_image(opts: &mut Options, shape: [usize; 4], range: (f32, f32)) -> Result<Option<Tensor>> {
    let [b, c, h, w] = shape;
    let seed = match opts.seed_input.take() {
        None => return Ok(None),
        Some(s) if s.ndim() == 4 && s.shape() == [b, c, h, w] => s,
        Some(s) if s.ndim() == 3 && s.shape() == [c, h, w] => {
            let one = s.insert_axis(ndarray::Axis(0));
            let views: Vec<_> = (0..b).map(|_| one.view()).collect();
            ndarray::concatenate(ndarray::Axis(0), &views).expect("same shapes")
        }
        Some(s) => {
            return Err(Error::Options(format!(
                "seed input {:?} does not fit the images [{b}, {c}, {h}, {w}]",
                s.shape()
            )))
        }
    };
    Ok(Some(seed.mapv(|v| v.clamp(range.0, range.1))))
}

/// Runs the optimization for `batch` images.
pub(crate) fn run(model: &Model, losses: &WeightedLosses, batch: usize, mut opts: Options) -> Result<Visualization> {
    let range = validate(model, &opts)?;
    let [c, mh, mw] = model.input_spec().shape;
    let [h, w] = opts.image_size.unwrap_or([mh, mw]);
    let shape = [batch.max(1), c, h, w];
    let mut seed = seed_image(&mut opts, shape, range)?;
    let seeds = stream_seeds(&opts, shape[0])?;
    if seed.is_none() && matches!(opts.param, Parameterization::Pixel) {
        seed = Some(pixel_noise(shape, range, &seeds));
    }
    let mut rngs: Vec<StdRng> = seeds.iter().map(|&s| StdRng::seed_from_u64(s ^ 0x5eed)).collect();
    let mut params = opts.param.init(shape, range, seed.as_ref(), &mut rngs)?;
    let (mut names, mut idx) = loss_layers(model, &losses.layers())?;
    let accent = accent_plan(model, &opts, &idx, seed.as_ref())?;
    if let Some(a) = &accent {
        names.push(a.name.clone());
        idx.push(a.idx);
    }
    // Batch norms folded into their convs, except after a conv a loss reads.
    let net = model.fold_batch_norms_keeping(&idx);
    let maker = opts.param.prepare_seeded(c, [h, w], range, seed.as_ref())?;
    // Which pixels carry the objective: Σ_steps |∂losses/∂image| (Fourier and MaCo).
    let mut transparency =
        (!matches!(opts.param, Parameterization::Pixel)).then(|| Tensor::zeros(vec![shape[0], h, w]));
    let mut accent_weight = opts.accent.as_ref().and_then(|a| a.weight);

    let mut tape = Tape::new();
    tape.set_backprop_mode(opts.backprop_modifier.clone());
    let mut split: Option<SplitModel> = None;
    if opts.verbose {
        opts.callbacks.push(Box::new(crate::Print));
    }
    let weights: Vec<f32> = losses.active().map(|(_, w)| w).collect();
    let mut optimizer = OptimizerState::new(opts.optimizer, params.shape(), (range.1 - range.0) / 255.0);
    let pixel = matches!(opts.param, Parameterization::Pixel);
    let (mut best, mut best_step, mut best_x) = (f32::INFINITY, 0, Tensor::zeros(vec![0]));
    let sign = match opts.keep {
        Keep::BestLoss => opts.grad_modifier.loss_sign(),
        Keep::Last => None,
    };
    let mut history = Vec::with_capacity(opts.max_iter);
    let (mut image_history, mut per_image_lost): (Vec<Vec<f32>>, bool) = (Vec::new(), false);
    for step in 0..opts.max_iter {
        if pixel {
            for m in opts.input_modifiers.iter_mut() {
                m.pre(&mut params, &mut rngs[0])?;
            }
        }
        // The step's heavy part runs on a pool thread: its many parallel regions then
        // start there instead of waking this thread and a worker for each.
        let (crops, transforms) = (&opts.crops, &opts.transforms);
        let (image, mut total, mut terms, g, mut per_image, seen_grad, distance) = rayon::scope(|_| -> Result<_> {
            tape.reset();
            let pv = tape.variable(params.clone());
            let image = maker.image(&mut tape, pv)?;
            // The photo's views take the same random draws as the image's.
            let mut photo_rngs = accent.as_ref().map(|_| rngs.clone());
            let seen = views(transforms, crops, &mut tape, image, [mh, mw], range, &mut rngs)?;
            // The model runs image by image on the split's tapes (see `split`); here the
            // losses read its outputs, and the image, as leaves.
            let seen_value = tape.value_shared(seen)?;
            let split = split.get_or_insert_with(|| SplitModel::new(&tape, opts.graph_memory));
            let outs = split.forward(&net, &seen_value, &idx)?;
            let out_vars: Vec<Var> = outs.into_iter().map(|t| tape.variable(t)).collect();
            let acts: HashMap<String, Var> = names.iter().cloned().zip(out_vars.iter().copied()).collect();
            let image_leaf = tape.variable_shared(tape.value_shared(image)?);
            let built = losses.build(&mut tape, &LossContext::new(image_leaf, &acts))?;
            let total = scalar(&tape, built.total)?;
            let mut terms = Vec::with_capacity(built.terms.len());
            let mut per_image = Some(vec![0.0; batch.max(1)]);
            for ((name, v), w) in built.terms.iter().zip(&weights) {
                let values = tape.value(*v)?;
                per_image = add_per_image(per_image, values, *w);
                let value = values.sum();
                if !value.is_finite() {
                    return Err(Error::NonFinite { step, term: name.clone(), value });
                }
                terms.push((name.clone(), value, *w));
            }
            if !total.is_finite() {
                return Err(Error::NonFinite { step, term: "total".into(), value: total });
            }
            let mut leaf_grads = tape.backward(built.total)?;
            let out_grads: Vec<Option<Tensor>> = out_vars.iter().map(|&v| leaf_grads.take(v)).collect();
            let image_grad = leaf_grads.take(image_leaf);
            let seen_grad = split.backward(&net, &seen_value, &idx, &out_grads)?;
            let seeds = seen_grad.map(|g| (seen, g)).into_iter().chain(image_grad.map(|g| (image, g))).collect();
            let keep: &[Var] = if transparency.is_some() { &[image] } else { &[] };
            let mut grads = tape.backward_seeded(seeds, keep)?;
            let g = grads.take(pv).unwrap_or_else(|| Tensor::zeros(params.raw_dim()));
            let kept_grad = transparency.as_ref().and_then(|_| grads.take(image));
            let distance = match (&accent, photo_rngs.as_mut()) {
                (Some(a), Some(prng)) => {
                    let photo = tape.constant_shared(a.photo.clone());
                    let photo_seen = views(transforms, crops, &mut tape, photo, [mh, mw], range, prng)?;
                    let reference = net.forward(&mut tape, photo_seen, &[a.idx])?[0];
                    let at = acts[&a.name];
                    let d = crate::accent::feature_distance(&mut tape, at, reference, batch.max(1))?;
                    let dsum = tape.sum_all(d)?;
                    let mut d_out = tape.backward(dsum)?.take(at);
                    let out_grads: Vec<Option<Tensor>> =
                        out_vars.iter().map(|&v| if v == at { d_out.take() } else { None }).collect();
                    let gd = match split.backward(&net, &seen_value, &idx, &out_grads)? {
                        Some(d_seen) => tape.backward_seeded(vec![(seen, d_seen)], &[])?.take(pv),
                        None => None,
                    };
                    let gd = gd.unwrap_or_else(|| Tensor::zeros(params.raw_dim()));
                    Some((tape.value(d)?.clone(), gd))
                }
                _ => None,
            };
            Ok((image, total, terms, g, per_image, kept_grad, distance))
        })?;
        if let (Some(acc), Some(sg)) = (transparency.as_mut(), seen_grad) {
            accumulate_abs(acc, &sg);
            tape.scratch().give(sg.into_raw_vec_and_offset().0);
        }
        let mut g = opts.grad_modifier.apply(&g)?;
        if let (Some(a), Some((d, gd))) = (&accent, distance) {
            // Balanced once (faccent's ratio), after the first step: at step 0 the image
            // is the photo, and the distance's gradient is rounding noise.
            let w = match accent_weight {
                Some(w) => w,
                None if step == 0 => 0.0,
                None => {
                    let w = balance(&g, &gd) * a.balance;
                    accent_weight = w.is_finite().then_some(w);
                    accent_weight.unwrap_or(0.0)
                }
            };
            g.scaled_add(w, &gd);
            let value = d.sum();
            if !value.is_finite() {
                return Err(Error::NonFinite { step, term: a.term_name(), value });
            }
            total += w * value;
            per_image = add_per_image(per_image, &d, w);
            terms.push((a.term_name(), value, w));
        }
        if let Some(losses) = per_image {
            image_history.resize(losses.len(), Vec::with_capacity(opts.max_iter));
            for (h, l) in image_history.iter_mut().zip(losses) {
                h.push(l);
            }
        } else {
            image_history.clear();
            per_image_lost = true;
        }
        if pixel {
            // The gradient was taken on the modified image: map it back the same way
            // (Jitter's roll is a permutation, so `post` moves gradients like pixels).
            for m in opts.input_modifiers.iter_mut().rev() {
                m.post(&mut params)?;
                m.post(&mut g)?;
            }
        }
        // The image that had this loss: before the update, with the modifiers undone.
        let better = sign.is_none_or(|s| s * total < s * best);
        if (better || step == 0) && opts.keep == Keep::BestLoss {
            let seen_x = if pixel { params.clone() } else { tape.value(image)?.clone() };
            (best, best_step, best_x) = (total, step, seen_x);
        }
        history.push(total);
        // Callbacks see the image this step's loss was measured on.
        let shown = if pixel && !opts.callbacks.is_empty() { Some(params.clone()) } else { None };
        optimizer.step(&mut params, &g)?;
        if pixel {
            params.mapv_inplace(|v| v.clamp(range.0, range.1));
        }
        let images = match &shown {
            Some(x) => x,
            None => tape.value(image)?,
        };
        for cb in opts.callbacks.iter_mut() {
            cb.on_step(&Step { step, terms: &terms, total, images })?;
        }
    }
    for cb in opts.callbacks.iter_mut() {
        cb.on_end()?;
    }
    if opts.keep == Keep::Last {
        (best, best_step, best_x) = (history[history.len() - 1], history.len() - 1, render(&maker, &params)?);
    }
    // Byte-like ranges (integer ends, at least 16 levels, e.g. 0..255) hold integer
    // pixels; (0, 1) or (-1, 1) are continuous.
    let integer = range.0.fract() == 0.0 && range.1.fract() == 0.0 && range.1 - range.0 >= 15.0;
    if integer {
        best_x.mapv_inplace(f32::round);
    }
    if per_image_lost {
        image_history.clear();
    }
    Ok(Visualization {
        transparency: transparency.map(|t| normalize_maps(&t)),
        accent_weight: accent.and(accent_weight),
        images: best_x,
        range,
        best_loss: best,
        best_step,
        history,
        image_history,
        swapped_softmax: false,
    })
}

/// The accent layer and the photo, resolved for one run.
struct AccentPlan {
    idx: usize,
    name: String,
    photo: std::sync::Arc<Tensor>,
    balance: f32,
}

impl AccentPlan {
    fn term_name(&self) -> String {
        format!("FeatureDistance({})", self.name)
    }
}

/// Resolves [`Options::accent`] against the model; the default layer is measured from the
/// deepest layer a loss reads.
fn accent_plan(model: &Model, opts: &Options, idx: &[usize], seed: Option<&Tensor>) -> Result<Option<AccentPlan>> {
    let (Some(a), Some(photo)) = (&opts.accent, seed) else { return Ok(None) };
    let target = idx.iter().copied().max().unwrap_or(model.nodes().len() - 1);
    let i = a.layer_index(model, target)?;
    let name = model.nodes()[i].name.clone();
    Ok(Some(AccentPlan { idx: i, name, photo: std::sync::Arc::new(photo.clone()), balance: a.balance }))
}

fn l1(t: &Tensor) -> f32 {
    t.iter().map(|v| v.abs()).sum()
}

/// faccent's balance: the objective's gradient size over the distance's (L1 over the
/// parameters); NaN while the distance does not pull yet.
fn balance(objective: &Tensor, distance: &Tensor) -> f32 {
    match l1(distance) {
        d if d > 0.0 => l1(objective) / d,
        _ => f32::NAN,
    }
}

/// Adds `Σ_c |g[b, c]|` to `acc[b]` (`g`: `[B, C, H, W]`, `acc`: `[B, H, W]`).
fn accumulate_abs(acc: &mut Tensor, g: &Tensor) {
    let s = g.shape();
    let (c, plane) = (s[1], s[2] * s[3]);
    let (src, dst) = (g.as_slice().expect("standard"), acc.as_slice_mut().expect("standard"));
    for (b, out) in dst.chunks_exact_mut(plane).enumerate() {
        for ch in 0..c {
            let from = &src[(b * c + ch) * plane..][..plane];
            out.iter_mut().zip(from).for_each(|(o, v)| *o += v.abs());
        }
    }
}

/// Each map divided by its 99th percentile and clipped to 0..1: a few extreme pixels
/// (crop borders, the sigmoid's steep middle) would otherwise leave the rest black.
fn normalize_maps(acc: &Tensor) -> Tensor {
    let mut out = acc.clone();
    let plane = acc.shape()[1] * acc.shape()[2];
    for map in out.as_slice_mut().expect("standard").chunks_exact_mut(plane) {
        let mut sorted: Vec<f32> = map.to_vec();
        sorted.sort_by(f32::total_cmp);
        let top = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
        let scale = if top > 0.0 { 1.0 / top } else { 0.0 };
        map.iter_mut().for_each(|v| *v = (*v * scale).min(1.0));
    }
    out
}

/// What the model sees of the image this step: lucid's transforms, then MaCo's crops —
/// fused into one warp per view when the transforms are all moves of the plane — or
/// one resize when the image is not the model's size.
fn views(
    transforms: &TransformSet,
    crops: &Option<RandomCrops>,
    tape: &mut Tape,
    image: Var,
    input: [usize; 2],
    range: (f32, f32),
    rngs: &mut [StdRng],
) -> Result<Var> {
    let width = range.1 - range.0;
    let hw = {
        let s = tape.shape(image)?;
        [s[2], s[3]]
    };
    if let Some(crops) = crops {
        let b = tape.shape(image)?[0];
        if let Some(moves) = transforms.draw_maps(b, hw, rngs)? {
            return Ok(crops.apply_after(tape, image, &moves, input, width, rngs)?);
        }
        let moved = transforms.apply(tape, image, rngs)?;
        return Ok(crops.apply(tape, moved, input, width, rngs)?);
    }
    let moved = transforms.apply(tape, image, rngs)?;
    Ok(resize_to(tape, moved, input)?)
}

/// Adds `weight ·` a term's values to each image's loss: a per-sample term (`[B]`) adds
/// its own value to each; a scalar one spans the batch (unless it is one image).
fn add_per_image(acc: Option<Vec<f32>>, values: &Tensor, weight: f32) -> Option<Vec<f32>> {
    let mut acc = acc?;
    match values.len() {
        n if n == acc.len() => acc.iter_mut().zip(values.iter()).for_each(|(a, v)| *a += weight * v),
        _ => return None,
    }
    Some(acc)
}

/// The seeds of the run's random streams: `seed` for the whole batch, or one per image.
fn stream_seeds(opts: &Options, batch: usize) -> Result<Vec<u64>> {
    match &opts.image_seeds {
        None => Ok(vec![opts.seed]),
        Some(s) if s.len() != batch => {
            Err(Error::Options(format!("{} image seeds for a batch of {batch} images: give one per image", s.len())))
        }
        Some(_) if batch > 1 && !opts.input_modifiers.is_empty() => Err(Error::Options(
            "per-image seeds with input modifiers: keras-vis's Jitter rolls the whole batch by one shift; \
             use transforms, or one image per run"
                .into(),
        )),
        Some(s) => Ok(s.clone()),
    }
}

/// keras-vis's starting noise for the pixel image: one draw for the batch, or one per
/// image from its own seed.
pub(crate) fn pixel_noise(shape: [usize; 4], range: (f32, f32), seeds: &[u64]) -> Tensor {
    if let [seed] = seeds {
        return crate::seed_noise(&shape, range, *seed);
    }
    let one = [1, shape[1], shape[2], shape[3]];
    let images: Vec<Tensor> = seeds.iter().map(|&s| crate::seed_noise(&one, range, s)).collect();
    let views: Vec<_> = images.iter().map(|t| t.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views).expect("same shapes")
}

/// The image the parameters stand for, off the tape.
fn render(maker: &PreparedImage, params: &Tensor) -> Result<Tensor> {
    let mut tape = Tape::new();
    let p = tape.constant(params.clone());
    let img = maker.image(&mut tape, p)?;
    Ok(tape.value(img)?.clone())
}

/// The model layers losses read (all but `"input"`): names and indexes.
fn loss_layers(model: &Model, layers: &[String]) -> Result<(Vec<String>, Vec<usize>)> {
    let names: Vec<String> = layers.iter().filter(|l| *l != "input").cloned().collect();
    let idx = names.iter().map(|n| model.find(n.as_str())).collect::<Result<_, _>>()?;
    Ok((names, idx))
}

/// Runs `model` on `x` up to the deepest of `idx` and names the activations for the losses.
fn activations(
    model: &Model,
    tape: &mut Tape,
    x: Var,
    names: &[String],
    idx: &[usize],
) -> Result<HashMap<String, Var>> {
    let outs = model.forward(tape, x, idx)?;
    Ok(names.iter().cloned().zip(outs).collect())
}

fn scalar(tape: &Tape, v: Var) -> Result<f32> {
    Ok(tape.value(v)?.iter().next().copied().unwrap_or(f32::NAN))
}

/// The loss a [`Loss`] would report on an image, without optimizing (for checks).
pub fn evaluate(model: &Model, loss: &dyn Loss, image: &Tensor) -> Result<f32> {
    let (names, idx) = loss_layers(model, &loss.layers())?;
    let mut tape = Tape::new();
    let x = tape.constant(image.clone());
    let acts = activations(model, &mut tape, x, &names, &idx)?;
    let v = loss.build(&mut tape, &LossContext::new(x, &acts))?;
    Ok(tape.value(v)?.sum())
}
