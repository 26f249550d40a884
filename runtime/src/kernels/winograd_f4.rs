//! The transforms of Winograd F(4×4, 3×3) (Lavin & Gray 2015), for the forward driver in
//! [`winograd`](super::winograd): each 4×4 output tile from its 6×6 input window in 36
//! transformed points. With the matrices
//!
//! ```text
//!      [4  0 −5  0  1  0]        [ 1/4     0     0 ]        [1  1  1  1  1  0]
//!      [0 −4 −4  1  1  0]        [−1/6  −1/6  −1/6 ]   Aᵀ = [0  1 −1  2 −2  0]
//! Bᵀ = [0  4 −4 −1  1  0]    G = [−1/6   1/6  −1/6 ]        [0  1  1  4  4  0]
//!      [0 −2 −1  2  1  0]        [1/24  1/12   1/6 ]        [0  1 −1  8 −8  1]
//!      [0  2 −1 −2  1  0]        [1/24 −1/12   1/6 ]
//!      [0  4  0 −5  0  1]        [   0     0     1 ]
//! ```
//!
//! `U = G g Gᵀ` (kernel), `V = Bᵀ d B` (input window), `Y = Aᵀ M A` (output), each applied to
//! columns then rows and vectorised along the NHWC channels, as in F(2×2, 3×3).
//!
//! The kernel gradient's F(3×3, 4×4) is its transpose (see the derivation of F(3×3, 2×2) in
//! `winograd.rs`): per 4×4 dy tile `u` and 6×6 input window `d`,
//! `dW = Gᵀ [Σ_tiles (A u Aᵀ) ⊙ (Bᵀ d B)] G` with `A = (Aᵀ)ᵀ`; point 7 (1, 1) of `A u Aᵀ` is the
//! tile's sum of dy, the bias gradient.

use std::ops::Range;

use super::simd::{ld, st, Simd};
use super::winograd::{finish_tile, store_tile, KernelSrc, OutLines, Plan, Window};
use super::winograd_grad::{check_blocks, GradPlan};
use super::Act;

/// Input window side (and points per side).
const N: usize = 6;
/// Transformed points per tile.
const P: usize = N * N;
/// Output tile side.
const M: usize = 4;

/// Transforms panels `panels` of the 3×3 kernel `src` into `dst` (`[panels][36·c][nr]`,
/// starting at the first of them).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn kernel_panels<S: Simd>(src: &KernelSrc, panels: Range<usize>, dst: &mut [f32]) {
    let (c, nr) = (src.c, src.nr);
    let k = GConsts::<S>::new();
    for (j, panel) in panels.zip(dst.chunks_exact_mut(P * c * nr)) {
        for ci in 0..c {
            for q in (0..nr).step_by(S::LANES) {
                let len = src.cols.saturating_sub(j * nr + q).min(S::LANES);
                let mut g = [S::zero(); 9];
                if len > 0 {
                    for (t, gt) in g.iter_mut().enumerate() {
                        *gt = ld::<S>(&src.data[src.base * j + src.ld * (t * c + ci) + q..], len);
                    }
                }
                // Columns then rows: (G g) Gᵀ.
                let c0 = gm::<S>(g[0], g[3], g[6], &k);
                let c1 = gm::<S>(g[1], g[4], g[7], &k);
                let c2 = gm::<S>(g[2], g[5], g[8], &k);
                for i in 0..N {
                    let row = gm::<S>(c0[i], c1[i], c2[i], &k);
                    for (jj, &val) in row.iter().enumerate() {
                        st::<S>(&mut panel[((N * i + jj) * c + ci) * nr + q..], val, S::LANES);
                    }
                }
            }
        }
    }
}

