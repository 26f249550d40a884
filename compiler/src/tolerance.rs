//! Named tolerances for elementwise comparisons of tensors. Every numeric test compares element
//! by element with one of these, and a failure names the worst element — never a sum.

use std::fmt;

/// `|a - b| <= abs + rel * max(|a|, |b|)` for every element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Tolerance {
    /// Values printed in the seeds or computed exactly in f32 (worked examples).
    pub const EXACT: Tolerance = Tolerance { abs: 1e-6, rel: 1e-6 };
    /// Two f32 implementations of the same math that sum in different orders.
    pub const KERNEL: Tolerance = Tolerance { abs: 1e-4, rel: 1e-3 };
    /// Analytic gradients against central finite differences in f64-accumulated f32 math.
    pub const FINITE_DIFF: Tolerance = Tolerance { abs: 2e-3, rel: 2e-2 };

    pub fn new(abs: f32, rel: f32) -> Self {
        Tolerance { abs, rel }
    }

    fn ok(&self, a: f32, b: f32) -> bool {
        if a.is_nan() || b.is_nan() {
            return false;
        }
        (a - b).abs() <= self.abs + self.rel * a.abs().max(b.abs())
    }

    /// Compares two slices elementwise; `Err` describes the first and worst mismatch.
    pub fn compare(&self, actual: &[f32], expected: &[f32]) -> Result<(), Mismatch> {
        if actual.len() != expected.len() {
            return Err(Mismatch {
                index: usize::MAX,
                actual: actual.len() as f32,
                expected: expected.len() as f32,
                failures: 1,
                tol: *self,
            });
        }
        let mut worst: Option<(usize, f32)> = None;
        let mut failures = 0;
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            if !self.ok(a, e) {
                failures += 1;
                let d = if (a - e).is_nan() { f32::INFINITY } else { (a - e).abs() };
                if worst.is_none_or(|(_, w)| d > w) {
                    worst = Some((i, d));
                }
            }
        }
        match worst {
            None => Ok(()),
            Some((i, _)) => Err(Mismatch {
                index: i,
                actual: actual[i],
                expected: expected[i],
                failures,
                tol: *self,
            }),
        }
    }

    /// Panics with a readable message naming `what` and the worst element on mismatch.
    #[track_caller]
    pub fn assert_close(&self, what: &str, actual: &[f32], expected: &[f32]) {
        if let Err(m) = self.compare(actual, expected) {
            panic!("{what}: {m}");
        }
    }
}

/// The worst element of a failed comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mismatch {
    pub index: usize,
    pub actual: f32,
    pub expected: f32,
    pub failures: usize,
    pub tol: Tolerance,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.index == usize::MAX {
            return write!(f, "length {} != expected length {}", self.actual, self.expected);
        }
        write!(
            f,
            "{} element(s) outside tolerance (abs {}, rel {}); worst at [{}]: {} vs expected {}",
            self.failures, self.tol.abs, self.tol.rel, self.index, self.actual, self.expected
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_single_bad_element() {
        let e = Tolerance::EXACT
            .compare(&[1.0, 2.0, 3.5], &[1.0, 2.0, 3.0])
            .unwrap_err();
        assert_eq!((e.index, e.failures), (2, 1));
        assert!(Tolerance::EXACT.compare(&[f32::NAN], &[f32::NAN]).is_err());
        assert!(Tolerance::KERNEL.compare(&[1.0001], &[1.0]).is_ok());
    }
}
