//! `cargo xtask quality`: how readable each preset's class images are, judged the way a
//! user would — on the saved 8-bit PNGs, by the model they were made on *under small
//! perturbations*, and by a model that took no part in the optimization
//! (EfficientNet-Lite1, loaded from its `.pth` by actmax's own loader).
//!
//! Per preset: Lite0 top-1 on the image and under four perturbations (2× down- and
//! up-scale, Gaussian blur σ 1, an 80 % centre crop resized back, a roll by 16 px);
//! Lite1 on the image resized to 240 (top-1, top-5, mean target probability) and on the
//! 80 % centre crop (the class must survive zooming in); seconds per image. PNGs, a
//! labelled sheet per preset and the first five classes of every preset side by side
//! land in `.cache/quality/`, a summary in `summary.json`.

use std::path::Path;

use actmax_layers::{zoo, Model};
use image::imageops::FilterType;
use image::DynamicImage;
use serde_json::json;

use crate::fetch::{ensure, ARTIFACTS};
use crate::workspace_root;

/// The 20 classes of the issue: animals, objects and scenes spread over ImageNet.
pub const CLASSES: [usize; 20] =
    [1, 9, 20, 94, 130, 207, 285, 309, 323, 340, 386, 417, 430, 471, 504, 530, 817, 933, 949, 980];

/// `cargo xtask quality`: each preset on ImageNet classes, judged by a held-out model.
#[derive(clap::Args)]
pub struct Args {
    /// Presets to run, comma-separated (all by default).
    #[arg(long, value_delimiter = ',', default_values_t = actmax::PRESETS.iter().map(|s| s.to_string()))]
    presets: Vec<String>,
    /// ImageNet classes, comma-separated (the 20 of the README by default).
    #[arg(long, value_delimiter = ',', default_values_t = CLASSES)]
    classes: Vec<usize>,
    /// Steps per image (each preset's own by default).
    #[arg(long)]
    steps: Option<usize>,
    /// Learning rate (each preset's own by default).
    #[arg(long)]
    lr: Option<f32>,
    /// Random crops per step (each preset's own by default).
    #[arg(long)]
    crops: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 5)]
    batch: usize,
}

fn check(a: &Args) -> Result<(), String> {
    for p in &a.presets {
        actmax::Options::preset(p).map_err(|e| e.to_string())?;
    }
    if a.batch == 0 || a.classes.iter().any(|&c| c >= 1000) {
        return Err("--batch must be >= 1 and classes below 1000".into());
    }
    Ok(())
}

/// The held-out judge.
pub fn lite1() -> Result<Model, String> {
    let a = ARTIFACTS.iter().find(|a| a.cached.starts_with("efficientnet-lite1")).expect("listed in fetch.rs");
    let path = ensure(a)?;
    zoo::load(path.to_str().ok_or("non-UTF-8 cache path")?, Some("efficientnet_lite1")).map_err(|e| e.to_string())
}

/// The four perturbations of the issue, by name.
fn perturbations(img: &DynamicImage) -> Vec<(&'static str, DynamicImage)> {
    let (w, h) = (img.width(), img.height());
    let down_up = img.resize_exact(w / 2, h / 2, FilterType::Triangle).resize_exact(w, h, FilterType::Triangle);
    let blur = DynamicImage::ImageRgb8(image::imageops::blur(&img.to_rgb8(), 1.0));
    let rgb = img.to_rgb8();
    let roll = DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        *rgb.get_pixel((x + w - 16) % w, (y + h - 16) % h)
    }));
    vec![("down-up 2x", down_up), ("blur 1", blur), ("crop 80%", centre_crop(img, 0.8)), ("roll 16", roll)]
}

fn centre_crop(img: &DynamicImage, frac: f32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (cw, ch) = ((w as f32 * frac).round() as u32, (h as f32 * frac).round() as u32);
    img.crop_imm((w - cw) / 2, (h - ch) / 2, cw, ch).resize_exact(w, h, FilterType::CatmullRom)
}

/// Rank (0 = top-1) and probability of `class` for `img` resized exactly to the model's input.
pub fn judge_rank(model: &Model, img: &DynamicImage, class: usize) -> Result<(usize, f32), String> {
    let [_, h, w] = model.input_spec().shape;
    let sized = img.resize_exact(w as u32, h as u32, FilterType::CatmullRom);
    let x = actmax::images::from_image(&sized, model.input_spec());
    let all = model.top_k(&x, 1000).map_err(|e| e.to_string())?;
    let rank = all.iter().position(|p| p.class == class).unwrap_or(all.len());
    Ok((rank, all.get(rank).map_or(0.0, |p| p.probability)))
}

#[derive(Default)]
struct Score {
    n: usize,
    white_top1: usize,
    perturbed_top1: usize,
    perturbed_n: usize,
    held_top1: usize,
    held_top5: usize,
    held_prob: f64,
    held_zoom_top1: usize,
    seconds: f64,
}

