//! `cargo xtask reference-efficientnet`: regenerates `testdata/effnet_reference.json` with
//! the independent float64 numpy implementation in `xtask/python/effnet_reference.py`
//! (installing numpy with pip when it is missing).

use std::process::Command;

use crate::fetch::{ensure, ARTIFACTS};
use crate::workspace_root;

/// `cargo xtask reference-efficientnet`.
pub fn run(_args: &[String]) -> Result<(), String> {
    let pth = ensure(ARTIFACTS.iter().find(|a| a.cached.ends_with(".pth")).expect("the weights artifact"))?;
    let has_numpy = Command::new("python3").args(["-c", "import numpy"]).status().is_ok_and(|s| s.success());
    if !has_numpy {
        eprintln!("xtask: pip install numpy");
        let ok =
            Command::new("python3").args(["-m", "pip", "install", "-q", "numpy"]).status().is_ok_and(|s| s.success());
        if !ok {
            return Err("numpy is missing and `python3 -m pip install numpy` failed".into());
        }
    }
    let root = workspace_root();
    let status = Command::new("python3")
        .arg(root.join("xtask/python/effnet_reference.py"))
        .arg(&pth)
        .arg(root.join("testdata/coffee.png"))
        .arg(root.join("testdata/effnet_reference.json"))
        .env("OMP_NUM_THREADS", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("the numpy reference failed".into())
    }
}
