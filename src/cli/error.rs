//! The CLI's error: a message for the user; every command maps its failures into it.

use std::fmt::Display;

/// A failure reported as `error: <message>` with a non-zero exit.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    pub fn new(msg: impl Into<String>) -> Self {
        CliError(msg.into())
    }
}

/// Converts any displayable error into a `CliError`, keeping its message (which already names
/// the file, layer or tensor at fault).
pub trait OrCli<T> {
    fn or_cli(self) -> Result<T, CliError>;
}

impl<T, E: Display> OrCli<T> for Result<T, E> {
    fn or_cli(self) -> Result<T, CliError> {
        self.map_err(|e| CliError(e.to_string()))
    }
}