/// `cargo xtask quality`.
pub fn run(a: Args) -> Result<(), String> {
    check(&a)?;
    let lite0 = zoo::load("efficientnet_lite0", None).map_err(|e| e.to_string())?;
    let judge_model = lite1()?;
    let labels = zoo::imagenet_labels();
    let root = workspace_root().join(".cache/quality");
    let mut summary = Vec::new();
    // The first five classes of every preset, one row per preset.
    let mut side_by_side = Vec::new();
    for preset in &a.presets {
        let dir = root.join(preset);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut s = Score::default();
        let mut sheet = Vec::new();
        for chunk in a.classes.chunks(a.batch) {
            let mut opts = actmax::Options::preset(preset).map_err(|e| e.to_string())?;
            if let Some(n) = a.steps {
                opts.max_iter = n;
            }
            if let Some(lr) = a.lr {
                opts.optimizer = actmax::Optimizer::Adam(lr);
            }
            match a.crops {
                Some(0) => opts.crops = None,
                Some(n) => opts.crops.get_or_insert_with(actmax_modifiers::RandomCrops::maco).count = n,
                None => {}
            }
            let start = std::time::Instant::now();
            let vis = actmax::visualize_batch(&lite0, -1, chunk.iter().map(|&c| vec![c]).collect(), opts)
                .map_err(|e| e.to_string())?;
            s.seconds += start.elapsed().as_secs_f64();
            for (k, &class) in chunk.iter().enumerate() {
                let path = dir.join(format!("{class:03}.png"));
                actmax::images::save(&vis.image(k).map_err(|e| e.to_string())?, &path).map_err(|e| e.to_string())?;
                let img = image::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let line = score_one(&lite0, &judge_model, &img, class, &mut s)?;
                println!("{preset:<9} {class:>3} {:<28} {line}", short(labels[class]));
                if sheet.len() < 5 {
                    side_by_side.push((img.clone(), format!("{preset} {class}")));
                }
                sheet.push((img, format!("{class} {}", short(labels[class]))));
            }
        }
        write_sheet(&root.join(format!("{preset}_sheet.png")), sheet, 5)?;
        let n = s.n.max(1) as f64;
        let row = json!({
            "preset": preset,
            "images": s.n,
            "whitebox_top1": s.white_top1 as f64 / n,
            "whitebox_perturbed_top1": s.perturbed_top1 as f64 / s.perturbed_n.max(1) as f64,
            "heldout_top1": s.held_top1 as f64 / n,
            "heldout_top5": s.held_top5 as f64 / n,
            "heldout_mean_prob": s.held_prob / n,
            "heldout_zoomed_top1": s.held_zoom_top1 as f64 / n,
            "seconds_per_image": s.seconds / n,
        });
        println!("{preset}: {row}");
        summary.push(row);
    }
    println!(
        "\n{:<10} {:>7} {:>10} {:>9} {:>9} {:>9} {:>11} {:>8}",
        "preset", "white", "perturbed", "held top1", "top5", "mean p", "held zoom", "s/image"
    );
    for r in &summary {
        println!(
            "{:<10} {:>7.2} {:>10.2} {:>9.2} {:>9.2} {:>9.3} {:>11.2} {:>8.1}",
            r["preset"].as_str().unwrap_or(""),
            r["whitebox_top1"].as_f64().unwrap_or(0.0),
            r["whitebox_perturbed_top1"].as_f64().unwrap_or(0.0),
            r["heldout_top1"].as_f64().unwrap_or(0.0),
            r["heldout_top5"].as_f64().unwrap_or(0.0),
            r["heldout_mean_prob"].as_f64().unwrap_or(0.0),
            r["heldout_zoomed_top1"].as_f64().unwrap_or(0.0),
            r["seconds_per_image"].as_f64().unwrap_or(0.0),
        );
    }
    let row = side_by_side.len() / a.presets.len().max(1);
    write_sheet(&root.join("side_by_side.png"), side_by_side, row.max(1))?;
    let out = root.join("summary.json");
    let doc = json!({"classes": a.classes, "steps": a.steps, "lr": a.lr, "crops": a.crops, "presets": summary, "cpu": crate::bench::cpu_features()});
    std::fs::write(&out, serde_json::to_string_pretty(&doc).expect("json")).map_err(|e| e.to_string())?;
    println!("images and sheets in {}; summary in {}", root.display(), out.display());
    Ok(())
}

/// Scores one saved image; returns its report line.
fn score_one(lite0: &Model, lite1: &Model, img: &DynamicImage, class: usize, s: &mut Score) -> Result<String, String> {
    let (rank, p0) = judge_rank(lite0, img, class)?;
    s.n += 1;
    s.white_top1 += usize::from(rank == 0);
    let mut kept = Vec::new();
    for (name, p) in perturbations(img) {
        let (r, _) = judge_rank(lite0, &p, class)?;
        s.perturbed_n += 1;
        s.perturbed_top1 += usize::from(r == 0);
        if r != 0 {
            kept.push(name);
        }
    }
    let (hr, hp) = judge_rank(lite1, img, class)?;
    let (zr, _) = judge_rank(lite1, &centre_crop(img, 0.8), class)?;
    s.held_top1 += usize::from(hr == 0);
    s.held_top5 += usize::from(hr < 5);
    s.held_prob += hp as f64;
    s.held_zoom_top1 += usize::from(zr == 0);
    Ok(format!(
        "lite0 p {p0:.2}{} | lite1 rank {hr} p {hp:.2}, zoomed rank {zr}",
        if kept.is_empty() { String::new() } else { format!(" (lost under {})", kept.join(", ")) }
    ))
}

/// The first name of an ImageNet label ("tiger, Panthera tigris" → "tiger").
pub fn short(label: &str) -> &str {
    label.split(',').next().unwrap_or(label)
}

pub fn write_sheet(path: &Path, tiles: Vec<(DynamicImage, String)>, cols: usize) -> Result<(), String> {
    let (imgs, caps): (Vec<_>, Vec<_>) = tiles.into_iter().unzip();
    let sheet = actmax::images::labelled_sheet(&imgs, &caps, 6, cols).map_err(|e| e.to_string())?;
    actmax::images::save(&sheet, path).map_err(|e| e.to_string())
}
