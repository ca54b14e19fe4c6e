//! # actmax-layers
//!
//! The layer zoo of actmax, the [`Model`] graph (named layers addressed by name or index,
//! forward that stops at the deepest layer asked for), zoo builders
//! ([`zoo::efficientnet_lite0`], [`zoo::vgg16`], [`zoo::mnist_cnn`], [`zoo::apple_counter`]),
//! whole-model loaders for ONNX and Keras 2 `.h5` files, weight loaders for PyTorch `.pth`,
//! safetensors and npz files ([`loaders`]), and training on the tape ([`train`]).
//!
//! ## Adding a layer
//! The compiler walks you through most of it: every `match` over [`Layer`] that says
//! what a layer holds is exhaustive, so a new variant does not compile until it has
//! - its name in `Layer::type_name`, its input count in `Layer::arity`, its activation (or
//!   none) in `activation_mut`, its parameters (or none) in `Layer::params_mut` — which
//!   is also what `param_count` counts and what loaders fill — and its cost in `flops`;
//! - its output on the tape in `Layer::forward_bound` and its shape rule in
//!   `Layer::output_shape` (a new primitive also needs a tape op with its backward in
//!   `actmax-tensor`, checked against finite differences in its `tests/gradients.rs`).
//!
//! Then, where files should produce it: the ONNX op in `loaders/onnx/ops.rs`
//! (`convert`'s match), the Keras class in `loaders/keras.rs`.

pub mod error;
pub mod layer;
pub mod loaders;
pub mod model;
pub mod train;
pub mod zoo;

pub use error::{LayerError, LoadError, Result};
pub use layer::{Activation, BinaryOp, Conv, Layer, Pool, ReduceOp, UnaryOp, WindowPadding};
pub use model::{ChannelOrder, InputSpec, LayerInfo, LayerRef, Model, ModelBuilder, Node, Prediction};
pub use train::{Adam, TrainingPass};
