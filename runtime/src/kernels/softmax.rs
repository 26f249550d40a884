//! Row-wise softmax and its gradient, softmax + cross-entropy fused (loss, d logits and the
//! probabilities in one pass per row), and the other training losses (as `tf.keras.losses`,
//! averaged over the batch) with their gradients.
//!
//! - crossentropy from logits: `lse(z) − z[t]` (sparse) or `Σ t·(lse(z) − z)`; gradient
//!   `(softmax(z)·Σt − t)/N`.
//! - crossentropy from probabilities, as Keras (the row is renormalised, which matters for
//!   outputs that are not a softmax's): sparse, `ln Σ clip(p) − ln clip(p[t])` (`ln clip(p)` taken
//!   as logits), gradient `(Σt/S − t/p)/N`, S = Σ clip(p); categorical, `q = p/Σp` clipped,
//!   `−Σ t·ln q`, gradient `(g − Σ g·q)/(Σp·N)` with `g = −t/q`. Clip range `[1e-7, 1 − 1e-7]`;
//!   the clip passes a gradient inside it.
//! - mean squared error: the mean over every element; gradient `2(p − t)/numel`.
//!
//! A sparse target that is not a class id in `0..classes` makes the loss NaN (the training
//! loop stops on a non-finite loss) and gives its row no gradient.

use super::activation::exp;
use super::elementwise::par_rows;
use super::Ctx;

/// Keras's `epsilon()`, the clip bound for probabilities.
const EPSILON: f32 = 1e-7;

/// The training losses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// Targets are class ids `[N]` (stored as f32).
    SparseCategoricalCrossentropy,
    /// Targets are one-hot (or soft) `[N, K]`.
    CategoricalCrossentropy,
    MeanSquaredError,
}

/// Softmax of one row into `out`; returns `(max, Σ exp(z − max))`.
#[inline(always)]
fn softmax_row(z: &[f32], out: &mut [f32]) -> (f32, f32) {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = exp(v - max);
        sum += *o;
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
    (max, sum)
}

/// `y = softmax(x)` over each row of `cols` values.
pub fn softmax(ctx: &Ctx, rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(x.len() == rows * cols && y.len() == x.len(), "softmax: operand lengths");
    if cols == 0 {
        return;
    }
    let isa = ctx.isa;
    par_rows(ctx, rows, cols, y, |r, out| {
        let xs = &x[r.start * cols..r.end * cols];
        isa.vectorize(
            #[inline(always)]
            || {
                for (o, z) in out.chunks_exact_mut(cols).zip(xs.chunks_exact(cols)) {
                    softmax_row(z, o);
                }
            },
        )
    });
}

/// Softmax of each row of `y` in place.
pub fn softmax_in_place(ctx: &Ctx, rows: usize, cols: usize, y: &mut [f32]) {
    assert_eq!(y.len(), rows * cols, "softmax: operand length");
    if cols == 0 {
        return;
    }
    let isa = ctx.isa;
    par_rows(ctx, rows, cols, y, |_, out| {
        let mut z = vec![0f32; cols];
        isa.vectorize(
            #[inline(always)]
            || {
                for o in out.chunks_exact_mut(cols) {
                    z.copy_from_slice(o);
                    softmax_row(&z, o);
                }
            },
        )
    });
}

/// `dx = y·(dy − Σ_row y·dy)` from the softmax output `y`.
pub fn softmax_grad(ctx: &Ctx, rows: usize, cols: usize, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(
        y.len() == rows * cols && dy.len() == y.len() && dx.len() == y.len(),
        "softmax_grad: operand lengths"
    );
    if cols == 0 {
        return;
    }
    par_rows(ctx, rows, cols, dx, |r, out| {
        let (ys, ds) = (&y[r.start * cols..r.end * cols], &dy[r.start * cols..r.end * cols]);
        for ((o, yr), dr) in out
            .chunks_exact_mut(cols)
            .zip(ys.chunks_exact(cols))
            .zip(ds.chunks_exact(cols))
        {
            let dot: f64 = yr.iter().zip(dr).map(|(&a, &b)| a as f64 * b as f64).sum();
            for ((o, &a), &b) in o.iter_mut().zip(yr).zip(dr) {
                *o = (a as f64 * (b as f64 - dot)) as f32;
            }
        }
    });
}

