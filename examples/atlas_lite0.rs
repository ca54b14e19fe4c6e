//! A small atlas through the library: every filter of EfficientNet-Lite0's stem and of its
//! first block (depthwise and project convs: 80 tiles) in the `actmax` preset, rendered into
//! `docs/atlas/` (not committed: run this to make it), its gallery written beside it, and —
//! where Chromium is installed — a screenshot of the layer grid into
//! `docs/images/atlas_gallery.png`. Rerunning skips the tiles already there.
//! `cargo run --release -p actmax-atlas --example atlas_lite0`
#[path = "common.rs"]
mod common;

use std::path::PathBuf;

use actmax_atlas::{gallery, plan, render, Event, LayerSelection, ModelId, PlanRequest, RenderOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = common::efficientnet();
    let recipe = actmax::Options::actmax();
    let layers = ["_conv_stem", "_blocks.0._depthwise_conv", "_blocks.0._project_conv"];
    let request =
        PlanRequest { layers: LayerSelection::Names(layers.map(String::from).to_vec()), ..Default::default() };
    let plan = plan(&model, &ModelId::of("efficientnet_lite0")?, &request, "actmax", &recipe)?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/atlas");
    let mut progress = |e: Event<'_>| {
        if let Event::Tile { record, done, total } = e {
            eprintln!("{done}/{total} {} #{} activation {:.2}", record.layer, record.filter, record.activation);
        }
    };
    let summary = render(&model, &plan, &recipe, &RenderOptions::default(), &dir, &mut progress)?;
    let per_tile = summary.seconds / summary.rendered.max(1) as f64;
    println!(
        "{} tiles, {} rendered in {:.0} s ({per_tile:.2} s/tile)",
        summary.total, summary.rendered, summary.seconds
    );
    let site = gallery(&dir)?;
    println!("gallery: {}", site.index.display());
    let page = dir.join("gallery/layer-001.html");
    let shot = common::out("atlas_gallery.png");
    let status = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--window-size=1000,560"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .status();
    match status {
        Ok(s) if s.success() => println!("screenshot: {}", shot.display()),
        _ => println!("no chromium: no screenshot (apt-get install chromium)"),
    }
    Ok(())
}
