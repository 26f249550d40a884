//! `fit`: Keras-style mini-batch training over a dataset with per-epoch seeded shuffling,
//! validation at the end of each epoch, and a stop (with the last good parameters) as soon as
//! the loss or a gradient stops being finite.

use std::time::Instant;

use super::check::{check_batch, check_data, check_params};
use super::evaluate::evaluate_range;
use super::loss::count_correct;
use super::{BatchLog, EpochLog, FitConfig, History, TrainError, TrainObserver, Validation};
use crate::data::{epoch_order, validation_split_at, Dataset};
use crate::exec::{Executor, TargetLayout};
use crate::optim::Optimizer;
use crate::pool::Pool;
use crate::tensor::Tensor;

/// Trains `params` (in the executor's order) with `opt` on `train`. The last partial batch of
/// each epoch is trained on. Returns the per-epoch logs; on a non-finite loss or gradient,
/// returns [`TrainError::NonFinite`] with `params` as they were before that step.
pub fn fit(
    exec: &mut dyn Executor,
    params: &mut [Tensor],
    opt: &mut Optimizer,
    train: &Dataset,
    cfg: &FitConfig,
    observer: &mut dyn TrainObserver,
) -> Result<History, TrainError> {
    check_params(exec, params)?;
    // The optimiser's updates too run with denormals flushed, as every kernel does.
    let _ftz = crate::fpenv::FlushDenormals::new();
    check_batch(exec, cfg.batch_size)?;
    check_data(exec, train, "training data")?;
    let specs = exec.params().to_vec();
    let trainable: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].trainable).collect();
    let frozen: Vec<usize> = (0..specs.len()).filter(|&i| !specs[i].trainable).collect();
    let shapes: Vec<Vec<usize>> = trainable.iter().map(|&i| specs[i].shape.clone()).collect();
    if opt.shapes() != shapes.as_slice() {
        return Err(TrainError::Inconsistent {
            what: "optimiser",
            reason: format!(
                "state for shapes {:?}, but the model's trainable parameters are {shapes:?}",
                opt.shapes()
            ),
        });
    }

    // Keras's validation_split holds out the last samples; training shuffles the rest.
    let (n_train, validation): (usize, Option<(&Dataset, std::ops::Range<usize>)>) = match &cfg.validation {
        Validation::None => (train.n, None),
        Validation::Split(frac) => {
            let at = validation_split_at(train.n, *frac)?;
            (at, Some((train, at..train.n)))
        }
        Validation::Data(val) => {
            check_data(exec, val, "validation data")?;
            (train.n, Some((val, 0..val.n)))
        }
    };

    let (bs, len, out) = (cfg.batch_size, train.sample_len(), exec.output_size());
    let one_hot = match exec.target_layout() {
        TargetLayout::ClassIds => None,
        TargetLayout::Dense => Some(out),
    };
    let mut xb = vec![0.0f32; bs * len]; // [bs, ..input_shape]
    let mut yb = vec![0.0f32; bs * one_hot.unwrap_or(1)]; // [bs] or [bs, out]
    let mut labels = vec![0.0f32; bs]; // [bs]
    let mut preds = vec![0.0f32; bs * out]; // [bs, out]
    let mut grads: Vec<Tensor> = shapes.iter().map(|s| Tensor::zeros(s)).collect();
    let mut snapshot: Vec<Vec<f32>> = frozen.iter().map(|&i| params[i].data.clone()).collect();

    let batches = n_train.div_ceil(bs);
    // Inference results do not depend on the batch size, so validate in the largest batches.
    let eval_batch = exec.batch_size();
    let mut history = History::default();
    let mut steps_done = 0usize;
    let mut stop = false;
    for epoch in cfg.initial_epoch..cfg.initial_epoch + cfg.epochs {
        let started = Instant::now();
        observer.on_epoch_begin(epoch, batches);
        let order: Vec<usize> = if cfg.shuffle {
            epoch_order(n_train, cfg.seed, epoch)
        } else {
            (0..n_train).collect()
        };
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (batch, idx) in order.chunks(bs).enumerate() {
            let nb = idx.len();
            train.gather_x(idx, &mut xb);
            train.gather_y(idx, one_hot, &mut yb);
            train.gather_y(idx, None, &mut labels);
            for (snap, &i) in snapshot.iter_mut().zip(&frozen) {
                snap.copy_from_slice(&params[i].data);
            }
            let step = opt.iterations();
            let y_len = nb * one_hot.unwrap_or(1);
            let result = exec.train_step(
                params,
                &mut grads,
                &xb[..nb * len],
                &yb[..y_len],
                nb,
                step,
                &mut preds[..nb * out],
            );
            let bad = if !result.loss.is_finite() {
                Some(format!("the loss ({})", result.loss))
            } else {
                grads
                    .iter()
                    .position(|g| !all_finite(&g.data))
                    .map(|k| format!("the gradient of {}", specs[trainable[k]].name))
            };
            if let Some(what) = bad {
                for (snap, &i) in snapshot.iter().zip(&frozen) {
                    params[i].data.copy_from_slice(snap);
                }
                return Err(TrainError::NonFinite {
                    step,
                    epoch,
                    batch,
                    what,
                });
            }
            let mut refs = trainable_refs(params, &trainable);
            opt.step_on(exec.pool().unwrap_or(Pool::inline()), &mut refs, &grads)?;

            loss_sum += result.loss as f64 * nb as f64;
            correct += count_correct(&preds[..nb * out], out, &labels[..nb]);
            seen += nb;
            steps_done += 1;
            observer.on_batch_end(&BatchLog {
                step: opt.iterations(),
                epoch,
                batch,
                batches_per_epoch: batches,
                loss: (loss_sum / seen as f64) as f32,
                accuracy: (correct as f64 / seen as f64) as f32,
                images_per_sec: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
            if cfg.max_steps.is_some_and(|m| steps_done >= m) || observer.should_stop() {
                stop = true;
                break;
            }
        }
        let (val_loss, val_accuracy) = match &validation {
            Some((data, range)) => {
                let (l, a) = evaluate_range(exec, params, data, range.clone(), eval_batch, cfg.loss);
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let log = EpochLog {
            epoch,
            loss: (loss_sum / seen.max(1) as f64) as f32,
            accuracy: (correct as f64 / seen.max(1) as f64) as f32,
            val_loss,
            val_accuracy,
            seconds: started.elapsed().as_secs_f64(),
        };
        observer.on_epoch_end(&log);
        history.epochs.push(log);
        if stop {
            break;
        }
    }
    Ok(history)
}

/// Whether every value is finite; an OR-reduction without early exit, so that it vectorises.
fn all_finite(v: &[f32]) -> bool {
    !v.iter().fold(false, |bad, x| bad | !x.is_finite())
}

/// Mutable references to the parameters whose indices are `trainable` (ascending), in order:
/// what [`Optimizer::step`] updates.
pub fn trainable_refs<'a>(params: &'a mut [Tensor], trainable: &[usize]) -> Vec<&'a mut Tensor> {
    let mut want = trainable.iter().peekable();
    params
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| {
            if want.peek() == Some(&&i) {
                want.next();
                Some(p)
            } else {
                None
            }
        })
        .collect()
}
