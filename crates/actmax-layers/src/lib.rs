#![doc = include_str!("../README.md")]

pub mod error;
pub mod layer;
pub mod loaders;
pub mod model;
pub mod train;
pub mod zoo;

pub use error::{LayerError, LoadError, Result};
pub use layer::{Activation, BinaryOp, Conv, Layer, Pool, ReduceOp, UnaryOp, WindowPadding};
pub use model::{ChannelOrder, InputSpec, LayerInfo, LayerRef, Model, ModelBuilder, Node, Prediction, StepTime};
pub use train::{Adam, TrainingPass};
