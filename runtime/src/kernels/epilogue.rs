//! What a GEMM-shaped kernel does to its output while it is hot: bias, activation, and BN
//! statistics (per-column Σy and Σy² in f64 per fixed row block, combined in block order into
//! moments, so they do not depend on the thread count).

use super::activation::Act;
use super::KernelIsa;

/// Epilogue of a forward conv / GEMM, applied in this order: `+ bias`, activation, statistics.
#[derive(Debug, Default)]
pub struct Epilogue<'a> {
    /// Per-output-column bias (`n` entries).
    pub bias: Option<&'a [f32]>,
    pub act: Act,
    /// Receives `[2, n]`: each column's mean, then its biased variance, of the activated output.
    pub moments: Option<&'a mut [f32]>,
}

impl<'a> Epilogue<'a> {
    /// No bias, linear, no statistics.
    pub fn none() -> Epilogue<'a> {
        Epilogue::default()
    }

    pub fn with_bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }

    pub fn with_act(mut self, act: Act) -> Self {
        self.act = act;
        self
    }

    pub fn with_moments(mut self, moments: &'a mut [f32]) -> Self {
        self.moments = Some(moments);
        self
    }

    /// Panics unless the bias and the moments fit `n` output columns.
    pub(crate) fn check(&self, n: usize) {
        if let Some(b) = self.bias {
            assert_eq!(b.len(), n, "bias has {} entries, the output has {n} columns", b.len());
        }
        if let Some(m) = &self.moments {
            assert_eq!(
                m.len(),
                2 * n,
                "moments need [2, {n}] = {} entries, got {}",
                2 * n,
                m.len()
            );
        }
    }
}

/// Adds the column sums and sums of squares of `rows × n` block `y` (row stride `n`) into
/// `partial = [Σ (n), Σ² (n)]`. Sums a block in f32 first (short, so exact enough), then f64.
#[inline]
pub(crate) fn accumulate_stats(isa: KernelIsa, y: &[f32], n: usize, partial: &mut [f64]) {
    isa.vectorize(
        #[inline(always)]
        || {
            let (sum, sq) = partial.split_at_mut(n);
            const BLOCK: usize = 16;
            let mut s = vec![0f32; 2 * n];
            for block in y.chunks(BLOCK * n) {
                let (bs, bq) = s.split_at_mut(n);
                bs.fill(0.0);
                bq.fill(0.0);
                for row in block.chunks_exact(n) {
                    for ((a, q), &v) in bs.iter_mut().zip(bq.iter_mut()).zip(row) {
                        *a += v;
                        *q += v * v;
                    }
                }
                for ((d, e), (&a, &q)) in sum.iter_mut().zip(sq.iter_mut()).zip(bs.iter().zip(bq.iter())) {
                    *d += a as f64;
                    *e += q as f64;
                }
            }
        },
    )
}

/// Combines partials (in the given order, which must not depend on the thread count) of `rows` rows into `[mean; biased var]`.
pub(crate) fn finish_moments(partials: &[&[f64]], rows: usize, n: usize, moments: &mut [f32]) {
    let inv = 1.0 / rows.max(1) as f64;
    for j in 0..n {
        let (mut s, mut q) = (0.0f64, 0.0f64);
        for p in partials {
            s += p[j];
            q += p[n + j];
        }
        let mean = s * inv;
        moments[j] = mean as f32;
        moments[n + j] = (q * inv - mean * mean).max(0.0) as f32;
    }
}

/// Applies the activation to a whole `[rows, n]` buffer and, if asked, its statistics — the
/// unfused fallback used when a kernel cannot apply the epilogue per tile.
pub(crate) fn apply_rows(isa: KernelIsa, y: &mut [f32], n: usize, epi: &mut Epilogue) {
    if n == 0 {
        return;
    }
    let (bias, act) = (epi.bias, epi.act);
    isa.vectorize(
        #[inline(always)]
        || {
            for row in y.chunks_exact_mut(n) {
                if let Some(b) = bias {
                    row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
                }
                act.apply_slice(row);
            }
        },
    );
    if let Some(m) = epi.moments.as_deref_mut() {
        let mut p = vec![0.0; 2 * n];
        accumulate_stats(isa, y, n, &mut p);
        finish_moments(&[&p], y.len() / n, n, m);
    }
}
