//! The two passes of BN's backward (see [`norm::bn_backward`](super::norm::bn_backward)) over
//! rows of `x, dy [rows, c]`, in explicit vectors: pass 1 sums `g` and `g·x̂` per column,
//! pass 2 writes `dx = ka·g + kb·(x − μ) + kd`, with `g = act'(y)·dy` computed in registers.
//!
//! Written with [`Simd`] as the moments' `block_sums` are: the autovectorised loops they replace
//! kept the block sums in memory behind runtime alias checks, and on CIFAR-10 CNN's first layer
//! (32 channels, batch 64) pass 1 ran at a third of `moments`' bandwidth, mostly in the checks'
//! scalar fallback. The f32 operations and their order per column are unchanged, so results are
//! the same bit for bit.

use std::ops::Range;

use super::epilogue::{add_lanes, SUM_BLOCK};
use super::simd::{ld, st, with_simd, Simd};
use super::KernelIsa;

/// An activation's gradient `act'(y)·d` from its output `y`, per vector.
pub(super) trait ActGrad: Copy + Send + Sync {
    /// # Safety
    /// The CPU must support `S`.
    unsafe fn grad<S: Simd>(y: S::V, d: S::V) -> S::V;
}

/// No activation (`g = d`; never asked for `y`).
#[derive(Clone, Copy)]
pub(super) struct LinearGrad;
/// `d` where `y > 0`, else 0 (NaN included).
#[derive(Clone, Copy)]
pub(super) struct ReluGrad;
/// `d·y·(1 − y)`.
#[derive(Clone, Copy)]
pub(super) struct SigmoidGrad;
/// `d·(1 − y²)`.
#[derive(Clone, Copy)]
pub(super) struct TanhGrad;

impl ActGrad for LinearGrad {
    #[inline(always)]
    unsafe fn grad<S: Simd>(_y: S::V, d: S::V) -> S::V {
        d
    }
}

impl ActGrad for ReluGrad {
    #[inline(always)]
    unsafe fn grad<S: Simd>(y: S::V, d: S::V) -> S::V {
        S::select_gt(y, S::zero(), d, S::zero())
    }
}

impl ActGrad for SigmoidGrad {
    #[inline(always)]
    unsafe fn grad<S: Simd>(y: S::V, d: S::V) -> S::V {
        S::mul(S::mul(d, y), S::sub(S::splat(1.0), y))
    }
}

impl ActGrad for TanhGrad {
    #[inline(always)]
    unsafe fn grad<S: Simd>(y: S::V, d: S::V) -> S::V {
        S::mul(d, S::sub(S::splat(1.0), S::mul(y, y)))
    }
}

/// What the activation's gradient reads besides `dy` (all slices over the same rows as `x`;
/// per-channel operands `c` long).
#[derive(Clone, Copy)]
pub(super) enum ActIn<'a> {
    /// No activation: `g = dy`.
    None,
    /// Its stored output.
    Output(&'a [f32]),
    /// Its input `(x − mean)·scale + beta`, recomputed as `bn_apply` computed it (a ReLU's
    /// gradient only needs the sign), about the same mean as `x̂`.
    Recomputed { scale: &'a [f32], beta: &'a [f32] },
}

/// `x [rows, c]`, `dy`, and what `g` reads, for the rows of one pass.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub c: usize,
    pub x: &'a [f32],
    pub dy: &'a [f32],
    pub act: ActIn<'a>,
}

/// The per-channel coefficients of `dx = ka·g + kb·(x − mean) + kd`.
#[derive(Clone, Copy)]
pub(super) struct DxCoef<'a> {
    pub ka: &'a [f32],
    pub kb: &'a [f32],
    pub kd: &'a [f32],
    pub mean: &'a [f32],
}

/// Pass 1 over rows `r`: adds `Σg` into `sg` and `Σg·x̂` (`x̂ = (x − mean)·inv`) into `sgx`, per
/// column, in f32 over each [`SUM_BLOCK`] rows from `r.start`, then in f64.
pub(super) fn grad_sums<G: ActGrad>(
    isa: KernelIsa,
    rows: Rows,
    r: Range<usize>,
    mean: &[f32],
    inv: &[f32],
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    with_simd!(isa, S, {
        // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
        unsafe { block_sums::<S, G>(rows, r, mean, inv, sg, sgx) }
    });
}

/// [`grad_sums`]: four column vectors at a time down each block's rows, the sums in registers.
#[inline(always)]
unsafe fn block_sums<S: Simd, G: ActGrad>(
    rows: Rows,
    r: Range<usize>,
    mean: &[f32],
    inv: &[f32],
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let (c, wide) = (rows.c, 4 * S::LANES);
    let mut start = r.start;
    while start < r.end {
        let block = start..(start + SUM_BLOCK).min(r.end);
        let mut k = 0;
        while k + wide <= c {
            column_sums::<S, G, 4>(rows, block.clone(), k, wide, mean, inv, sg, sgx);
            k += wide;
        }
        while k < c {
            let len = S::LANES.min(c - k);
            column_sums::<S, G, 1>(rows, block.clone(), k, len, mean, inv, sg, sgx);
            k += len;
        }
        start = block.end;
    }
}

