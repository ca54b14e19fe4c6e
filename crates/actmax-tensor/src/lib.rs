//! # actmax-tensor
//!
//! The autodiff core of actmax: a reverse-mode [`Tape`] over `f32` tensors (NCHW for
//! images) and the CPU kernels behind it — conv2d by a packing-free GEMM (pointwise and
//! im2col) or Winograd (3×3), depthwise conv by direct loops, pooling — parallel on
//! rayon's pool.
//!
//! Activation maximization runs one graph hundreds of times and needs only the gradient
//! with respect to the input, so weights go on the tape as constants
//! ([`Tape::constant_shared`], no copy) and `backward` skips every gradient nobody asked
//! for; [`Tape::reset`] keeps the buffers and the packed conv weights between
//! iterations.
//!
//! ```
//! use actmax_tensor::{Conv2dParams, Padding2d, Tape, Tensor};
//! let mut tape = Tape::new();
//! let x = tape.variable(Tensor::ones(vec![1, 3, 8, 8]));
//! let w = tape.constant(Tensor::ones(vec![4, 3, 3, 3]));
//! let y = tape.conv2d(x, w, None, Conv2dParams::new().padding(Padding2d::uniform(1))).unwrap();
//! let y = tape.relu(y).unwrap();
//! let loss = tape.mean_all(y).unwrap();
//! let g = tape.backward(loss).unwrap();
//! assert_eq!(g.get(x).unwrap().shape(), &[1, 3, 8, 8]);
//! assert!(g.get(w).is_none()); // a constant: no weight gradient was computed
//! ```

pub mod backprop;
mod backward;
pub mod conv;
mod elementwise;
pub mod error;
pub mod fft;
pub mod gemm;
pub mod geometry;
mod ops;
pub mod optim;
mod packs;
pub mod pool;
pub mod scratch;
mod tape;
pub mod warp;

pub use backprop::{BackpropHook, BackpropMode, ReluGrad, ReluKind};
pub use conv::{ConvKernel, ConvPlan};
pub use error::{Result, TensorError};
pub use geometry::{Conv2dParams, ConvGeometry, Padding2d, Pool2dParams};
pub use ops::broadcast_shape;
pub use optim::{AdamConfig, AdamState};
pub use scratch::ScratchPool;
pub use tape::{Gradients, PadMode, Tape, Tensor, Var};
pub use warp::{Affine, WarpBorder};
