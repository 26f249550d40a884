//! Errors of the dataset loaders: each names the file (or directory) and what was wrong in it.

use std::path::PathBuf;

use thiserror::Error;

/// Why a dataset could not be read, written or split.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid gzip stream: {source}", path.display())]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: missing dataset files; expected {expected}", dir.display())]
    MissingFiles { dir: PathBuf, expected: String },
    /// One file of an images/labels pair is there, its partner is not.
    #[error("{}: {found} found but {missing} is missing", dir.display())]
    IncompletePair {
        dir: PathBuf,
        found: String,
        missing: String,
    },
    /// The file does not follow its format (bad magic, header, size...).
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{}: sample {index} has label {value}, expected an integer in 0..{classes}", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        value: f64,
        classes: usize,
    },
    #[error("{} holds {images} images but {} holds {labels} labels", images_path.display(), labels_path.display())]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
    #[error("{}: images of shape {found:?} do not match the training set's {expected:?}", path.display())]
    SampleShapeMismatch {
        path: PathBuf,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("inconsistent dataset: {0}")]
    Invalid(String),
    #[error("validation split {frac} of {n} samples leaves an empty {side} set (need 0 < split < 1)")]
    BadSplit { frac: f32, n: usize, side: &'static str },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        DataError::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
