//! Max-pooling that records where each window's maximum is, and the gradient that uses it.
//!
//! A training step pools a conv's activation, then sends the pooled gradient back to each
//! window's maximum. [`max_pool_grad_act`](super::pool2d::max_pool_grad_act) finds that
//! maximum again by re-reading the unpooled map, so the map must be stored in forward and read
//! twice more in backward. Here the forward also writes, per pooled output and channel, the
//! index of its window's first maximum (row-major in the window, as an f32), and the gradient
//! needs only that index, the pooled output and its gradient: the unpooled map is never read
//! again, and a conv that pools in its epilogue need not store it at all.
//!
//! Only windows that tile the map exactly (stride = size, no padding, sides multiples of the
//! window), the windows a conv epilogue pools: every input belongs to exactly one window.

use super::activation::Act;
use super::pool2d::PoolGeom;
use super::Ctx;
use crate::pool::split_by_tasks;

/// Channels per block: one AVX-512 vector.
const LANES: usize = 16;

/// Panics unless `g`'s windows tile its input exactly.
fn check_tiles(g: &PoolGeom) {
    let tiles = g.stride == g.size
        && g.pad == super::conv::Pad::default()
        && g.oh * g.size[0] == g.h
        && g.ow * g.size[1] == g.w;
    assert!(
        tiles,
        "argmax pooling needs windows that tile the input exactly, got {g:?}"
    );
}

/// Pooled rows (`n·oh`) per task, and the tasks, for `threads` threads.
fn tasks(ctx: &Ctx, g: &PoolGeom) -> (usize, usize) {
    let rows = g.n * g.oh;
    let threads = if g.input_len() >= 1 << 14 && rows > 1 {
        ctx.pool.threads()
    } else {
        1
    };
    (rows, threads)
}

/// `y` = each window's maximum, `argmax` = the row-major index in its window of the first
/// element equal to it (a later equal element does not take over, as in `max_pool`). `x` is
/// `[n, h, w, c]`, `y` and `argmax` are `[n, oh, ow, c]`.
pub fn max_pool_argmax(ctx: &Ctx, g: &PoolGeom, x: &[f32], y: &mut [f32], argmax: &mut [f32]) {
    check_tiles(g);
    assert_eq!(x.len(), g.input_len(), "max_pool_argmax: x has {} values", x.len());
    assert_eq!(y.len(), g.output_len(), "max_pool_argmax: y has {} values", y.len());
    assert_eq!(
        argmax.len(),
        y.len(),
        "max_pool_argmax: argmax has {} values",
        argmax.len()
    );
    let (rows, threads) = tasks(ctx, g);
    let row = g.ow * g.c;
    let ys = split_by_tasks(y, rows, threads, |r| r * row);
    let args = split_by_tasks(argmax, rows, threads, |r| r * row);
    let mut parts: Vec<_> = ys.into_iter().zip(args).map(|((r, y), (_, a))| (r, y, a)).collect();
    let isa = ctx.isa;
    let body = |(range, y, a): &mut (std::ops::Range<usize>, &mut [f32], &mut [f32])| {
        isa.vectorize(
            #[inline(always)]
            || pool_rows(g, x, range.clone(), y, a),
        )
    };
    if threads == 1 {
        parts.iter_mut().for_each(body);
    } else {
        ctx.pool.run_with_state(&mut parts, threads, |part, _t, _r| body(part));
    }
}

/// Pooled rows `rows` (of `n·oh`) into `y`/`argmax` (those rows only).
#[inline(always)]
fn pool_rows(g: &PoolGeom, x: &[f32], rows: std::ops::Range<usize>, y: &mut [f32], argmax: &mut [f32]) {
    let (c, [sh, sw]) = (g.c, g.size);
    let row = g.ow * c;
    for (i, r) in rows.enumerate() {
        let (n, oh) = (r / g.oh, r % g.oh);
        for ow in 0..g.ow {
            let out = i * row + ow * c;
            // [c] of the window's top-left input pixel
            let at = |t: usize| ((n * g.h + oh * sh + t / sw) * g.w + ow * sw + t % sw) * c;
            let mut j = 0;
            while j < c {
                let lanes = LANES.min(c - j);
                let mut best = [0f32; LANES];
                let mut arg = [0f32; LANES];
                best[..lanes].copy_from_slice(&x[at(0) + j..][..lanes]);
                for t in 1..sh * sw {
                    let xs = &x[at(t) + j..][..lanes];
                    let tf = t as f32;
                    for l in 0..lanes {
                        let gt = xs[l] > best[l];
                        best[l] = if gt { xs[l] } else { best[l] };
                        arg[l] = if gt { tf } else { arg[l] };
                    }
                }
                y[out + j..][..lanes].copy_from_slice(&best[..lanes]);
                argmax[out + j..][..lanes].copy_from_slice(&arg[..lanes]);
                j += lanes;
            }
        }
    }
}

