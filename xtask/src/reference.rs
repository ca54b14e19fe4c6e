//! Reference fixtures from Python, independent of actmax's code:
//!
//! - `reference-efficientnet`: `testdata/effnet_reference.json` from the float64 numpy
//!   implementation in `xtask/python/effnet_reference.py`;
//! - `reference-onnx`: `models/efficientnet_lite0.onnx`, `testdata/{small_cnn,clip_opset6}.onnx`
//!   built with the official `onnx` package, checked, and run by onnxruntime
//!   (`xtask/python/onnx_models.py` → `testdata/onnx_reference.json`);
//! - `reference-keras`: fer's `emotion_model.hdf5` and an h5py + numpy float64 evaluation
//!   (`xtask/python/keras_reference.py` → `testdata/keras_reference.json`), plus the
//!   hand-laid Keras 2 files of `xtask/python/keras_small.py`.
//!
//! All run in one virtual environment, `.cache/venv`, with pinned packages.

use std::process::Command;

use crate::fetch::{ensure, ARTIFACTS};
use crate::workspace_root;

/// `cargo xtask reference-efficientnet`.
pub fn run() -> Result<(), String> {
    let pth = ensure(ARTIFACTS.iter().find(|a| a.cached.ends_with(".pth")).expect("the weights artifact"))?;
    let root = workspace_root();
    let args = [pth, root.join("testdata/coffee.png"), root.join("testdata/effnet_reference.json")];
    run_script(&venv_python()?, "effnet_reference.py", &args)
}

/// The pinned Python packages of the ONNX and Keras references.
const VENV_PACKAGES: &[&str] =
    &["numpy==2.4.6", "onnx==1.23.2", "onnxruntime==1.32.0", "h5py==3.16.0", "pillow==12.3.0"];

/// `.cache/venv/bin/python`, created with the pinned packages when missing.
fn venv_python() -> Result<std::path::PathBuf, String> {
    pinned_venv("venv", VENV_PACKAGES)
}

/// `.cache/<dir>/bin/python` with exactly `packages` (`name==version`), made with
/// `python3 -m venv` and pip when missing or different.
pub(crate) fn pinned_venv(dir: &str, packages: &[&str]) -> Result<std::path::PathBuf, String> {
    let venv = crate::fetch::cache().join(dir);
    let python = venv.join("bin/python");
    // Ready only with exactly the pinned versions: the fixtures and tables name them.
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(any(m.version(p.split('==')[0]) != p.split('==')[1] for p in {packages:?}))"
    );
    let ready = Command::new(&python).args(["-c", &check]).status().is_ok_and(|s| s.success());
    if ready {
        return Ok(python);
    }
    eprintln!("xtask: python3 -m venv {} && pip install {}", venv.display(), packages.join(" "));
    let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success());
    if !ok {
        return Err("python3 -m venv failed (is python3-venv installed?)".into());
    }
    let ok =
        Command::new(&python).args(["-m", "pip", "install", "-q"]).args(packages).status().is_ok_and(|s| s.success());
    if ok {
        Ok(python)
    } else {
        Err(format!("pip could not install {}", packages.join(" ")))
    }
}

pub(crate) fn run_script(python: &std::path::Path, script: &str, args: &[std::path::PathBuf]) -> Result<(), String> {
    let root = workspace_root();
    let status = Command::new(python)
        .arg(root.join("xtask/python").join(script))
        .args(args)
        .current_dir(&root)
        .env("OMP_NUM_THREADS", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{script} failed"))
    }
}

/// `cargo xtask reference-onnx`.
pub fn onnx() -> Result<(), String> {
    run_script(&venv_python()?, "onnx_models.py", &[])
}

/// `cargo xtask reference-keras`.
pub fn keras() -> Result<(), String> {
    let h5 = ensure(ARTIFACTS.iter().find(|a| a.cached == "emotion_model.hdf5").expect("the fer artifact"))?;
    let target = workspace_root().join("testdata/emotion_model.hdf5");
    std::fs::copy(&h5, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    let python = venv_python()?;
    run_script(&python, "keras_reference.py", &[])?;
    run_script(&python, "keras_small.py", &[])
}

/// The cases of a Python export script: unless `args` holds `--no-export`, runs
/// What `check-keras-apps` and `check-torchvision` take.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Check the files exported before (in .cache) without exporting again.
    #[arg(long)]
    no_export: bool,
    /// The models to export and check (all by default).
    names: Vec<String>,
}

/// `xtask/python/<script> full <dir> [NAME ...]` in the pinned venv; then reads
/// `<dir>/index.json`. Returns the cases and the names asked for.
pub(crate) fn exported_cases(
    args: &ExportArgs,
    venv: (&str, &[&str]),
    script: &str,
    dir: &std::path::Path,
) -> Result<(Vec<serde_json::Value>, Vec<String>), String> {
    let names = args.names.clone();
    if !args.no_export {
        let python = pinned_venv(venv.0, venv.1)?;
        let root = workspace_root();
        let status = Command::new(python)
            .arg(root.join("xtask/python").join(script))
            .arg("full")
            .arg(dir)
            .args(&names)
            .current_dir(&root)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("{script} failed"));
        }
    }
    let text = std::fs::read_to_string(dir.join("index.json")).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((serde_json::from_str(&text).map_err(|e| e.to_string())?, names))
}

/// `max |got − want| / max |want|`, and whether both pick the same top-1 class.
pub(crate) fn agreement(got: &[f32], want: &[f32]) -> Result<(f64, bool), String> {
    if got.len() != want.len() {
        return Err(format!("{} outputs, the reference has {}", got.len(), want.len()));
    }
    let scale = want.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    let err = got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale;
    let argmax =
        |v: &[f32]| v.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
    Ok((err, argmax(got) == argmax(want)))
}
