//! The per-epoch record of a training run, and its CSV form (Keras `CSVLogger` columns).

use std::fmt::Write as _;
use std::path::Path;

use super::{EpochLog, TrainError};
use crate::data::write_atomic;

/// Every epoch's log, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub epochs: Vec<EpochLog>,
}

impl History {
    pub fn last(&self) -> Option<&EpochLog> {
        self.epochs.last()
    }

    /// CSV with Keras `CSVLogger`'s layout — `epoch` (0-based) then the metrics in alphabetical
    /// order — plus the epoch's wall time. Validation columns appear when any epoch has them.
    pub fn to_csv(&self) -> String {
        let with_val = self.epochs.iter().any(|e| e.val_loss.is_some());
        let mut out = String::from("epoch,accuracy,loss,seconds");
        if with_val {
            out.push_str(",val_accuracy,val_loss");
        }
        out.push('\n');
        let opt = |v: Option<f32>| v.map(|v| v.to_string()).unwrap_or_default();
        for e in &self.epochs {
            let _ = write!(out, "{},{},{},{:.3}", e.epoch, e.accuracy, e.loss, e.seconds);
            if with_val {
                let _ = write!(out, ",{},{}", opt(e.val_accuracy), opt(e.val_loss));
            }
            out.push('\n');
        }
        out
    }

    /// Writes [`History::to_csv`] to `path` atomically.
    pub fn write_csv(&self, path: &Path) -> Result<(), TrainError> {
        write_atomic(path, self.to_csv().as_bytes()).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
