//! clap definitions of every command and flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Most threads `--threads` accepts: far beyond today's core counts, well below what would
/// exhaust the process's memory maps with thread stacks (each thread costs a stack and a
/// guard page).
pub const MAX_THREADS: usize = 1024;

/// A count that must be at least 1 (`--batch-size`, `--epochs`, `--steps`).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// An f32 flag (`--learning-rate 1e-3`), refused as written when f32 cannot hold it (`1e-50`
/// would round to 0, `1e50` to infinity), as the model file's hyper-parameters are.
fn finite_f32(s: &str) -> Result<f32, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    cnnc_compiler::spec::f32_as_written(v)
}

/// A thread count in `1..=MAX_THREADS`.
fn thread_count(s: &str) -> Result<usize, String> {
    match positive(s)? {
        n if n > MAX_THREADS => Err(format!(
            "at most {MAX_THREADS} threads are allowed (this machine has {} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )),
        n => Ok(n),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "cnnc",
    version,
    about = "Ahead-of-time compiler for convolutional neural networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a Keras-style table of layers, output shapes and parameter counts.
    Summary(SummaryArgs),
    /// Train a model and save its weights.
    Train(TrainArgs),
    /// Loss and accuracy of trained weights on a dataset.
    Eval(EvalArgs),
    /// Run the model on an .npy array of inputs and write its outputs.
    Predict(PredictArgs),
    /// Write a standalone Rust crate with the model's specialised forward pass (and training step).
    Compile(CompileArgs),
}

#[derive(Args, Debug)]
pub struct CompileArgs {
    pub model: std::path::PathBuf,
    /// Directory of the crate to write (created; an existing non-empty directory is refused
    /// unless it holds a crate cnnc wrote before).
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub batch_size: usize,
    /// Only the forward pass (no train_step).
    #[arg(long)]
    pub inference_only: bool,
    /// A `#![no_std]` inference crate that allocates nothing and depends on nothing
    /// (implies --inference-only).
    #[arg(long)]
    pub no_std: bool,
    /// Embed these weights (safetensors) in the crate instead of loading them at run time.
    #[arg(long)]
    pub embed_weights: Option<std::path::PathBuf>,
    /// Threads the generated convolutions and GEMMs split their samples across (a batch-1
    /// conv: bands of its output rows; a constant of the crate; `--no-std` crates run on one;
    /// at most 1024).
    #[arg(long, default_value_t = 1, value_parser = thread_count)]
    pub threads: usize,
}

#[derive(Args, Debug)]
pub struct SummaryArgs {
    pub model: PathBuf,
    /// Batch size the graph is specialised for.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub batch_size: usize,
    /// Also report the compiled program for this mode: kernels after fusion and the size of
    /// its one memory arena.
    #[arg(long, value_enum)]
    pub mode: Option<ModeChoice>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeChoice {
    Inference,
    Training,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// The runtime's fused, tiled kernels, driven by the compiled kernel-IR programs over one
    /// planned arena, on all the threads asked for: nothing to build (the fastest; default).
    Kernels,
    /// The crate `cnnc compile` generates, built with cargo for this CPU (cached by a hash of
    /// the source, options, compiler and CPU), loaded and run on --threads threads; the first
    /// run per model and batch size builds (its time is shown). `crate` is an older name for it.
    #[value(alias = "crate")]
    Native,
    /// The reference interpreter (slow, the oracle).
    Interp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerChoice {
    Adam,
    Sgd,
    Rmsprop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum LossChoice {
    SparseCategoricalCrossentropy,
    CategoricalCrossentropy,
    MeanSquaredError,
}

/// Where samples come from: a dataset directory or a pair of .npy files.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Directory with MNIST/Fashion-MNIST IDX files or CIFAR-10 binary batches.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// Flags shared by every command that runs a model.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Execution backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Kernels)]
    pub backend: BackendChoice,
    /// Worker threads (default: all cores; at most 1024).
    #[arg(long, value_parser = thread_count)]
    pub threads: Option<usize>,
    /// Time every kernel and print, when done, each program's kernels slowest first (mean and
    /// fastest call; kernels backend only).
    #[arg(long)]
    pub profile: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training images as float32 NHWC .npy (with --train-y).
    #[arg(long, requires = "train_y", conflicts_with = "data")]
    pub train_x: Option<PathBuf>,
    /// Training labels as integer .npy (with --train-x).
    #[arg(long, requires = "train_x")]
    pub train_y: Option<PathBuf>,
    #[arg(long, value_parser = positive)]
    pub epochs: Option<usize>,
    /// Stop after this many optimiser steps.
    #[arg(long, value_parser = positive)]
    pub steps: Option<usize>,
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerChoice>,
    #[arg(long, value_parser = finite_f32)]
    pub learning_rate: Option<f32>,
    #[arg(long, value_parser = finite_f32)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (sgd).
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long, value_parser = finite_f32)]
    pub validation_split: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub run: RunArgs,
    /// Start from these weights instead of the initialisers.
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// Where to save the trained weights (safetensors, written atomically).
    #[arg(long)]
    pub save: Option<PathBuf>,
    #[arg(long)]
    pub no_shuffle: bool,
    #[arg(long, value_enum)]
    pub loss: Option<LossChoice>,
    /// The model's output is logits (no final softmax).
    #[arg(long)]
    pub from_logits: bool,
    /// Write per-epoch metrics to a CSV file.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Draw the training and validation curves (.png or .svg).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    pub model: PathBuf,
    #[arg(long)]
    pub weights: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Images as .npy (with --y).
    #[arg(long, requires = "y", conflicts_with = "data")]
    pub x: Option<PathBuf>,
    /// Labels as .npy (with --x).
    #[arg(long, requires = "x")]
    pub y: Option<PathBuf>,
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    pub model: PathBuf,
    #[arg(long)]
    pub weights: PathBuf,
    /// Inputs as float32 .npy, [N, H, W, C].
    #[arg(long)]
    pub input: PathBuf,
    /// Outputs as float32 .npy, [N, outputs] (or [N, H, W, C] for a model ending in feature maps).
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long, value_parser = positive)]
    pub batch_size: Option<usize>,
    #[command(flatten)]
    pub run: RunArgs,
}
