//! Progress callbacks of the training loop (the CLI draws its progress bars with them) and
//! the per-epoch record.

/// Progress after one training batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchLog {
    /// Optimiser steps applied so far, this one included.
    pub step: u64,
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based batch within the epoch.
    pub batch: usize,
    pub batches_per_epoch: usize,
    /// Mean loss over the epoch's samples so far (weighted by batch size, as Keras).
    pub loss: f32,
    /// Fraction of the epoch's samples so far whose prediction's argmax is their class.
    pub accuracy: f32,
    /// Training throughput of the epoch so far.
    pub images_per_sec: f64,
}

/// One finished epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 0-based epoch.
    pub epoch: usize,
    pub loss: f32,
    pub accuracy: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// Receives the training loop's progress. Every method has a do-nothing default.
pub trait TrainObserver {
    fn on_epoch_begin(&mut self, _epoch: usize, _batches: usize) {}
    fn on_batch_end(&mut self, _log: &BatchLog) {}
    fn on_epoch_end(&mut self, _log: &EpochLog) {}
    /// Polled after every batch; `true` ends training after the current batch (the partial
    /// epoch is validated and logged), e.g. on Ctrl-C or for early stopping.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct SilentObserver;

impl TrainObserver for SilentObserver {}
