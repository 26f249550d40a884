//! Loss functions computed from a model's predictions (the output of its final activation),
//! mirroring the compiler's `LossKind` + `from_logits`, with Keras's clipping; and accuracy.

use std::fmt;

/// Keras's `backend.epsilon()`, the clipping bound for probabilities.
const EPSILON: f32 = 1e-7;

/// A loss as declared in `compile(loss=...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossFn {
    /// Targets are class ids.
    SparseCategoricalCrossentropy { from_logits: bool },
    /// Targets are one-hot rows.
    CategoricalCrossentropy { from_logits: bool },
    /// Targets are one-hot rows; the mean of squared differences over the outputs.
    MeanSquaredError,
}

impl LossFn {
    /// From Keras's name (`sparse_categorical_crossentropy`, `categorical_crossentropy`,
    /// `mean_squared_error`/`mse`).
    pub fn from_keras_name(name: &str, from_logits: bool) -> Option<LossFn> {
        match name {
            "sparse_categorical_crossentropy" => Some(LossFn::SparseCategoricalCrossentropy { from_logits }),
            "categorical_crossentropy" => Some(LossFn::CategoricalCrossentropy { from_logits }),
            "mean_squared_error" | "mse" => Some(LossFn::MeanSquaredError),
            _ => None,
        }
    }

    pub fn keras_name(&self) -> &'static str {
        match self {
            LossFn::SparseCategoricalCrossentropy { .. } => "sparse_categorical_crossentropy",
            LossFn::CategoricalCrossentropy { .. } => "categorical_crossentropy",
            LossFn::MeanSquaredError => "mean_squared_error",
        }
    }

    /// The loss of one sample: `pred` is its prediction row `[k]`, `label` its class id
    /// (`label < k`; the dense losses use its one-hot row as the target).
    pub fn sample_loss(&self, pred: &[f32], label: usize) -> f32 {
        match *self {
            LossFn::SparseCategoricalCrossentropy { from_logits: true }
            | LossFn::CategoricalCrossentropy { from_logits: true } => log_sum_exp(pred) - pred[label],
            // Keras takes ln clip(p) as logits: the row is renormalised after clipping.
            LossFn::SparseCategoricalCrossentropy { from_logits: false } => {
                let clip = |p: f32| p.clamp(EPSILON, 1.0 - EPSILON);
                pred.iter().map(|&p| clip(p)).sum::<f32>().ln() - clip(pred[label]).ln()
            }
            LossFn::CategoricalCrossentropy { from_logits: false } => {
                // Keras renormalises the row before clipping.
                let sum: f32 = pred.iter().sum();
                -(pred[label] / sum).clamp(EPSILON, 1.0 - EPSILON).ln()
            }
            LossFn::MeanSquaredError => {
                let sq: f32 = pred
                    .iter()
                    .enumerate()
                    .map(|(j, &p)| {
                        let d = p - if j == label { 1.0 } else { 0.0 };
                        d * d
                    })
                    .sum();
                sq / pred.len() as f32
            }
        }
    }
}

impl fmt::Display for LossFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossFn::SparseCategoricalCrossentropy { from_logits: true }
            | LossFn::CategoricalCrossentropy { from_logits: true } => {
                write!(f, "{}(from_logits=True)", self.keras_name())
            }
            _ => write!(f, "{}", self.keras_name()),
        }
    }
}

/// `ln Σ exp(z)`, shifted by the maximum for stability.
fn log_sum_exp(z: &[f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + z.iter().map(|&v| (v - max).exp()).sum::<f32>().ln()
}

/// Index of the largest value (the first on ties, as NumPy's argmax).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// How many prediction rows (`[n, k]`) have their argmax at the sample's class id.
pub fn count_correct(preds: &[f32], k: usize, labels: &[f32]) -> usize {
    preds
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &label)| argmax(row) == label as usize)
        .count()
}