/// Targets of a cross-entropy: class ids `[rows]` or dense rows `[rows, classes]`.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    Sparse(&'a [f32]),
    Dense(&'a [f32]),
}

impl Targets<'_> {
    fn check(&self, rows: usize, classes: usize) {
        let (len, want) = match self {
            Targets::Sparse(t) => (t.len(), rows),
            Targets::Dense(t) => (t.len(), rows * classes),
        };
        assert_eq!(len, want, "targets hold {len} values, expected {want}");
    }
}

/// The class id of sparse target `t`, if it is one.
#[inline]
fn class_id(t: f32, classes: usize) -> Option<usize> {
    (t.fract() == 0.0 && t >= 0.0 && (t as usize) < classes).then_some(t as usize)
}

/// Softmax cross-entropy on logits `[rows, classes]`: returns the mean loss, writes
/// `dlogits = (softmax·Σt − t)/rows` and, when given, the probabilities.
pub fn softmax_xent(
    rows: usize,
    classes: usize,
    logits: &[f32],
    target: Targets,
    dlogits: &mut [f32],
    mut probs: Option<&mut [f32]>,
) -> f32 {
    assert!(
        logits.len() == rows * classes && dlogits.len() == logits.len(),
        "softmax_xent: operand lengths"
    );
    if let Some(p) = &probs {
        assert_eq!(p.len(), logits.len(), "softmax_xent: probabilities length");
    }
    target.check(rows, classes);
    if rows == 0 || classes == 0 {
        return 0.0;
    }
    let inv_n = 1.0 / rows as f32;
    let mut total = 0f64;
    for r in 0..rows {
        let z = &logits[r * classes..(r + 1) * classes];
        let d = &mut dlogits[r * classes..(r + 1) * classes];
        let (max, sum) = softmax_row(z, d);
        let lse = max as f64 + (sum as f64).ln();
        if let Some(p) = probs.as_deref_mut() {
            p[r * classes..(r + 1) * classes].copy_from_slice(d);
        }
        match target {
            Targets::Sparse(t) => match class_id(t[r], classes) {
                Some(k) => {
                    total += lse - z[k] as f64;
                    d.iter_mut().for_each(|v| *v *= inv_n);
                    d[k] -= inv_n;
                }
                None => {
                    total = f64::NAN;
                    d.fill(0.0);
                }
            },
            Targets::Dense(t) => {
                let tr = &t[r * classes..(r + 1) * classes];
                let tsum: f32 = tr.iter().sum();
                for ((v, &tv), &zv) in d.iter_mut().zip(tr).zip(z) {
                    total += tv as f64 * (lse - zv as f64);
                    *v = (*v * tsum - tv) * inv_n;
                }
            }
        }
    }
    (total / rows as f64) as f32
}

/// Per-row dense target value of class `j` (one-hot for sparse ids); `None` for a bad id.
#[inline]
fn target_row(target: &Targets, r: usize, classes: usize, out: &mut [f32]) -> Option<()> {
    match target {
        Targets::Sparse(t) => {
            let k = class_id(t[r], classes)?;
            out.fill(0.0);
            out[k] = 1.0;
        }
        Targets::Dense(t) => out.copy_from_slice(&t[r * classes..(r + 1) * classes]),
    }
    Some(())
}

fn clipped(p: f32) -> f64 {
    p.clamp(EPSILON, 1.0 - EPSILON) as f64
}

/// Whether the clip passes a gradient at `p` (inside its closed range).
fn inside_clip(p: f32) -> bool {
    (EPSILON..=1.0 - EPSILON).contains(&p)
}

