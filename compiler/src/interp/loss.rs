//! The training losses (as `tf.keras.losses`, averaged over the batch) and their gradients with
//! respect to the prediction. Computed in f64.
//!
//! - crossentropy from logits: `lse(z) - z[t]` (sparse) or `Σ t·(lse(z) - z)` (categorical),
//!   with the stable log-sum-exp; gradient `(softmax(z)·Σt - t) / N`.
//! - crossentropy from probabilities (Keras): `p` clipped to `[1e-7, 1 - 1e-7]`, then
//!   `-Σ t·log p`; gradient `-t / p` where `p` lies inside the clip range, 0 outside.
//! - mean squared error: the mean over all elements of a sample, then over the batch (= the mean
//!   over every element); gradient `2 (p - t) / numel`.

use cnnc_runtime::Tensor;

use crate::ir::LossKind;

/// Keras's `epsilon()`, the clip bound for probabilities.
const EPSILON: f32 = 1e-7;

/// Class ids from a sparse target `[N]`, checked to be integers in `0..classes`.
fn class_ids(target: &Tensor, classes: usize) -> Result<Vec<usize>, String> {
    target
        .data
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            if t.fract() == 0.0 && t >= 0.0 && (t as usize) < classes {
                Ok(t as usize)
            } else {
                Err(format!("target of sample {i} is {t}, not a class id in 0..{classes}"))
            }
        })
        .collect()
}

/// Stable `log Σ exp(z)` of one row, and the row's softmax.
fn log_sum_exp(row: &[f32]) -> (f64, Vec<f64>) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    (max + sum.ln(), exps.iter().map(|e| e / sum).collect())
}

/// The clipped probability as Keras computes it (clip in f32), widened to f64.
fn clipped(p: f32) -> f64 {
    p.clamp(EPSILON, 1.0 - EPSILON) as f64
}

/// Whether the clip passes a gradient at `p` (TF's clip gradient: inside the closed range).
fn inside_clip(p: f32) -> bool {
    (EPSILON..=1.0 - EPSILON).contains(&p)
}

/// Per-sample targets as dense rows: one-hot for sparse class ids, the target rows otherwise.
fn dense_targets(kind: LossKind, pred: &Tensor, target: &Tensor) -> Result<Vec<f64>, String> {
    let n = pred.shape[0];
    let k = pred.data.len() / n;
    match kind {
        LossKind::SparseCategoricalCrossentropy => {
            let ids = class_ids(target, k)?;
            let mut t = vec![0f64; n * k];
            for (i, &c) in ids.iter().enumerate() {
                t[i * k + c] = 1.0;
            }
            Ok(t)
        }
        _ => Ok(target.data.iter().map(|&v| v as f64).collect()),
    }
}

/// (prediction, target) -> scalar `[]`: the loss averaged over the batch.
pub fn loss(pred: &Tensor, target: &Tensor, kind: LossKind, from_logits: bool) -> Result<Tensor, String> {
    let n = pred.shape[0];
    let k = pred.data.len() / n;
    let t = dense_targets(kind, pred, target)?;
    let mut total = 0f64;
    for (row, trow) in pred.data.chunks_exact(k).zip(t.chunks_exact(k)) {
        total += match kind {
            LossKind::MeanSquaredError => {
                row.iter().zip(trow).map(|(&p, &t)| (p as f64 - t).powi(2)).sum::<f64>() / k as f64
            }
            _ if from_logits => {
                let (lse, _) = log_sum_exp(row);
                row.iter().zip(trow).map(|(&z, &t)| t * (lse - z as f64)).sum()
            }
            _ => row
                .iter()
                .zip(trow)
                .filter(|(_, &t)| t != 0.0)
                .map(|(&p, &t)| -t * clipped(p).ln())
                .sum(),
        };
    }
    Ok(Tensor {
        shape: vec![],
        data: vec![(total / n as f64) as f32],
    })
}

/// (prediction, target) -> d loss / d prediction, the prediction's shape.
pub fn loss_grad(pred: &Tensor, target: &Tensor, kind: LossKind, from_logits: bool) -> Result<Tensor, String> {
    let n = pred.shape[0];
    let k = pred.data.len() / n;
    let t = dense_targets(kind, pred, target)?;
    let mut g = Vec::with_capacity(pred.data.len());
    for (row, trow) in pred.data.chunks_exact(k).zip(t.chunks_exact(k)) {
        match kind {
            LossKind::MeanSquaredError => {
                let scale = 2.0 / (n * k) as f64;
                g.extend(row.iter().zip(trow).map(|(&p, &t)| (scale * (p as f64 - t)) as f32));
            }
            _ if from_logits => {
                let (_, soft) = log_sum_exp(row);
                let tsum: f64 = trow.iter().sum();
                g.extend(soft.iter().zip(trow).map(|(&s, &t)| ((s * tsum - t) / n as f64) as f32));
            }
            _ => g.extend(row.iter().zip(trow).map(|(&p, &t)| {
                if t != 0.0 && inside_clip(p) {
                    (-t / clipped(p) / n as f64) as f32
                } else {
                    0.0
                }
            })),
        }
    }
    Ok(Tensor {
        shape: pred.shape.clone(),
        data: g,
    })
}
