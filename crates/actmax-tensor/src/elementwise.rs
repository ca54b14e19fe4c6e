//! Element-wise maps over tape values, parallel on rayon's pool once a tensor is big
//! enough to pay for it (EfficientNet's activations hold millions of elements; its ReLU6s
//! and batch norms would otherwise run on one core next to parallel convs). Outputs come
//! from the tape's [`ScratchPool`]: every element is written, so a recycled buffer needs
//! no zeroing.

use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;

use crate::scratch::ScratchPool;
use crate::tensor::Tensor;

/// Below this many elements a map runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 13;

fn slice(t: &Tensor) -> &[f32] {
    t.as_slice().expect("tape values are in standard layout")
}

fn build(shape: &[usize], v: Vec<f32>) -> Tensor {
    ArrayD::from_shape_vec(IxDyn(shape), v).expect("one output per input element")
}

/// `f(x)` for every element.
pub(crate) fn map1(pool: &ScratchPool, x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
    let xs = slice(x);
    let mut out = pool.take(xs.len());
    if xs.len() < PARALLEL_MIN {
        out.iter_mut().zip(xs).for_each(|(o, &a)| *o = f(a));
    } else {
        out.par_chunks_mut(CHUNK).zip(xs.par_chunks(CHUNK)).for_each(|(o, a)| {
            o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a));
        });
    }
    build(x.shape(), out)
}

/// `a = f(a, b)` for every pair of elements of two same-shaped tensors, in place: no
/// new buffer (a gradient masked where it already is, in cache).
pub(crate) fn zip_in_place(a: &mut Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) {
    debug_assert_eq!(a.shape(), b.shape());
    let (xa, xb) = (a.as_slice_mut().expect("tape values are in standard layout"), slice(b));
    let run = |a: &mut [f32], b: &[f32]| a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b));
    if xa.len() < PARALLEL_MIN {
        run(xa, xb);
    } else {
        xa.par_chunks_mut(CHUNK).zip(xb.par_chunks(CHUNK)).for_each(|(a, b)| run(a, b));
    }
}

/// `f(a, b)` for every pair of elements of two same-shaped tensors.
pub(crate) fn map2(pool: &ScratchPool, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Tensor {
    debug_assert_eq!(a.shape(), b.shape());
    let (xa, xb) = (slice(a), slice(b));
    let mut out = pool.take(xa.len());
    let run = |o: &mut [f32], a: &[f32], b: &[f32]| o.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = f(a, b));
    if xa.len() < PARALLEL_MIN {
        run(&mut out, xa, xb);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(xa.par_chunks(CHUNK))
            .zip(xb.par_chunks(CHUNK))
            .for_each(|((o, a), b)| run(o, a, b));
    }
    build(a.shape(), out)
}

/// `f(a, b, c)` for every triple of elements of three same-shaped tensors.
pub(crate) fn map3(
    pool: &ScratchPool,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> Tensor {
    debug_assert!(a.shape() == b.shape() && b.shape() == c.shape());
    let (xa, xb, xc) = (slice(a), slice(b), slice(c));
    let mut out = pool.take(xa.len());
    let run = |o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]| {
        o.iter_mut().zip(a).zip(b).zip(c).for_each(|(((o, &a), &b), &c)| *o = f(a, b, c))
    };
    if xa.len() < PARALLEL_MIN {
        run(&mut out, xa, xb, xc);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(xa.par_chunks(CHUNK))
            .zip(xb.par_chunks(CHUNK))
            .zip(xc.par_chunks(CHUNK))
            .for_each(|(((o, a), b), c)| run(o, a, b, c));
    }
    build(a.shape(), out)
}

/// `f(channel, x)` over an `[N, C, ...]` tensor, one `(n, c)` plane per task.
pub(crate) fn map_channels(pool: &ScratchPool, x: &Tensor, f: impl Fn(usize, f32) -> f32 + Sync) -> Tensor {
    let (c, inner) = (x.shape()[1], x.shape()[2..].iter().product::<usize>().max(1));
    let xs = slice(x);
    let mut out = pool.take(xs.len());
    let run = |(i, (o, a)): (usize, (&mut [f32], &[f32]))| o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(i % c, a));
    if xs.len() < PARALLEL_MIN {
        out.chunks_mut(inner).zip(xs.chunks(inner)).enumerate().for_each(run);
    } else {
        out.par_chunks_mut(inner).zip(xs.par_chunks(inner)).enumerate().for_each(run);
    }
    build(x.shape(), out)
}
