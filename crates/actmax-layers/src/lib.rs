//! # actmax-layers
//!
//! The layer zoo of actmax, the [`Model`] graph (named layers addressed by name or index,
//! forward that stops at the deepest layer asked for), zoo builders
//! ([`zoo::efficientnet_lite0`], [`zoo::vgg16`], [`zoo::mnist_cnn`], [`zoo::apple_counter`]),
//! whole-model loaders for ONNX and Keras 2 `.h5` files, weight loaders for PyTorch `.pth`,
//! safetensors and npz files ([`loaders`]), and training on the tape ([`train`]).

pub mod error;
pub mod layer;
pub mod loaders;
pub mod model;
pub mod train;
pub mod zoo;

pub use error::{LayerError, LoadError, Result};
pub use layer::{Activation, BinaryOp, Conv, Layer, Pool, WindowPadding};
pub use model::{ChannelOrder, InputSpec, LayerInfo, LayerRef, Model, ModelBuilder, Node, Prediction};
pub use train::{Adam, TrainingPass};
