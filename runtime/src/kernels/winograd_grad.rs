//! The kernel (weight) gradient of a 3×3 stride-1 conv by Winograd: F(3×3, 2×2) here, the
//! transpose of the forward's F(2×2, 3×3), and F(3×3, 4×4) with the transforms in
//! [`winograd_f4`](super::winograd_f4), over the batch's dy tiles and their input windows.

use super::conv::ConvGeom;
use super::conv_backward::add_columns;
use super::gemm::padded_ld;
use super::microkernel::{run_tile, tile_shape, ALayout, Tile};
use super::scratch::{self, Slot};
use super::simd::{ld, st, with_simd, Simd};
use super::winograd::{bt, window_columns, winograd_applies, Window, WinogradTile, P};
use super::winograd_f4 as f4;
use super::{Ctx, KernelIsa};
use crate::pool::split_by_tasks;
use std::cell::RefCell;
use std::ops::Range;

// ---------------------------------------------------------------------------------------------
// Kernel (weight) gradient by Winograd F(3×3, 2×2) (F(3×3, 4×4): `winograd_f4.rs`).
//
// `dw[kh, kw] = Σ_{oy, ox} x[oy + kh − pad, ox + kw − pad] · dy[oy, ox]` is, per 2×2 tile of dy
// (output pixels `2ty + a`, `2tx + b`) and its 4×4 input window `d` (rows `2ty − pad.top ..+4`),
// the 1-D correlation `dw[k] = Σ_{i<2} d[i + k] · u[i]` (k < 3) in each dimension: F(3, 2), the
// transpose of the forward F(2, 3). From the forward's bilinear identity
// `Σ_{i<2, k<3} d[i+k] u[i] v[k] = Σ_ξ (A u)_ξ (G v)_ξ (Bᵀ d)_ξ` (A = (Aᵀ)ᵀ, 4×2):
// `dw = Gᵀ [(A u) ⊙ (Bᵀ d)]`. With the sign of point 3 moved from A into Gᵀ:
//   A' u = (u0, u0 + u1, u0 − u1, u1),
//   G'ᵀ m = (m0 + ½(m1 + m2), ½(m1 − m2), ½(m1 + m2) − m3).
// In 2-D: `dW = G'ᵀ [Σ_tiles (A' u A'ᵀ) ⊙ (Bᵀ d B)] G'`, i.e. 16 GEMMs
// `M_ξ[C, F] = Σ_t V_ξ[t, C]ᵀ · W_ξ[t, F]` over every tile of the batch, then the 3×3 output
// transform. Point ξ = 5 of `A' u A'ᵀ` is the tile's sum of dy: the bias gradient.
// ---------------------------------------------------------------------------------------------

/// `dw = ∂L/∂w` (HWIO `[3, 3, c, f]`) and, if asked, `dbias = Σ dy` per output channel, by
/// Winograd over `tile`-sized dy tiles: F(3×3, 2×2) or F(3×3, 4×4). x `[n, h, w, c]`, dy
/// `[n, oh, ow, f]`. Panics unless [`winograd_applies`]. The convolutions pick `tile` with
/// [`WinogradTile::for_geom`].
///
/// Threads split the transformed points (each transforms every tile but keeps only its
/// points); every thread walks the tiles in the same blocks and order, so the reduction over
/// tiles, and dw, do not depend on the thread count.
pub fn conv2d_grad_kernel_winograd(
    ctx: &Ctx,
    tile: WinogradTile,
    g: &ConvGeom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    g.check(x.len(), dw.len(), dy.len());
    assert!(winograd_applies(g), "Winograd needs a 3×3 stride-1 conv: {g:?}");
    if let Some(b) = &dbias {
        assert_eq!(b.len(), g.f, "bias gradient has {} entries, expected {}", b.len(), g.f);
    }
    let ctx = &ctx.for_work(g.flops());
    let isa = ctx.isa.checked();
    let (c, f) = (g.c, g.f);
    let (ldv, ldm) = (padded_ld(c), padded_ld(f));
    let plan = GradPlan {
        isa,
        g: *g,
        tile,
        points: tile.points(),
        tiles_x: g.ow.div_ceil(tile.side()),
        tiles_y: g.oh.div_ceil(tile.side()),
        block: GRAD_BLOCK,
        ldv,
        ldw: ldm,
    };
    if g.n == 0 {
        dw.fill(0.0);
        if let Some(db) = dbias {
            db.fill(0.0);
        }
        return;
    }
    GRAD_M.with(|cell| match cell.try_borrow_mut() {
        Ok(mut m) => grad_run(ctx, &plan, x, dy, &mut m, dw, dbias),
        Err(_) => grad_run(ctx, &plan, x, dy, &mut Vec::new(), dw, dbias),
    })
}

