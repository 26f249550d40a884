//! One row times a matrix, `c[n] (+)= a[k]·B[k, n]` (B row-major): the batch-1 dense layer.
//!
//! The GEMM micro-kernel's 1-row tile keeps only two accumulators (one FMA chain per vector, so
//! a quarter of the FMA throughput) and walks B one 32-column panel at a time. Here each thread
//! owns a block of up to 128 columns — eight vector accumulators, eight independent chains —
//! and streams its part of every row of B once: the layer is then bound by reading the weights.
//! Each column is summed over K in order by one thread, so results do not depend on the thread
//! count.

use super::epilogue::{apply_rows, Epilogue};
use super::Ctx;
use crate::pool::split_by_tasks;

/// Columns per accumulator block: 8 AVX-512 vectors.
const BLOCK: usize = 128;

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
    let threads = ctx.threads();
    // Narrower blocks when there are fewer 128-column blocks than threads (n = 128: two of 64).
    let width = if n.div_ceil(BLOCK) >= threads {
        BLOCK
    } else {
        n.div_ceil(threads).div_ceil(16) * 16
    };
    let blocks = n.div_ceil(width.max(1));
    let col_of = |b: usize| (b * width).min(n);
    let mut parts: Vec<(usize, &mut [f32])> = split_by_tasks(c, blocks, threads, col_of)
        .into_iter()
        .map(|(r, mine)| (col_of(r.start), mine))
        .collect();
    ctx.pool.run_with_state(&mut parts, blocks, |(c0, out), _t, _range| {
        isa.vectorize(
            #[inline(always)]
            || {
                for (bi, cols) in out.chunks_mut(width).enumerate() {
                    let col0 = *c0 + bi * width;
                    // Blocks of a constant width keep their accumulators in registers; a last
                    // sliver narrower than a vector is summed row by row over a short slice.
                    let mut at = 0;
                    while at < cols.len() {
                        let rest = &mut cols[at..];
                        let c = col0 + at;
                        at += match rest.len() {
                            128.. => block::<128>(a, b, n, c, &mut rest[..128], accumulate),
                            64.. => block::<64>(a, b, n, c, &mut rest[..64], accumulate),
                            32.. => block::<32>(a, b, n, c, &mut rest[..32], accumulate),
                            16.. => block::<16>(a, b, n, c, &mut rest[..16], accumulate),
                            w => {
                                let mut acc = [0f32; 16];
                                let acc = &mut acc[..w];
                                if accumulate {
                                    acc.copy_from_slice(rest);
                                }
                                for (p, &av) in a.iter().enumerate() {
                                    for (s, &bv) in acc.iter_mut().zip(&b[p * n + c..][..w]) {
                                        *s = av.mul_add(bv, *s);
                                    }
                                }
                                rest.copy_from_slice(acc);
                                w
                            }
                        };
                    }
                }
            },
        )
    });
    apply_rows(isa, c, n, epi);
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
