//! Kernel benchmarks: conv2d (forward, backward-input, backward-weight) at VGG16's 3×3
//! shapes and EfficientNet-Lite0's depthwise shapes.
//!
//! Each criterion group holds one shape and direction, and a reference measured right
//! next to it (this machine is noisy, so neighbours in time compare best): `sgemm` — the
//! same GEMM shape on the same pool, the ceiling of an im2col conv — or `naive`, the loop
//! reference, for the direct depthwise kernels. Throughput is counted in FLOPs, which
//! `cargo xtask bench` turns into GFLOP/s and a ratio to the group's reference.

use actmax_tensor::conv::{self, naive, ConvPack, ConvPlan};
use actmax_tensor::gemm::matmul;
use actmax_tensor::{Conv2dParams, ConvGeometry, Padding2d, ScratchPool};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

/// VGG16's 3×3 conv shapes: (name, c_in, c_out, size).
const VGG: &[(&str, usize, usize, usize)] = &[
    ("vgg_3x64@224", 3, 64, 224),
    ("vgg_64x64@224", 64, 64, 224),
    ("vgg_128x128@112", 128, 128, 112),
    ("vgg_256x256@56", 256, 256, 56),
    ("vgg_512x512@28", 512, 512, 28),
    ("vgg_512x512@14", 512, 512, 14),
];

/// EfficientNet-Lite0's pointwise shapes: (name, in channels, out channels, size).
const POINTWISE: &[(&str, usize, usize, usize)] = &[
    ("effnet_pw16x96@112", 16, 96, 112),
    ("effnet_pw144x24@56", 144, 24, 56),
    ("effnet_pw40x240@28", 40, 240, 28),
    ("effnet_pw480x80@14", 480, 80, 14),
    ("effnet_pw192x1152@7", 192, 1152, 7),
    ("effnet_pw1152x192@7", 1152, 192, 7),
];

/// EfficientNet-Lite0's depthwise shapes: (name, channels, kernel, stride, size).
const DEPTHWISE: &[(&str, usize, usize, usize, usize)] = &[
    ("effnet_dw96_k3s2@112", 96, 3, 2, 112),
    ("effnet_dw144_k5s1@56", 144, 5, 1, 56),
    ("effnet_dw672_k5s1@14", 672, 5, 1, 14),
];

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Fwd,
    BwdInput,
    BwdWeight,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Fwd => "fwd",
            Dir::BwdInput => "bwd_input",
            Dir::BwdWeight => "bwd_weight",
        }
    }
}

struct Case {
    g: ConvGeometry,
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
    /// The weights packed once for each direction, as a visualization's tape holds them.
    packs: (ConvPack, ConvPack),
}

impl Case {
    fn new(c_in: usize, c_out: usize, size: usize, k: usize, stride: usize, groups: usize) -> Self {
        let pad = Padding2d::tf_same([size, size], [k, k], [stride, stride], [1, 1]);
        let p = Conv2dParams::new().stride(stride).groups(groups).padding(pad);
        let g = ConvGeometry::new("bench", &[1, c_in, size, size], &[c_out, c_in / groups, k, k], p)
            .expect("valid bench shape");
        let w = fill(g.weight_elems(), 2);
        let plan = ConvPlan::choose(&g);
        let packs = (ConvPack::forward(plan, &w, &g).unwrap(), ConvPack::backward_input(plan, &w, &g).unwrap());
        Self { x: fill(g.in_elems(), 1), w, dy: fill(g.out_elems(), 3), g, packs }
    }

    /// Runs one direction of the conv once, on the kernel the conv's plan chooses, with its
    /// weights packed beforehand (the steady state of a visualization).
    fn run(&self, dir: Dir, out: &mut [f32], scratch: &ScratchPool) {
        let plan = ConvPlan::choose(&self.g);
        match dir {
            Dir::Fwd => {
                let x = black_box(&self.x);
                conv::conv2d_forward_prepacked(plan, x, &self.w, &self.packs.0, None, None, &self.g, out, scratch)
                    .unwrap()
            }
            Dir::BwdInput => {
                let dy = black_box(&self.dy);
                conv::conv2d_backward_input_prepacked(plan, dy, &self.w, &self.packs.1, &self.g, out, scratch).unwrap()
            }
            Dir::BwdWeight => {
                conv::conv2d_backward_weight(black_box(&self.x), &self.dy, &self.g, out, scratch).unwrap()
            }
        }
    }

    fn out_len(&self, dir: Dir) -> usize {
        match dir {
            Dir::Fwd => self.dy.len(),
            Dir::BwdInput => self.x.len(),
            Dir::BwdWeight => self.w.len(),
        }
    }

