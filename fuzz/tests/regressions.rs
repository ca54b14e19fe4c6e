//! The seeds load, and load what torch and numpy wrote; every input a fuzzing run saved
//! under `testdata/fuzz/<target>/` is refused or read — never a panic; and the engine
//! finds a planted bug.

use std::path::{Path, PathBuf};
use std::time::Duration;

use actmax_fuzz::alloc::{measure, Counting};
use actmax_fuzz::engine::{feed, fuzz, Config};
use actmax_fuzz::targets::{seed_files, target, Outcome, Target, TARGETS};

#[global_allocator]
static ALLOC: Counting = Counting;

/// What `cargo xtask fuzz` allows an input by default: 256 MiB plus 64 bytes per byte.
fn memory_limit(input: &[u8]) -> u64 {
    (256 << 20) + 64 * input.len() as u64
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn every_target_has_seeds_and_every_seed_loads() {
    for t in TARGETS {
        let files = seed_files(&root(), t);
        assert!(!files.is_empty(), "{}: no seeds", t.name);
        for f in files {
            let outcome = (t.run)(&std::fs::read(&f).unwrap());
            assert!(matches!(outcome, Outcome::Loaded(_)), "{}: {}: {outcome:?}", t.name, f.display());
        }
    }
}

#[test]
fn the_seeds_hold_the_values_torch_and_numpy_wrote() {
    let dir = root().join("testdata/fuzz/seeds");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let files = expected["files"].as_object().unwrap();
    assert!(files.len() >= 12, "{} files", files.len());
    for (name, tensors) in files {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let format = actmax::layers::loaders::WeightFormat::from_path(Path::new(name)).unwrap();
        let sd = actmax::layers::loaders::load_weights_from(&bytes, format).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tensors = tensors.as_object().unwrap();
        assert_eq!(sd.len(), tensors.len(), "{name}");
        for (key, want) in tensors {
            let got = &sd[key];
            let shape: Vec<usize> =
                want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            assert_eq!(got.shape(), &shape[..], "{name}: {key}");
            let values: Vec<f64> = want["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            for (g, w) in got.iter().zip(&values) {
                // f32 holds every value torch and numpy wrote here (f16, bf16 and f64 too)
                // to f32 rounding.
                assert!((*g as f64 - w).abs() <= 1e-6 * w.abs().max(1.0), "{name}: {key}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn every_saved_fuzz_input_is_refused_or_read_without_a_panic_and_in_bounded_memory() {
    let mut replayed = 0;
    for t in TARGETS {
        let Ok(entries) = std::fs::read_dir(root().join("testdata/fuzz").join(t.name)) else { continue };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            let (outcome, _, peak) = feed(t, &bytes, &measure);
            assert!(outcome.is_ok(), "{}: {} panics: {outcome:?}", t.name, e.path().display());
            assert!(peak <= memory_limit(&bytes), "{}: {} allocates {peak} bytes", t.name, e.path().display());
            replayed += 1;
        }
    }
    assert!(replayed >= 2, "the committed findings are gone ({replayed})");
}

/// A reader with a bug: it panics on inputs shorter than 40 bytes that start with 'P'.
fn buggy(bytes: &[u8]) -> Outcome {
    if bytes.first() == Some(&b'P') && bytes.len() < 40 {
        let header: [u8; 40] = bytes.try_into().unwrap();
        return Outcome::Loaded(format!("{}", header[0]));
    }
    match bytes.len() {
        0..40 => Outcome::Refused(format!("too short: {} bytes", bytes.len())),
        _ => Outcome::Loaded("ok".into()),
    }
}

/// `execs` inputs from `seed`, with no time or memory finding (the test measures neither).
fn unlimited(execs: u64, seed: u64) -> Config {
    Config { execs, seed, time_limit: Duration::from_secs(60), memory_base: u64::MAX / 2, memory_per_byte: 0 }
}

#[test]
fn the_engine_finds_a_planted_bug_and_repeats_itself_by_seed() {
    let t = Target { name: "buggy", what: "a planted bug", seeds: &[], zip: false, fixup: None, run: buggy };
    let cfg = unlimited(3000, 5);
    let seed = vec![b'P'; 64];
    let run = || {
        let mut panics = Vec::new();
        let stats = fuzz(
            &t,
            std::slice::from_ref(&seed),
            &cfg,
            &|f| {
                f();
                0
            },
            |_, _| {},
            |f| panics.push(f),
        );
        (stats, panics)
    };
    let (stats, panics) = run();
    assert_eq!(stats.execs, 3000);
    assert!(stats.panics > 0 && panics.iter().all(|f| f.kind == "panic" && f.input[0] == b'P' && f.input.len() < 40));
    assert!(panics[0].detail.contains("unwrap"), "{}", panics[0].detail);
    assert_eq!(stats.loaded + stats.refused + stats.panics, stats.execs);
    let (again, _) = run();
    assert_eq!((again.loaded, again.refused, again.panics), (stats.loaded, stats.refused, stats.panics));
}

#[test]
fn a_short_run_of_each_target_finds_nothing() {
    let cfg = unlimited(300, 9);
    for t in TARGETS {
        let seeds: Vec<Vec<u8>> = seed_files(&root(), t).iter().map(|p| std::fs::read(p).unwrap()).collect();
        let stats = fuzz(
            t,
            &seeds,
            &cfg,
            &|f| {
                f();
                0
            },
            |_, _| {},
            |f| panic!("{}: {}: {}", t.name, f.kind, f.detail),
        );
        assert_eq!(stats.panics, 0);
        assert!(stats.answers > 1, "{}: mutations all gave one answer", t.name);
    }
    assert!(target("onnx").is_some() && target("nope").is_none());
}
