//! The in-memory dataset every loader produces, its validation split, per-epoch shuffling,
//! batch gathering and the one-hot encoding used by categorical losses.

use crate::rng::Rng;

use super::DataError;

/// Images and class labels held in memory.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Dataset {
    /// Samples, `[n, ..sample_shape]` row-major (`[n, H, W, C]` for images).
    pub x: Vec<f32>,
    /// Class ids stored as f32, `[n]`.
    pub y: Vec<f32>,
    /// Shape of one sample, e.g. `[28, 28, 1]`.
    pub sample_shape: Vec<usize>,
    pub n: usize,
    /// Number of classes; every label is an integer in `0..classes`.
    pub classes: usize,
}

impl Dataset {
    /// Checks that the buffers agree with `sample_shape` and that every label is a class id
    /// below `classes`.
    pub fn new(x: Vec<f32>, y: Vec<f32>, sample_shape: Vec<usize>, classes: usize) -> Result<Self, DataError> {
        let n = y.len();
        let sample_len: usize = sample_shape.iter().product();
        if n.checked_mul(sample_len) != Some(x.len()) {
            return Err(DataError::Invalid(format!(
                "{} labels of samples shaped {sample_shape:?} need {} values, found {}",
                n,
                n.saturating_mul(sample_len),
                x.len()
            )));
        }
        if let Some((index, value)) = first_bad_label(&y, classes) {
            return Err(DataError::Invalid(format!(
                "sample {index} has label {value}, expected an integer in 0..{classes}"
            )));
        }
        Ok(Dataset {
            x,
            y,
            sample_shape,
            n,
            classes,
        })
    }

    /// Values per sample (the product of `sample_shape`).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Splits off the LAST `frac` of the samples as a validation set, as Keras's
    /// `validation_split` does (`split_at = floor(n * (1 - frac))`, no shuffling first).
    pub fn split_validation(mut self, frac: f32) -> Result<(Dataset, Dataset), DataError> {
        let split_at = validation_split_at(self.n, frac)?;
        let len = self.sample_len();
        let val = Dataset {
            x: self.x.split_off(split_at * len),
            y: self.y.split_off(split_at),
            sample_shape: self.sample_shape.clone(),
            n: self.n - split_at,
            classes: self.classes,
        };
        self.n = split_at;
        Ok((self, val))
    }

    /// Keeps the first `n` samples (for quick runs).
    pub fn truncate(&mut self, n: usize) {
        if n < self.n {
            let len = self.sample_len();
            self.x.truncate(n * len);
            self.y.truncate(n);
            self.n = n;
        }
    }

    /// Copies the samples `indices` into `x_out` (`[indices.len(), ..sample_shape]`).
    /// `x_out` must hold at least `indices.len() * sample_len()` values.
    pub fn gather_x(&self, indices: &[usize], x_out: &mut [f32]) {
        let len = self.sample_len();
        for (dst, &i) in x_out.chunks_exact_mut(len).zip(indices) {
            dst.copy_from_slice(&self.x[i * len..(i + 1) * len]);
        }
    }

    /// Copies the labels of `indices` into `y_out`: class ids (`[k]`) when `one_hot_width` is
    /// `None`, else one-hot rows `[k, width]`.
    pub fn gather_y(&self, indices: &[usize], one_hot_width: Option<usize>, y_out: &mut [f32]) {
        match one_hot_width {
            None => {
                for (dst, &i) in y_out.iter_mut().zip(indices) {
                    *dst = self.y[i];
                }
            }
            Some(width) => {
                for (row, &i) in y_out.chunks_exact_mut(width).zip(indices) {
                    one_hot_row(self.y[i], row);
                }
            }
        }
    }

    /// All labels one-hot encoded, `[n, classes]`.
    pub fn one_hot(&self) -> Vec<f32> {
        one_hot(&self.y, self.classes)
    }
}

/// Where Keras's `validation_split` cuts `n` samples: `floor(n * (1 - frac))`; both sides must
/// be non-empty.
pub fn validation_split_at(n: usize, frac: f32) -> Result<usize, DataError> {
    let bad = |side| DataError::BadSplit { frac, n, side };
    if !(frac > 0.0 && frac < 1.0) {
        return Err(bad(if frac >= 1.0 { "training" } else { "validation" }));
    }
    // Keras computes in Python floats: widen the f32 through its shortest decimal form, so that
    // 0.1 means 0.1 (60,000 samples split at 54,000, not 53,999).
    let frac64: f64 = frac.to_string().parse().unwrap_or(frac as f64);
    let split_at = (n as f64 * (1.0 - frac64)).floor() as usize;
    if split_at == 0 {
        return Err(bad("training"));
    }
    if split_at >= n {
        return Err(bad("validation"));
    }
    Ok(split_at)
}

/// One-hot encodes class ids: `[labels.len(), classes]`. A label outside `0..classes` gives a
/// row of zeros (datasets are validated when loaded, so this does not happen there).
pub fn one_hot(labels: &[f32], classes: usize) -> Vec<f32> {
    let mut out = vec![0.0; labels.len() * classes];
    if classes > 0 {
        for (row, &label) in out.chunks_exact_mut(classes).zip(labels) {
            one_hot_row(label, row);
        }
    }
    out
}

fn one_hot_row(label: f32, row: &mut [f32]) {
    row.fill(0.0);
    if label >= 0.0 && (label as usize) < row.len() {
        row[label as usize] = 1.0;
    }
}

/// The first label that is not an integer in `0..classes`, as (index, value).
pub fn first_bad_label(labels: &[f32], classes: usize) -> Option<(usize, f32)> {
    labels
        .iter()
        .position(|&v| !(v >= 0.0 && v.fract() == 0.0 && (v as usize) < classes))
        .map(|i| (i, labels[i]))
}

/// The sample order of one epoch: a Fisher–Yates permutation of `0..n` drawn from a stream
/// that depends only on (`seed`, `epoch`), so a run can be reproduced or resumed at any epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ (epoch as u64).wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    rng.shuffle(&mut order);
    order
}
