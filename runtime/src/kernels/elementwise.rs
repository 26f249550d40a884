//! Elementwise and data-movement kernels: activations and their gradients (from the output),
//! bias and residual adds, dropout, copies, fills, channel reductions, channel concatenation
//! and slicing.
//!
//! Tensors are viewed as `[rows, channels]` (channels = the last axis). Large kernels split
//! contiguous ranges of rows among the pool's threads ([`par_rows`]); each element is computed
//! the same way whatever the split, so results do not depend on the thread count (the channel
//! reduction runs on one thread and sums in a fixed order).

use std::ops::Range;

use super::activation::Act;
use super::channel_period;
use super::epilogue::SUM_BLOCK;
use super::Ctx;
use crate::rng::dropout_keep;

/// Below this many output elements a kernel runs on the calling thread (forking costs more).
pub const PAR_MIN: usize = 1 << 15;

/// A raw output pointer shared by tasks that write disjoint ranges of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks built by `par_rows` write disjoint row ranges of the pointee, which the caller
// borrowed mutably for the duration of the call.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Calls `f(rows, out_rows)` for contiguous ranges of `rows` splitting `out` (`[rows, row_len]`)
/// among the pool's threads (on the calling thread alone when the output is small).
pub(crate) fn par_rows<F>(ctx: &Ctx, rows: usize, row_len: usize, out: &mut [f32], f: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let total = rows * row_len;
    assert!(
        out.len() >= total,
        "output holds {} values, expected {total}",
        out.len()
    );
    if total < PAR_MIN || ctx.threads() <= 1 || rows < 2 {
        f(0..rows, &mut out[..total]);
        return;
    }
    let p = OutPtr(out.as_mut_ptr());
    ctx.pool.run_ranges(rows, |_, r| {
        if r.is_empty() {
            return;
        }
        // SAFETY: the ranges of `run_ranges` are disjoint and lie within `0..rows`, and `out`
        // holds `rows * row_len` values borrowed mutably for this call.
        let chunk = unsafe { std::slice::from_raw_parts_mut(p.get().add(r.start * row_len), r.len() * row_len) };
        f(r, chunk);
    });
}

/// Whether elementwise work of `len` values is worth splitting (for kernels with no output slice).
pub(crate) fn parallel(ctx: &Ctx, len: usize) -> bool {
    len >= PAR_MIN && ctx.threads() > 1
}

/// Values [`act`] copies and activates at a time (16 KB).
const L1_PIECE: usize = 4096;

/// `y = act(x)`.
pub fn act(ctx: &Ctx, act: Act, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "act: input and output lengths differ");
    let isa = ctx.isa;
    par_rows(ctx, x.len(), 1, y, |r, out| {
        isa.vectorize(
            #[inline(always)]
            || {
                // In L1-sized pieces: one pass over memory, not a copy and then a second pass.
                for (o, xs) in out.chunks_mut(L1_PIECE).zip(x[r.clone()].chunks(L1_PIECE)) {
                    o.copy_from_slice(xs);
                    act.apply_slice(o);
                }
            },
        )
    });
}

/// `y = act(y)` in place.
pub fn act_in_place(ctx: &Ctx, act: Act, y: &mut [f32]) {
    if act == Act::Linear {
        return;
    }
    let isa = ctx.isa;
    par_rows(ctx, y.len(), 1, y, |_, out| {
        isa.vectorize(
            #[inline(always)]
            || act.apply_slice(out),
        )
    });
}

/// `dx = act'(·)·dy` from the activation's output `y`.
pub fn act_grad(ctx: &Ctx, act: Act, y: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(
        y.len() == dx.len() && dy.len() == dx.len(),
        "act_grad: operand lengths differ"
    );
    let isa = ctx.isa;
    par_rows(ctx, dx.len(), 1, dx, |r, out| {
        let (y, dy) = (&y[r.clone()], &dy[r]);
        isa.vectorize(
            #[inline(always)]
            || match act {
                Act::Linear => out.copy_from_slice(dy),
                Act::Relu => {
                    for ((o, &y), &d) in out.iter_mut().zip(y).zip(dy) {
                        *o = if y > 0.0 { d } else { 0.0 };
                    }
                }
                _ => {
                    for ((o, &y), &d) in out.iter_mut().zip(y).zip(dy) {
                        *o = act.grad_from_output(y, d);
                    }
                }
            },
        )
    });
}

/// `y = x + bias` on every row of `channels` values.
pub fn bias_add(ctx: &Ctx, channels: usize, x: &[f32], bias: &[f32], y: &mut [f32]) {
    assert!(
        channels > 0 && bias.len() == channels,
        "bias_add: bias has {} entries",
        bias.len()
    );
    assert!(
        x.len() == y.len() && x.len().is_multiple_of(channels),
        "bias_add: operand lengths"
    );
    let isa = ctx.isa;
    par_rows(ctx, x.len() / channels, channels, y, |r, out| {
        let x = &x[r.start * channels..r.end * channels];
        isa.vectorize(
            #[inline(always)]
            || {
                for (orow, xrow) in out.chunks_exact_mut(channels).zip(x.chunks_exact(channels)) {
                    for ((o, &v), &b) in orow.iter_mut().zip(xrow).zip(bias) {
                        *o = v + b;
                    }
                }
            },
        )
    });
}

