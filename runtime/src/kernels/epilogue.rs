//! What a GEMM-shaped kernel does to its output while it is hot: bias, activation, and BN
//! statistics (per-column mean and sum of squared deviations per fixed group of rows, combined
//! in group order into moments, so they do not depend on the thread count).

use super::activation::Act;
use super::simd::{ld, st, with_simd, Simd};
use super::KernelIsa;

/// Rows summed in f32 before a block's sums are added to the f64 accumulators (column
/// statistics here, and BN backward's sums).
pub(crate) const SUM_BLOCK: usize = 16;

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
    mean.fill(0.0);
    m2.fill(0.0);
    if rows == 0 {
        return;
    }
    let shift = &y[..n];
    shifted_sums(isa, &y[..rows * n], shift, mean, m2);
    mean_and_m2(rows as f64, shift, mean, m2);
}

/// Turns sums of deviations from `shift` over `rows` rows (`s1 = Σd`, `s2 = Σd²` per column)
/// into the group's mean and M2 (sum of squared deviations from the mean), in place.
pub(crate) fn mean_and_m2(rows: f64, shift: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    for ((mu, q), &sh) in s1.iter_mut().zip(s2.iter_mut()).zip(shift) {
        let (a, b) = (*mu, *q);
        *mu = sh as f64 + a / rows;
        *q = (b - a * a / rows).max(0.0);
    }
}

/// Adds to `s1`, `s2` (f64, per column) the f32 sums of `d = y − shift` and `d²` over each
/// 16-row block of `y` (`[rows, n]`, `n = shift.len()`; see [`block_sums`]).
pub(crate) fn shifted_sums(isa: KernelIsa, y: &[f32], shift: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    with_simd!(isa, S, {
        // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
        unsafe { block_sums::<S>(y, shift, s1, s2) }
    });
}

/// [`shifted_sums`]: four column vectors at a time down a block's rows, the
/// sums in registers (eight independent chains). About 4× faster than the row-by-row loop
/// through sums in memory it replaces, which made the statistics cost as much in a GEMM's
/// epilogue as in a separate pass; the same f32 operations in the same order per column.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn block_sums<S: Simd>(y: &[f32], shift: &[f32], s1: &mut [f64], s2: &mut [f64]) {
    let n = shift.len();
    let wide = 4 * S::LANES;
    for block in y.chunks(SUM_BLOCK * n) {
        let mut c0 = 0;
        while c0 + wide <= n {
            column_sums::<S, 4>(block, shift, c0, wide, s1, s2);
            c0 += wide;
        }
        while c0 < n {
            let len = S::LANES.min(n - c0);
            column_sums::<S, 1>(block, shift, c0, len, s1, s2);
            c0 += len;
        }
    }
}

/// [`block_sums`] of columns `c0..c0 + len` (`NV` vectors, the last `len − (NV − 1)·LANES`
/// lanes wide) of one block.
#[inline(always)]
unsafe fn column_sums<S: Simd, const NV: usize>(
    block: &[f32],
    shift: &[f32],
    c0: usize,
    len: usize,
    s1: &mut [f64],
    s2: &mut [f64],
) {
    let n = shift.len();
    let rows = block.len() / n;
    let lanes = |v: usize| S::LANES.min(len - v * S::LANES);
    let mut sh = [S::zero(); NV];
    for (v, h) in sh.iter_mut().enumerate() {
        *h = ld::<S>(&shift[c0 + v * S::LANES..], lanes(v));
    }
    let (mut s, mut q) = ([S::zero(); NV], [S::zero(); NV]);
    for r in 0..rows {
        let row = &block[r * n + c0..];
        for v in 0..NV {
            let d = S::sub(ld::<S>(&row[v * S::LANES..], lanes(v)), sh[v]);
            s[v] = S::add(s[v], d);
            q[v] = S::add(q[v], S::mul(d, d));
        }
    }
    add_lanes::<S, NV>(&s, &q, len, &mut s1[c0..c0 + len], &mut s2[c0..c0 + len]);
}

/// Adds the first `len` lanes of the `NV` vectors of f32 sums `s` and `q` (whole vectors but
/// the last) to the f64 sums `s1` and `s2` (`len` each).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn add_lanes<S: Simd, const NV: usize>(
    s: &[S::V; NV],
    q: &[S::V; NV],
    len: usize,
    s1: &mut [f64],
    s2: &mut [f64],
) {
    let lanes = |v: usize| S::LANES.min(len - v * S::LANES);
    let (mut ts, mut tq) = ([0f32; 64], [0f32; 64]);
    for v in 0..NV {
        st::<S>(&mut ts[v * S::LANES..], s[v], lanes(v));
        st::<S>(&mut tq[v * S::LANES..], q[v], lanes(v));
    }
    let (s1, s2) = (&mut s1[..len], &mut s2[..len]);
    for k in 0..len {
        s1[k] += ts[k] as f64;
        s2[k] += tq[k] as f64;
    }
}

