//! Model loading and backend construction: YAML → spec → graphs → an `Executor`.

use std::path::Path;
use std::time::Instant;

use cnnc_compiler::crate_backend::{CrateExecutor, CrateOptions, Purpose};
use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{Graph, LossKind, Mode, OutputRole};
use cnnc_compiler::lower::{check_classifier_output, lower};
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::{load_model, ModelSpec, TrainingSpec};
use cnnc_runtime::train::LossFn;
use cnnc_runtime::{Executor, ParamSpec};

use super::args::{BackendChoice, LossChoice, RunArgs, MAX_THREADS};
use super::error::{CliError, OrCli};

pub fn load_spec(path: &Path) -> Result<ModelSpec, CliError> {
    load_model(path).or_cli()
}

/// Threads to use: the flag (its parser keeps it in `1..=MAX_THREADS`), else every core (as
/// many as `MAX_THREADS`).
pub fn threads(run: &RunArgs) -> usize {
    run.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS)
    })
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

/// Per-sample input shape and output size of the model (what the data must fit). The data
/// are labelled, so the output must be a vector of class scores.
pub fn model_io(spec: &ModelSpec) -> Result<(Vec<usize>, usize), CliError> {
    let g = lower(spec, 1, Mode::Inference).or_cli()?;
    check_classifier_output(spec, &g).or_cli()?;
    let (input, output) = io_shapes(spec, &g)?;
    Ok((input, output.iter().product()))
}

/// The model's parameters as every backend lists them (graph order), from the lowering alone,
/// so that a weights file is read and checked before a backend is built (a native build takes
/// seconds); [`check_params`] confirms the backend agrees.
pub fn param_specs(spec: &ModelSpec) -> Result<Vec<ParamSpec>, CliError> {
    Ok(lower(spec, 1, Mode::Training).or_cli()?.param_specs())
}

/// Checks that `exec` takes the parameters `specs` describe (a compiler bug if not).
pub fn check_params(exec: &dyn Executor, specs: &[ParamSpec]) -> Result<(), CliError> {
    if exec.params() == specs {
        return Ok(());
    }
    Err(CliError::new(format!(
        "internal error: the {} backend lists other parameters than the model's",
        exec.backend_name()
    )))
}

/// Per-sample input and prediction shapes of the model, whatever its output (for predict).
pub fn model_shapes(spec: &ModelSpec) -> Result<(Vec<usize>, Vec<usize>), CliError> {
    io_shapes(spec, &lower(spec, 1, Mode::Inference).or_cli()?)
}

fn io_shapes(spec: &ModelSpec, g: &Graph) -> Result<(Vec<usize>, Vec<usize>), CliError> {
    match (g.input(), g.output(&OutputRole::Prediction)) {
        (Some(i), Some(p)) => Ok((g.shape(i).0[1..].to_vec(), g.shape(p).0[1..].to_vec())),
        _ => Err(CliError::new(format!("model '{}': no input or prediction", spec.name))),
    }
}

/// What a command will run, so that the native backend can build every library it needs up
/// front (where errors can be reported) rather than in the middle of an epoch.
#[derive(Clone, Debug, Default)]
pub struct Workload {
    /// Training steps at the full batch (else inference only).
    pub training: bool,
    /// Other batch sizes the command will call with: (samples, whether to train).
    pub partial: Vec<(usize, bool)>,
}

/// A backend, ready to run.
pub struct Built {
    pub exec: Box<dyn Executor>,
    /// Seconds to build it.
    pub seconds: f64,
    /// Added to the build time when shown (`, cached`, `, compiled by cargo ...`).
    pub note: String,
    /// Threads it computes with.
    pub threads: usize,
}

/// For commands with no status line of their own (eval, predict): the native backend's build
/// time on stderr (it can be long on a first run); the in-process backends print nothing.
pub fn report(spec: &ModelSpec, built: &Built) {
    if built.exec.backend_name() == "native" {
        eprintln!(
            "{}: native backend ({:.2}s to build{})",
            spec.name, built.seconds, built.note
        );
    }
}

/// Builds the chosen backend for up to `batch` samples per call, training with `loss`.
pub fn build(
    spec: &ModelSpec,
    batch: usize,
    loss: LossSetup,
    run: &RunArgs,
    work: &Workload,
) -> Result<Built, CliError> {
    let mut built = build_backend(spec, batch, loss, run, work)?;
    if run.profile && !built.exec.set_profiling(true) {
        return Err(CliError::new(format!(
            "--profile: the {} backend has no per-kernel timing (use --backend kernels)",
            built.exec.backend_name()
        )));
    }
    Ok(built)
}

/// With `--profile`: every program's kernels, slowest first, on stderr.
pub fn print_profile(exec: &dyn Executor) {
    if let Some(report) = exec.profile_report() {
        eprint!("{report}");
    }
}

fn build_backend(
    spec: &ModelSpec,
    batch: usize,
    loss: LossSetup,
    run: &RunArgs,
    work: &Workload,
) -> Result<Built, CliError> {
    if batch == 0 {
        return Err(CliError::new("batch size must be at least 1"));
    }
    let started = Instant::now();
    let threads = threads(run);
    let plain = |exec: Box<dyn Executor>, threads| Built {
        exec,
        seconds: started.elapsed().as_secs_f64(),
        note: String::new(),
        threads,
    };
    match run.backend {
        BackendChoice::Kernels => {
            let train = lower(spec, batch, Mode::Training).or_cli()?;
            let infer = lower(spec, batch, Mode::Inference).or_cli()?;
            let exec = NativeExecutor::new(train, infer, loss.kind, loss.from_logits, threads).or_cli()?;
            Ok(plain(Box::new(exec), threads))
        }
        BackendChoice::Interp => {
            let train = lower(spec, batch, Mode::Training).or_cli()?;
            let infer = lower(spec, batch, Mode::Inference).or_cli()?;
            let exec = InterpExecutor::new(train, infer, loss.kind, loss.from_logits).or_cli()?;
            Ok(plain(Box::new(exec), 1))
        }
        BackendChoice::Native => {
            let purpose = |training| {
                if training {
                    Purpose::Training
                } else {
                    Purpose::Inference
                }
            };
            let opts = CrateOptions {
                purpose: purpose(work.training),
                prebuild: work
                    .partial
                    .iter()
                    .filter(|&&(n, _)| n > 0 && n < batch)
                    .map(|&(n, t)| (n, purpose(t)))
                    .collect(),
                announce: true,
                threads,
                ..CrateOptions::default()
            };
            let exec = CrateExecutor::new(spec, batch, loss.kind, loss.from_logits, opts).or_cli()?;
            let built = exec.builds().iter().filter(|b| !b.cached).count();
            let note = if built == 0 {
                ", cached".to_string()
            } else {
                format!(
                    ", cargo built {built} of its {} librar{} into {}",
                    exec.builds().len(),
                    if exec.builds().len() == 1 { "y" } else { "ies" },
                    exec.cache().root().display()
                )
            };
            Ok(Built {
                exec: Box::new(exec),
                seconds: started.elapsed().as_secs_f64(),
                note,
                threads,
            })
        }
    }
}
