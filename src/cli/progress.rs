//! Training progress for a terminal: an indicatif bar per epoch with loss, accuracy and
//! images/s, and a Keras-like line at the end of each epoch.

use indicatif::{ProgressBar, ProgressStyle};

use cnnc_runtime::train::{BatchLog, EpochLog, TrainObserver};

pub struct ProgressObserver {
    bar: Option<ProgressBar>,
    epochs: usize,
}

impl ProgressObserver {
    pub fn new(epochs: usize) -> Self {
        ProgressObserver { bar: None, epochs }
    }
}

impl TrainObserver for ProgressObserver {
    fn on_epoch_begin(&mut self, epoch: usize, batches: usize) {
        eprintln!("Epoch {}/{}", epoch + 1, self.epochs);
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("{pos:>5}/{len} [{bar:30}] {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar = Some(bar);
    }

    fn on_batch_end(&mut self, log: &BatchLog) {
        if let Some(bar) = &self.bar {
            bar.set_position(log.batch as u64 + 1);
            bar.set_message(format!(
                "loss: {:.4} - accuracy: {:.4} - {:.0} img/s",
                log.loss, log.accuracy, log.images_per_sec
            ));
        }
    }

    fn on_epoch_end(&mut self, log: &EpochLog) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let mut line = format!(
            "{:.1}s - loss: {:.4} - accuracy: {:.4}",
            log.seconds, log.loss, log.accuracy
        );
        if let (Some(vl), Some(va)) = (log.val_loss, log.val_accuracy) {
            line.push_str(&format!(" - val_loss: {vl:.4} - val_accuracy: {va:.4}"));
        }
        println!("Epoch {}/{}: {line}", log.epoch + 1, self.epochs);
    }
}
