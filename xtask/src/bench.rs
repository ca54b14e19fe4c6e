//! `cargo xtask bench`: runs criterion benchmarks and reports GFLOP/s against references.
//!
//! Convention (see `benches/benches/*.rs`): a criterion group holds the cases of one shape
//! and direction; a function named `sgemm` or `naive` in it is the reference the other
//! functions of the group are divided by. A group `G_1thread` next to a group `G` gives
//! the parallel speed-up of each function in both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::workspace_root;

const REFERENCES: &[&str] = &["sgemm", "naive"];
const ONE_THREAD: &str = "_1thread";

/// `cargo xtask bench`: criterion benchmarks, GFLOP/s and ratios to each group's reference.
#[derive(clap::Args)]
pub struct Options {
    /// Run the benchmarks whose id contains this (all when absent).
    filter: Option<String>,
    /// Write the rows as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `cargo`, as the one running xtask, in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// Every benchmark id of the benches package.
fn list() -> Result<Vec<String>, String> {
    let out = cargo()
        .args(["bench", "-q", "-p", "actmax-benches", "--", "--list"])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("listing benchmarks failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": benchmark"))
        .map(str::to_string)
        .collect())
}

fn split(id: &str) -> (&str, &str) {
    id.rsplit_once('/').unwrap_or((id, ""))
}

fn reference_of<'a>(id: &str, all: &'a BTreeSet<String>) -> Option<&'a String> {
    let (group, func) = split(id);
    if REFERENCES.contains(&func) {
        return None;
    }
    REFERENCES.iter().find_map(|r| all.get(&format!("{group}/{r}")))
}

fn regex_escape(s: &str) -> String {
    s.chars().fold(String::new(), |mut o, c| {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
        o
    })
}

struct Measured {
    mean_ns: f64,
    flops: Option<f64>,
}

impl Measured {
    fn gflops(&self) -> Option<f64> {
        self.flops.map(|f| f / self.mean_ns)
    }
}

/// Reads criterion's `new/` results for the given ids.
fn results(ids: &BTreeSet<String>) -> Result<BTreeMap<String, Measured>, String> {
    let mut found = BTreeMap::new();
    let mut stack = vec![workspace_root().join("target/criterion")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.ends_with("new/benchmark.json") {
                let read = |f: &Path| -> Option<Value> { serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok() };
                let (Some(b), Some(est)) = (read(&p), read(&p.with_file_name("estimates.json"))) else { continue };
                let Some(id) = b["full_id"].as_str().filter(|id| ids.contains(*id)) else { continue };
                let mean_ns = est["mean"]["point_estimate"].as_f64().ok_or(format!("no mean in {}", p.display()))?;
                let flops = b["throughput"]["Elements"].as_f64();
                found.insert(id.to_string(), Measured { mean_ns, flops });
            }
        }
    }
    Ok(found)
}

pub fn run(o: Options) -> Result<(), String> {
    let all: BTreeSet<String> = list()?.into_iter().collect();
    let wanted: BTreeSet<String> =
        all.iter().filter(|id| o.filter.as_ref().is_none_or(|f| id.contains(f.as_str()))).cloned().collect();
    if wanted.is_empty() {
        return Err(format!(
            "no benchmark id contains {:?}; ids are:\n  {}",
            o.filter.unwrap_or_default(),
            all.iter().cloned().collect::<Vec<_>>().join("\n  ")
        ));
    }
    let mut run: BTreeSet<String> = wanted.clone();
    run.extend(wanted.iter().filter_map(|id| reference_of(id, &all)).cloned());
    run.extend(wanted.iter().filter_map(|id| {
        let (g, f) = split(id);
        g.strip_suffix(ONE_THREAD).map(|base| format!("{base}/{f}")).filter(|b| all.contains(b))
    }));
    let pattern = format!("^({})$", run.iter().map(|s| regex_escape(s)).collect::<Vec<_>>().join("|"));
    eprintln!("xtask: running {} benchmark(s)", run.len());
    let status = cargo()
        .args(["bench", "-p", "actmax-benches", "--", &pattern])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo bench failed".into());
    }
    let res = results(&run)?;
    report(&run, &all, &res, o.json.as_deref())
}

fn report(
    run: &BTreeSet<String>,
    all: &BTreeSet<String>,
    res: &BTreeMap<String, Measured>,
    json_out: Option<&Path>,
) -> Result<(), String> {
    let mut rows = Vec::new();
    println!("\n{:<44} {:>10} {:>9} {:>8}  reference", "case", "ms", "GFLOP/s", "ratio");
    for id in run {
        let Some(m) = res.get(id) else {
            println!("{id:<44} (no result: did the benchmark run?)");
            continue;
        };
        let r = reference_of(id, all).and_then(|r| Some((r, res.get(r)?)));
        let ratio = match (m.gflops(), r.as_ref().and_then(|(_, rm)| rm.gflops())) {
            (Some(a), Some(b)) => Some(a / b),
            _ => None,
        };
        let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        println!(
            "{id:<44} {:>10.3} {:>9} {:>8}  {}",
            m.mean_ns / 1e6,
            fmt(m.gflops(), 1),
            fmt(ratio, 3),
            r.map_or(String::new(), |(n, _)| split(n).1.to_string())
        );
        rows.push(json!({ "case": id, "ms": m.mean_ns / 1e6, "gflops": m.gflops(), "ratio": ratio, "reference": r.map(|(n, _)| n.clone()) }));
    }
    let speedups: Vec<_> = run
        .iter()
        .filter_map(|id| {
            let (g, f) = split(id);
            let base = format!("{}/{f}", g.strip_suffix(ONE_THREAD)?);
            Some((base.clone(), res.get(id)?.mean_ns / res.get(&base)?.mean_ns))
        })
        .collect();
    if !speedups.is_empty() {
        println!("\nparallel speed-up (1 thread → {} threads):", rayon_threads());
        for (case, s) in &speedups {
            println!("  {case:<42} {s:.2}x");
        }
    }
    if let Some(path) = json_out {
        let doc = json!({ "cases": rows, "speedups": speedups.iter().map(|(c, s)| json!({"case": c, "speedup": s})).collect::<Vec<_>>() });
        std::fs::write(path, serde_json::to_string_pretty(&doc).expect("json"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS")
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or("all".into(), |n| n.to_string()))
}

/// The SIMD features this CPU has, detected at run time (quoted next to every figure: the
/// machines change between sessions), and, where `ACTMAX_MAX_ISA` holds the kernels below
/// them, the family they run (`kernels=avx2`): a figure measured under a cap says so.
pub fn cpu_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
    }
    use actmax_tensor::gemm::direct::Isa;
    match Isa::detect() {
        isa if isa == Isa::hardware() => {}
        Isa::Avx2 => f.push("kernels=avx2"),
        _ => f.push("kernels=generic"),
    }
    f
}
