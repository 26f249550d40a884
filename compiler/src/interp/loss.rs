//! The training losses (as `tf.keras.losses`, averaged over the batch) and their gradients with
//! respect to the prediction. Computed in f64.
//!
//! - crossentropy from logits: `lse(z) - z[t]` (sparse) or `Σ t·(lse(z) - z)` (categorical),
//!   with the stable log-sum-exp; gradient `(softmax(z)·Σt - t) / N`.
//! - crossentropy from probabilities, as Keras computes it (which matters when the outputs are
//!   not a softmax's, e.g. LeNet's sigmoid outputs): sparse, `p` clipped to `[1e-7, 1 - 1e-7]`
//!   and its log taken as logits, `ln Σ clip(p) - ln clip(p[t])`; categorical, the row divided
//!   by its sum, then clipped, `-Σ t·ln clip(q)`. The clip passes a gradient inside its range.
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
            LossKind::SparseCategoricalCrossentropy => {
                let ln_sum = row.iter().map(|&p| clipped(p)).sum::<f64>().ln();
                row.iter()
                    .zip(trow)
                    .filter(|(_, &t)| t != 0.0)
                    .map(|(&p, &t)| t * (ln_sum - clipped(p).ln()))
                    .sum()
            }
            _ => {
                let sum: f32 = row.iter().sum();
                row.iter()
                    .zip(trow)
                    .filter(|(_, &t)| t != 0.0)
                    .map(|(&p, &t)| -t * clipped(p / sum).ln())
                    .sum()
            }
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
            // d/dp_i of ln S - ln clip(p_t), S = Σ clip(p): (Σt / S - t_i / p_i) inside the clip.
            LossKind::SparseCategoricalCrossentropy => {
                let sum: f64 = row.iter().map(|&p| clipped(p)).sum();
                let tsum: f64 = trow.iter().sum();
                g.extend(row.iter().zip(trow).map(|(&p, &t)| {
                    if inside_clip(p) {
                        ((tsum / sum - t / clipped(p)) / n as f64) as f32
                    } else {
                        0.0
                    }
                }));
            }
            // q = p / Σp; with g_j = dL/dq_j = -t_j / q_j (inside the clip),
            // dL/dp_i = (g_i - Σ_j g_j q_j) / Σp.
            _ => {
                let sum: f32 = row.iter().sum();
                let q: Vec<f32> = row.iter().map(|&p| p / sum).collect();
                let gq: Vec<f64> = q
                    .iter()
                    .zip(trow)
                    .map(|(&q, &t)| {
                        if t != 0.0 && inside_clip(q) {
                            -t / clipped(q)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let dot: f64 = gq.iter().zip(&q).map(|(&g, &q)| g * q as f64).sum();
                g.extend(gq.iter().map(|&gi| ((gi - dot) / sum as f64 / n as f64) as f32));
            }
        }
    }
    Ok(Tensor {
        shape: pred.shape.clone(),
        data: g,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs that are not a distribution (the seed LeNet's ten sigmoids): Keras renormalises
    /// the row, so ten outputs of 0.5 cost ln 10 (the seed's first epochs print ~2.3, falling to
    /// 0.5), not −ln 0.5 — with which a model can reach zero loss by outputting 1 everywhere.
    #[test]
    fn crossentropy_from_probabilities_renormalises_the_row_as_keras() {
        let pred = Tensor {
            shape: vec![2, 10],
            data: vec![0.5; 20],
        };
        let ids = Tensor {
            shape: vec![2],
            data: vec![3.0, 7.0],
        };
        let mut onehot = Tensor::zeros(&[2, 10]);
        onehot.data[3] = 1.0;
        onehot.data[17] = 1.0;
        for (kind, target) in [
            (LossKind::SparseCategoricalCrossentropy, &ids),
            (LossKind::CategoricalCrossentropy, &onehot),
        ] {
            let l = loss(&pred, target, kind, false).unwrap().data[0];
            assert!((l - std::f32::consts::LN_10).abs() < 1e-6, "{kind:?}: {l}");
            // Every output has a gradient: (1/5 − t/0.5) / 2.
            let g = loss_grad(&pred, target, kind, false).unwrap();
            for (i, &v) in g.data.iter().enumerate() {
                let want = if i == 3 || i == 17 { (0.2 - 2.0) / 2.0 } else { 0.1 };
                assert!((v - want).abs() < 1e-6, "{kind:?} [{i}]: {v} vs {want}");
            }
        }
    }
}
