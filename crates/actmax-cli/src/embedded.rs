//! The shipped models' weights inside the binary (cargo feature `embedded-models`, on by
//! default): an installed `actmax` needs no file beside it and no path into the source
//! tree it was built from.

/// `(zoo name, safetensors bytes)` of every shipped model.
#[cfg(feature = "embedded-models")]
pub const MODELS: &[(&str, &[u8])] = &[
    ("efficientnet_lite0", include_bytes!("../../../models/efficientnet_lite0.safetensors")),
    ("mnist_cnn", include_bytes!("../../../models/mnist_cnn.safetensors")),
    ("mnist_mlp", include_bytes!("../../../models/mnist_mlp.safetensors")),
    ("apple_counter", include_bytes!("../../../models/apple_counter.safetensors")),
];

/// Without the feature: none (models come from disk).
#[cfg(not(feature = "embedded-models"))]
pub const MODELS: &[(&str, &[u8])] = &[];

/// The embedded weights of zoo model `name`.
pub fn weights(name: &str) -> Option<&'static [u8]> {
    MODELS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