thread_local! {
    /// The kernel gradient's `M` (`[points][c][ldm]`), kept between calls: at 512 channels it is
    /// 17 MB, not worth faulting in and zeroing on every call. Every value read is overwritten
    /// first (the first block's GEMMs do not accumulate).
    static GRAD_M: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The GEMMs (threads split the points) into `m`, then the output transform into `dw`.
fn grad_run(
    ctx: &Ctx,
    plan: &GradPlan,
    x: &[f32],
    dy: &[f32],
    m: &mut Vec<f32>,
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    let (c, f, ldm, np) = (plan.g.c, plan.g.f, plan.ldw, plan.points);
    if m.len() < np * c * ldm {
        m.resize(np * c * ldm, 0.0);
    }
    let m = &mut m[..np * c * ldm];
    let want_bias = dbias.is_some();
    let threads = ctx.threads();
    let bias_point = plan.bias_point();
    let mut parts: Vec<(Range<usize>, &mut [f32], Vec<f64>)> = split_by_tasks(m, np, threads, |xi| xi * c * ldm)
        .into_iter()
        .map(|(r, part)| {
            let bias = if want_bias && r.contains(&bias_point) { ldm } else { 0 };
            (r, part, vec![0f64; bias])
        })
        .collect();
    ctx.pool.run_with_state(&mut parts, np, |(points, mp, bsum), _t, _r| {
        if points.start < points.end {
            grad_points(plan, x, dy, points.clone(), mp, bsum);
        }
    });
    if let Some(db) = dbias {
        let sums = parts.iter().find(|p| !p.2.is_empty()).map(|p| &p.2[..]);
        for (i, d) in db.iter_mut().enumerate() {
            *d = sums.map_or(0.0, |s| s[i]) as f32;
        }
    }
    drop(parts);
    with_simd!(plan.isa, S, {
        // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
        unsafe {
            match plan.tile {
                WinogradTile::F2x2 => grad_output::<S>(c, f, ldm, m, dw),
                WinogradTile::F4x4 => f4::grad_output::<S>(c, f, ldm, m, dw),
            }
        }
    })
}

/// Tiles per block of the kernel gradient (the GEMMs' K): each block streams all of its thread's
/// `M` once, so not too few; its V and W blocks are written point by point and re-read by the
/// GEMMs, so not too many. Measured with `conv_one wdw` at one thread over 32–256 on MNIST conv2
/// and ResNet-18 64–512: 64 was best or within noise of it everywhere.
const GRAD_BLOCK: usize = 64;
/// The point of F(3×3, 2×2)'s `A' u A'ᵀ` that is a tile's sum of dy (ξ = 4·1 + 1).
const BIAS_POINT: usize = 5;

/// What the threads of one kernel-gradient call share.
pub(super) struct GradPlan {
    isa: KernelIsa,
    pub(super) g: ConvGeom,
    tile: WinogradTile,
    /// `tile.points()`.
    points: usize,
    pub(super) tiles_x: usize,
    pub(super) tiles_y: usize,
    /// Tiles per block (independent of the thread count: it fixes the reduction order).
    block: usize,
    /// Row strides of the V (`[points, tiles, ldv]`) and W (`[points, tiles, ldw]`) blocks.
    pub(super) ldv: usize,
    pub(super) ldw: usize,
}

impl GradPlan {
    /// The transformed point that is a dy tile's sum: the bias gradient.
    fn bias_point(&self) -> usize {
        match self.tile {
            WinogradTile::F2x2 => BIAS_POINT,
            WinogradTile::F4x4 => f4::GRAD_BIAS_POINT,
        }
    }
}

/// One thread's share: `M_ξ` for ξ in `points` (`mp`: `[points][c][ldw]`), accumulated over
/// every tile in blocks; `bsum` (if not empty) gets the bias gradient.
fn grad_points(plan: &GradPlan, x: &[f32], dy: &[f32], points: Range<usize>, mp: &mut [f32], bsum: &mut [f64]) {
    let g = &plan.g;
    let total = g.n * plan.tiles_y * plan.tiles_x;
    let np = points.len();
    let (mr, lanes) = tile_shape(plan.isa);
    let nr = 2 * lanes;
    let (c, f, ldw) = (g.c, g.f, plan.ldw);
    let panels = f.div_ceil(nr);
    for (bi, t0) in (0..total).step_by(plan.block).enumerate() {
        let tiles = t0..(t0 + plan.block).min(total);
        let nt = tiles.len();
        scratch::with(Slot::A, np * nt * plan.ldv, |v| {
            scratch::with(Slot::B, np * nt * ldw, |w| {
                with_simd!(plan.isa, S, {
                    // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
                    unsafe {
                        match plan.tile {
                            WinogradTile::F2x2 => {
                                grad_transforms::<S>(plan, x, dy, tiles.clone(), points.clone(), v, w)
                            }
                            WinogradTile::F4x4 => {
                                f4::grad_transforms::<S>(plan, x, dy, tiles.clone(), points.clone(), v, w)
                            }
                        }
                    }
                });
                if !bsum.is_empty() {
                    let wb = &w[(plan.bias_point() - points.start) * nt * ldw..][..nt * ldw];
                    add_columns(plan.isa, wb, ldw, bsum);
                }
                for pl in 0..np {
                    let (vp, wp) = (&v[pl * nt * plan.ldv..], &w[pl * nt * ldw..]);
                    for j in 0..panels {
                        for i in (0..c).step_by(mr) {
                            let tile = Tile {
                                rows: mr.min(c - i),
                                cols: nr.min(f - j * nr),
                                kc: nt,
                                a: &vp[i..],
                                lda: plan.ldv,
                                a_layout: ALayout::ColMajor,
                                segs: None,
                                b: &wp[j * nr..],
                                b_stride: ldw,
                                ldc: ldw,
                                accumulate: bi > 0,
                                finish: None,
                            };
                            run_tile(plan.isa, &tile, &mut mp[(pl * c + i) * ldw + j * nr..]);
                        }
                    }
                }
            })
        })
    }
}

/// Panics unless the V and W blocks hold `rows` rows of `ldv` / `ldw` floats, multiples of
/// `lanes`: the gradient transforms store whole vectors through raw pointers.
pub(super) fn check_blocks(lanes: usize, plan: &GradPlan, rows: usize, v: &[f32], w: &[f32]) {
    assert!(
        plan.ldv.is_multiple_of(lanes)
            && plan.ldw.is_multiple_of(lanes)
            && v.len() >= rows * plan.ldv
            && w.len() >= rows * plan.ldw,
        "transform blocks too small"
    );
}

/// `V[ξ, t, :] = (Bᵀ d_t B)[ξ]` and `W[ξ, t, :] = (A' u_t A'ᵀ)[ξ]` for the block's tiles and
/// the points in `points` (`d_t` the 4×4 input window, `u_t` the 2×2 dy tile, zero outside).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn grad_transforms<S: Simd>(
    plan: &GradPlan,
    x: &[f32],
    dy: &[f32],
    tiles: Range<usize>,
    points: Range<usize>,
    v: &mut [f32],
    w: &mut [f32],
) {
    let g = &plan.g;
    let (c, f, nt, ldv, ldw) = (g.c, g.f, tiles.len(), plan.ldv, plan.ldw);
    // Rows i of the 4×4 points (ξ = 4i + j) this thread keeps: the second pass skips the others.
    let rows = points.start / 4..points.end.div_ceil(4);
    // Whole vectors are stored, also past `c` / `f`: the row strides are multiples of the lanes
    // and the lanes past the data are transforms of zeros.
    check_blocks(S::LANES, plan, points.len() * nt, v, w);
    let (vp, wp) = (v.as_mut_ptr(), w.as_mut_ptr());
    for (tl, t) in tiles.enumerate() {
        let (r, tx) = (t / plan.tiles_x, t % plan.tiles_x);
        let (img, ty) = (r / plan.tiles_y, r % plan.tiles_y);
        let src = Window::<4>::of_tile(g, plan.tiles_x, plan.tiles_y, t);
        for c0 in (0..c).step_by(S::LANES) {
            let len = S::LANES.min(c - c0);
            let [e0, e1, e2, e3] = window_columns::<S>(x, &src, c0, len);
            for i in rows.clone() {
                let row = bt::<S>(e0[i], e1[i], e2[i], e3[i]);
                for (j, &val) in row.iter().enumerate() {
                    let xi = 4 * i + j;
                    if points.contains(&xi) {
                        // SAFETY: within `v` (asserted above: c0 < ldv, both multiples of LANES).
                        S::store(vp.add(((xi - points.start) * nt + tl) * ldv + c0), val);
                    }
                }
            }
        }
        // dy pixels of the tile, None outside the output (partial tiles).
        let mut dsrc = [None; 4];
        for (p, s) in dsrc.iter_mut().enumerate() {
            let (oy, ox) = (2 * ty + p / 2, 2 * tx + p % 2);
            if oy < g.oh && ox < g.ow {
                *s = Some(((img * g.oh + oy) * g.ow + ox) * f);
            }
        }
        for f0 in (0..f).step_by(S::LANES) {
            let len = S::LANES.min(f - f0);
            let mut u = [S::zero(); 4];
            for (up, sp) in u.iter_mut().zip(&dsrc) {
                if let Some(o) = *sp {
                    *up = ld::<S>(&dy[o + f0..], len);
                }
            }
            let e0 = aa::<S>(u[0], u[2]);
            let e1 = aa::<S>(u[1], u[3]);
            for i in rows.clone() {
                let row = aa::<S>(e0[i], e1[i]);
                for (j, &val) in row.iter().enumerate() {
                    let xi = 4 * i + j;
                    if points.contains(&xi) {
                        // SAFETY: within `w` (asserted above: f0 < ldw, both multiples of LANES).
                        S::store(wp.add(((xi - points.start) * nt + tl) * ldw + f0), val);
                    }
                }
            }
        }
    }
}