/// Combines group statistics (`[mean; M2]` per group of `group` rows, the last one possibly
/// shorter, in row order — which does not depend on the thread count) of `rows` rows into
/// `[mean; biased variance]`, by Chan et al.'s pairwise update.
pub(crate) fn finish_moments(partials: &[&[f64]], rows: usize, group: usize, n: usize, moments: &mut [f32]) {
    let mut acc = ChanMoments::new(n);
    for (g, p) in partials.iter().enumerate() {
        let nb = group.min(rows.saturating_sub(g * group)) as f64;
        acc.add(nb, &p[..n], &p[n..2 * n]);
    }
    acc.write(moments);
}

/// Column statistics combined group by group in f64 by Chan et al.'s pairwise update: each
/// column's update sequence depends only on the groups' order.
pub(crate) struct ChanMoments {
    mean: Vec<f64>,
    m2: Vec<f64>,
    count: f64,
}

impl ChanMoments {
    pub(crate) fn new(n: usize) -> Self {
        ChanMoments {
            mean: vec![0.0; n],
            m2: vec![0.0; n],
            count: 0.0,
        }
    }

    /// Adds a group of `nb` rows with column means `pm` and M2s `pq` (nothing when it is empty).
    pub(crate) fn add(&mut self, nb: f64, pm: &[f64], pq: &[f64]) {
        if nb == 0.0 {
            return;
        }
        let n = self.mean.len();
        let (count, total) = (self.count, self.count + nb);
        let (mean, m2, pm, pq) = (&mut self.mean[..n], &mut self.m2[..n], &pm[..n], &pq[..n]);
        // Columns inner (each column's update sequence unchanged), so the loop vectorises.
        for j in 0..n {
            let delta = pm[j] - mean[j];
            mean[j] += delta * nb / total;
            m2[j] += pq[j] + delta * delta * count * nb / total;
        }
        self.count = total;
    }

    /// `[mean; biased variance]` of all the rows added.
    pub(crate) fn write(&self, moments: &mut [f32]) {
        let n = self.mean.len();
        for j in 0..n {
            moments[j] = self.mean[j] as f32;
            moments[n + j] = if self.count > 0.0 {
                (self.m2[j] / self.count) as f32
            } else {
                0.0
            };
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward column-at-a-time forms of [`group_stats`] and [`finish_moments`]:
    /// the vectorised ones must give the same bits.
    fn reference_group_stats(y: &[f32], n: usize, partial: &mut [f64]) {
        let rows = y.len() / n;
        for j in 0..n {
            let sh = y[j];
            let (mut s1, mut s2) = (0f64, 0f64);
            for block in y.chunks(16 * n) {
                let (mut a, mut q) = (0f32, 0f32);
                for row in block.chunks_exact(n) {
                    let d = row[j] - sh;
                    a += d;
                    q += d * d;
                }
                s1 += a as f64;
                s2 += q as f64;
            }
            partial[j] = sh as f64 + s1 / rows as f64;
            partial[n + j] = (s2 - s1 * s1 / rows as f64).max(0.0);
        }
    }

    fn reference_finish(partials: &[&[f64]], rows: usize, group: usize, n: usize, moments: &mut [f32]) {
        for j in 0..n {
            let (mut count, mut mean, mut m2) = (0f64, 0f64, 0f64);
            for (g, p) in partials.iter().enumerate() {
                let nb = group.min(rows.saturating_sub(g * group)) as f64;
                let total = count + nb;
                let delta = p[j] - mean;
                mean += delta * nb / total;
                m2 += p[n + j] + delta * delta * count * nb / total;
                count = total;
            }
            moments[j] = mean as f32;
            moments[n + j] = (m2 / count) as f32;
        }
    }

    #[test]
    fn vectorised_statistics_match_the_column_at_a_time_form_bit_for_bit() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 4.0 + 10.0
        };
        for isa in KernelIsa::all_supported() {
            for (rows, n, group) in [
                (1, 1, 4),
                (37, 3, 8),
                (100, 17, 24),
                (333, 32, 56),
                (64, 64, 64),
                (50, 33, 16),
            ] {
                let y: Vec<f32> = (0..rows * n).map(|_| next()).collect();
                let groups: Vec<&[f32]> = y.chunks(group * n).collect();
                let (mut got, mut want) = (vec![0f64; groups.len() * 2 * n], vec![0f64; groups.len() * 2 * n]);
                for (i, grp) in groups.iter().enumerate() {
                    group_stats(isa, grp, n, &mut got[i * 2 * n..(i + 1) * 2 * n]);
                    reference_group_stats(grp, n, &mut want[i * 2 * n..(i + 1) * 2 * n]);
                }
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "group_stats {isa:?} rows {rows} n {n} group {group}"
                );
                let parts: Vec<&[f64]> = got.chunks_exact(2 * n).collect();
                let (mut m_got, mut m_want) = (vec![0f32; 2 * n], vec![0f32; 2 * n]);
                finish_moments(&parts, rows, group, n, &mut m_got);
                reference_finish(&parts, rows, group, n, &mut m_want);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&m_got), bits(&m_want), "finish_moments {isa:?} rows {rows} n {n}");
            }
        }
    }
}
