//! What a GEMM-shaped kernel does to its output while it is hot: bias, activation, and BN
//! statistics (per-column mean and sum of squared deviations per fixed group of rows, combined
//! in group order into moments, so they do not depend on the thread count).

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

/// Column statistics of one group of rows, `y` (`rows × n`, row stride `n`), written to
/// `partial = [mean (n), M2 (n)]` (M2: sum of squared deviations from the group mean). Deviations
/// are taken from the group's first row (a sample, so close to the mean) and summed in f32 over
/// 16-row blocks, then in f64: no E[y²] − mean² cancellation when the mean is large against the
/// spread (which would flip the sign of normalised values near zero, and a ReLU after BN).
#[inline]
pub(crate) fn group_stats(isa: KernelIsa, y: &[f32], n: usize, partial: &mut [f64]) {
    let rows = y.len() / n.max(1);
    let (mean, m2) = partial.split_at_mut(n);
    if rows == 0 {
        mean.fill(0.0);
        m2.fill(0.0);
        return;
    }
    let shift = &y[..n];
    isa.vectorize(
        #[inline(always)]
        || {
            const BLOCK: usize = 16;
            mean.fill(0.0);
            m2.fill(0.0);
            let mut s = vec![0f32; 2 * n];
            for block in y.chunks(BLOCK * n) {
                let (bs, bq) = s.split_at_mut(n);
                bs.fill(0.0);
                bq.fill(0.0);
                for row in block.chunks_exact(n) {
                    for (((a, q), &v), &sh) in bs.iter_mut().zip(bq.iter_mut()).zip(row).zip(shift) {
                        let d = v - sh;
                        *a += d;
                        *q += d * d;
                    }
                }
                for ((d, e), (&a, &q)) in mean.iter_mut().zip(m2.iter_mut()).zip(bs.iter().zip(bq.iter())) {
                    *d += a as f64;
                    *e += q as f64;
                }
            }
        },
    );
    let r = rows as f64;
    for ((mu, q), &sh) in mean.iter_mut().zip(m2.iter_mut()).zip(shift) {
        let (s1, s2) = (*mu, *q);
        *mu = sh as f64 + s1 / r;
        *q = (s2 - s1 * s1 / r).max(0.0);
    }
}

/// Combines group statistics (`[mean; M2]` per group of `group` rows, the last one possibly
/// shorter, in row order — which does not depend on the thread count) of `rows` rows into
/// `[mean; biased variance]`, by Chan et al.'s pairwise update.
pub(crate) fn finish_moments(partials: &[&[f64]], rows: usize, group: usize, n: usize, moments: &mut [f32]) {
    for j in 0..n {
        let (mut count, mut mean, mut m2) = (0f64, 0f64, 0f64);
        for (g, p) in partials.iter().enumerate() {
            let nb = group.min(rows.saturating_sub(g * group)) as f64;
            if nb == 0.0 {
                continue;
            }
            let total = count + nb;
            let delta = p[j] - mean;
            mean += delta * nb / total;
            m2 += p[n + j] + delta * delta * count * nb / total;
            count = total;
        }
        moments[j] = mean as f32;
        moments[n + j] = if count > 0.0 { (m2 / count) as f32 } else { 0.0 };
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
        let rows = y.len() / n;
        group_stats(isa, y, n, &mut p);
        finish_moments(&[&p], rows, rows, n, m);
    }
}
