//! Narrow channel counts in per-channel passes over `x [rows, c]`.
//!
//! A pass that vectorises along channels wastes most of each vector when `c` is not a multiple
//! of the vector width: LeNet's 6 channels fill 6 of 16 AVX-512 lanes, and the remainder loops
//! ran such passes 3–4× slower than the bandwidth allows; short rows (32 channels: two vectors)
//! pay the row loop's overhead every few values. Since the layout is row-major, `k`
//! consecutive rows are one row of `k·c` values whose channel pattern repeats every `c`: with
//! `k·c` a multiple of 16 (and at least [`MIN_WIDTH`]) and the per-channel operands repeated `k`
//! times, the same loops run on full vectors. Elementwise results are unchanged bit for bit;
//! per-channel sums are folded back from the `k` sub-columns (a different, equally accurate,
//! order of additions).

use std::borrow::Cow;
use std::ops::Range;

/// The vector width (in f32 lanes) widened rows are made a multiple of (AVX-512's; AVX2's 8
/// divides it).
const LANES: usize = 16;

/// Rows are widened to at least this many values (per-row loop overhead).
const MIN_WIDTH: usize = 128;

/// Widened rows are at most this many values (beyond it the remainder loop's waste is small).
const MAX_WIDTH: usize = 512;

/// A stretch of a `[rows, channels]` pass seen as `rows` rows of `c = k·channels` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part {
    /// Values per (widened) row.
    pub c: usize,
    /// Original rows per widened row.
    pub k: usize,
    /// Widened rows.
    pub rows: usize,
    /// The values of `x` this part covers.
    pub range: Range<usize>,
}

impl Part {
    /// A per-channel operand repeated for the part's `k` rows in one.
    pub fn expand<'a>(&self, v: &'a [f32]) -> Cow<'a, [f32]> {
        if self.k == 1 {
            Cow::Borrowed(v)
        } else {
            Cow::Owned(v.repeat(self.k))
        }
    }

    /// Adds per-column sums of this part into per-channel `total`: `sums` holds one or more
    /// planes of `c` columns (e.g. `[Σd; Σd²]`), `total` the same planes of `c / k` channels.
    pub fn fold(&self, sums: &[f64], total: &mut [f64]) {
        let channels = self.c / self.k;
        for (plane, out) in sums.chunks_exact(self.c).zip(total.chunks_exact_mut(channels)) {
            for sub in plane.chunks_exact(channels) {
                out.iter_mut().zip(sub).for_each(|(t, &s)| *t += s);
            }
        }
    }
}

/// `[rows, c]` as at most two parts: the first `k·⌊rows/k⌋` rows widened to `k·c` values, then
/// the remaining `< k` rows as they are (just one part when `c` needs no widening).
pub(crate) fn parts(c: usize, rows: usize) -> Vec<Part> {
    let k = widening(c);
    let main = rows / k;
    let split = main * k * c;
    let mut out = Vec::with_capacity(2);
    if main > 0 {
        out.push(Part {
            c: k * c,
            k,
            rows: main,
            range: 0..split,
        });
    }
    if main * k < rows {
        out.push(Part {
            c,
            k: 1,
            rows: rows - main * k,
            range: split..rows * c,
        });
    }
    out
}

/// Rows to take at once so that their values are a multiple of [`LANES`] (1: no widening).
fn widening(c: usize) -> usize {
    if c == 0 || c >= MIN_WIDTH && c.is_multiple_of(LANES) {
        return 1;
    }
    let k = LANES / gcd(c, LANES);
    if k * c > MAX_WIDTH {
        return 1;
    }
    k * MIN_WIDTH.div_ceil(k * c)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_rows_are_widened_to_whole_vectors_with_a_tail() {
        // LeNet's 6 channels: 24 rows make 144 values, nine vectors.
        let p = parts(6, 53);
        assert_eq!(
            p[0],
            Part {
                c: 144,
                k: 24,
                rows: 2,
                range: 0..288
            }
        );
        assert_eq!(
            p[1],
            Part {
                c: 6,
                k: 1,
                rows: 5,
                range: 288..318
            }
        );
        assert_eq!(parts(6, 48).len(), 1);
        assert_eq!(
            parts(6, 23),
            vec![Part {
                c: 6,
                k: 1,
                rows: 23,
                range: 0..138
            }]
        );
        // Whole vectors but short rows: 32 channels, 4 rows at once.
        assert_eq!(
            parts(32, 8),
            vec![Part {
                c: 128,
                k: 4,
                rows: 2,
                range: 0..256
            }]
        );
        // Wide multiples of the vector, and wide rows, stay as they are.
        assert_eq!(
            parts(128, 5),
            vec![Part {
                c: 128,
                k: 1,
                rows: 5,
                range: 0..640
            }]
        );
        assert_eq!(parts(1000, 2)[0].k, 1);
        assert_eq!(parts(120, 4)[0].c, 240);
        assert_eq!(parts(1, 256)[0].c, 128);
    }

    #[test]
    fn expand_repeats_and_fold_sums_the_sub_columns() {
        let p = &parts(3, 96)[0];
        assert_eq!(p.expand(&[1.0, 2.0, 3.0]).len(), 144);
        assert_eq!(p.expand(&[1.0, 2.0, 3.0])[3..6], [1.0, 2.0, 3.0]);
        let sums: Vec<f64> = (0..144).map(|i| (i % 3) as f64).collect();
        let mut total = [0.0; 3];
        p.fold(&sums, &mut total);
        assert_eq!(total, [0.0, 48.0, 96.0]);
        // Two planes (as `[Σd; Σd²]`) fold plane by plane.
        let two: Vec<f64> = (0..288).map(|i| if i < 144 { 1.0 } else { 2.0 }).collect();
        let mut total = [0.0; 6];
        p.fold(&two, &mut total);
        assert_eq!(total, [48.0, 48.0, 48.0, 96.0, 96.0, 96.0]);
    }
}
