//! `cnnc compile`: writes a standalone Rust crate (no dependencies) with the model's
//! specialised forward pass and, unless `--inference-only` or `--no-std`, its training step
//! (with the optimiser of the model's `training:` section).
//! The emitter is `cnnc_compiler::codegen`; this file validates the flags, refuses to write
//! into a directory cnnc did not create, and reports what it wrote.

use std::path::Path;

use cnnc_compiler::codegen::{generate, CodegenOptions, MARKER};
use cnnc_compiler::spec::load_model;

use super::args::CompileArgs;
use super::error::{CliError, OrCli};
use super::summary::human_bytes;

pub fn run(a: CompileArgs) -> Result<(), CliError> {
    // --batch-size and --threads are in range: their parsers check.
    if a.no_std && a.threads > 1 {
        return Err(CliError::new("--no-std crates run on one thread: drop --threads"));
    }
    check_output_dir(&a.output)?;
    if let Some(w) = &a.embed_weights {
        if !w.is_file() {
            return Err(CliError::new(format!("--embed-weights {}: no such file", w.display())));
        }
    }
    let spec = load_model(&a.model).or_cli()?;
    if a.no_std && !a.inference_only {
        eprintln!("note: --no-std crates are inference-only (no train_step)");
    }
    let mut opts = CodegenOptions::new(&spec, a.batch_size);
    opts.training = !(a.inference_only || a.no_std);
    opts.no_std = a.no_std;
    opts.embed_weights = a.embed_weights.clone();
    opts.threads = a.threads;
    let krate = generate(&spec, &opts).or_cli()?;
    let written = krate.write_to(&a.output).or_cli()?;

    let what = match (krate.training_kernels.is_some(), a.no_std) {
        (true, _) => "inference and training",
        (false, true) => "no_std inference",
        (false, false) => "inference",
    };
    println!(
        "Wrote crate `{}` ({what}, batch {}) to {}:",
        krate.package,
        a.batch_size,
        a.output.display()
    );
    for p in &written {
        println!("  {}", p.display());
    }
    let training = krate
        .training_kernels
        .map_or(String::new(), |k| format!(", {k} per training step"));
    println!(
        "Arena: {} ({} bytes). Kernels: {} per inference{training}; {} generated kernel functions.",
        human_bytes(krate.arena_bytes),
        krate.arena_bytes,
        krate.inference_kernels,
        krate.functions
    );
    if let Some(rule) = &krate.update {
        println!("Model::train_step applies the optimiser: {rule}.");
    }
    if !krate.formatted {
        println!("rustfmt did not run: the sources are left as emitted.");
    }
    println!("Build it with: cd {} && cargo build --release", a.output.display());
    Ok(())
}

/// The output must be a directory that is missing, empty, or a crate cnnc wrote before (it
/// holds the marker file); anything else is refused before any work is done.
fn check_output_dir(dir: &Path) -> Result<(), CliError> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "--output {}: exists and is not a directory",
            dir.display()
        )));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| CliError::new(format!("--output {}: {e}", dir.display())))?;
    if entries.next().is_some() && !dir.join(MARKER).is_file() {
        return Err(CliError::new(format!(
            "--output {}: the directory is not empty and was not written by cnnc compile (no {MARKER}); \
             choose a new or empty directory",
            dir.display()
        )));
    }
    Ok(())
}
