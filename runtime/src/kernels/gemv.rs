//! One row times a matrix, `c[n] (+)= a[k]·B[k, n]` (B row-major): the batch-1 dense layer.
//!
//! The GEMM micro-kernel's 1-row tile keeps only two accumulators (one FMA chain per vector, so
//! a quarter of the FMA throughput) and walks B one 32-column panel at a time. Here blocks of up
//! to 128 columns — eight vector accumulators, eight independent chains — stream B once: the
//! layer is then bound by reading the weights. A large B is cut into two halves of K summed by
//! two tasks (one contiguous stream each) and added; the cut depends only on the shape, so
//! results do not depend on the thread count.

use super::epilogue::{apply_rows, Epilogue};
use super::scratch::{self, Slot};
use super::Ctx;
use crate::pool::split_by_tasks;

/// B matrices of at least this many values are summed in two halves of K (see [`gemv`]).
const HALVES_MIN_VALUES: usize = 64 * 1024;

/// `c = epilogue(a·B [+ c])` for `a [k]`, `B [k, n]`, `c [n]`; no BN statistics (one row).
pub(crate) fn gemv(
    ctx: &Ctx,
    [k, n]: [usize; 2],
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
    epi: &mut Epilogue,
) {
    debug_assert!(a.len() == k && b.len() == k * n && c.len() == n && epi.moments.is_none());
    let isa = ctx.isa.checked();
    // Bound by streaming B (about 4 bytes per 2 FLOPs), not by the FMAs: weigh the work as a
    // GEMM of 4× the FLOPs would take on one core, so that large weight matrices are split.
    let ctx = ctx.for_work(8 * k * n);
    if k * n < HALVES_MIN_VALUES || k < 2 {
        isa.vectorize(
            #[inline(always)]
            || columns(a, b, n, c, accumulate),
        );
        apply_rows(isa, c, n, epi);
        return;
    }
    // A large B is summed in two halves of its rows, a task each, into two partial rows added
    // in order afterwards: each task streams one contiguous half of B with all its columns'
    // accumulators in registers (split by columns, each thread read every other stretch of
    // each row: slower). The halves depend on the shape only, so results do not depend on
    // the thread count.
    let half = k / 2;
    let threads = ctx.threads();
    // The two partial rows live in the caller's scratch (no allocation per batch-1 call); each
    // half overwrites or accumulates into its own, so their old contents do not matter.
    scratch::with(Slot::B, 2 * n, |partial| {
        let mut parts = split_by_tasks(partial, 2, threads, |h| h * n);
        let cref: &[f32] = c;
        ctx.pool.run_with_state(&mut parts, 2, |(halves, out), _t, _range| {
            for (h, out) in halves.clone().zip(out.chunks_exact_mut(n.max(1))) {
                let rows = if h == 0 { 0..half } else { half..k };
                let first = h == 0 && accumulate;
                if first {
                    out.copy_from_slice(cref);
                }
                let (a, b) = (&a[rows.clone()], &b[rows.start * n..rows.end * n]);
                isa.vectorize(
                    #[inline(always)]
                    || columns(a, b, n, out, first),
                );
            }
        });
        let (lo, hi) = partial.split_at(n);
        for ((x, l), h) in c.iter_mut().zip(lo).zip(hi) {
            *x = l + h;
        }
    });
    apply_rows(isa, c, n, epi);
}

/// `c (+)= a·B` over all `n` columns, in blocks of up to 128 columns (8 AVX-512 vectors).
#[inline(always)]
fn columns(a: &[f32], b: &[f32], n: usize, c: &mut [f32], accumulate: bool) {
    // Blocks of a constant width keep their accumulators in registers; a last sliver
    // narrower than a vector is summed row by row over a short slice.
    let mut at = 0;
    while at < n {
        let rest = &mut c[at..];
        let col = at;
        at += match rest.len() {
            128.. => block::<128>(a, b, n, col, &mut rest[..128], accumulate),
            64.. => block::<64>(a, b, n, col, &mut rest[..64], accumulate),
            32.. => block::<32>(a, b, n, col, &mut rest[..32], accumulate),
            16.. => block::<16>(a, b, n, col, &mut rest[..16], accumulate),
            w => {
                let mut acc = [0f32; 16];
                let acc = &mut acc[..w];
                if accumulate {
                    acc.copy_from_slice(rest);
                }
                for (p, &av) in a.iter().enumerate() {
                    for (s, &bv) in acc.iter_mut().zip(&b[p * n + col..][..w]) {
                        *s = av.mul_add(bv, *s);
                    }
                }
                rest.copy_from_slice(acc);
                w
            }
        };
    }
}

/// `cols (+)= a·B[:, col0..col0 + W]` with `W` accumulators held in registers; returns `W`.
#[inline(always)]
fn block<const W: usize>(a: &[f32], b: &[f32], n: usize, col0: usize, cols: &mut [f32], accumulate: bool) -> usize {
    let mut acc = [0f32; W];
    if accumulate {
        acc.copy_from_slice(cols);
    }
    for (p, &av) in a.iter().enumerate() {
        let row: &[f32; W] = b[p * n + col0..][..W].try_into().expect("a whole block");
        for q in 0..W {
            acc[q] = av.mul_add(row[q], acc[q]);
        }
    }
    cols.copy_from_slice(&acc);
    W
}
