//! `cargo xtask fuzz` and `fuzz-seeds`: the fuzzer is its own binary (`fuzz/`, the
//! `actmax-fuzz` crate) because it counts allocations with a global allocator that no
//! other task should pay for; these tasks build and run it in release mode.

use std::process::Command;

use crate::workspace_root;

fn fuzzer(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--release", "-p", "actmax-fuzz", "--"])
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("actmax-fuzz {} failed", args.join(" ")))
    }
}

/// `cargo xtask fuzz [TARGET ..] [--execs N] ...`: see `actmax-fuzz run --help`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut all = vec!["run"];
    all.extend(args.iter().map(String::as_str));
    fuzzer(&all)
}

/// `cargo xtask fuzz-seeds`: torch's and numpy's seeds from the peer venv's Python, then
/// the Rust-written ones.
pub fn seeds() -> Result<(), String> {
    let python = crate::peer::peer_python()?;
    let out = workspace_root().join("testdata/fuzz/seeds");
    let status = Command::new(&python)
        .arg(workspace_root().join("xtask/python/fuzz_seeds.py"))
        .arg(&out)
        .status()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !status.success() {
        return Err("fuzz_seeds.py failed".into());
    }
    fuzzer(&["seeds"])
}
