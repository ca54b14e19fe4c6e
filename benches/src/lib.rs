//! Shared helpers of the benchmarks live in the bench files; this crate has no API.
