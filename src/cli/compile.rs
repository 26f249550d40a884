//! `cnnc compile`: write a standalone Rust crate for a model.

use super::args::CompileArgs;
use super::error::CliError;

pub fn run(_a: CompileArgs) -> Result<(), CliError> {
    Err(CliError::new("cnnc compile: not implemented yet"))
}
