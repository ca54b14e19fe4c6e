//! `cargo xtask import-efficientnet`: the fetched `.pth` → `models/efficientnet_lite0.safetensors`
//! through the project's own loader, checked against the zoo architecture; plus the
//! ImageNet labels and the test photos copied into the repository.

use actmax_layers::loaders::{pth, safetensors};
use actmax_layers::zoo;

use crate::fetch::{ensure, ARTIFACTS};
use crate::workspace_root;

fn artifact(cached: &str) -> Result<std::path::PathBuf, String> {
    ensure(ARTIFACTS.iter().find(|a| a.cached == cached).expect("known artifact"))
}

/// Parses `imagenet_classes.js` (`0: 'tench, Tinca tinca',` lines) into 1000 names.
fn parse_labels(js: &str) -> Result<Vec<String>, String> {
    let mut labels = Vec::new();
    for line in js.lines() {
        let line = line.trim();
        let Some((idx, rest)) = line.split_once(':') else { continue };
        let Ok(i) = idx.trim().parse::<usize>() else { continue };
        let rest = rest.trim().trim_end_matches(',');
        let q =
            rest.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or(format!("label {i}: not a quoted string"))?;
        let name = rest.trim_start_matches(q).trim_end_matches(q).replace("\\'", "'");
        if i != labels.len() {
            return Err(format!("labels out of order at {i}"));
        }
        labels.push(name);
    }
    if labels.len() != 1000 {
        return Err(format!("expected 1000 labels, found {}", labels.len()));
    }
    Ok(labels)
}

/// `cargo xtask import-efficientnet`.
pub fn run() -> Result<(), String> {
    let root = workspace_root();
    let models = root.join("models");
    std::fs::create_dir_all(&models).map_err(|e| e.to_string())?;

    let pth_path = artifact("efficientnet-lite0-57934424.pth")?;
    let bytes = std::fs::read(&pth_path).map_err(|e| e.to_string())?;
    let tensors = pth::read(&bytes).map_err(|e| e.to_string())?;
    let mut model = zoo::efficientnet_lite0();
    model.load_state_dict(&tensors).map_err(|e| e.to_string())?;
    // Keep only what the model uses (drops num_batches_tracked counters).
    let kept: actmax_layers::loaders::StateDict =
        model.state_dict().into_iter().map(|(k, v)| (k, (*v).clone())).collect();
    let out = safetensors::write(&kept).map_err(|e| e.to_string())?;
    let target = models.join("efficientnet_lite0.safetensors");
    std::fs::write(&target, &out).map_err(|e| e.to_string())?;
    println!(
        "wrote {} ({} tensors, {} parameters, {} bytes)",
        target.display(),
        kept.len(),
        model.param_count(),
        out.len()
    );

    let js = std::fs::read_to_string(artifact("imagenet_classes.js")?).map_err(|e| e.to_string())?;
    let labels = parse_labels(&js)?;
    std::fs::write(models.join("imagenet_classes.txt"), labels.join("\n") + "\n").map_err(|e| e.to_string())?;
    println!("wrote models/imagenet_classes.txt ({} labels)", labels.len());

    let data = root.join("testdata");
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    for photo in ["coffee.png", "chelsea.png", "astronaut.png"] {
        std::fs::copy(artifact(photo)?, data.join(photo)).map_err(|e| e.to_string())?;
        println!("copied testdata/{photo}");
    }
    Ok(())
}
