//! `actmax-fuzz`: the fuzzer's command line (run through `cargo xtask fuzz`).
//!
//! It counts each input's allocations with [`Counting`] as the global allocator, and a
//! watchdog thread saves and reports an input
//! that runs past the hang limit, since an input running in-process cannot be stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actmax_fuzz::alloc::{measure, Counting};
use actmax_fuzz::engine::{self, Config, Finding, Stats};
use actmax_fuzz::targets::{seed_files, target, Target, TARGETS};
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

/// Timeouts or memory findings saved per target and run.
const MAX_SAVED: usize = 5;

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Parser)]
#[command(name = "actmax-fuzz", about = "Fuzz actmax's file readers (see `cargo xtask fuzz --help`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fuzz the named targets (all when none is named).
    Run(RunArgs),
    /// List the targets, what they read and their seed files.
    List,
    /// Write the Rust-made seeds (safetensors, PNG, JPEG, GIF) into testdata/fuzz/seeds/.
    Seeds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Targets to fuzz (see `list`); all of them when none is given.
    targets: Vec<String>,
    /// Inputs per target.
    #[arg(long, default_value_t = 1_000_000)]
    execs: u64,
    /// RNG seed: the same seed gives the same inputs (per thread).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads, each with its own corpus and its share of the inputs.
    #[arg(long, default_value_t = 2)]
    threads: u64,
    /// An input slower than this (ms) is a timeout finding.
    #[arg(long, default_value_t = 1000)]
    time_limit_ms: u64,
    /// An input running this long (s) is a hang: it is saved and the run stops.
    #[arg(long, default_value_t = 30)]
    hang_s: u64,
    /// Memory allowed per input: this many MiB, plus `--memory-per-byte` × its length.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    /// See `--memory-mib`.
    #[arg(long, default_value_t = 64)]
    memory_per_byte: u64,
    /// Write the counts as JSON rows here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the fuzz crate sits in the workspace").to_path_buf()
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::List => {
            for t in TARGETS {
                let seeds: Vec<String> = seed_files(&root(), t).iter().map(|p| short(p)).collect();
                println!("{:<12} {}\n{:<12} seeds: {}", t.name, t.what, "", seeds.join(", "));
            }
            Ok(())
        }
        Command::Seeds => {
            actmax_fuzz::seeds::write(&root().join("testdata/fuzz/seeds"), &root().join("testdata/chelsea.png"))
                .map(|files| println!("wrote testdata/fuzz/seeds/{{{}}}", files.join(",")))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actmax-fuzz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn short(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

fn run(args: &RunArgs) -> Result<(), String> {
    let targets: Vec<&Target> = if args.targets.is_empty() {
        TARGETS.iter().collect()
    } else {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        args.targets
            .iter()
            .map(|n| target(n).ok_or_else(|| format!("no target `{n}`; the targets are {}", names.join(", "))))
            .collect::<Result<_, _>>()?
    };
    engine::install_quiet_panic_hook();
    actmax_fuzz::alloc::on_refused(save_refused);
    println!(
        "{:<12} {:>9} {:>8} {:>9} {:>6} {:>8} {:>6} {:>7} {:>9} {:>10} {:>8}",
        "target",
        "execs",
        "loaded",
        "refused",
        "panics",
        "timeouts",
        "memory",
        "answers",
        "slowest",
        "peak/input",
        "execs/s"
    );
    let mut rows = Vec::new();
    let mut failed = 0;
    for t in targets {
        let (stats, secs) = fuzz_target(t, args)?;
        println!(
            "{:<12} {:>9} {:>8} {:>9} {:>6} {:>8} {:>6} {:>7} {:>7.0}ms {:>8.1}MB {:>8.0}",
            t.name,
            stats.execs,
            stats.loaded,
            stats.refused,
            stats.panics,
            stats.timeouts,
            stats.memory,
            stats.answers,
            stats.slowest.as_secs_f64() * 1e3,
            stats.peak_bytes as f64 / 1e6,
            stats.execs as f64 / secs
        );
        failed += stats.panics + stats.timeouts + stats.memory;
        rows.push(serde_json::json!({
            "target": t.name, "execs": stats.execs, "loaded": stats.loaded, "refused": stats.refused,
            "panics": stats.panics, "timeouts": stats.timeouts, "memory": stats.memory,
            "answers": stats.answers, "slowest_ms": stats.slowest.as_secs_f64() * 1e3,
            "peak_bytes": stats.peak_bytes, "seconds": secs, "threads": args.threads, "seed": args.seed,
        }));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if failed > 0 {
        return Err(format!("{failed} findings, saved under testdata/fuzz/: each is now a regression input"));
    }
    Ok(())
}

/// A worker's target and its current input.
type Worker = (&'static Target, Arc<Mutex<Current>>);

thread_local! {
    /// This thread's worker, for [`save_refused`].
    static WORKER: std::cell::RefCell<Option<Worker>> = const { std::cell::RefCell::new(None) };
}

/// Saves the input a refused allocation came from (the process aborts next).
fn save_refused(size: usize) {
    let worker = WORKER.try_with(|w| w.borrow().clone()).ok().flatten();
    if let Some((t, current)) = worker {
        let input = current.lock().map(|c| c.input.clone()).unwrap_or_default();
        let f = Finding { kind: "alloc", detail: format!("asked for {size} bytes"), input };
        save_finding(t, &f, &Mutex::default());
    }
}

/// One worker's state, shared with the watchdog.
#[derive(Default)]
struct Current {
    started: Option<Instant>,
    input: Vec<u8>,
}

fn fuzz_target(t: &'static Target, args: &RunArgs) -> Result<(Stats, f64), String> {
    let seeds: Vec<Vec<u8>> = seed_files(&root(), t)
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())))
        .collect::<Result<_, _>>()?;
    if seeds.is_empty() {
        return Err(format!("{}: no seed files ({}); run `cargo xtask fuzz-seeds`", t.name, t.seeds.join(", ")));
    }
    let threads = args.threads.max(1);
    let done = AtomicBool::new(false);
    let currents: Vec<Arc<Mutex<Current>>> = (0..threads).map(|_| Arc::default()).collect();
    let progress: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let saved = Mutex::new(HashMap::new());
    let start = Instant::now();
    let mut total = Stats::default();
    let mut secs = 0.0;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                let cfg = Config {
                    execs: args.execs / threads + u64::from(i < args.execs % threads),
                    seed: args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i,
                    time_limit: Duration::from_millis(args.time_limit_ms),
                    memory_base: args.memory_mib << 20,
                    memory_per_byte: args.memory_per_byte,
                };
                let (seeds, current, progress, saved) = (&seeds, &currents[i as usize], &progress[i as usize], &saved);
                s.spawn(move || {
                    let _ = WORKER.try_with(|w| *w.borrow_mut() = Some((t, Arc::clone(current))));
                    let on_exec = |n: u64, input: &[u8]| {
                        progress.store(n, Ordering::Relaxed);
                        let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
                        c.started = Some(Instant::now());
                        c.input.clear();
                        c.input.extend_from_slice(input);
                    };
                    let on_finding = |f: Finding| save_finding(t, &f, saved);
                    let stats = engine::fuzz(t, seeds, &cfg, &measure, on_exec, on_finding);
                    // Done: the watchdog must not take a finished worker's last input for a hang.
                    current.lock().unwrap_or_else(|e| e.into_inner()).started = None;
                    stats
                })
            })
            .collect();
        s.spawn(|| watchdog(t, &currents, &progress, &done, args));
        for w in workers {
            match w.join() {
                Ok(stats) => total.merge(&stats),
                Err(_) => eprintln!("{}: a worker died outside the reader", t.name),
            }
        }
        secs = start.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
    });
    Ok((total, secs))
}