/// The mean loss of `pred [rows, cols]` against `target` (`from_logits` is ignored by MSE).
pub fn loss(kind: LossKind, from_logits: bool, rows: usize, cols: usize, pred: &[f32], target: Targets) -> f32 {
    assert_eq!(pred.len(), rows * cols, "loss: prediction length");
    target.check(rows, cols);
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    let mut t = vec![0f32; cols];
    let mut total = 0f64;
    for (r, row) in pred.chunks_exact(cols).enumerate() {
        if target_row(&target, r, cols, &mut t).is_none() {
            return f32::NAN;
        }
        total += match kind {
            LossKind::MeanSquaredError => {
                row.iter()
                    .zip(&t)
                    .map(|(&p, &t)| (p as f64 - t as f64).powi(2))
                    .sum::<f64>()
                    / cols as f64
            }
            _ if from_logits => {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
                row.iter().zip(&t).map(|(&z, &t)| t as f64 * (lse - z as f64)).sum()
            }
            // From probabilities, as Keras: sparse takes ln clip(p) as logits, categorical
            // divides the row by its sum before clipping.
            LossKind::SparseCategoricalCrossentropy => {
                let ln_sum = row.iter().map(|&p| clipped(p)).sum::<f64>().ln();
                row.iter()
                    .zip(&t)
                    .filter(|(_, &t)| t != 0.0)
                    .map(|(&p, &t)| t as f64 * (ln_sum - clipped(p).ln()))
                    .sum()
            }
            _ => {
                let sum: f32 = row.iter().sum();
                row.iter()
                    .zip(&t)
                    .filter(|(_, &t)| t != 0.0)
                    .map(|(&p, &t)| -(t as f64) * clipped(p / sum).ln())
                    .sum()
            }
        };
    }
    (total / rows as f64) as f32
}

/// d loss / d prediction, the prediction's shape.
#[allow(clippy::too_many_arguments)]
pub fn loss_grad(
    kind: LossKind,
    from_logits: bool,
    rows: usize,
    cols: usize,
    pred: &[f32],
    target: Targets,
    grad: &mut [f32],
) {
    assert!(
        pred.len() == rows * cols && grad.len() == pred.len(),
        "loss_grad: operand lengths"
    );
    target.check(rows, cols);
    if rows == 0 || cols == 0 {
        return;
    }
    let n = rows as f64;
    let mut t = vec![0f32; cols];
    let mut soft = vec![0f64; cols];
    for (r, (row, g)) in pred.chunks_exact(cols).zip(grad.chunks_exact_mut(cols)).enumerate() {
        if target_row(&target, r, cols, &mut t).is_none() {
            g.fill(0.0);
            continue;
        }
        match kind {
            LossKind::MeanSquaredError => {
                let scale = 2.0 / (n * cols as f64);
                for ((o, &p), &t) in g.iter_mut().zip(row).zip(&t) {
                    *o = (scale * (p as f64 - t as f64)) as f32;
                }
            }
            _ if from_logits => {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                for (s, &v) in soft.iter_mut().zip(row) {
                    *s = (v as f64 - max).exp();
                }
                let sum: f64 = soft.iter().sum();
                let tsum: f64 = t.iter().map(|&v| v as f64).sum();
                for ((o, &s), &t) in g.iter_mut().zip(&soft).zip(&t) {
                    *o = ((s / sum * tsum - t as f64) / n) as f32;
                }
            }
            LossKind::SparseCategoricalCrossentropy => {
                let sum: f64 = row.iter().map(|&p| clipped(p)).sum();
                let tsum: f64 = t.iter().map(|&v| v as f64).sum();
                for ((o, &p), &t) in g.iter_mut().zip(row).zip(&t) {
                    *o = if inside_clip(p) {
                        ((tsum / sum - t as f64 / clipped(p)) / n) as f32
                    } else {
                        0.0
                    };
                }
            }
            _ => {
                // q = p / Σp, g_j = -t_j / q_j inside the clip: dL/dp_i = (g_i - Σ g_j q_j) / Σp.
                let sum: f32 = row.iter().sum();
                for ((s, &p), &t) in soft.iter_mut().zip(row).zip(&t) {
                    let q = p / sum;
                    *s = if t != 0.0 && inside_clip(q) {
                        -(t as f64) / clipped(q)
                    } else {
                        0.0
                    };
                }
                let dot: f64 = soft.iter().zip(row).map(|(&g, &p)| g * (p / sum) as f64).sum();
                for (o, &gi) in g.iter_mut().zip(&soft) {
                    *o = ((gi - dot) / sum as f64 / n) as f32;
                }
            }
        }
    }
}