/// `V[ξ, t, :] = (Bᵀ d_t B)[ξ]` for the block's tiles into `v` (`[36, tiles, ldv]`).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn input_block<S: Simd>(plan: &Plan, x: &[f32], tiles: Range<usize>, v: &mut [f32]) {
    let (c, nt, ldv) = (plan.g.c, tiles.len(), plan.ldv);
    let k = BConsts::<S>::new();
    let mut e = [[S::zero(); N]; N];
    for (tl, t) in tiles.enumerate() {
        let src = Window::<N>::of_tile(&plan.g, plan.tiles_x, plan.tiles_y, t);
        for c0 in (0..c).step_by(S::LANES) {
            let len = S::LANES.min(c - c0);
            window_columns::<S>(x, &src, c0, len, &k, &mut e);
            // Rows: ((Bᵀ d) B).
            for i in 0..N {
                let row = bt::<S>(&[e[0][i], e[1][i], e[2][i], e[3][i], e[4][i], e[5][i]], &k);
                for (j, &val) in row.iter().enumerate() {
                    st::<S>(&mut v[((N * i + j) * nt + tl) * ldv + c0..], val, len);
                }
            }
        }
    }
}

/// Channels `c0..c0 + len` of the window `src`, column-transformed: `e[j]` =
/// `Bᵀ` (column j of the window), zeros in the padding, into `e` (the caller's, reused across tiles: 36
/// vectors do not fit the registers, and a fresh zeroed array per call was a `memset` and a `memmove`).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn window_columns<S: Simd>(
    x: &[f32],
    src: &Window<N>,
    c0: usize,
    len: usize,
    k: &BConsts<S>,
    e: &mut [[S::V; N]; N],
) {
    for (j, ej) in e.iter_mut().enumerate() {
        let mut d = [S::zero(); N];
        for (i, di) in d.iter_mut().enumerate() {
            if let Some(o) = src.at(i, j) {
                *di = ld::<S>(&x[o + c0..], len);
            }
        }
        *ej = bt::<S>(&d, k);
    }
}

/// `y = act(Aᵀ M_t A + bias)` for the block's tiles, only the pixels inside the output (edge
/// tiles may be partial). `out` holds output lines from `line0` on.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn output_block<S: Simd>(
    plan: &Plan,
    tiles: Range<usize>,
    m: &[f32],
    (bias, act): (Option<&[f32]>, Act),
    mut out: OutLines,
) {
    let g = &plan.g;
    let (f, nt, ldm) = (g.f, tiles.len(), plan.ldm);
    let k = AConsts::<S>::new();
    for (tl, t) in tiles.enumerate() {
        let (r, tx) = (t / plan.tiles_x, t % plan.tiles_x);
        let line = plan.out_line_of(r) - out.line0;
        let ox = M * tx;
        let (rows, cols) = (M.min(g.oh - M * (r % plan.tiles_y)), M.min(g.ow - ox));
        for f0 in (0..f).step_by(S::LANES) {
            let len = S::LANES.min(f - f0);
            let b = match bias {
                Some(b) => ld::<S>(&b[f0..], len),
                None => S::zero(),
            };
            // Columns: a[j] = Aᵀ (column j of M); then rows ((Aᵀ M) A), all M of them (also past
            // a partial tile's edge: nothing is zero-filled, `store_tile` stores `rows × cols`).
            // Point (i, j) of the tile at m[((N·i + j)·nt + tl)·ldm + f0].
            let (at0, stride) = (tl * ldm + f0, N * nt * ldm);
            let a = [
                at::<S>(&load_column::<S>(m, at0, stride, len), &k),
                at::<S>(&load_column::<S>(m, at0 + nt * ldm, stride, len), &k),
                at::<S>(&load_column::<S>(m, at0 + 2 * nt * ldm, stride, len), &k),
                at::<S>(&load_column::<S>(m, at0 + 3 * nt * ldm, stride, len), &k),
                at::<S>(&load_column::<S>(m, at0 + 4 * nt * ldm, stride, len), &k),
                at::<S>(&load_column::<S>(m, at0 + 5 * nt * ldm, stride, len), &k),
            ];
            let vals = [
                at::<S>(&[a[0][0], a[1][0], a[2][0], a[3][0], a[4][0], a[5][0]], &k),
                at::<S>(&[a[0][1], a[1][1], a[2][1], a[3][1], a[4][1], a[5][1]], &k),
                at::<S>(&[a[0][2], a[1][2], a[2][2], a[3][2], a[4][2], a[5][2]], &k),
                at::<S>(&[a[0][3], a[1][3], a[2][3], a[3][3], a[4][3], a[5][3]], &k),
            ];
            store_tile::<S, M>(plan, vals, (b, act), (rows, cols), (r, line, ox), f0, len, &mut out);
        }
        finish_tile(plan, act, (rows, cols), (line, ox), &mut out);
    }
}

