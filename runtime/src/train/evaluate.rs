//! Inference over whole datasets: `predict` for any number of samples and `evaluate`, which
//! computes the loss and accuracy from the predictions.

use std::ops::Range;

use super::check::{check_batch, check_data, check_params};
use super::loss::{argmax, LossFn};
use super::TrainError;
use crate::data::Dataset;
use crate::exec::{Executor, InferenceSession};
use crate::tensor::Tensor;

/// Predictions `[n, output_size]` for `x` (`[n, ..input_shape]`), in batches of the executor's
/// batch size (the last one partial), in one [`InferenceSession`].
pub fn predict(exec: &mut dyn Executor, params: &[Tensor], x: &[f32], n: usize) -> Result<Vec<f32>, TrainError> {
    check_params(exec, params)?;
    let len: usize = exec.input_shape().iter().product();
    let (batch, out) = (exec.batch_size(), exec.output_size());
    if batch == 0 || len == 0 || out == 0 {
        return Err(TrainError::Inconsistent {
            what: "executor",
            reason: format!("batch size {batch}, input size {len} and output size {out} must all be positive"),
        });
    }
    if n.checked_mul(len) != Some(x.len()) {
        return Err(TrainError::Inconsistent {
            what: "prediction input",
            reason: format!("{n} samples of {len} values need {} values, found {}", n * len, x.len()),
        });
    }
    let mut preds = vec![0.0; n * out];
    let mut session = InferenceSession::new(exec, params);
    for (xs, ps) in x.chunks(batch * len).zip(preds.chunks_mut(batch * out)) {
        session.predict(xs, xs.len() / len, ps);
    }
    Ok(preds)
}

/// Mean loss and accuracy over `data` (each sample weighs the same, as Keras's `evaluate`),
/// predicting `batch` samples per call (in one [`InferenceSession`]).
pub fn evaluate(
    exec: &mut dyn Executor,
    params: &[Tensor],
    data: &Dataset,
    batch: usize,
    loss: LossFn,
) -> Result<(f32, f32), TrainError> {
    check_params(exec, params)?;
    check_batch(exec, batch)?;
    check_data(exec, data, "evaluation data")?;
    Ok(evaluate_range(exec, params, data, 0..data.n, batch, loss))
}

/// [`evaluate`] over the samples `range` of an already checked dataset.
pub(super) fn evaluate_range(
    exec: &mut dyn Executor,
    params: &[Tensor],
    data: &Dataset,
    range: Range<usize>,
    batch: usize,
    loss: LossFn,
) -> (f32, f32) {
    let (len, out) = (data.sample_len(), exec.output_size());
    let mut preds = vec![0.0; batch * out];
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut session = InferenceSession::new(exec, params);
    let mut start = range.start;
    while start < range.end {
        let nb = batch.min(range.end - start);
        let preds = &mut preds[..nb * out];
        session.predict(&data.x[start * len..(start + nb) * len], nb, preds);
        let labels = &data.y[start..start + nb];
        loss_sum += loss.batch_loss(preds, labels) as f64 * nb as f64;
        for (row, &label) in preds.chunks_exact(out).zip(labels) {
            correct += usize::from(argmax(row) == label as usize);
        }
        start += nb;
    }
    let n = range.len().max(1) as f64;
    ((loss_sum / n) as f32, (correct as f64 / n) as f32)
}
