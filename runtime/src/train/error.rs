//! Why training, evaluation or prediction stopped or could not start.

use std::path::PathBuf;

use thiserror::Error;

use crate::data::DataError;
use crate::optim::OptimError;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error("batch size {requested} is outside 1..={max} (the model was compiled for batches of {max})")]
    BatchSize { requested: usize, max: usize },
    #[error("{found} parameter tensors given for a model with {expected}")]
    ParamCount { expected: usize, found: usize },
    #[error("parameter {name} has shape {found:?}, expected {expected:?}")]
    ParamShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{what}: samples of shape {found:?} do not fit the model's input {expected:?}")]
    InputShape {
        what: &'static str,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{what}: sample {index} has label {value}, but the model has {classes} outputs")]
    Label {
        what: &'static str,
        index: usize,
        value: f32,
        classes: usize,
    },
    #[error("{what}: {reason}")]
    Inconsistent { what: &'static str, reason: String },
    #[error("{what} is empty")]
    Empty { what: &'static str },
    /// Training diverged. The parameters hold the values from before the failing step.
    #[error(
        "training stopped at step {step} (epoch {}, batch {}): {what} is not finite; \
         the parameters keep their last finite values",
        epoch + 1,
        batch + 1
    )]
    NonFinite {
        step: u64,
        epoch: usize,
        batch: usize,
        what: String,
    },
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
