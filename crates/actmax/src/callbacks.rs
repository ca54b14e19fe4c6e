//! Callbacks: what happens after every optimization step.

use actmax_tensor::Tensor;

use crate::Result;

/// One step of a run, as callbacks see it.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    /// Step number, from 0.
    pub step: usize,
    /// Each named loss term (summed over the batch) and its weight.
    pub terms: &'a [(String, f32, f32)],
    /// The weighted total being minimized.
    pub total: f32,
    /// The images `[B, C, H, W]` this step's loss was measured on (before its update), in
    /// the input range.
    pub images: &'a Tensor,
}

/// Called after every step.
pub trait Callback {
    /// One step happened.
    fn on_step(&mut self, step: &Step<'_>) -> Result<()>;
    /// The run ended.
    fn on_end(&mut self) -> Result<()> {
        Ok(())
    }
}

impl<F: FnMut(&Step<'_>) -> Result<()>> Callback for F {
    fn on_step(&mut self, step: &Step<'_>) -> Result<()> {
        self(step)
    }
}

/// keras-vis's `Print`: every named loss and the total, one line per step, on stderr.
#[derive(Debug, Default)]
pub struct Print;

impl Callback for Print {
    fn on_step(&mut self, s: &Step<'_>) -> Result<()> {
        let terms: Vec<String> = s.terms.iter().map(|(n, v, w)| format!("{n}: {v:.5} (×{w})")).collect();
        eprintln!("step {:>4}: total {:.5} | {}", s.step, s.total, terms.join(" | "));
        Ok(())
    }
}

/// Draws `n` in white on a black box at the top-left corner, digits `scale` pixels wide.
pub fn draw_number(img: &mut image::RgbaImage, n: usize, scale: u32) {
    let text = n.to_string();
    let (w, h) = (crate::font::text_width(&text, scale), 7 * scale);
    for y in 0..h.min(img.height()) {
        for x in 0..w.min(img.width()) {
            img.put_pixel(x, y, image::Rgba([0, 0, 0, 255]));
        }
    }
    crate::font::draw_text(img, 0, 0, &text, scale, image::Rgba([255, 255, 255, 255]));
}

/// keras-vis's `GifGenerator`: an animated GIF of the first image of the batch, one frame
/// every `every` steps, with the step number drawn on each frame.
pub struct GifGenerator {
    path: std::path::PathBuf,
    every: usize,
    range: (f32, f32),
    frames: Vec<image::Frame>,
}

impl GifGenerator {
    /// A GIF written to `path` when the run ends; fails now if `path` cannot be written.
    pub fn new(path: impl Into<std::path::PathBuf>, every: usize, range: (f32, f32)) -> Result<Self> {
        let path = path.into();
        crate::images::check_writable(&path)?;
        Ok(Self { path, every: every.max(1), range, frames: Vec::new() })
    }
}

impl Callback for GifGenerator {
    fn on_step(&mut self, s: &Step<'_>) -> Result<()> {
        if !s.step.is_multiple_of(self.every) {
            return Ok(());
        }
        let first = s.images.index_axis(ndarray::Axis(0), 0).to_owned();
        let mut frame = crate::images::to_image(&first, self.range)?.to_rgba8();
        draw_number(&mut frame, s.step, 2);
        self.frames.push(image::Frame::from_parts(frame, 0, 0, image::Delay::from_numer_denom_ms(100, 1)));
        Ok(())
    }

    fn on_end(&mut self) -> Result<()> {
        let err = |e: String| crate::Error::Image { path: self.path.clone(), msg: e };
        let file = std::fs::File::create(&self.path).map_err(|e| err(e.to_string()))?;
        let mut enc = image::codecs::gif::GifEncoder::new(file);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite).map_err(|e| err(e.to_string()))?;
        enc.encode_frames(std::mem::take(&mut self.frames)).map_err(|e| err(e.to_string()))
    }
}