/// `dx [n, h, w, c]` (overwritten) from the pooled gradient `dy [n, oh, ow, c]`: each window's
/// gradient goes to the element `argmax` names, times `act'` at the pooled output `y` (the
/// activation before the pool commutes with the maximum, so its derivative there is the one at
/// that element); every other element gets 0. `y` is read only when `act` is not linear.
pub fn max_pool_grad_argmax(ctx: &Ctx, g: &PoolGeom, argmax: &[f32], y: &[f32], dy: &[f32], act: Act, dx: &mut [f32]) {
    check_tiles(g);
    assert_eq!(
        argmax.len(),
        g.output_len(),
        "max_pool_grad_argmax: argmax has {} values",
        argmax.len()
    );
    assert_eq!(
        dy.len(),
        g.output_len(),
        "max_pool_grad_argmax: dy has {} values",
        dy.len()
    );
    assert!(
        act == Act::Linear || y.len() == g.output_len(),
        "max_pool_grad_argmax: y has {} values",
        y.len()
    );
    assert_eq!(
        dx.len(),
        g.input_len(),
        "max_pool_grad_argmax: dx has {} values",
        dx.len()
    );
    let (rows, threads) = tasks(ctx, g);
    // One pooled row's inputs: sh rows of the map.
    let band = g.size[0] * g.w * g.c;
    let mut parts = split_by_tasks(dx, rows, threads, |r| r * band);
    let isa = ctx.isa;
    let body = |(range, dx): &mut (std::ops::Range<usize>, &mut [f32])| {
        isa.vectorize(
            #[inline(always)]
            || match act {
                Act::Linear => grad_rows(g, argmax, dy, range.clone(), dx, |_, d| d),
                Act::Relu => grad_rows(
                    g,
                    argmax,
                    dy,
                    range.clone(),
                    dx,
                    |q, d| if y[q] > 0.0 { d } else { 0.0 },
                ),
                Act::Sigmoid => grad_rows(g, argmax, dy, range.clone(), dx, |q, d| d * y[q] * (1.0 - y[q])),
                Act::Tanh => grad_rows(g, argmax, dy, range.clone(), dx, |q, d| d * (1.0 - y[q] * y[q])),
            },
        )
    };
    if threads == 1 {
        parts.iter_mut().for_each(body);
    } else {
        ctx.pool.run_with_state(&mut parts, threads, |part, _t, _r| body(part));
    }
}

/// Pooled rows `rows` of [`max_pool_grad_argmax`] into their band of `dx`; `grad(q, d)` is the
/// gradient at pooled element `q` with pooled gradient `d`.
#[inline(always)]
fn grad_rows(
    g: &PoolGeom,
    argmax: &[f32],
    dy: &[f32],
    rows: std::ops::Range<usize>,
    dx: &mut [f32],
    grad: impl Fn(usize, f32) -> f32,
) {
    let (c, [sh, sw]) = (g.c, g.size);
    let band = sh * g.w * c;
    for (i, r) in rows.enumerate() {
        let dband = &mut dx[i * band..][..band];
        for ow in 0..g.ow {
            let q0 = (r * g.ow + ow) * c;
            let mut j = 0;
            while j < c {
                let lanes = LANES.min(c - j);
                let mut d = [0f32; LANES];
                let mut arg = [0f32; LANES];
                for l in 0..lanes {
                    d[l] = grad(q0 + j + l, dy[q0 + j + l]);
                }
                arg[..lanes].copy_from_slice(&argmax[q0 + j..][..lanes]);
                for t in 0..sh * sw {
                    // [c] of tap t within the band
                    let at = ((t / sw) * g.w + ow * sw + t % sw) * c + j;
                    let out = &mut dband[at..][..lanes];
                    let tf = t as f32;
                    for l in 0..lanes {
                        out[l] = if arg[l] == tf { d[l] } else { 0.0 };
                    }
                }
                j += lanes;
            }
        }
    }
}
