//! The training loop and its companions: `fit` (Keras-style epochs over a dataset with an
//! optimiser the runtime owns), `evaluate`, `predict`, the loss functions evaluated from
//! predictions, progress observers and the run's history.

mod check;
mod error;
mod evaluate;
mod fit;
mod history;
mod loss;
mod observer;

pub use error::TrainError;
pub use evaluate::{evaluate, predict};
pub use fit::{fit, trainable_refs};
pub use history::History;
pub use loss::{argmax, count_correct, LossFn};
pub use observer::{BatchLog, EpochLog, SilentObserver, TrainObserver};

use crate::data::Dataset;

/// Where validation metrics come from at the end of each epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Validation {
    #[default]
    None,
    /// Hold out the last fraction of the training samples (Keras's `validation_split`).
    Split(f32),
    /// A separate dataset (Keras's `validation_data`).
    Data(Dataset),
}

/// Settings of one `fit` call (Keras's `fit` arguments).
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    pub epochs: usize,
    /// Samples per step, at most the executor's batch size; the last batch may be smaller.
    pub batch_size: usize,
    /// Reshuffle the training samples every epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    pub seed: u64,
    /// Stop after this many steps in total (the partial epoch is still validated and logged).
    pub max_steps: Option<usize>,
    pub validation: Validation,
    /// The loss used for validation metrics (the executor computes the training loss).
    pub loss: LossFn,
    /// Number of the first epoch, when resuming (it also selects that epoch's shuffle).
    pub initial_epoch: usize,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            max_steps: None,
            validation: Validation::None,
            loss: LossFn::SparseCategoricalCrossentropy { from_logits: false },
            initial_epoch: 0,
        }
    }
}