/// One column of a tile's points: the `N` vectors of `len` lanes at `m[at]`, `m[at + stride]`, …
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn load_column<S: Simd>(m: &[f32], at: usize, stride: usize, len: usize) -> [S::V; N] {
    [
        ld::<S>(&m[at..], len),
        ld::<S>(&m[at + stride..], len),
        ld::<S>(&m[at + 2 * stride..], len),
        ld::<S>(&m[at + 3 * stride..], len),
        ld::<S>(&m[at + 4 * stride..], len),
        ld::<S>(&m[at + 5 * stride..], len),
    ]
}

/// The constants of `G`, splatted once per call.
struct GConsts<S: Simd> {
    quarter: S::V,
    sixth: S::V,
    twelfth: S::V,
    twenty_fourth: S::V,
}

impl<S: Simd> GConsts<S> {
    #[inline(always)]
    unsafe fn new() -> Self {
        GConsts {
            quarter: S::splat(0.25),
            sixth: S::splat(1.0 / 6.0),
            twelfth: S::splat(1.0 / 12.0),
            twenty_fourth: S::splat(1.0 / 24.0),
        }
    }
}

/// `G (g0, g1, g2)`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn gm<S: Simd>(g0: S::V, g1: S::V, g2: S::V, k: &GConsts<S>) -> [S::V; N] {
    let s = S::add(g0, g2);
    let neg_sixth = S::sub(S::zero(), k.sixth);
    // g0/24 + g2/6 and g1/12.
    let even = S::fma(g0, k.twenty_fourth, S::mul(g2, k.sixth));
    let odd = S::mul(g1, k.twelfth);
    [
        S::mul(g0, k.quarter),
        S::mul(S::add(s, g1), neg_sixth),
        S::mul(S::sub(s, g1), neg_sixth),
        S::add(even, odd),
        S::sub(even, odd),
        g2,
    ]
}

/// The constants of `Bᵀ`, splatted once per call.
struct BConsts<S: Simd> {
    two: S::V,
    four: S::V,
    minus_four: S::V,
    minus_five: S::V,
}

impl<S: Simd> BConsts<S> {
    #[inline(always)]
    unsafe fn new() -> Self {
        BConsts {
            two: S::splat(2.0),
            four: S::splat(4.0),
            minus_four: S::splat(-4.0),
            minus_five: S::splat(-5.0),
        }
    }
}

/// `Bᵀ d`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn bt<S: Simd>(d: &[S::V; N], k: &BConsts<S>) -> [S::V; N] {
    // d4 − 4·d2 and d3 − 4·d1; d4 − d2 and 2·(d3 − d1).
    let t1 = S::fma(d[2], k.minus_four, d[4]);
    let t2 = S::fma(d[1], k.minus_four, d[3]);
    let t3 = S::sub(d[4], d[2]);
    let t4 = S::mul(S::sub(d[3], d[1]), k.two);
    [
        S::fma(d[0], k.four, S::fma(d[2], k.minus_five, d[4])),
        S::add(t1, t2),
        S::sub(t1, t2),
        S::add(t3, t4),
        S::sub(t3, t4),
        S::fma(d[1], k.four, S::fma(d[3], k.minus_five, d[5])),
    ]
}

/// The constants of `Aᵀ`, splatted once per call.
struct AConsts<S: Simd> {
    two: S::V,
    four: S::V,
    eight: S::V,
}

