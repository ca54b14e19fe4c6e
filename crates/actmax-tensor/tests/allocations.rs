//! The steady state of a visualization allocates no large buffers: a tape reused with
//! `reset` takes every conv, activation and gradient buffer from its pool.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use actmax_tensor::{Conv2dParams, Padding2d, ReluKind, Tape, Tensor};

/// Counts allocations of at least [`LARGE`] bytes (activations, not bookkeeping).
struct Counting;
static LARGE_ALLOCS: AtomicUsize = AtomicUsize::new(0);
const LARGE: usize = 64 << 10;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() >= LARGE {
            LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() >= LARGE {
            LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new >= LARGE {
            LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One step of a small conv net: forward, backward to the input.
fn step(
    tape: &mut Tape,
    x: &Tensor,
    w1: &std::sync::Arc<Tensor>,
    w2: &std::sync::Arc<Tensor>,
    dw: &std::sync::Arc<Tensor>,
) {
    tape.reset();
    let x = tape.variable(x.clone());
    let (w1, w2, dw) =
        (tape.constant_shared(w1.clone()), tape.constant_shared(w2.clone()), tape.constant_shared(dw.clone()));
    let same = Conv2dParams::new().padding(Padding2d::uniform(1));
    let y = tape.conv2d_activated(x, w1, None, same, ReluKind::Relu6).unwrap();
    let y = tape.conv2d(y, dw, None, same.groups(16)).unwrap();
    let y = tape.relu6(y).unwrap();
    let y = tape.conv2d_activated(y, w2, None, Conv2dParams::new(), ReluKind::Relu).unwrap();
    let l = tape.mean_all(y).unwrap();
    tape.backward(l).unwrap();
}

#[test]
fn steady_state_steps_allocate_almost_no_large_buffers() {
    let x = Tensor::from_shape_fn(vec![1, 16, 64, 64], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 11) as f32 / 11.0);
    let w1 = std::sync::Arc::new(Tensor::from_shape_fn(vec![16, 16, 3, 3], |i| {
        ((i[0] + i[1] * 3 + i[2] + i[3]) % 5) as f32 / 20.0 - 0.1
    }));
    let dw =
        std::sync::Arc::new(Tensor::from_shape_fn(vec![16, 1, 3, 3], |i| ((i[0] + i[2] * 2 + i[3]) % 3) as f32 / 5.0));
    let w2 =
        std::sync::Arc::new(Tensor::from_shape_fn(vec![32, 16, 1, 1], |i| ((i[0] * 3 + i[1]) % 7) as f32 / 14.0 - 0.2));
    let mut tape = Tape::new();
    for _ in 0..3 {
        step(&mut tape, &x, &w1, &w2, &dw);
    }
    let before = LARGE_ALLOCS.load(Ordering::Relaxed);
    let steps = 10;
    for _ in 0..steps {
        step(&mut tape, &x, &w1, &w2, &dw);
    }
    let per_step = (LARGE_ALLOCS.load(Ordering::Relaxed) - before) as f64 / steps as f64;
    // Each step copies the input into its leaf (one buffer, the caller's) and the input's
    // gradient leaves with the caller; every conv, activation and gradient in between (a
    // dozen buffers of 256 KiB or more) comes from the pool.
    assert!(per_step <= 2.5, "{per_step} large allocations per steady-state step");
}
