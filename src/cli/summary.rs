//! `cnnc summary`: the Keras-style layer table of a model, and with `--mode` the compiled
//! program's kernel count and arena size for that batch size.

use cnnc_compiler::autodiff::training_graph;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::{check_classifier_output, lower};
use cnnc_compiler::passes::{compile, PipelineOptions};
use cnnc_compiler::{spec::load_model, summary::summary};

use super::args::{ModeChoice, SummaryArgs};
use super::error::{CliError, OrCli};

pub fn run(a: SummaryArgs) -> Result<(), CliError> {
    let spec = load_model(&a.model).or_cli()?;
    let g = lower(&spec, a.batch_size, Mode::Inference).or_cli()?;
    print!("{}", summary(&g));
    let Some(mode) = a.mode else { return Ok(()) };
    let graph = match mode {
        ModeChoice::Inference => g,
        ModeChoice::Training => {
            let fwd = lower(&spec, a.batch_size, Mode::Training).or_cli()?;
            let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
            if loss != LossKind::MeanSquaredError {
                check_classifier_output(&spec, &fwd).or_cli()?;
            }
            training_graph(&fwd, loss, spec.training.from_logits.unwrap_or(false)).or_cli()?
        }
    };
    let program = compile(graph, &PipelineOptions::default()).or_cli()?;
    let mode = format!("{mode:?}").to_lowercase();
    println!(
        "Compiled for {mode}, batch {}: {} kernels, arena {} ({} bytes)",
        a.batch_size,
        program.run_kernels(),
        human_bytes(program.arena_bytes()),
        program.arena_bytes()
    );
    Ok(())
}

/// A byte count for people: `38.4 MiB`.
pub fn human_bytes(b: usize) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