/// `y = a + b`.
pub fn add(ctx: &Ctx, a: &[f32], b: &[f32], y: &mut [f32]) {
    assert!(a.len() == y.len() && b.len() == y.len(), "add: operand lengths differ");
    let isa = ctx.isa;
    par_rows(ctx, y.len(), 1, y, |r, out| {
        let (a, b) = (&a[r.clone()], &b[r]);
        isa.vectorize(
            #[inline(always)]
            || {
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o = a + b;
                }
            },
        )
    });
}

/// `y = act(y + r)` in place: a residual add and the activation after it (an epilogue that
/// could not run inside the GEMM).
pub fn add_act_in_place(ctx: &Ctx, act: Act, y: &mut [f32], r: &[f32]) {
    assert_eq!(y.len(), r.len(), "residual add: operand lengths differ");
    let isa = ctx.isa;
    par_rows(ctx, y.len(), 1, y, |rg, out| {
        let r = &r[rg];
        isa.vectorize(
            #[inline(always)]
            || {
                for (o, &v) in out.iter_mut().zip(r) {
                    *o += v;
                }
                act.apply_slice(out);
            },
        )
    });
}

/// Dropout: `y[i] = x[i]/(1 − rate)` when `dropout_keep(seed, step, i, rate)`, else 0 — the
/// interpreter's mask and scale, bit for bit.
pub fn dropout(ctx: &Ctx, rate: f32, seed: u64, step: u64, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "dropout: operand lengths differ");
    let scale = 1.0 / (1.0 - rate);
    par_rows(ctx, y.len(), 1, y, |r, out| {
        let start = r.start;
        for (i, (o, &v)) in out.iter_mut().zip(&x[r]).enumerate() {
            *o = if dropout_keep(seed, step, (start + i) as u64, rate) {
                v * scale
            } else {
                0.0
            };
        }
    });
}

/// `y = x`.
pub fn copy(ctx: &Ctx, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "copy: operand lengths differ");
    par_rows(ctx, y.len(), 1, y, |r, out| out.copy_from_slice(&x[r]));
}

/// Every element of `y` set to `v`.
pub fn fill(y: &mut [f32], v: f32) {
    y.fill(v);
}

/// `y[c] = Σ_rows x[row, c]` (`x` is `[rows, channels]`), accumulated in f64 from f32 sums of
/// 16-row blocks.
pub fn reduce_rows(ctx: &Ctx, rows: usize, channels: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() == rows * channels && y.len() == channels,
        "reduce: operand lengths"
    );
    let mut acc = vec![0f64; channels];
    for part in channel_period::parts(channels, rows) {
        let c = part.c;
        let mut sums = vec![0f64; c];
        let mut block = vec![0f32; c];
        ctx.isa.vectorize(
            #[inline(always)]
            || {
                for chunk in x[part.range.clone()].chunks(SUM_BLOCK * c.max(1)) {
                    block.fill(0.0);
                    for row in chunk.chunks_exact(c) {
                        for (b, &v) in block.iter_mut().zip(row) {
                            *b += v;
                        }
                    }
                    for (a, &b) in sums.iter_mut().zip(&block) {
                        *a += b as f64;
                    }
                }
            },
        );
        part.fold(&sums, &mut acc);
    }
    for (o, a) in y.iter_mut().zip(&acc) {
        *o = *a as f32;
    }
}

/// `y[r] = Σ_c x[r, c]` (`x` is `[rows, cols]`), in f64.
pub fn reduce_cols(rows: usize, cols: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() == rows * cols && y.len() == rows,
        "reduce_cols: operand lengths"
    );
    for (o, row) in y.iter_mut().zip(x.chunks_exact(cols.max(1))) {
        *o = row.iter().map(|&v| v as f64).sum::<f64>() as f32;
    }
}

/// Writes `x` (`[rows, width]`) into channels `offset..offset + width` of `y` (`[rows, total]`):
/// one part of a channel concatenation.
pub fn concat_part(rows: usize, total: usize, offset: usize, width: usize, x: &[f32], y: &mut [f32]) {
    assert!(offset + width <= total, "concat: part exceeds the output's channels");
    assert!(
        x.len() == rows * width && y.len() == rows * total,
        "concat: operand lengths"
    );
    if width == 0 {
        return;
    }
    for (orow, xrow) in y.chunks_exact_mut(total).zip(x.chunks_exact(width)) {
        orow[offset..offset + width].copy_from_slice(xrow);
    }
}

/// `y[r, ..] = x[r, offset..offset + len]` (`x` is `[rows, channels]`).
pub fn slice_channels(rows: usize, channels: usize, offset: usize, len: usize, x: &[f32], y: &mut [f32]) {
    assert!(offset + len <= channels, "slice: channels out of range");
    assert!(
        x.len() == rows * channels && y.len() == rows * len,
        "slice: operand lengths"
    );
    if len == 0 {
        return;
    }
    for (orow, xrow) in y.chunks_exact_mut(len).zip(x.chunks_exact(channels)) {
        orow.copy_from_slice(&xrow[offset..offset + len]);
    }
}