impl<S: Simd> AConsts<S> {
    #[inline(always)]
    unsafe fn new() -> Self {
        AConsts {
            two: S::splat(2.0),
            four: S::splat(4.0),
            eight: S::splat(8.0),
        }
    }
}

/// `Aᵀ m`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn at<S: Simd>(m: &[S::V; N], k: &AConsts<S>) -> [S::V; M] {
    let (sum12, dif12) = (S::add(m[1], m[2]), S::sub(m[1], m[2]));
    let (sum34, dif34) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
    [
        S::add(S::add(m[0], sum12), sum34),
        S::fma(dif34, k.two, dif12),
        S::fma(sum34, k.four, sum12),
        S::add(S::fma(dif34, k.eight, dif12), m[5]),
    ]
}

/// Point of `A u Aᵀ` that is a dy tile's sum (row 1, column 1): the bias gradient.
pub(super) const GRAD_BIAS_POINT: usize = N + 1;

/// `V[ξ, t, :] = (Bᵀ d_t B)[ξ]` and `W[ξ, t, :] = (A u_t Aᵀ)[ξ]` for the block's tiles and the
/// points in `points` (`d_t` the 6×6 input window, `u_t` the 4×4 dy tile, zero outside); whole
/// vectors are stored (see the F(3×3, 2×2) version).
///
/// # Safety
/// The CPU must support `S`; `v` and `w` hold `points.len() · tiles.len()` rows of `ldv` / `ldw`
/// floats, multiples of the lanes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn grad_transforms<S: Simd>(
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
    // Rows i of the 6×6 points (ξ = 6i + j) this thread keeps.
    let rows = points.start / N..points.end.div_ceil(N);
    check_blocks(S::LANES, plan, points.len() * nt, v, w);
    let (vp, wp) = (v.as_mut_ptr(), w.as_mut_ptr());
    let (kb, ka) = (BConsts::<S>::new(), AConsts::<S>::new());
    let mut e = [[S::zero(); N]; N];
    for (tl, t) in tiles.enumerate() {
        let (r, tx) = (t / plan.tiles_x, t % plan.tiles_x);
        let (img, ty) = (r / plan.tiles_y, r % plan.tiles_y);
        let src = Window::<N>::of_tile(g, plan.tiles_x, plan.tiles_y, t);
        for c0 in (0..c).step_by(S::LANES) {
            let len = S::LANES.min(c - c0);
            window_columns::<S>(x, &src, c0, len, &kb, &mut e);
            for i in rows.clone() {
                let row = bt::<S>(&[e[0][i], e[1][i], e[2][i], e[3][i], e[4][i], e[5][i]], &kb);
                for (j, &val) in row.iter().enumerate() {
                    let xi = N * i + j;
                    if points.contains(&xi) {
                        // SAFETY: within `v` (asserted above: c0 < ldv, both multiples of LANES).
                        S::store(vp.add(((xi - points.start) * nt + tl) * ldv + c0), val);
                    }
                }
            }
        }
        // dy pixels of the tile, None outside the output (partial tiles).
        let mut dsrc = [None; M * M];
        for (p, s) in dsrc.iter_mut().enumerate() {
            let (oy, ox) = (M * ty + p / M, M * tx + p % M);
            if oy < g.oh && ox < g.ow {
                *s = Some(((img * g.oh + oy) * g.ow + ox) * f);
            }
        }
        for f0 in (0..f).step_by(S::LANES) {
            let len = S::LANES.min(f - f0);
            // Columns: e[j] = A (column j of the dy tile).
            let e = [
                aa::<S>(&dy_column::<S>(dy, &dsrc, 0, f0, len), &ka),
                aa::<S>(&dy_column::<S>(dy, &dsrc, 1, f0, len), &ka),
                aa::<S>(&dy_column::<S>(dy, &dsrc, 2, f0, len), &ka),
                aa::<S>(&dy_column::<S>(dy, &dsrc, 3, f0, len), &ka),
            ];
            for i in rows.clone() {
                let row = aa::<S>(&[e[0][i], e[1][i], e[2][i], e[3][i]], &ka);
                for (j, &val) in row.iter().enumerate() {
                    let xi = N * i + j;
                    if points.contains(&xi) {
                        // SAFETY: within `w` (asserted above: f0 < ldw, both multiples of LANES).
                        S::store(wp.add(((xi - points.start) * nt + tl) * ldw + f0), val);
                    }
                }
            }
        }
    }
}

