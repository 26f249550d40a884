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
use super::simd::{ld, store_n, with_simd, Simd};
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
    pool_argmax_of(ctx, g, x, y, argmax, Identity)
}

/// What the pool reads of each input pixel: channels `c0..c0 + buf.len()` of `src` (that
/// pixel's values from `c0` on), mapped.
trait PixelMap: Copy + Sync {
    /// The mapped values, read in place or written to `buf`.
    fn map<'s>(&self, src: &'s [f32], c0: usize, buf: &'s mut [f32]) -> &'s [f32];

    /// The mapped values written to `dst` (a window's first pixel, the running maximum).
    fn map_into(&self, src: &[f32], c0: usize, dst: &mut [f32]);
}

/// The stored values as they are.
#[derive(Clone, Copy)]
struct Identity;

impl PixelMap for Identity {
    #[inline(always)]
    fn map<'s>(&self, src: &'s [f32], _c0: usize, buf: &'s mut [f32]) -> &'s [f32] {
        &src[..buf.len()]
    }

    #[inline(always)]
    fn map_into(&self, src: &[f32], _c0: usize, dst: &mut [f32]) {
        dst.copy_from_slice(&src[..dst.len()]);
    }
}

/// BN's normalise pass, then a ReLU if `relu`.
#[derive(Clone, Copy)]
struct BnAct<'a> {
    bn: BnAffine<'a>,
    relu: bool,
}

impl PixelMap for BnAct<'_> {
    #[inline(always)]
    fn map<'s>(&self, src: &'s [f32], c0: usize, buf: &'s mut [f32]) -> &'s [f32] {
        self.map_into(src, c0, buf);
        buf
    }

    #[inline(always)]
    fn map_into(&self, src: &[f32], c0: usize, dst: &mut [f32]) {
        // Operands re-sliced to the piece's length: no bounds checks, so the loop vectorises.
        let n = dst.len();
        let (bn, relu) = (&self.bn, self.relu);
        let (src, m, s, b) = (
            &src[..n],
            &bn.mean[c0..][..n],
            &bn.scale[c0..][..n],
            &bn.beta[c0..][..n],
        );
        for l in 0..n {
            // As `norm::bn_apply` computes it.
            let v = (src[l] - m[l]) * s[l] + b[l];
            dst[l] = if relu { v.max(0.0) } else { v };
        }
    }
}

/// The per-channel affine map of a batch norm's normalise pass, `(v − mean)·scale + beta`.
#[derive(Clone, Copy, Debug)]
pub struct BnAffine<'a> {
    pub mean: &'a [f32],
    pub scale: &'a [f32],
    pub beta: &'a [f32],
}

/// [`max_pool_argmax`] of `act(bn(x))` (`bn` as [`norm::bn_apply`](super::norm::bn_apply)
/// computes it, bit for bit; `act` linear or ReLU), without storing that map: a training BN →
/// ReLU → max-pool writes only the pooled map and its argmax.
pub fn bn_act_max_pool_argmax(
    ctx: &Ctx,
    g: &PoolGeom,
    x: &[f32],
    bn: BnAffine,
    act: Act,
    y: &mut [f32],
    argmax: &mut [f32],
) {
    let c = g.c;
    assert!(
        bn.mean.len() == c && bn.scale.len() == c && bn.beta.len() == c,
        "bn_act_max_pool_argmax: per-channel operands"
    );
    let relu = match act {
        Act::Linear => false,
        Act::Relu => true,
        _ => panic!("bn_act_max_pool_argmax: {act:?} is not fused with a pool"),
    };
    pool_argmax_of(ctx, g, x, y, argmax, BnAct { bn, relu })
}

/// [`max_pool_argmax`] of `x` mapped by `f`.
fn pool_argmax_of(ctx: &Ctx, g: &PoolGeom, x: &[f32], y: &mut [f32], argmax: &mut [f32], f: impl PixelMap) {
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
            || pool_rows(g, x, range.clone(), y, a, f),
        )
    };
    if threads == 1 {
        parts.iter_mut().for_each(body);
    } else {
        ctx.pool.run_with_state(&mut parts, threads, |part, _t, _r| body(part));
    }
}

