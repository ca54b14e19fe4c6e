//! `cargo xtask fuzz` and `fuzz-seeds`: the fuzzer is its own binary (`fuzz/`, the
//! `actmax-fuzz` crate) because it counts allocations with a global allocator that no
//! other task should pay for; these tasks build and run it in release mode.

fn fuzzer(args: &[&str]) -> Result<(), String> {
    let status = crate::bench::cargo()
        .args(["run", "--quiet", "--release", "-p", "actmax-fuzz", "--"])
        .args(args)
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
    let out = crate::workspace_root().join("testdata/fuzz/seeds");
    crate::reference::run_script(&python, "fuzz_seeds.py", &[out])?;
    fuzzer(&["seeds"])
}