    /// The (m, k, n) of the GEMM an im2col conv runs in this direction.
    fn gemm_shape(&self, dir: Dir) -> (usize, usize, usize) {
        let (kc, co, hw) = (self.g.k_col(), self.g.c_out(), self.g.out_len());
        match dir {
            Dir::Fwd => (co, kc, hw),
            Dir::BwdInput => (kc, co, hw),
            Dir::BwdWeight => (co, hw, kc),
        }
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> Group<'a> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    g
}

/// `C = A·B` for row-major operands on the current rayon pool: the GEMM ceiling.
fn bench_sgemm(g: &mut Group, name: &str, (m, k, n): (usize, usize, usize), pool: Option<&rayon::ThreadPool>) {
    let (a, b) = (fill(m * k, 4), fill(k * n, 5));
    let mut c = vec![0.0; m * n];
    let mut run = || matmul(m, k, n, &a, &b, &mut c, true).expect("sized");
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    g.bench_function(name, |bch| {
        bch.iter(|| match pool {
            Some(p) => p.install(&mut run),
            None => run(),
        })
    });
}

fn vgg(c: &mut Criterion) {
    let scratch = ScratchPool::new();
    for &(name, ci, co, size) in VGG {
        let case = Case::new(ci, co, size, 3, 1, 1);
        for dir in [Dir::Fwd, Dir::BwdInput, Dir::BwdWeight] {
            let mut out = vec![0.0; case.out_len(dir)];
            let mut g = group(c, &format!("{name}_{}", dir.name()));
            g.throughput(Throughput::Elements(case.g.flops() as u64));
            g.bench_function("conv", |b| b.iter(|| case.run(dir, &mut out, &scratch)));
            bench_sgemm(&mut g, "sgemm", case.gemm_shape(dir), None);
            g.finish();
        }
    }
}

/// One thread against the default pool on 64→64 @224: the parallel speed-up. Each
/// iteration hops into a 1-thread pool (microseconds, against tens of milliseconds).
fn single_thread(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a 1-thread pool");
    let scratch = ScratchPool::new();
    let case = Case::new(64, 64, 224, 3, 1, 1);
    let mut out = vec![0.0; case.out_len(Dir::Fwd)];
    let mut g = group(c, "vgg_64x64@224_fwd_1thread");
    g.throughput(Throughput::Elements(case.g.flops() as u64));
    g.bench_function("conv", |b| b.iter(|| pool.install(|| case.run(Dir::Fwd, &mut out, &scratch))));
    bench_sgemm(&mut g, "sgemm", case.gemm_shape(Dir::Fwd), Some(&pool));
    g.finish();
}

/// The 1×1 convs on the direct GEMM (weights packed per call here; a tape packs them
/// once) against matrixmultiply's sgemm of the same shape.
fn pointwise(c: &mut Criterion) {
    let scratch = ScratchPool::new();
    for &(name, ci, co, size) in POINTWISE {
        let case = Case::new(ci, co, size, 1, 1, 1);
        for dir in [Dir::Fwd, Dir::BwdInput] {
            let mut out = vec![0.0; case.out_len(dir)];
            let mut g = group(c, &format!("{name}_{}", dir.name()));
            g.throughput(Throughput::Elements(case.g.flops() as u64));
            g.bench_function("conv", |b| b.iter(|| case.run(dir, &mut out, &scratch)));
            bench_sgemm(&mut g, "sgemm", case.gemm_shape(dir), None);
            g.finish();
        }
    }
}

fn depthwise(c: &mut Criterion) {
    let scratch = ScratchPool::new();
    for &(name, ch, k, s, hw) in DEPTHWISE {
        let case = Case::new(ch, ch, hw, k, s, ch);
        for dir in [Dir::Fwd, Dir::BwdInput, Dir::BwdWeight] {
            let mut out = vec![0.0; case.out_len(dir)];
            let mut g = group(c, &format!("{name}_{}", dir.name()));
            g.throughput(Throughput::Elements(case.g.flops() as u64));
            g.bench_function("direct", |b| b.iter(|| case.run(dir, &mut out, &scratch)));
            g.bench_function("naive", |b| {
                b.iter(|| match dir {
                    Dir::Fwd => naive::conv2d_forward(black_box(&case.x), &case.w, None, &case.g),
                    Dir::BwdInput => naive::conv2d_backward_input(black_box(&case.dy), &case.w, &case.g),
                    Dir::BwdWeight => naive::conv2d_backward_weight(black_box(&case.x), &case.dy, &case.g),
                })
            });
            g.finish();
        }
    }
}

fn big_sgemm(c: &mut Criterion) {
    let mut g = group(c, "gemm_2048^3");
    bench_sgemm(&mut g, "sgemm", (2048, 2048, 2048), None);
    g.finish();
}

criterion_group!(benches, vgg, single_thread, pointwise, depthwise, big_sgemm);
criterion_main!(benches);