/// [`block_sums`] of columns `k0..k0 + len` (`NV` vectors, the last `len − (NV − 1)·LANES`
/// lanes wide) over the rows of `block`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn column_sums<S: Simd, G: ActGrad, const NV: usize>(
    rows: Rows,
    block: Range<usize>,
    k0: usize,
    len: usize,
    mean: &[f32],
    inv: &[f32],
    sg: &mut [f64],
    sgx: &mut [f64],
) {
    let c = rows.c;
    let lanes = |v: usize| S::LANES.min(len - v * S::LANES);
    // The per-channel operands in registers: x̂'s mean and 1/σ, a recomputed ReLU input's
    // scale and shift (about the same mean).
    let (mut mv, mut iv) = ([S::zero(); NV], [S::zero(); NV]);
    let (mut sv, mut bv) = ([S::zero(); NV], [S::zero(); NV]);
    for v in 0..NV {
        let (k, n) = (k0 + v * S::LANES, lanes(v));
        mv[v] = ld::<S>(&mean[k..], n);
        iv[v] = ld::<S>(&inv[k..], n);
        if let ActIn::Recomputed { scale, beta, .. } = rows.act {
            sv[v] = ld::<S>(&scale[k..], n);
            bv[v] = ld::<S>(&beta[k..], n);
        }
    }
    let (mut s, mut q) = ([S::zero(); NV], [S::zero(); NV]);
    for i in block {
        for v in 0..NV {
            let (o, n) = (i * c + k0 + v * S::LANES, lanes(v));
            let (xv, d) = (ld::<S>(&rows.x[o..], n), ld::<S>(&rows.dy[o..], n));
            let g = match rows.act {
                ActIn::None => d,
                ActIn::Output(y) => G::grad::<S>(ld::<S>(&y[o..], n), d),
                ActIn::Recomputed { .. } => G::grad::<S>(S::add(S::mul(S::sub(xv, mv[v]), sv[v]), bv[v]), d),
            };
            let xh = S::mul(S::sub(xv, mv[v]), iv[v]);
            s[v] = S::add(s[v], g);
            q[v] = S::add(q[v], S::mul(g, xh));
        }
    }
    add_lanes::<S, NV>(&s, &q, len, &mut sg[k0..k0 + len], &mut sgx[k0..k0 + len]);
}

/// Pass 2 over rows `r`: `out` (those rows' values) `= ka·g + kb·(x − mean) + kd`.
pub(super) fn grad_input<G: ActGrad>(isa: KernelIsa, rows: Rows, r: Range<usize>, k: DxCoef, out: &mut [f32]) {
    let c = rows.c;
    assert_eq!(out.len(), r.len() * c, "bn_backward: dx rows");
    with_simd!(isa, S, {
        // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
        unsafe { dx_rows::<S, G>(rows, r, k, out) }
    });
}

/// [`grad_input`] in blocks of [`SUM_BLOCK`] rows: four column vectors at a time down a block's
/// rows, their per-channel operands in registers.
#[inline(always)]
unsafe fn dx_rows<S: Simd, G: ActGrad>(rows: Rows, r: Range<usize>, k: DxCoef, out: &mut [f32]) {
    let (c, wide, first) = (rows.c, 4 * S::LANES, r.start);
    let mut start = r.start;
    while start < r.end {
        let block = start..(start + SUM_BLOCK).min(r.end);
        let out = &mut out[(block.start - first) * c..(block.end - first) * c];
        let mut k0 = 0;
        while k0 + wide <= c {
            dx_columns::<S, G, 4>(rows, block.clone(), k0, wide, k, out);
            k0 += wide;
        }
        while k0 < c {
            let len = S::LANES.min(c - k0);
            dx_columns::<S, G, 1>(rows, block.clone(), k0, len, k, out);
            k0 += len;
        }
        start = block.end;
    }
}

/// [`dx_rows`] of columns `k0..k0 + len` (`NV` vectors) over the rows of `block`, whose values
/// `out` holds.
#[inline(always)]
unsafe fn dx_columns<S: Simd, G: ActGrad, const NV: usize>(
    rows: Rows,
    block: Range<usize>,
    k0: usize,
    len: usize,
    k: DxCoef,
    out: &mut [f32],
) {
    let (c, first) = (rows.c, block.start);
    let lanes = |v: usize| S::LANES.min(len - v * S::LANES);
    let (mut mv, mut av, mut bv, mut dv) = ([S::zero(); NV], [S::zero(); NV], [S::zero(); NV], [S::zero(); NV]);
    let (mut scv, mut shv) = ([S::zero(); NV], [S::zero(); NV]);
    for v in 0..NV {
        let (kk, n) = (k0 + v * S::LANES, lanes(v));
        mv[v] = ld::<S>(&k.mean[kk..], n);
        av[v] = ld::<S>(&k.ka[kk..], n);
        bv[v] = ld::<S>(&k.kb[kk..], n);
        dv[v] = ld::<S>(&k.kd[kk..], n);
        if let ActIn::Recomputed { scale, beta, .. } = rows.act {
            scv[v] = ld::<S>(&scale[kk..], n);
            shv[v] = ld::<S>(&beta[kk..], n);
        }
    }
    for i in block {
        for v in 0..NV {
            let (kk, n) = (k0 + v * S::LANES, lanes(v));
            let o = i * c + kk;
            let (xv, d) = (ld::<S>(&rows.x[o..], n), ld::<S>(&rows.dy[o..], n));
            let xm = S::sub(xv, mv[v]);
            let g = match rows.act {
                ActIn::None => d,
                ActIn::Output(y) => G::grad::<S>(ld::<S>(&y[o..], n), d),
                ActIn::Recomputed { .. } => G::grad::<S>(S::add(S::mul(xm, scv[v]), shv[v]), d),
            };
            let dx = S::add(S::add(S::mul(av[v], g), S::mul(bv[v], xm)), dv[v]);
            st::<S>(&mut out[(i - first) * c + kk..], dx, n);
        }
    }
}
