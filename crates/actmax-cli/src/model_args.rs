//! The model options every command shares: which model, and — for imported models whose
//! files do not say — how an image becomes its input.

use actmax_layers::{zoo, Model};

/// `--model`, `--arch` and the input preprocessing overrides.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A zoo name (efficientnet_lite0, vgg16, mnist_cnn, apple_counter), a whole model
    /// (.onnx, Keras .h5) or a weights file for a zoo architecture.
    #[arg(long, default_value = "efficientnet_lite0")]
    pub model: String,
    /// Zoo architecture of a weights file (guessed from its name otherwise).
    #[arg(long)]
    pub arch: Option<String>,
    /// Pixel range LOW,HIGH of the images the model takes (e.g. 0,255 for fer's model).
    #[arg(long, allow_hyphen_values = true)]
    pub pixel_range: Option<String>,
    /// Mean subtracted from the pixels, one value or one per channel (e.g. 127.5).
    #[arg(long, allow_hyphen_values = true)]
    pub mean: Option<String>,
    /// Divisor after the mean, one value or one per channel (e.g. 127.5).
    #[arg(long)]
    pub std: Option<String>,
}

fn numbers(flag: &str, s: &str) -> Result<Vec<f32>, String> {
    s.split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|_| format!("{flag}: `{v}` is not a number")))
        .collect::<Result<Vec<f32>, String>>()
        .and_then(|v| if v.iter().all(|x| x.is_finite()) { Ok(v) } else { Err(format!("{flag}: not finite")) })
}

/// `LOW,HIGH` with LOW < HIGH, both finite (`--input-range`, `--pixel-range`).
pub fn parse_range(flag: &str, s: &str) -> Result<(f32, f32), String> {
    match numbers(flag, s)?[..] {
        [lo, hi] if lo < hi => Ok((lo, hi)),
        _ => Err(format!("{flag} wants LOW,HIGH (e.g. 0,255); LOW must be below HIGH, got `{s}`")),
    }
}

impl ModelArgs {
    /// Loads the model and applies the preprocessing overrides.
    pub fn load(&self) -> Result<Model, String> {
        let mut model = zoo::load(&self.model, self.arch.as_deref()).map_err(|e| e.to_string())?;
        if self.pixel_range.is_none() && self.mean.is_none() && self.std.is_none() {
            return Ok(model);
        }
        let mut spec = model.input_spec().clone();
        if let Some(r) = &self.pixel_range {
            spec.range = parse_range("--pixel-range", r)?;
        }
        if let Some(m) = &self.mean {
            spec.mean = numbers("--mean", m)?;
        }
        if let Some(s) = &self.std {
            spec.std = numbers("--std", s)?;
        }
        model.set_input_spec(spec).map_err(|e| e.to_string())?;
        Ok(model)
    }
}
