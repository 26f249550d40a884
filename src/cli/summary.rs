//! `cnnc summary`: the Keras-style layer table of a model.

use cnnc_compiler::{ir::Mode, lower::lower, spec::load_model, summary::summary};

use super::args::SummaryArgs;
use super::error::{CliError, OrCli};

pub fn run(a: SummaryArgs) -> Result<(), CliError> {
    if a.batch_size == 0 {
        return Err(CliError::new("--batch-size must be at least 1"));
    }
    let spec = load_model(&a.model).or_cli()?;
    let g = lower(&spec, a.batch_size, Mode::Inference).or_cli()?;
    print!("{}", summary(&g));
    Ok(())
}

/// Refuses an output path that cannot be written, before any work is done: its directory must
/// exist and the path must not be a directory.
pub fn check_output_path(flag: &str, path: &std::path::Path) -> Result<(), CliError> {
    if path.is_dir() {
        return Err(CliError::new(format!("{flag} {}: is a directory", path.display())));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "{flag} {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}
