//! Reusable scratch buffers, owned by whoever runs the kernels (normally a `Tape`).
//!
//! Activation maximization runs the same graph hundreds of times; the im2col buffers of
//! one iteration are handed back here and reused by the next instead of re-allocated.
//! There is no global pool: each tape owns one, so two models never share state.

use std::collections::HashSet;
use std::sync::Mutex;

/// A pool of `f32` buffers that kernels borrow and give back.
#[derive(Debug, Default)]
pub struct ScratchPool {
    bufs: Mutex<Vec<Vec<f32>>>,
    /// The buffers (by address) handed out since the last [`ScratchPool::trim_to_demand`].
    used: Mutex<HashSet<usize>>,
}

impl ScratchPool {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer of exactly `len` elements with unspecified (but initialized) contents:
    /// callers overwrite every element they read.
    pub fn take(&self, len: usize) -> Vec<f32> {
        let reused = {
            let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
            // Prefer the smallest buffer that is large enough, and of those the one given
            // back last: it is the likeliest to still be in cache.
            let best = bufs
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            // None fits: a new buffer, not a smaller one grown (that would re-zero it,
            // and leave the next request of its size without a buffer: a cascade of
            // re-allocations every iteration instead of none in the steady state).
            best.map(|i| bufs.remove(i))
        };
        let buf = match reused {
            Some(mut buf) => {
                if buf.len() >= len {
                    buf.truncate(len);
                } else {
                    buf.resize(len, 0.0);
                }
                buf
            }
            None => vec![0.0; len],
        };
        if buf.capacity() > 0 {
            self.used.lock().unwrap_or_else(|e| e.into_inner()).insert(buf.as_ptr() as usize);
        }
        buf
    }

    /// Returns a buffer to the pool.
    pub fn give(&self, buf: Vec<f32>) {
        if buf.capacity() > 0 {
            self.bufs.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        }
    }

    /// Keeps the buffers handed out since the last call and drops the others, then starts
    /// recording again. Called once per iteration (when every buffer is back), it keeps
    /// what one iteration uses: a backward pass's short-lived gradients share a few
    /// buffers, and the values a tape gives back without having taken them (those its
    /// ops did not draw from the pool) are let go unless an op took them again.
    pub fn trim_to_demand(&self) {
        let used = std::mem::take(&mut *self.used.lock().unwrap_or_else(|e| e.into_inner()));
        self.bufs.lock().unwrap_or_else(|e| e.into_inner()).retain(|b| used.contains(&(b.as_ptr() as usize)));
    }

    /// Floats held in the pool's buffers (for tests and memory accounting).
    pub fn floats(&self) -> usize {
        self.bufs.lock().unwrap_or_else(|e| e.into_inner()).iter().map(Vec::capacity).sum()
    }

    /// Number of buffers held (for tests).
    pub fn len(&self) -> usize {
        self.bufs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no buffer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A buffer borrowed from a [`ScratchPool`], handed back when dropped.
pub struct Lease<'a> {
    pool: &'a ScratchPool,
    buf: Vec<f32>,
}

impl ScratchPool {
    /// Borrows a buffer of `len` elements (contents unspecified) until the lease drops.
    pub fn lease(&self, len: usize) -> Lease<'_> {
        Lease { pool: self, buf: self.take(len) }
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}