/// `dw[kh, kw, ci, :] = (G'ᵀ M[:, ci, :] G')[kh, kw]` (`m`: `[16][c][ldm]`).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn grad_output<S: Simd>(c: usize, f: usize, ldm: usize, m: &[f32], dw: &mut [f32]) {
    let half = S::splat(0.5);
    for ci in 0..c {
        for f0 in (0..f).step_by(S::LANES) {
            let len = S::LANES.min(f - f0);
            let mut mt = [S::zero(); P];
            for (xi, mx) in mt.iter_mut().enumerate() {
                *mx = ld::<S>(&m[(xi * c + ci) * ldm + f0..], len);
            }
            // Columns (G'ᵀ M), then rows ((G'ᵀ M) G').
            let e0 = gt::<S>(mt[0], mt[4], mt[8], mt[12], half);
            let e1 = gt::<S>(mt[1], mt[5], mt[9], mt[13], half);
            let e2 = gt::<S>(mt[2], mt[6], mt[10], mt[14], half);
            let e3 = gt::<S>(mt[3], mt[7], mt[11], mt[15], half);
            for kh in 0..3 {
                let row = gt::<S>(e0[kh], e1[kh], e2[kh], e3[kh], half);
                for (kw, &val) in row.iter().enumerate() {
                    st::<S>(&mut dw[((3 * kh + kw) * c + ci) * f + f0..], val, len);
                }
            }
        }
    }
}

/// `A' (u0, u1) = (u0, u0 + u1, u0 − u1, u1)`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn aa<S: Simd>(u0: S::V, u1: S::V) -> [S::V; 4] {
    [u0, S::add(u0, u1), S::sub(u0, u1), u1]
}

/// `G'ᵀ (m0, m1, m2, m3) = (m0 + ½(m1 + m2), ½(m1 − m2), ½(m1 + m2) − m3)`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn gt<S: Simd>(m0: S::V, m1: S::V, m2: S::V, m3: S::V, half: S::V) -> [S::V; 3] {
    let s = S::mul(half, S::add(m1, m2));
    [S::add(m0, s), S::mul(half, S::sub(m1, m2)), S::sub(s, m3)]
}
