//! Loss functions computed from a model's predictions (the output of its final activation),
//! mirroring the compiler's `LossKind` + `from_logits` and computed by the training kernels'
//! [`softmax::loss`] (Keras's clipping and renormalisation); and accuracy.

use std::fmt;

use crate::kernels::softmax::{self, LossKind, Targets};

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

    /// The kernels' loss kind and `from_logits` of this loss.
    pub fn kind(&self) -> (LossKind, bool) {
        match *self {
            LossFn::SparseCategoricalCrossentropy { from_logits } => {
                (LossKind::SparseCategoricalCrossentropy, from_logits)
            }
            LossFn::CategoricalCrossentropy { from_logits } => (LossKind::CategoricalCrossentropy, from_logits),
            LossFn::MeanSquaredError => (LossKind::MeanSquaredError, false),
        }
    }

    /// The mean loss of the prediction rows `pred` (`[n, k]`) against their class ids `labels`
    /// (`[n]`; the dense losses use one-hot rows): the training kernels' [`softmax::loss`].
    pub fn batch_loss(&self, pred: &[f32], labels: &[f32]) -> f32 {
        let (kind, from_logits) = self.kind();
        let n = labels.len();
        softmax::loss(
            kind,
            from_logits,
            n,
            pred.len() / n.max(1),
            pred,
            Targets::Sparse(labels),
        )
    }

    /// The loss of one sample: `pred` is its prediction row `[k]`, `label` its class id
    /// (`label < k`).
    pub fn sample_loss(&self, pred: &[f32], label: usize) -> f32 {
        self.batch_loss(pred, &[label as f32])
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
