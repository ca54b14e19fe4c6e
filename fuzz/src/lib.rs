#![doc = include_str!("../README.md")]

pub mod alloc;
pub mod engine;
pub mod mutate;
pub mod seeds;
pub mod targets;
