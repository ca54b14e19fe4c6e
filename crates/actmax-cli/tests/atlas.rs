//! `actmax atlas`, `atlas merge` and `gallery` as a scheduler and a user run them: shards
//! as concurrent processes with the environment a Kubernetes Indexed Job or a Slurm array
//! sets, a shard killed mid-run and rerun, bad requests, and the gallery in a browser.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A small atlas of the shipped MNIST classifier: 6 filters of each conv layer.
const ATLAS: &[&str] =
    &["atlas", "--model", "mnist_cnn", "--layers", "all-conv", "--filters", "0-5", "--max-iter", "8"];

fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_actmax"));
    c.args(args).current_dir(std::env::temp_dir());
    for var in ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"] {
        c.env_remove(var);
    }
    c.envs(envs.iter().copied());
    c
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    command(args, envs).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into()
}

/// A fresh directory under the system's temporary one.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("actmax-atlas-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn with_output(base: &[&str], dir: &Path, more: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    v.extend(more.iter().map(|s| s.to_string()));
    v.extend(["-o".to_string(), dir.display().to_string()]);
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The manifest's records by (layer, filter), each without `seconds` (the one field that
/// differs between runs), with the bytes of its PNG.
fn atlas_contents(dir: &Path) -> BTreeMap<(String, u64), (Value, Vec<u8>)> {
    let text = std::fs::read_to_string(dir.join("manifest.jsonl")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let key = (v["layer"].as_str().unwrap().to_string(), v["filter"].as_u64().unwrap());
        let png = std::fs::read(dir.join(v["png"].as_str().unwrap())).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        assert!(out.insert(key.clone(), (v, png)).is_none(), "{key:?} twice in {}", dir.display());
    }
    out
}

fn wait_all(children: Vec<Child>) {
    for c in children {
        let out = c.wait_with_output().unwrap();
        ok(&out);
    }
}

