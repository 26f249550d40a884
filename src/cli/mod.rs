//! Command-line interface: argument definitions and dispatch to one module per command.

mod args;
mod backend;
mod compile;
mod data;
mod error;
mod eval;
mod paths;
mod plot;
mod predict;
mod progress;
mod summary;
mod train;

pub use args::Cli;
use args::Command;
pub use error::CliError;

/// Runs one command; every failure comes back as a `CliError` for a one-line message and a
/// non-zero exit.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Summary(a) => summary::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Compile(a) => compile::run(a),
    }
}