/// Pooled rows `rows` (of `n·oh`) of `x` mapped by `f` into `y`/`argmax` (those rows only).
#[inline(always)]
fn pool_rows(
    g: &PoolGeom,
    x: &[f32],
    rows: std::ops::Range<usize>,
    y: &mut [f32],
    argmax: &mut [f32],
    f: impl PixelMap,
) {
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
                let mut buf = [0f32; LANES];
                f.map_into(&x[at(0) + j..], j, &mut best[..lanes]);
                for t in 1..sh * sw {
                    let xs = f.map(&x[at(t) + j..], j, &mut buf[..lanes]);
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
        with_simd!(isa, narrow = g.c <= 8, S, {
            grad_rows::<S>(g, argmax, y, dy, act, range.clone(), dx)
        })
    };
    if threads == 1 {
        parts.iter_mut().for_each(body);
    } else {
        ctx.pool.run_with_state(&mut parts, threads, |part, _t, _r| body(part));
    }
}

/// Pooled rows `rows` of [`max_pool_grad_argmax`] into their band of `dx`.
#[inline(always)]
fn grad_rows<S: Simd>(
    g: &PoolGeom,
    argmax: &[f32],
    y: &[f32],
    dy: &[f32],
    act: Act,
    rows: std::ops::Range<usize>,
    dx: &mut [f32],
) {
    let (c, [sh, sw]) = (g.c, g.size);
    let band = sh * g.w * c;
    for (i, r) in rows.enumerate() {
        for ow in 0..g.ow {
            let q0 = (r * g.ow + ow) * c;
            for j in (0..c).step_by(S::LANES) {
                let n = S::LANES.min(c - j);
                // SAFETY: `with_simd!` picked an `S` the CPU supports.
                unsafe {
                    let (gv, av) = pooled_grad::<S>(act, argmax, y, dy, q0 + j, n);
                    let at = &mut dx[i * band + ow * sw * c + j..];
                    scatter_window::<S>(gv, av, [sh, sw], at, g.w * c, c, n);
                }
            }
        }
    }
}

/// The gradient `act'(y)·dy` of pooled elements `q..q + n` (`n ≤ LANES`) and their window
/// argmax, as vectors zero past `n`. `y` is read only when `act` is not linear.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn pooled_grad<S: Simd>(
    act: Act,
    argmax: &[f32],
    y: &[f32],
    dy: &[f32],
    q: usize,
    n: usize,
) -> (S::V, S::V) {
    let d = ld::<S>(&dy[q..], n);
    let g = match act {
        Act::Linear => d,
        _ => act.grad_from_output_v::<S>(ld::<S>(&y[q..], n), d),
    };
    (g, ld::<S>(&argmax[q..], n))
}

/// Sends one pooled vector's gradient `g` back through its `size` window: tap `t` (row-major,
/// at `out[(t / size[1])·row + (t % size[1])·col..]`) gets `g` where `arg == t`, 0 elsewhere;
/// `n` lanes stored.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn scatter_window<S: Simd>(
    g: S::V,
    arg: S::V,
    size: [usize; 2],
    out: &mut [f32],
    row: usize,
    col: usize,
    n: usize,
) {
    // One bounds check for the whole window.
    let last = (size[0] - 1) * row + (size[1] - 1) * col + n;
    let out = out[..last].as_mut_ptr();
    // Indices are small integers in f32: `arg == t` is `t − ½ < arg < t + ½`.
    let one = S::splat(1.0);
    let mut lo = S::splat(-0.5);
    for i in 0..size[0] {
        for j in 0..size[1] {
            let hi = S::add(lo, one);
            let v = S::select_gt(hi, arg, g, S::zero());
            let v = S::select_gt(arg, lo, v, S::zero());
            store_n::<S>(out.add(i * row + j * col), v, n);
            lo = hi;
        }
    }
}
