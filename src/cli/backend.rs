//! Model loading and backend construction: YAML → spec → graphs → an `Executor`.

use std::path::Path;

use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::{load_model, ModelSpec, TrainingSpec};
use cnnc_runtime::train::LossFn;
use cnnc_runtime::Executor;

use super::args::{BackendChoice, LossChoice, RunArgs};
use super::error::{CliError, OrCli};

pub fn load_spec(path: &Path) -> Result<ModelSpec, CliError> {
    load_model(path).or_cli()
}

/// Threads to use: the flag, else every core.
pub fn threads(run: &RunArgs) -> Result<usize, CliError> {
    match run.threads {
        Some(0) => Err(CliError::new("--threads must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    }
}

/// The loss a model trains and is evaluated with.
#[derive(Clone, Copy, Debug)]
pub struct LossSetup {
    pub kind: LossKind,
    pub from_logits: bool,
}

impl LossSetup {
    /// The flags, else the model's `training:` section, else sparse categorical cross-entropy
    /// on probabilities.
    pub fn resolve(flag: Option<LossChoice>, from_logits_flag: bool, t: &TrainingSpec) -> Result<Self, CliError> {
        let kind = match flag {
            Some(LossChoice::SparseCategoricalCrossentropy) => LossKind::SparseCategoricalCrossentropy,
            Some(LossChoice::CategoricalCrossentropy) => LossKind::CategoricalCrossentropy,
            Some(LossChoice::MeanSquaredError) => LossKind::MeanSquaredError,
            None => t.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy),
        };
        let from_logits = from_logits_flag || t.from_logits.unwrap_or(false);
        if from_logits && kind == LossKind::MeanSquaredError {
            return Err(CliError::new("--from-logits applies to the cross-entropy losses only"));
        }
        Ok(LossSetup { kind, from_logits })
    }

    /// The same loss computed from predictions (validation and evaluation).
    pub fn loss_fn(&self) -> LossFn {
        match self.kind {
            LossKind::SparseCategoricalCrossentropy => LossFn::SparseCategoricalCrossentropy {
                from_logits: self.from_logits,
            },
            LossKind::CategoricalCrossentropy => LossFn::CategoricalCrossentropy {
                from_logits: self.from_logits,
            },
            LossKind::MeanSquaredError => LossFn::MeanSquaredError,
        }
    }
}

/// Builds the chosen backend for up to `batch` samples per call, training with `loss`.
pub fn build(spec: &ModelSpec, batch: usize, loss: LossSetup, run: &RunArgs) -> Result<Box<dyn Executor>, CliError> {
    if batch == 0 {
        return Err(CliError::new("batch size must be at least 1"));
    }
    let threads = threads(run)?;
    let train = lower(spec, batch, Mode::Training).or_cli()?;
    let infer = lower(spec, batch, Mode::Inference).or_cli()?;
    match run.backend {
        BackendChoice::Native => Ok(Box::new(
            NativeExecutor::new(train, infer, loss.kind, loss.from_logits, threads).or_cli()?,
        )),
        BackendChoice::Interp => Ok(Box::new(
            InterpExecutor::new(train, infer, loss.kind, loss.from_logits).or_cli()?,
        )),
    }
}
