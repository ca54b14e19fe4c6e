//! Whole-model benchmarks: EfficientNet-Lite0 (shipped weights) at 224, batch 1 — the
//! forward pass, and the forward pass plus the backward pass to the input (one step of
//! activation maximization, without the optimizer), each also with batch norms folded into
//! the convs (`Model::fold_batch_norms`). Throughput counts the model's forward
//! FLOPs (convs and dense), so GFLOP/s is "effective": backward work is not counted.

use actmax_layers::zoo;
use actmax_tensor::{Tape, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn efficientnet(c: &mut Criterion) {
    let model = zoo::load("efficientnet_lite0", None).expect("the shipped EfficientNet-Lite0 weights");
    let image = Tensor::from_shape_fn(vec![1, 3, 224, 224], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32);
    let last = model.len() - 1;
    let mut g = c.benchmark_group("effnet_lite0@224");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(model.flops() as u64));
    let mut tape = Tape::new();
    let folded = model.fold_batch_norms();
    g.bench_function("forward_folded_bn", |b| {
        b.iter(|| {
            tape.reset();
            let x = tape.constant(black_box(image.clone()));
            folded.forward(&mut tape, x, &[last]).expect("forward")
        })
    });
    g.bench_function("forward_backward_input_folded_bn", |b| {
        b.iter(|| {
            tape.reset();
            let x = tape.variable(black_box(image.clone()));
            let out = folded.forward(&mut tape, x, &[last]).expect("forward")[0];
            let logit = tape.slice(out, &[(0, 1), (20, 21)]).expect("class 20");
            let loss = tape.sum_all(logit).expect("scalar");
            tape.backward(loss).expect("backward")
        })
    });
    g.bench_function("forward", |b| {
        b.iter(|| {
            tape.reset();
            let x = tape.constant(black_box(image.clone()));
            model.forward(&mut tape, x, &[last]).expect("forward")
        })
    });
    g.bench_function("forward_backward_input", |b| {
        b.iter(|| {
            tape.reset();
            let x = tape.variable(black_box(image.clone()));
            let out = model.forward(&mut tape, x, &[last]).expect("forward")[0];
            let logit = tape.slice(out, &[(0, 1), (20, 21)]).expect("class 20");
            let loss = tape.sum_all(logit).expect("scalar");
            tape.backward(loss).expect("backward")
        })
    });
    g.finish();
}

/// Ten steps of keras-vis class visualization (forward, backward, RMSProp update) on the
/// shipped EfficientNet-Lite0: the end-to-end cost per step is the time / 10.
fn efficientnet_visualize(c: &mut Criterion) {
    let model = zoo::load("efficientnet_lite0", None).expect("the shipped EfficientNet-Lite0 weights");
    let mut g = c.benchmark_group("effnet_lite0@224_visualize");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(10 * model.flops() as u64));
    g.bench_function("10_steps", |b| {
        b.iter(|| {
            let opts = actmax::Options { max_iter: 10, ..actmax::Options::default() };
            actmax::visualize_activation(&model, -1, Some(vec![20]), opts).expect("visualize")
        })
    });
    g.finish();
}

/// VGG16 (He-uniform random weights) block5_conv3: one step's forward + backward to the
/// input of an activation-maximization loss on filter 3, at 224 and 128.
fn vgg16_block5(c: &mut Criterion) {
    for size in [224usize, 128] {
        let mut model = zoo::vgg16_features(size).expect("VGG16 features");
        zoo::init_he_uniform(&mut model, 1);
        let layer = model.find("block5_conv3").expect("layer");
        let image = Tensor::from_shape_fn(vec![1, 3, size, size], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 255) as f32);
        let flops: f64 = model.nodes()[..=layer].iter().map(|n| n.layer.flops(&n.output_shape)).sum();
        let mut g = c.benchmark_group(format!("vgg16_block5_conv3@{size}"));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));
        g.throughput(Throughput::Elements(flops as u64));
        let mut tape = Tape::new();
        g.bench_function("forward_backward_input", |b| {
            b.iter(|| {
                tape.reset();
                let x = tape.variable(black_box(image.clone()));
                let out = model.forward(&mut tape, x, &[layer]).expect("forward")[0];
                let ch = tape.slice(out, &[(0, 1), (3, 4)]).expect("filter 3");
                let loss = tape.mean_all(ch).expect("scalar");
                tape.backward(loss).expect("backward")
            })
        });
        g.finish();
    }
}

criterion_group!(benches, efficientnet, efficientnet_visualize, vgg16_block5);
criterion_main!(benches);
