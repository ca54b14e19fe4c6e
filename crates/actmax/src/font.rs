//! A 3×5 pixel font (digits, letters, a little punctuation) for step numbers on GIF
//! frames and captions on contact sheets — enough to read, no font files needed.

use image::{Rgba, RgbaImage};

/// Rows of a glyph, 3 bits each (bit 2 = left column).
fn glyph(c: char) -> [u8; 5] {
    const DIGITS: [[u8; 5]; 10] = [
        [7, 5, 5, 5, 7],
        [2, 6, 2, 2, 7],
        [7, 1, 7, 4, 7],
        [7, 1, 7, 1, 7],
        [5, 5, 7, 1, 1],
        [7, 4, 7, 1, 7],
        [7, 4, 7, 5, 7],
        [7, 1, 1, 1, 1],
        [7, 5, 7, 5, 7],
        [7, 5, 7, 1, 7],
    ];
    const LETTERS: [[u8; 5]; 26] = [
        [2, 5, 7, 5, 5],
        [6, 5, 6, 5, 6],
        [3, 4, 4, 4, 3],
        [6, 5, 5, 5, 6],
        [7, 4, 6, 4, 7],
        [7, 4, 6, 4, 4],
        [3, 4, 5, 5, 3],
        [5, 5, 7, 5, 5],
        [7, 2, 2, 2, 7],
        [1, 1, 1, 5, 2],
        [5, 5, 6, 5, 5],
        [4, 4, 4, 4, 7],
        [5, 7, 7, 5, 5],
        [6, 5, 5, 5, 5],
        [2, 5, 5, 5, 2],
        [6, 5, 6, 4, 4],
        [2, 5, 5, 6, 3],
        [6, 5, 6, 5, 5],
        [3, 4, 2, 1, 6],
        [7, 2, 2, 2, 2],
        [5, 5, 5, 5, 7],
        [5, 5, 5, 5, 2],
        [5, 5, 7, 7, 5],
        [5, 5, 2, 5, 5],
        [5, 5, 2, 2, 2],
        [7, 1, 2, 4, 7],
    ];
    match c.to_ascii_uppercase() {
        d @ '0'..='9' => DIGITS[(d as u8 - b'0') as usize],
        l @ 'A'..='Z' => LETTERS[(l as u8 - b'A') as usize],
        '-' => [0, 0, 7, 0, 0],
        '.' | ',' => [0, 0, 0, 0, 2],
        _ => [0; 5],
    }
}

/// Pixel width of `text` at `scale` (4 columns a character, 1 of them spacing, plus a border).
pub fn text_width(text: &str, scale: u32) -> u32 {
    (text.chars().count() as u32 * 4 + 1) * scale
}

/// Draws `text` in `color` with its top-left corner at `(x, y)`, clipped to the image.
pub fn draw_text(img: &mut RgbaImage, x: u32, y: u32, text: &str, scale: u32, color: Rgba<u8>) {
    for (k, ch) in text.chars().enumerate() {
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..3u32 {
                if bits >> (2 - col) & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (x + (1 + k as u32 * 4 + col) * scale + dx, y + (1 + row as u32) * scale + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, color);
                        }
                    }
                }
            }
        }
    }
}
