//! The tensor type every module of the engine shares, and the return of its buffers to a
//! scratch pool — kept apart from the tape so kernels need nothing of the tape.

use ndarray::ArrayD;

use crate::scratch::ScratchPool;

/// The tensor type of the engine: a dynamic-rank `f32` array, always in standard
/// (row-major, contiguous) layout on the tape.
pub type Tensor = ArrayD<f32>;

/// Gives a tensor's buffer back to a pool (when it starts at the buffer's start).
pub(crate) fn recycle(pool: &ScratchPool, t: Tensor) {
    if let (v, Some(0) | None) = t.into_raw_vec_and_offset() {
        pool.give(v);
    }
}
