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
    /// The buffers (by address) handed out since the last [`ScratchPool::trim_to_demand`],
    /// and those handed out between the two calls before.
    used: Mutex<[HashSet<usize>; 2]>,
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
            // A buffer of exactly this length first: the same graph asks for the same
            // lengths every iteration, and a buffer that kept its length is handed out
            // without a zero-fill (growing a shortened one would write it twice). Else the
            // smallest that fits, but never one more than twice as large: shortening a
            // big buffer for a small request makes the next big request fill it again,
            // every iteration; a new exact buffer instead is allocated once. Among equals,
            // the one given back last: it is the likeliest to still be in cache.
            let best = bufs
                .iter()
                .enumerate()
                .rev()
                .filter(|(_, b)| b.capacity() >= len && b.capacity() / 2 <= len)
                .min_by_key(|(_, b)| (b.len() != len, b.len() < len, b.capacity()))
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
            self.used.lock().unwrap_or_else(|e| e.into_inner())[0].insert(buf.as_ptr() as usize);
        }
        buf
    }

    /// Returns a buffer to the pool.
    pub fn give(&self, buf: Vec<f32>) {
        if buf.capacity() > 0 {
            self.bufs.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        }
    }

    /// Keeps the buffers handed out since the last call or between the two before, drops
    /// the others, then starts recording again. Called once per iteration (when every
    /// buffer is back), it keeps what an iteration uses: a backward pass's short-lived
    /// gradients share a few buffers, and the values a tape gives back without having
    /// taken them (those its ops did not draw from the pool) are let go unless an op took
    /// them again. Two iterations, not one: a tape that alternates a forward-only
    /// iteration with a forward-and-backward one (a batch too large to keep every
    /// image's graph runs each image's forward again before its backward) would
    /// otherwise drop the gradients' buffers every other time and allocate and zero
    /// them again (2.4 % of the main job's samples went to that `memset`).
    pub fn trim_to_demand(&self) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let keep = |b: &Vec<f32>| used.iter().any(|u| u.contains(&(b.as_ptr() as usize)));
        self.bufs.lock().unwrap_or_else(|e| e.into_inner()).retain(keep);
        used[1] = std::mem::take(&mut used[0]);
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

#[cfg(test)]
mod tests {
    use super::ScratchPool;

    /// One iteration of a graph that asks for a big buffer, gives it back, then asks for a
    /// small one: the buffers it got and what the big one held when handed out.
    fn iteration(pool: &ScratchPool) -> (usize, usize, bool) {
        let mut big = pool.take(1000);
        let kept = big.iter().all(|&v| v == 7.0);
        big.iter_mut().for_each(|v| *v = 7.0);
        let big_at = big.as_ptr() as usize;
        pool.give(big);
        let small = pool.take(10);
        let small_at = small.as_ptr() as usize;
        pool.give(small);
        pool.trim_to_demand();
        (big_at, small_at, kept)
    }

    #[test]
    fn the_steady_state_neither_allocates_nor_zero_fills() {
        let pool = ScratchPool::new();
        let (big_at, small_at, _) = iteration(&pool);
        assert_ne!(big_at, small_at, "a 10-float request shortened the 1000-float buffer");
        for _ in 0..3 {
            // Same buffers, and the big one's contents survive: it was not shortened by
            // the small request and zero-filled back to length by the next big one.
            assert_eq!(iteration(&pool), (big_at, small_at, true));
        }
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn a_buffer_at_most_twice_as_large_is_shortened_and_then_grown_back() {
        let pool = ScratchPool::new();
        let mut b = pool.take(100);
        b.iter_mut().for_each(|v| *v = 1.0);
        let at = b.as_ptr() as usize;
        pool.give(b);
        let short = pool.take(60);
        assert_eq!((short.as_ptr() as usize, short.len()), (at, 60));
        pool.give(short);
        let long = pool.take(100);
        assert_eq!((long.as_ptr() as usize, long.len()), (at, 100));
        assert!(long[..60].iter().all(|&v| v == 1.0), "the kept part is handed out as it was");
        assert!(long[60..].iter().all(|&v| v == 0.0), "the grown part is zeroed, not uninitialized");
    }
}