#[test]
fn shards_run_concurrently_under_either_scheduler_and_merge_into_the_single_process_atlas() {
    let single = scratch("single");
    ok(&run(&strs(&with_output(ATLAS, &single, &[])), &[]));
    let reference = atlas_contents(&single);
    assert_eq!(reference.len(), 12, "6 filters of each of MNIST's two conv layers");

    // A Kubernetes Indexed Job: 3 pods, JOB_COMPLETION_INDEX 0..2, the count as --shards;
    // batch sizes and thread counts differ between pods on purpose.
    let k8s: Vec<PathBuf> = (0..3).map(|k| scratch(&format!("k8s-{k}"))).collect();
    let pods = k8s
        .iter()
        .enumerate()
        .map(|(k, dir)| {
            let batch = (k + 1).to_string();
            let args = with_output(ATLAS, dir, &["--shards", "3", "--batch-size", &batch, "--json"]);
            let (index, threads) = (k.to_string(), (1 + 3 * k).to_string());
            let envs = [("JOB_COMPLETION_INDEX", index.as_str()), ("RAYON_NUM_THREADS", threads.as_str())];
            command(&strs(&args), &envs).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    wait_all(pods);
    // A Slurm job array `--array=1-2`: ids 1 and 2, its minimum and count in the environment.
    let slurm: Vec<PathBuf> = (1..=2).map(|k| scratch(&format!("slurm-{k}"))).collect();
    let tasks = slurm
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let id = (i + 1).to_string();
            let envs =
                [("SLURM_ARRAY_TASK_ID", id.as_str()), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "2")];
            let args = with_output(ATLAS, dir, &[]);
            command(&strs(&args), &envs).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    wait_all(tasks);

    for (name, shards) in [("k8s", &k8s), ("slurm", &slurm)] {
        let parts: Vec<_> = shards.iter().map(|d| atlas_contents(d)).collect();
        assert!(parts.iter().all(|p| !p.is_empty()), "{name}: every shard has tiles");
        assert_eq!(parts.iter().map(BTreeMap::len).sum::<usize>(), 12, "{name}: shards are disjoint");
        let merged = scratch(&format!("{name}-merged"));
        let mut args = vec!["atlas".to_string(), "merge".to_string()];
        args.extend(shards.iter().map(|d| d.display().to_string()));
        args.extend(["-o".to_string(), merged.display().to_string()]);
        let text = ok(&run(&strs(&args), &[]));
        assert!(text.contains("merged 12 tiles") && text.contains("no tiles missing"), "{text}");
        assert!(
            atlas_contents(&merged) == reference,
            "{name}: the merged atlas is the single-process one, byte for byte"
        );
    }

    // A merge that lacks a shard says which tiles are missing.
    let partial = scratch("partial");
    let args = ["atlas", "merge", k8s[0].to_str().unwrap(), "-o", partial.to_str().unwrap(), "--json"];
    let report: Value = serde_json::from_str(&ok(&run(&args, &[]))).unwrap();
    let missing = report["missing"].as_array().unwrap().len();
    assert_eq!(missing + report["tiles"].as_u64().unwrap() as usize, 12);
    assert!(missing > 0);
}

#[test]
fn a_killed_shard_is_completed_by_its_rerun_with_nothing_lost_or_twice() {
    let base = ["atlas", "--model", "mnist_cnn", "--layers", "conv2d_2", "--filters", "0-23", "--max-iter", "40"];
    let dir = scratch("killed");
    let args = with_output(&base, &dir, &["--batch-size", "2"]);
    let mut child = command(&strs(&args), &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let manifest = dir.join("manifest.jsonl");
    let start = Instant::now();
    // Kill it (SIGKILL: no clean-up) once the first batch has landed.
    while std::fs::read_to_string(&manifest).map_or(0, |t| t.lines().count()) < 2 {
        assert!(start.elapsed() < Duration::from_secs(120), "no batch landed in 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the shard finished before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = atlas_contents(&dir).len();
    assert!((2..24).contains(&before), "{before} tiles before the kill");
    // A line cut mid-write by the kill: dropped, and its tile rendered again.
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("{\"model\":\"mnist_cnn\",\"layer\":\"conv2");
    std::fs::write(&manifest, text).unwrap();

    let rerun: Value =
        serde_json::from_str(ok(&run(&strs(&with_output(&base, &dir, &["--json"])), &[])).lines().last().unwrap())
            .unwrap();
    assert_eq!(rerun["skipped"].as_u64().unwrap() as usize, before, "finished tiles are skipped");
    assert_eq!(rerun["rendered"].as_u64().unwrap() as usize, 24 - before);
    assert_eq!(rerun["dropped_lines"].as_u64(), Some(1));
    let resumed = atlas_contents(&dir);
    assert_eq!(resumed.len(), 24, "every tile once");

    let fresh = scratch("unkilled");
    ok(&run(&strs(&with_output(&base, &fresh, &[])), &[]));
    assert!(resumed == atlas_contents(&fresh), "the resumed atlas is the uninterrupted one");
    let leftovers: Vec<_> = walk(&dir).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.len() <= 1, "at most the PNG in flight is left as a temporary: {leftovers:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// One line on stderr, failure, and nothing written.
fn refused(args: &[&str], dir: &Path, wants: &str) {
    let out = run(args, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line, got {err}");
    assert!(err.contains(wants), "{args:?}: `{wants}` not in {err}");
    assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
}

#[test]
fn bad_requests_are_one_line_errors_that_write_nothing() {
    let dir = scratch("refused");
    let o = dir.to_str().unwrap();
    let m = ["atlas", "--model", "mnist_cnn"];
    refused(&[&m[..], &["--layers", "conv2d_1,nope", "-o", o]].concat(), &dir, "no layer named `nope`");
    refused(&[&m[..], &["--layers", "all-conv", "--shard", "5/4", "-o", o]].concat(), &dir, "0/4 … 3/4");
    refused(&[&m[..], &["--layers", "all-conv", "--shard", "0/0", "-o", o]].concat(), &dir, "at least one shard");
    refused(&[&m[..], &["--layers", "all-conv", "--shards", "3", "-o", o]].concat(), &dir, "JOB_COMPLETION_INDEX");
    refused(&[&m[..], &["--classes", "10", "-o", o]].concat(), &dir, "0..=9");
    refused(&[&m[..], &["--layers", "dense_1", "--diversity", "1", "-o", o]].concat(), &dir, "one image per filter");
    refused(&[&m[..], &["-o", o]].concat(), &dir, "choose what to render");
    // An unwritable directory: a path under a regular file.
    let file = scratch("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let under = file.join("atlas");
    refused(&[&m[..], &["--layers", "all-conv", "-o", under.to_str().unwrap()]].concat(), &under, "choose a writable");

    // Merging atlases of two models.
    let (a, b) = (scratch("model-a"), scratch("model-b"));
    ok(&run(
        &[&m[..], &["--layers", "conv2d_1", "--filters", "0", "--max-iter", "2", "-o", a.to_str().unwrap()]].concat(),
        &[],
    ));
    let other = ["atlas", "--model", "apple_counter", "--classes", "--max-iter", "2", "-o", b.to_str().unwrap()];
    ok(&run(&other, &[]));
    let merged = scratch("merged-two-models");
    refused(
        &["atlas", "merge", a.to_str().unwrap(), b.to_str().unwrap(), "-o", merged.to_str().unwrap()],
        &merged,
        "another model",
    );
    refused(&["atlas", "merge", file.to_str().unwrap(), "-o", merged.to_str().unwrap()], &merged, "is not an atlas");
    // An atlas directory holding another recipe is not overwritten.
    let again = run(
        &[&m[..], &["--layers", "conv2d_1", "--filters", "0", "--max-iter", "3", "-o", a.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("steps: 2 vs 3"));
}

/// Debian's Chromium (installed by .ci/run where missing), or `None` with a message.
fn browser() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        let ok = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
        ok.then(|| PathBuf::from(name))
    });
    if found.is_none() {
        eprintln!("SKIPPED: no chromium on this machine (`apt-get install chromium`; .ci/run installs it)");
    }
    found
}

fn headless(browser: &Path, extra: &[&str], page: &Path) -> Output {
    let profile = scratch("chromium-profile");
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(profile);
    out
}

#[test]
fn the_gallery_loads_every_tile_in_a_real_browser() {
    let Some(chromium) = browser() else { return };
    let dir = scratch("gallery");
    ok(&run(&strs(&with_output(ATLAS, &dir, &[])), &[]));
    let text = ok(&run(&["gallery", dir.to_str().unwrap()], &[]));
    assert!(text.contains("2 layers, 12 tile pages"), "{text}");
    for (page, images) in [("index.html", 12), ("gallery/layer-001.html", 6), ("gallery/tile-002-0003.html", 1)] {
        let out = headless(&chromium, &["--dump-dom"], &dir.join(page));
        let dom = String::from_utf8_lossy(&out.stdout);
        let imgs: Vec<&str> = dom.split("<img").skip(1).map(|s| &s[..s.find('>').unwrap_or(s.len())]).collect();
        assert_eq!(imgs.len(), images, "{page}: {dom}");
        for img in imgs {
            assert!(img.contains("data-natural=\"28x28\""), "{page}: an image did not load: <img{img}>");
        }
        assert!(!dom.contains("http://") && !dom.contains("https://"), "{page}: no external URL");
    }
    // The layer grid as a person sees it: a screenshot that is not a blank page.
    let shot = dir.join("shot.png");
    let out = headless(
        &chromium,
        &["--window-size=900,600", &format!("--screenshot={}", shot.display())],
        &dir.join("gallery/layer-002.html"),
    );
    assert!(shot.exists(), "no screenshot: {}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(&shot).unwrap().to_luma8();
    let mut levels = std::collections::BTreeSet::new();
    img.pixels().for_each(|p| {
        levels.insert(p.0[0]);
    });
    assert!(levels.len() > 64, "the screenshot shows tiles, not a blank page ({} grey levels)", levels.len());
}

/// The shell lines of the Kubernetes Job file (`args:` items run by `sh -c`).
fn job_scripts(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == "args:")
        .map(|(i, _)| lines[i + 1].trim().trim_start_matches("- ").to_string())
        .collect()
}

/// `deploy/`'s own command lines, as the schedulers run them: the Kubernetes Job's shard
/// and merge scripts under `sh -c` with `JOB_COMPLETION_INDEX`, the Slurm array's batch
/// script under bash with `SLURM_ARRAY_*` — on the small MNIST atlas.
#[test]
fn the_deploy_files_render_and_merge_an_atlas() {
    let bin = scratch("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_actmax"), bin.join("actmax")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let flags = "--model mnist_cnn --layers all-conv --filters 0-5 --max-iter 8";
    let single = scratch("deploy-single");
    ok(&run(&strs(&with_output(ATLAS, &single, &[])), &[]));
    let reference = atlas_contents(&single);

    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let yaml = std::fs::read_to_string(repo.join("deploy/kubernetes/atlas-job.yaml")).unwrap();
    let scripts = job_scripts(&yaml);
    assert_eq!(scripts.len(), 2, "a shard script and a merge script: {scripts:?}");
    let completions: usize = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("completions:"))
        .unwrap()
        .split('#')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(scripts[0].contains(&format!("--shards {completions}")), "--shards is the Job's completions");
    let root = scratch("k8s-root");
    let sh = |script: &str, envs: &[(&str, &str)]| {
        let mut c = Command::new("sh");
        c.args(["-c", script]).env("PATH", &path).env("ATLAS_ROOT", &root).env("ATLAS_FLAGS", flags);
        c.env_remove("SLURM_ARRAY_TASK_ID").envs(envs.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    let pods: Vec<Child> = (0..completions)
        .map(|k| sh(&scripts[0], &[("JOB_COMPLETION_INDEX", &k.to_string())]).spawn().unwrap())
        .collect();
    wait_all(pods);
    ok(&sh(&scripts[1], &[]).output().unwrap());
    assert!(atlas_contents(&root.join("merged")) == reference, "the Job's merged atlas is the single-process one");
    assert!(root.join("merged/index.html").exists(), "the merge step writes the gallery");

    let sbatch = repo.join("deploy/slurm/atlas.sbatch");
    let text = std::fs::read_to_string(&sbatch).unwrap();
    let array = text.lines().find_map(|l| l.strip_prefix("#SBATCH --array=")).unwrap();
    let (lo, hi) = array.split_once('-').unwrap();
    let (lo, hi): (usize, usize) = (lo.parse().unwrap(), hi.parse().unwrap());
    let slurm_root = scratch("slurm-root");
    let tasks: Vec<Child> = (lo..=hi)
        .map(|id| {
            let (id, min, count) = (id.to_string(), lo.to_string(), (hi - lo + 1).to_string());
            Command::new("bash")
                .arg(&sbatch)
                .env("PATH", &path)
                .env("ATLAS_ROOT", &slurm_root)
                .env("ATLAS_FLAGS", flags)
                .env_remove("JOB_COMPLETION_INDEX")
                .envs([("SLURM_ARRAY_TASK_ID", id), ("SLURM_ARRAY_TASK_MIN", min), ("SLURM_ARRAY_TASK_COUNT", count)])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_all(tasks);
    let shards: Vec<String> = (lo..=hi).map(|k| slurm_root.join(format!("shards/{k}")).display().to_string()).collect();
    let merged = slurm_root.join("merged");
    let mut args = vec!["atlas", "merge", "--complete"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["-o", merged.to_str().unwrap()]);
    ok(&run(&args, &[]));
    assert!(atlas_contents(&merged) == reference, "the array's merged atlas is the single-process one");
    // A merge that must be complete refuses a partial set and writes nothing.
    let partial = slurm_root.join("partial");
    refused(&["atlas", "merge", "--complete", &shards[0], "-o", partial.to_str().unwrap()], &partial, "missing");
}
