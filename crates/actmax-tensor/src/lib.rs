#![doc = include_str!("../README.md")]

pub mod backprop_modes;
mod backward;
pub mod conv;
mod elementwise;
pub mod error;
pub mod fft;
pub mod gemm;
pub mod geometry;
mod op;
mod ops;
pub mod optim;
mod packs;
pub mod pool;
pub mod scratch;
pub mod shapes;
mod simd;
mod smoothness;
mod tape;
mod tensor;
mod threads;
pub mod warp;

pub use backprop_modes::{BackpropHook, BackpropMode, PassBand, ReluGrad, ReluKind};
pub use conv::{ConvKernel, ConvPlan};
pub use error::{Result, TensorError};
pub use geometry::{Conv2dParams, ConvGeometry, Padding2d, Pool2dParams};
pub use op::{PadMode, Var};
pub use ops::{broadcast_shape, ConvStage};
pub use optim::{AdamConfig, AdamState};
pub use scratch::ScratchPool;
pub use tape::{Gradients, Tape};
pub use tensor::Tensor;
pub use threads::on_worker_thread;
pub use warp::{Affine, WarpBorder};