/// Prints progress every 30 s; saves the input of a worker stuck past the hang limit and
/// ends the process (the stuck call cannot be interrupted).
fn watchdog(t: &Target, currents: &[Arc<Mutex<Current>>], progress: &[AtomicU64], done: &AtomicBool, args: &RunArgs) {
    let start = Instant::now();
    let mut last_report = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        for c in currents {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            if c.started.is_some_and(|s| s.elapsed() > Duration::from_secs(args.hang_s)) {
                let f = Finding { kind: "hang", detail: format!("> {} s", args.hang_s), input: c.input.clone() };
                save_finding(t, &f, &Mutex::default());
                eprintln!("{}: an input hangs; saved, stopping", t.name);
                std::process::exit(2);
            }
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            let n: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            eprintln!("  {}: {n} execs in {:.0} s", t.name, start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
    }
}

/// Writes a finding to `testdata/fuzz/<target>/<kind>-<hash>.bin` — once per distinct
/// panic message and at most [`MAX_SAVED`] per other kind, so one bug does not fill the
/// directory.
fn save_finding(t: &Target, f: &Finding, saved: &Mutex<HashMap<String, usize>>) {
    let key = format!("{}:{}", f.kind, if f.kind == "panic" { f.detail.as_str() } else { "" });
    let n = {
        let mut saved = saved.lock().unwrap_or_else(|e| e.into_inner());
        let n = saved.entry(key).or_insert(0);
        *n += 1;
        *n
    };
    if n > if f.kind == "panic" { 1 } else { MAX_SAVED } {
        return;
    }
    let hash = Sha256::digest(&f.input);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = root().join("testdata/fuzz").join(t.name);
    let path = dir.join(format!("{}-{hex}.bin", f.kind));
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &f.input));
    match written {
        Ok(()) => eprintln!("{}: {} ({}) → {}", t.name, f.kind, f.detail, short(&path)),
        Err(e) => eprintln!("{}: {} ({}); cannot save {}: {e}", t.name, f.kind, f.detail, path.display()),
    }
}
