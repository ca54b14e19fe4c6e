//! `cargo xtask maco-template`: the natural-image amplitude spectrum MaCo keeps fixed,
//! computed from the photos the project fetches (scikit-image's coffee, chelsea, astronaut;
//! scikit-learn's china and flower): random square crops resized to 224×224, colours
//! decorrelated with the inverse of lucid's ImageNet colour matrix (the space the
//! parameterization works in), Hann-windowed, `|rfft2|` (orthonormal) averaged over every crop.
//! Writes `models/maco_magnitude_224.f32` (3 × 224 × 113 little-endian f32).

use image::imageops::FilterType;

use crate::fetch::{ensure, ARTIFACTS};
use crate::workspace_root;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIZE: usize = 224;
const CROPS_PER_PHOTO: usize = 48;

/// lucid's colour matrix, normalized by its largest column norm (as in actmax's param.rs;
/// written again here so the template does not depend on the code it feeds).
const COLOR: [[f32; 3]; 3] = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

fn photos() -> Result<Vec<std::path::PathBuf>, String> {
    let root = workspace_root();
    let mut out: Vec<_> =
        ["coffee.png", "chelsea.png", "astronaut.png"].iter().map(|f| root.join("testdata").join(f)).collect();
    for cached in ["china.jpg", "flower.jpg"] {
        let a = ARTIFACTS.iter().find(|a| a.cached == cached).expect("listed in fetch.rs");
        out.push(ensure(a)?);
    }
    Ok(out)
}

fn inverse_color() -> [[f32; 3]; 3] {
    let m = COLOR.map(|r| r.map(|v| v as f64 / 0.461_952_4));
    // The adjugate over the determinant; cofactor (r, c) from the cyclic minors.
    let cof = |r: usize, c: usize| {
        let (r1, r2, c1, c2) = ((r + 1) % 3, (r + 2) % 3, (c + 1) % 3, (c + 2) % 3);
        m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]
    };
    let det: f64 = (0..3).map(|c| m[0][c] * cof(0, c)).sum();
    std::array::from_fn(|r| std::array::from_fn(|c| (cof(c, r) / det) as f32))
}

/// `cargo xtask maco-template`.
pub fn run() -> Result<(), String> {
    let inv = inverse_color();
    let wc = SIZE / 2 + 1;
    let mut sum = vec![0.0f64; 3 * SIZE * wc];
    let mut rng = StdRng::seed_from_u64(0x3AC0_7E3B_1A7E_0001);
    let mut count = 0usize;
    let list = photos()?;
    // A Hann window: a crop's edges are not periodic, and without it their jumps put a
    // bright cross on the frequency axes that MaCo would turn into stripes.
    let hann: Vec<f32> =
        (0..SIZE).map(|i| (std::f32::consts::PI * (i as f32 + 0.5) / SIZE as f32).sin().powi(2)).collect();
    for path in &list {
        let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?.to_rgb8();
        let (w, h) = img.dimensions();
        let short = w.min(h) as f32;
        for _ in 0..CROPS_PER_PHOTO {
            let side = (short * (0.35 + 0.65 * rng.random::<f32>())) as u32;
            let x0 = ((w - side) as f32 * rng.random::<f32>()) as u32;
            let y0 = ((h - side) as f32 * rng.random::<f32>()) as u32;
            let crop = image::imageops::crop_imm(&img, x0, y0, side, side).to_image();
            let crop = image::imageops::resize(&crop, SIZE as u32, SIZE as u32, FilterType::Triangle);
            let mut planes = vec![0.0f32; 3 * SIZE * SIZE];
            for (i, p) in crop.pixels().enumerate() {
                let u = p.0.map(|v| v as f32 / 255.0 - 0.5);
                let win = hann[i / SIZE] * hann[i % SIZE];
                for (c, row) in inv.iter().enumerate() {
                    planes[c * SIZE * SIZE + i] = win * (row[0] * u[0] + row[1] * u[1] + row[2] * u[2]);
                }
            }
            let z = actmax_tensor::fft::rfft2(&planes, 3, SIZE, SIZE);
            for (s, p) in sum.iter_mut().zip(z.chunks_exact(2)) {
                *s += ((p[0] * p[0] + p[1] * p[1]) as f64).sqrt();
            }
            count += 1;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / count as f64) as f32).collect();
    let bytes: Vec<u8> = mean.iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = workspace_root().join("models/maco_magnitude_224.f32");
    std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    let energy: Vec<f64> = (0..3).map(|c| mean[c * SIZE * wc..][..SIZE * wc].iter().map(|&v| v as f64).sum()).collect();
    println!(
        "{count} crops of {} photos → {} ({} bytes); mean |F| per decorrelated channel: {:.3} {:.3} {:.3}",
        list.len(),
        out.display(),
        bytes.len(),
        energy[0] / (SIZE * wc) as f64,
        energy[1] / (SIZE * wc) as f64,
        energy[2] / (SIZE * wc) as f64
    );
    Ok(())
}