/// Column `j` of a dy tile (`src`: its pixels' offsets, None outside the output), channels
/// `f0..f0 + len`, zeros outside.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn dy_column<S: Simd>(dy: &[f32], src: &[Option<usize>; M * M], j: usize, f0: usize, len: usize) -> [S::V; M] {
    let mut u = [S::zero(); M];
    for (i, ui) in u.iter_mut().enumerate() {
        if let Some(o) = src[M * i + j] {
            *ui = ld::<S>(&dy[o + f0..], len);
        }
    }
    u
}

/// `dw[kh, kw, ci, :] = (Gᵀ M[:, ci, :] G)[kh, kw]` (`m`: `[36][c][ldm]`).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn grad_output<S: Simd>(c: usize, f: usize, ldm: usize, m: &[f32], dw: &mut [f32]) {
    let k = GConsts::<S>::new();
    for ci in 0..c {
        for f0 in (0..f).step_by(S::LANES) {
            let len = S::LANES.min(f - f0);
            // Columns (Gᵀ M), then rows ((Gᵀ M) G).
            let mut e = [[S::zero(); 3]; N];
            for (j, ej) in e.iter_mut().enumerate() {
                let mut col = [S::zero(); N];
                for (i, mi) in col.iter_mut().enumerate() {
                    *mi = ld::<S>(&m[((N * i + j) * c + ci) * ldm + f0..], len);
                }
                *ej = gt::<S>(&col, &k);
            }
            for kh in 0..3 {
                let row = gt::<S>(&[e[0][kh], e[1][kh], e[2][kh], e[3][kh], e[4][kh], e[5][kh]], &k);
                for (kw, &val) in row.iter().enumerate() {
                    st::<S>(&mut dw[((3 * kh + kw) * c + ci) * f + f0..], val, len);
                }
            }
        }
    }
}

/// `A u = (u0, u0 + u1 + u2 + u3, u0 − u1 + u2 − u3, u0 + 2u1 + 4u2 + 8u3, u0 − 2u1 + 4u2 − 8u3,
/// u3)`, `A = (Aᵀ)ᵀ`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn aa<S: Simd>(u: &[S::V; M], k: &AConsts<S>) -> [S::V; N] {
    let (even, odd) = (S::add(u[0], u[2]), S::add(u[1], u[3]));
    // u0 + 4u2 and 2u1 + 8u3.
    let even4 = S::fma(u[2], k.four, u[0]);
    let odd4 = S::mul(S::fma(u[3], k.four, u[1]), k.two);
    [
        u[0],
        S::add(even, odd),
        S::sub(even, odd),
        S::add(even4, odd4),
        S::sub(even4, odd4),
        u[3],
    ]
}

/// `Gᵀ m = (m0/4 − (m1 + m2)/6 + (m3 + m4)/24, (m2 − m1)/6 + (m3 − m4)/12,
/// (m3 + m4 − m1 − m2)/6 + m5)`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn gt<S: Simd>(m: &[S::V; N], k: &GConsts<S>) -> [S::V; 3] {
    let (sum12, dif12) = (S::add(m[1], m[2]), S::sub(m[2], m[1]));
    let (sum34, dif34) = (S::add(m[3], m[4]), S::sub(m[3], m[4]));
    [
        S::fma(
            sum34,
            k.twenty_fourth,
            S::fma(m[0], k.quarter, S::mul(sum12, S::sub(S::zero(), k.sixth))),
        ),
        S::fma(dif34, k.twelfth, S::mul(dif12, k.sixth)),
        S::fma(S::sub(sum34, sum12), k.sixth, m[5]),
    ]
}
