//! Winograd convolution (Lavin & Gray 2015) for 3×3 stride-1 convs, any padding, in two tile
//! sizes ([`WinogradTile`]): F(2×2, 3×3), 16 multiplies per 2×2 output tile and channel pair
//! instead of 36, and F(4×4, 3×3) (transforms in [`winograd_f4`](super::winograd_f4)), 36 per
//! 4×4 tile instead of 144 — and, per output, 2.25 transformed values to write and read back
//! instead of 4. The kernel is transformed once per call (`U = G g Gᵀ`, packed like a GEMM B
//! operand with K = P·c, P = 16 or 36 points), or taken from the [`weight_memo`] while the
//! weights are unchanged (inference); tiles are then processed in L2-sized blocks:
//! input transform `V = Bᵀ d B` (vectorised along the NHWC channels) into a scratch A block,
//! P GEMMs `M_ξ[tiles, F] = V_ξ[tiles, C] · U_ξ[C, F]` with the conv micro-kernel, and the
//! output transform `Y = Aᵀ M A` fused with bias and activation.
//!
//! Threads own contiguous runs of tile rows (2 or 4 output rows of one image) and so disjoint output
//! rows; every output is computed the same way whatever the block or thread split, so results
//! are bit-identical across thread counts. BN moments (if asked) are taken in the output
//! transform while the tile is in registers ([`tile_moments`]), per tile row, combined in order.

use super::conv::{use_winograd, ConvGeom, Pad};
use super::epilogue::{finish_moments, group_stats, mean_and_m2, ChanMoments, Epilogue};
use super::gemm::{k_chunks, padded_ld, stat_group, A_BLOCK_BYTES};
use super::microkernel::{run_tile, tile_shape, ALayout, Tile};
use super::pack::{with_pack, PackedB};
use super::pool2d::PoolGeom;
use super::scratch::{self, Slot};
use super::simd::{ld, st, with_simd, Simd};
use super::weight_memo;
use super::winograd_f4 as f4;
use super::{Act, Ctx, KernelIsa};
use crate::pool::split_by_tasks;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Transformed points per tile of F(2×2, 3×3) (4 × 4) and of the kernel gradient's F(3×3, 2×2)
/// ([`winograd_grad`](super::winograd_grad)).
pub(super) const P: usize = 16;
/// Least tiles per block when the transformed kernel does not fit L2: each block streams all of
/// `U` once, so a block must do enough work per byte of it.
const MIN_TILES_BIG_U: usize = 128;
/// Values of `U` above which its transform is split across threads.
const PAR_MIN_VALUES: usize = 64 * 1024;

thread_local! {
    static U: RefCell<PackedB> = RefCell::new(PackedB::new());
}

/// The output tile of a Winograd forward convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinogradTile {
    /// F(2×2, 3×3): 4×4 input windows, 16 points.
    F2x2,
    /// F(4×4, 3×3): 6×6 input windows, 36 points; rounding errors a few times F(2×2)'s (its
    /// transforms have coefficients up to 8 and 1/24).
    F4x4,
}

impl WinogradTile {
    /// Output pixels per tile side.
    pub(super) fn side(self) -> usize {
        match self {
            WinogradTile::F2x2 => 2,
            WinogradTile::F4x4 => 4,
        }
    }

    /// Transformed points per tile: the input window's pixels.
    pub(super) fn points(self) -> usize {
        (self.side() + 2) * (self.side() + 2)
    }

    /// The tile [`conv2d_forward_winograd`] (and so the forward and input-gradient convolutions)
    /// uses for `g`. Per output channel pair, F(2×2) multiplies 16 points per 2×2 tile and
    /// F(4×4) 36 per 4×4 tile, over the output rounded up to whole tiles; F(4×4)'s transforms
    /// cost more per point, so it is chosen when its count is at most 0.8× F(2×2)'s. That is
    /// every seed layer of side 7 to 32 at its training batch, where `conv_one ... wino` measured F(4×4)
    /// 1.1–1.3× faster on the MNIST CNN's ragged 14×14 and 1.4–1.8× on the CIFAR-10 CNN's;
    /// F(2×2) keeps sides like 5, 6 or 9, where rounding up to 4 wastes most, and calls of fewer
    /// than [`MIN_F4_TILES`] 4×4 tiles whose transformed kernel is too large for the
    /// [`weight_memo`]: its transform (2.25× F(2×2)'s, then made on every call) would not pay.
    /// A memoised one is made once per weight update: the batch-1 MNIST CNN (conv2, 16 tiles)
    /// ran in 45 µs instead of 50–62 with F(2×2) (`native_perf`, `WINOGRAD_TILE=2|4`).
    pub fn for_geom(g: &ConvGeom) -> WinogradTile {
        match TILE_OVERRIDE.load(Ordering::Relaxed) {
            2 => return WinogradTile::F2x2,
            4 => return WinogradTile::F4x4,
            _ => {}
        }
        let covered = |side: usize| g.oh.div_ceil(side) * side * g.ow.div_ceil(side) * side;
        // With AVX-512's 32-column panels (narrower ISAs pad less, so are memoised too).
        let memoised = WinogradTile::F4x4.memoised(g, 32);
        // 36/16 · covered(4) ≤ 0.8 · 16/4 · covered(2).
        if (WinogradTile::F4x4.tiles(g) >= MIN_F4_TILES || memoised) && 45 * covered(4) <= 64 * covered(2) {
            WinogradTile::F4x4
        } else {
            WinogradTile::F2x2
        }
    }
}

impl WinogradTile {
    /// Output tiles of one call on `g` (all images, edge tiles partial).
    pub(crate) fn tiles(self, g: &ConvGeom) -> usize {
        g.n * g.oh.div_ceil(self.side()) * g.ow.div_ceil(self.side())
    }

    /// Values of `g`'s transformed kernel packed in panels of `nr` columns (`[panels][P·c][nr]`).
    fn transformed_len(self, g: &ConvGeom, nr: usize) -> usize {
        g.f.div_ceil(nr) * self.points() * g.c * nr
    }

    /// Whether the [`weight_memo`] keeps `g`'s transformed kernel (for panels of `nr` columns).
    fn memoised(self, g: &ConvGeom, nr: usize) -> bool {
        self.transformed_len(g, nr) <= weight_memo::MAX_VALUES
    }
}

/// Fewest 4×4 output tiles for which [`WinogradTile::for_geom`] picks F(4×4, 3×3).
const MIN_F4_TILES: usize = 64;

/// See [`set_winograd_tile`]: 0 (none), 2 or 4.
static TILE_OVERRIDE: AtomicUsize = AtomicUsize::new(0);

/// Makes (process-wide) every Winograd forward convolution use `tile` instead of
/// [`WinogradTile::for_geom`]'s choice (`None`: back to it): for benchmarks and tests that
/// compare the two.
pub fn set_winograd_tile(tile: Option<WinogradTile>) {
    TILE_OVERRIDE.store(tile.map_or(0, WinogradTile::side), Ordering::Relaxed);
}

/// Whether Winograd can compute `g` (3×3 kernel, stride 1, non-empty).
pub fn winograd_applies(g: &ConvGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == [1, 1] && g.oh > 0 && g.ow > 0 && g.c > 0 && g.f > 0
}

/// `y = epilogue(conv(x, w))` by Winograd with output tiles `tile`: x `[n, h, w, c]`, w
/// `[3, 3, c, f]` (HWIO), y `[n, oh, ow, f]`. Panics unless [`winograd_applies`]. Transforms
/// `w` on every call. The convolutions pick `tile` with [`WinogradTile::for_geom`].
pub fn conv2d_forward_winograd(
    ctx: &Ctx,
    tile: WinogradTile,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    mut epi: Epilogue,
    y: &mut [f32],
) {
    g.check(x.len(), w.len(), y.len());
    assert!(winograd_applies(g), "Winograd needs a 3×3 stride-1 conv: {g:?}");
    epi.check(g.f);
    let ctx = &ctx.for_work(g.flops());
    run_winograd(ctx, tile, g, x, Kernel3::Hwio(w), &mut epi, y);
}

/// The Winograd conv from the direct path's packed kernel `w` (K = 9·c rows, `f` columns).
pub(crate) fn winograd(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &PackedB, epi: &mut Epilogue, y: &mut [f32]) {
    debug_assert!(w.fits(ctx.isa, g.k(), g.f));
    run_winograd(ctx, WinogradTile::for_geom(g), g, x, Kernel3::Packed(w), epi, y)
}

/// Whether [`conv2d_forward_winograd_pooled`] computes `max_pool(act(conv(x, w) + bias))` for
/// `g` and `pool`: a conv the convolutions compute by Winograd, a 2×2 stride-2 unpadded pool
/// that tiles the conv's even-sided output, and a ReLU or no activation (applied per vector in
/// registers before the maximum).
pub(crate) fn winograd_pool_applies(isa: KernelIsa, g: &ConvGeom, pool: &PoolGeom, act: Act) -> bool {
    use_winograd(isa, g)
        && pool.size == [2, 2]
        && pool.stride == [2, 2]
        && pool.pad == Pad::default()
        && [pool.n, pool.h, pool.w, pool.c] == [g.n, g.oh, g.ow, g.f]
        && g.oh.is_multiple_of(2)
        && g.ow.is_multiple_of(2)
        && matches!(act, Act::Linear | Act::Relu)
}

/// `y [n, oh/2, ow/2, f] = max_pool(act(conv(x, w) + bias))` over 2×2 windows, and each
/// window's argmax if asked, by Winograd with the pool in the output transform: every tile's
/// outputs are pooled in registers and the unpooled map is never stored. Panics unless
/// [`winograd_pool_applies`]. w is HWIO `[3, 3, c, f]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_forward_winograd_pooled(
    ctx: &Ctx,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    (bias, act): (Option<&[f32]>, Act),
    pool: &PoolGeom,
    y: &mut [f32],
    argmax: Option<&mut [f32]>,
) {
    g.check(x.len(), w.len(), g.output_len());
    assert!(
        winograd_pool_applies(ctx.isa, g, pool, act),
        "no pooled Winograd for {g:?}, {pool:?}"
    );
    assert_eq!(y.len(), pool.output_len(), "pooled output has {} values", y.len());
    if let Some(a) = &argmax {
        assert_eq!(a.len(), pool.output_len(), "argmax has {} values", a.len());
    }
    if let Some(b) = bias {
        assert_eq!(b.len(), g.f, "bias has {} values", b.len());
    }
    let ctx = &ctx.for_work(g.flops());
    let out = Stored::Pooled(argmax);
    transform_and_run(
        ctx,
        WinogradTile::for_geom(g),
        g,
        x,
        Kernel3::Hwio(w),
        (bias, act),
        y,
        out,
    );
}

/// What the output transform stores: the conv's output (and, if asked, the per-tile-row sums
/// [`tile_moments`] takes, `[tile rows, 3, f]`), or its 2×2 max-pool (and argmax).
enum Stored<'a> {
    Full(Option<&'a mut [f32]>),
    Pooled(Option<&'a mut [f32]>),
}

/// A 3×3 kernel as the kernel transform reads it.
#[derive(Clone, Copy)]
pub(super) enum Kernel3<'a> {
    /// Packed for the direct path: `[panels][9·c][nr]`, zero past `f`.
    Packed(&'a PackedB),
    /// As given: HWIO `[3, 3, c, f]`.
    Hwio(&'a [f32]),
}

fn run_winograd(ctx: &Ctx, tile: WinogradTile, g: &ConvGeom, x: &[f32], w: Kernel3, epi: &mut Epilogue, y: &mut [f32]) {
    debug_assert!(winograd_applies(g));
    let (bias, act) = (epi.bias, epi.act);
    match epi.moments.as_deref_mut() {
        // Sigmoid and tanh are applied after the tile is stored: their moments come from the
        // stored output.
        Some(mo) if matches!(act, Act::Sigmoid | Act::Tanh) => {
            transform_and_run(ctx, tile, g, x, w, (bias, act), y, Stored::Full(None));
            moments(ctx, ctx.isa.checked(), g, y, mo);
        }
        Some(mo) => {
            let tile_rows = g.n * g.oh.div_ceil(tile.side());
            scratch::with(Slot::Stats, tile_rows * 3 * g.f, |stats| {
                transform_and_run(ctx, tile, g, x, w, (bias, act), y, Stored::Full(Some(&mut *stats)));
                finish_row_moments(g, tile.side(), stats, mo);
            })
        }
        None => transform_and_run(ctx, tile, g, x, w, (bias, act), y, Stored::Full(None)),
    }
}

/// Transforms the kernel, then runs every tile into `y` as `out` says.
#[allow(clippy::too_many_arguments)]
fn transform_and_run(
    ctx: &Ctx,
    tile: WinogradTile,
    g: &ConvGeom,
    x: &[f32],
    w: Kernel3,
    epi: (Option<&[f32]>, Act),
    y: &mut [f32],
    out: Stored,
) {
    let isa = ctx.isa.checked();
    let (pooled, aux) = match out {
        Stored::Full(stats) => (false, stats),
        Stored::Pooled(argmax) => (true, argmax),
    };
    let run_with = |u: &PackedB| {
        let plan = Plan::new(g, isa, tile, u, pooled);
        run(ctx, &plan, x, epi, y, aux);
    };
    let transform = |u: &mut PackedB| transform_kernel(ctx, isa, tile, g, w, u);
    let nr = 2 * tile_shape(isa).1;
    match w {
        Kernel3::Hwio(weights) if tile.memoised(g, nr) => {
            let key = weight_memo::Key {
                addr: weights.as_ptr() as usize,
                kind: [tile.side(), isa as usize, g.c, g.f],
            };
            weight_memo::with_transformed(key, weights, transform, run_with)
        }
        _ => with_pack(&U, |u| {
            transform(u);
            run_with(u)
        }),
    }
}

/// Everything the blocks of one call share.
pub(super) struct Plan<'a> {
    pub(super) isa: KernelIsa,
    pub(super) g: ConvGeom,
    pub(super) tile: WinogradTile,
    /// `tile.points()`.
    pub(super) points: usize,
    u: &'a PackedB,
    /// Tiles per image row of tiles / per image column.
    pub(super) tiles_x: usize,
    pub(super) tiles_y: usize,
    /// Tiles per block (a multiple of the micro-kernel's rows).
    block: usize,
    /// Row strides of the V (`[points, tiles, ldv]`) and M (`[points, tiles, ldm]`) scratch
    /// blocks.
    pub(super) ldv: usize,
    pub(super) ldm: usize,
    /// The output is max-pooled over 2×2 windows (stride 2) before it is stored: `out` is the
    /// pooled map `[n, oh/2, ow/2, f]`, with each window's argmax if asked.
    pub(super) pooled: bool,
}

impl<'a> Plan<'a> {
    fn new(g: &ConvGeom, isa: KernelIsa, tile: WinogradTile, u: &'a PackedB, pooled: bool) -> Self {
        let (mr, _) = tile_shape(isa);
        let (ldv, ldm) = (padded_ld(g.c), padded_ld(g.f));
        let points = tile.points();
        let by_cache = A_BLOCK_BYTES / (points * (ldv + ldm) * 4);
        let u_bytes = u.data.len() * 4;
        let want = if u_bytes > A_BLOCK_BYTES / 2 {
            by_cache.max(MIN_TILES_BIG_U)
        } else {
            by_cache
        };
        Plan {
            isa,
            g: *g,
            tile,
            points,
            u,
            tiles_x: g.ow.div_ceil(tile.side()),
            tiles_y: g.oh.div_ceil(tile.side()),
            block: want.div_ceil(mr).max(1) * mr,
            ldv,
            ldm,
            pooled,
        }
    }

    /// First output line (`image·oh + row`) of tile row `r` (`image·tiles_y + tile y`).
    pub(super) fn line_of(&self, r: usize) -> usize {
        (r / self.tiles_y) * self.g.oh + self.tile.side() * (r % self.tiles_y)
    }

    /// First line of the stored output (pooled or not) of tile row `r`.
    pub(super) fn out_line_of(&self, r: usize) -> usize {
        if self.pooled {
            self.line_of(r) / 2
        } else {
            self.line_of(r)
        }
    }

    /// Pixels per stored output line.
    pub(super) fn out_width(&self) -> usize {
        if self.pooled {
            self.g.ow / 2
        } else {
            self.g.ow
        }
    }
}

/// `U = G g Gᵀ` for every (input, output) channel pair, packed as `[panels][P·c][nr]`: row
/// `ξ·c + ci` of panel `j` is point ξ for output channels `j·nr..` (zero past `f`, as in `w`).
fn transform_kernel(ctx: &Ctx, isa: KernelIsa, tile: WinogradTile, g: &ConvGeom, w: Kernel3, u: &mut PackedB) {
    let (c, f) = (g.c, g.f);
    let nr = 2 * tile_shape(isa).1;
    let panels = f.div_ceil(nr);
    // Row r (tap · c + ci) of panel j starts at `base·j + ld·r`; its first `valid(j)` columns
    // are the kernel's, the rest zero.
    let (data, base, ld, padded) = match w {
        Kernel3::Packed(p) => {
            assert!(
                p.k == 9 * c && p.n == f && p.nr == nr,
                "packed kernel is not 3×3×{c}×{f}"
            );
            (&p.data[..], 9 * c * nr, nr, true)
        }
        Kernel3::Hwio(w) => (w, nr, f, false),
    };
    let src = KernelSrc {
        data,
        c,
        nr,
        base,
        ld,
        cols: if padded { panels * nr } else { f },
    };
    let points = tile.points();
    u.k = points * c;
    u.n = f;
    u.nr = nr;
    let panel_len = points * c * nr;
    u.data.resize(tile.transformed_len(g, nr), 0.0);
    let threads = if u.data.len() >= PAR_MIN_VALUES {
        ctx.threads()
    } else {
        1
    };
    let mut parts = split_by_tasks(&mut u.data, panels, threads, |j| j * panel_len);
    let body = |(range, dst): &mut (Range<usize>, &mut [f32])| {
        with_simd!(isa, S, {
            // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
            unsafe {
                match tile {
                    WinogradTile::F2x2 => kernel_panels::<S>(&src, range.clone(), dst),
                    WinogradTile::F4x4 => f4::kernel_panels::<S>(&src, range.clone(), dst),
                }
            }
        })
    };
    if threads == 1 {
        parts.iter_mut().for_each(body);
    } else {
        ctx.pool.run_with_state(&mut parts, panels, |part, _t, _r| body(part));
    }
}

/// Runs every tile: threads split the tile rows (and so the output rows), each thread walks its
/// tiles in blocks of `plan.block`. `aux` is the pooled output's argmax map, or the unpooled
/// output's moment sums (`[tile rows, 3, f]`).
fn run(ctx: &Ctx, plan: &Plan, x: &[f32], epi: (Option<&[f32]>, Act), y: &mut [f32], aux: Option<&mut [f32]>) {
    let g = &plan.g;
    let rows = g.n * plan.tiles_y;
    let line_len = plan.out_width() * g.f;
    let threads = ctx.threads();
    let start = |r: usize| plan.out_line_of(r) * line_len;
    let aux_start = |r: usize| if plan.pooled { start(r) } else { r * 3 * g.f };
    let mut auxs = aux.map(|a| split_by_tasks(a, rows, threads, aux_start).into_iter());
    let mut parts: Vec<Out> = split_by_tasks(y, rows, threads, start)
        .into_iter()
        .map(|(r, y)| (r, y, auxs.as_mut().and_then(Iterator::next).map(|(_, a)| a)))
        .collect();
    ctx.pool.run_with_state(&mut parts, rows, |(range, out, aux), _t, _r| {
        let (t0, t1) = (range.start * plan.tiles_x, range.end * plan.tiles_x);
        let line0 = plan.out_line_of(range.start);
        let blocks = (t1 - t0).div_ceil(plan.block);
        for b in 0..blocks {
            let tiles = t0 + b * plan.block..(t0 + (b + 1) * plan.block).min(t1);
            let (argmax, stats) = match aux.as_deref_mut() {
                Some(a) if plan.pooled => (Some(a), None),
                a => (None, a),
            };
            let dst = OutLines {
                y: out,
                argmax,
                stats,
                line0,
                row0: range.start,
            };
            block(plan, x, tiles, epi, dst);
        }
    });
}

/// One thread's tile rows, its part of the output and of the argmax map or moment sums.
type Out<'a> = (Range<usize>, &'a mut [f32], Option<&'a mut [f32]>);

/// Where a block's output goes: the stored lines (pooled or not) from `line0` on, the pooled
/// argmax's same lines, and the moment sums of tile rows from `row0` on.
pub(super) struct OutLines<'a> {
    pub(super) y: &'a mut [f32],
    pub(super) argmax: Option<&'a mut [f32]>,
    pub(super) stats: Option<&'a mut [f32]>,
    pub(super) line0: usize,
    pub(super) row0: usize,
}

/// One block of tiles (global tile index = tile row · tiles_x + tile x): transform its input,
/// multiply, transform into `out` (output lines from `line0` on).
fn block(plan: &Plan, x: &[f32], tiles: Range<usize>, epi: (Option<&[f32]>, Act), out: OutLines) {
    let nt = tiles.len();
    scratch::with(Slot::A, plan.points * nt * plan.ldv, |v| {
        scratch::with(Slot::B, plan.points * nt * plan.ldm, |m| {
            input_transform(plan, x, tiles.clone(), v);
            products(plan, nt, v, m);
            output_transform(plan, tiles, m, epi, out);
        })
    })
}

/// `V[ξ, t, :] = (Bᵀ d_t B)[ξ]` for the block's tiles, `d_t` the tile's input window (zero
/// outside the input). `v`: `[points, tiles, ldv]`.
fn input_transform(plan: &Plan, x: &[f32], tiles: Range<usize>, v: &mut [f32]) {
    with_simd!(plan.isa, S, {
        // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
        unsafe {
            match plan.tile {
                WinogradTile::F2x2 => input_block::<S>(plan, x, tiles, v),
                WinogradTile::F4x4 => f4::input_block::<S>(plan, x, tiles, v),
            }
        }
    })
}

/// The P GEMMs `M_ξ = V_ξ · U_ξ`: K chunks of `c`, then column panels, then row tiles (the V
/// chunk stays in L2 across panels, a U micro-panel in L1 across row tiles).
fn products(plan: &Plan, nt: usize, v: &[f32], m: &mut [f32]) {
    let (mr, lanes) = tile_shape(plan.isa);
    let nr = 2 * lanes;
    let (c, f) = (plan.g.c, plan.g.f);
    let (chunks, kc) = k_chunks(c);
    for xi in 0..plan.points {
        for ch in 0..chunks {
            let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(c));
            for j in 0..plan.u.panels() {
                let b = plan.u.panel_from(j, xi * c + k0);
                for i in (0..nt).step_by(mr) {
                    let row = xi * nt + i;
                    let tile = Tile {
                        rows: mr.min(nt - i),
                        cols: nr.min(f - j * nr),
                        kc: k1 - k0,
                        a: &v[row * plan.ldv + k0..],
                        lda: plan.ldv,
                        a_layout: ALayout::RowMajor,
                        segs: None,
                        b,
                        b_stride: nr,
                        ldc: plan.ldm,
                        accumulate: ch > 0,
                        finish: None,
                    };
                    run_tile(plan.isa, &tile, &mut m[row * plan.ldm + j * nr..]);
                }
            }
        }
    }
}

/// `y = act(Aᵀ M_t A + bias)` for the block's tiles, only the pixels inside the output (the last
/// tile of an odd-sized output is partial). `out` holds output lines from `line0` on.
fn output_transform(plan: &Plan, tiles: Range<usize>, m: &[f32], epi: (Option<&[f32]>, Act), out: OutLines) {
    with_simd!(plan.isa, S, {
        // SAFETY: `with_simd!` runs this with `S` = the ISA it checked the CPU has.
        unsafe {
            match plan.tile {
                WinogradTile::F2x2 => output_block::<S>(plan, tiles, m, epi, out),
                WinogradTile::F4x4 => f4::output_block::<S>(plan, tiles, m, epi, out),
            }
        }
    })
}

/// BN moments of the finished output: column statistics per fixed group of rows (split over
/// threads by group), combined in group order.
fn moments(ctx: &Ctx, isa: KernelIsa, g: &ConvGeom, y: &[f32], mo: &mut [f32]) {
    let (n, rows) = (g.f, g.m());
    let group = stat_group(tile_shape(isa).0);
    let groups = rows.div_ceil(group);
    let mut parts: Vec<Vec<f64>> = vec![Vec::new(); ctx.threads()];
    ctx.pool.run_with_state(&mut parts, groups, |stats, _t, range| {
        stats.resize(range.len() * 2 * n, 0.0);
        for (s, gi) in stats.chunks_exact_mut(2 * n).zip(range) {
            group_stats(isa, &y[gi * group * n..((gi + 1) * group).min(rows) * n], n, s);
        }
    });
    let partials: Vec<&[f64]> = parts.iter().flat_map(|p| p.chunks_exact(2 * n)).collect();
    finish_moments(&partials, rows, group, n, mo);
}

/// Where the kernel transform reads tap rows: row `r` (`tap·c + ci`) of panel `j` (output
/// channels `j·nr..`) starts at `data[base·j + ld·r]`; columns past `cols` (in all) are zero.
pub(super) struct KernelSrc<'a> {
    pub(super) data: &'a [f32],
    pub(super) c: usize,
    pub(super) nr: usize,
    pub(super) base: usize,
    pub(super) ld: usize,
    pub(super) cols: usize,
}

/// Transforms panels `panels` of the 3×3 kernel `src` into `dst` (`[panels][16·c][nr]`,
/// starting at the first of them).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn kernel_panels<S: Simd>(src: &KernelSrc, panels: Range<usize>, dst: &mut [f32]) {
    let (c, nr) = (src.c, src.nr);
    let half = S::splat(0.5);
    for (j, panel) in panels.zip(dst.chunks_exact_mut(P * c * nr)) {
        for ci in 0..c {
            for q in (0..nr).step_by(S::LANES) {
                let len = src.cols.saturating_sub(j * nr + q).min(S::LANES);
                // No closures or array `map` here: they would not be inlined into the
                // target-feature context and the intrinsics would become calls.
                let mut g = [S::zero(); 9];
                if len > 0 {
                    for (t, gt) in g.iter_mut().enumerate() {
                        *gt = ld::<S>(&src.data[src.base * j + src.ld * (t * c + ci) + q..], len);
                    }
                }
                // Columns then rows: (G g) Gᵀ.
                let c0 = gm::<S>(g[0], g[3], g[6], half);
                let c1 = gm::<S>(g[1], g[4], g[7], half);
                let c2 = gm::<S>(g[2], g[5], g[8], half);
                for i in 0..4 {
                    let row = gm::<S>(c0[i], c1[i], c2[i], half);
                    for (jj, &val) in row.iter().enumerate() {
                        st::<S>(&mut panel[((4 * i + jj) * c + ci) * nr + q..], val, S::LANES);
                    }
                }
            }
        }
    }
}

/// Where the `N×N` input window of one tile lies in x (NHWC): pixel `(i, j)` of the window is at
/// `rows[i] + cols[j]`, None in the padding. Kept as two short arrays rather than `N²` offsets:
/// building and copying the full table cost a tenth of an F(4×4) input gradient.
pub(super) struct Window<const N: usize> {
    rows: [Option<usize>; N],
    cols: [Option<usize>; N],
}

impl<const N: usize> Window<N> {
    /// The window of tile `t` (tiles numbered row-major over images, `tiles_y × tiles_x` per
    /// image, each covering `N − 2` output pixels a side).
    pub(super) fn of_tile(g: &ConvGeom, tiles_x: usize, tiles_y: usize, t: usize) -> Self {
        let side = N - 2;
        let (r, tx) = (t / tiles_x, t % tiles_x);
        let (img, ty) = (r / tiles_y, r % tiles_y);
        Window {
            rows: std::array::from_fn(|i| {
                let iy = (side * ty + i).checked_sub(g.pad.top).filter(|&iy| iy < g.h);
                iy.map(|iy| (img * g.h + iy) * g.w * g.c)
            }),
            cols: std::array::from_fn(|j| {
                let ix = (side * tx + j).checked_sub(g.pad.left).filter(|&ix| ix < g.w);
                ix.map(|ix| ix * g.c)
            }),
        }
    }

    /// Offset of pixel `(i, j)`, None in the padding.
    #[inline(always)]
    pub(super) fn at(&self, i: usize, j: usize) -> Option<usize> {
        Some(self.rows[i]? + self.cols[j]?)
    }
}

/// Channels `c0..c0 + len` of the window `src`, column-transformed: `Bᵀ d`, as
/// the transforms of the window's four columns (zeros in the padding).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn window_columns<S: Simd>(x: &[f32], src: &Window<4>, c0: usize, len: usize) -> [[S::V; 4]; 4] {
    let mut d = [S::zero(); P];
    for (p, dp) in d.iter_mut().enumerate() {
        if let Some(o) = src.at(p / 4, p % 4) {
            *dp = ld::<S>(&x[o + c0..], len);
        }
    }
    [
        bt::<S>(d[0], d[4], d[8], d[12]),
        bt::<S>(d[1], d[5], d[9], d[13]),
        bt::<S>(d[2], d[6], d[10], d[14]),
        bt::<S>(d[3], d[7], d[11], d[15]),
    ]
}

/// The input transform of a block's tiles (see [`input_transform`]).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn input_block<S: Simd>(plan: &Plan, x: &[f32], tiles: Range<usize>, v: &mut [f32]) {
    let g = &plan.g;
    let (c, nt, ldv) = (g.c, tiles.len(), plan.ldv);
    for (tl, t) in tiles.enumerate() {
        let src = Window::<4>::of_tile(g, plan.tiles_x, plan.tiles_y, t);
        for c0 in (0..c).step_by(S::LANES) {
            let len = S::LANES.min(c - c0);
            let [e0, e1, e2, e3] = window_columns::<S>(x, &src, c0, len);
            for i in 0..4 {
                // Rows: ((Bᵀ d) B).
                let row = bt::<S>(e0[i], e1[i], e2[i], e3[i]);
                for (j, &val) in row.iter().enumerate() {
                    st::<S>(&mut v[((4 * i + j) * nt + tl) * ldv + c0..], val, len);
                }
            }
        }
    }
}

/// The output transform of a block's tiles (see [`output_transform`]).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn output_block<S: Simd>(
    plan: &Plan,
    tiles: Range<usize>,
    m: &[f32],
    (bias, act): (Option<&[f32]>, Act),
    mut out: OutLines,
) {
    let g = &plan.g;
    let (f, nt, ldm) = (g.f, tiles.len(), plan.ldm);
    for (tl, t) in tiles.enumerate() {
        let (r, tx) = (t / plan.tiles_x, t % plan.tiles_x);
        let line = plan.out_line_of(r) - out.line0;
        let ox = 2 * tx;
        let (rows, cols) = (2.min(g.oh - 2 * (r % plan.tiles_y)), 2.min(g.ow - ox));
        for f0 in (0..f).step_by(S::LANES) {
            let len = S::LANES.min(f - f0);
            let mut mt = [S::zero(); P];
            for (xi, mx) in mt.iter_mut().enumerate() {
                *mx = ld::<S>(&m[(xi * nt + tl) * ldm + f0..], len);
            }
            let b = match bias {
                Some(b) => ld::<S>(&b[f0..], len),
                None => S::zero(),
            };
            // Columns (Aᵀ M), then rows ((Aᵀ M) A); every row of the tile, also past a partial
            // tile's edge, so that nothing is zero-filled (`store_tile` stores `rows × cols`).
            let e0 = at::<S>(mt[0], mt[4], mt[8], mt[12]);
            let e1 = at::<S>(mt[1], mt[5], mt[9], mt[13]);
            let e2 = at::<S>(mt[2], mt[6], mt[10], mt[14]);
            let e3 = at::<S>(mt[3], mt[7], mt[11], mt[15]);
            let vals = [at::<S>(e0[0], e1[0], e2[0], e3[0]), at::<S>(e0[1], e1[1], e2[1], e3[1])];
            store_tile::<S, 2>(plan, vals, (b, act), (rows, cols), (r, line, ox), f0, len, &mut out);
        }
        finish_tile(plan, act, (rows, cols), (line, ox), &mut out);
    }
}

/// Stores channels `f0..f0 + len` of a finished `T × T` output tile (`vals[dy][dx]`, `rows × cols`
/// inside the output) of tile row `r` whose top-left pixel is `ox` of stored line `line`, plus the
/// bias vector `b` and through a ReLU if `act` is one (sigmoid and tanh: [`finish_tile`]), adding
/// to the row's moment sums if `out` has them ([`tile_moments`]): as they are, or
/// (`plan.pooled`) as the maxima of its 2×2 windows — and the index of each window's first
/// maximum, row-major in the window, when `out` has an argmax map: exactly what
/// `max_pool_argmax` computes from the stored map. Tiles start at even rows and columns and the
/// pooled output's sides are even, so windows never cross a tile.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_tile<S: Simd, const T: usize>(
    plan: &Plan,
    mut vals: [[S::V; T]; T],
    (b, act): (S::V, Act),
    (rows, cols): (usize, usize),
    (r, line, ox): (usize, usize, usize),
    f0: usize,
    len: usize,
    out: &mut OutLines,
) {
    let f = plan.g.f;
    let width = plan.out_width();
    // All T × T pixels (no data-dependent trip count, so the tile stays in registers).
    for vrow in vals.iter_mut() {
        for v in vrow.iter_mut() {
            *v = S::add(*v, b);
            if act == Act::Relu {
                *v = S::max(*v, S::zero());
            }
        }
    }
    if let Some(stats) = out.stats.as_deref_mut() {
        let row = &mut stats[(r - out.row0) * 3 * f..][..3 * f];
        tile_moments::<S, T>(row, &vals, (rows, cols), ox == 0, f0, len);
    }
    if !plan.pooled {
        for (dy, vrow) in vals.iter().enumerate().take(rows) {
            for (dx, &val) in vrow.iter().enumerate().take(cols) {
                st::<S>(&mut out.y[((line + dy) * width + ox + dx) * f + f0..], val, len);
            }
        }
        return;
    }
    for py in 0..rows / 2 {
        for px in 0..cols / 2 {
            let (mut best, mut arg) = (vals[2 * py][2 * px], S::zero());
            for t in 1..4 {
                let v = vals[2 * py + t / 2][2 * px + t % 2];
                arg = S::select_gt(v, best, S::splat(t as f32), arg);
                best = S::select_gt(v, best, v, best);
            }
            let at = ((line + py) * width + ox / 2 + px) * f + f0;
            st::<S>(&mut out.y[at..], best, len);
            if let Some(a) = out.argmax.as_deref_mut() {
                st::<S>(&mut a[at..], arg, len);
            }
        }
    }
}

/// Applies a sigmoid or tanh epilogue to a stored (unpooled) tile's `rows × cols` pixels, all
/// channels; nothing for the other activations, which [`store_tile`] applied per vector.
pub(super) fn finish_tile(
    plan: &Plan,
    act: Act,
    (rows, cols): (usize, usize),
    (line, ox): (usize, usize),
    out: &mut OutLines,
) {
    if !plan.pooled && matches!(act, Act::Sigmoid | Act::Tanh) {
        let f = plan.g.f;
        for dy in 0..rows {
            let px = (line + dy) * plan.g.ow + ox;
            act.apply_slice(&mut out.y[px * f..(px + cols) * f]);
        }
    }
}

/// Adds the `rows × cols` pixels of a finished tile (channels `f0..f0 + len`) to its tile row's
/// moment sums `row = [shift (f), Σd (f), Σd² (f)]`, `d = v − shift`. The row's first tile
/// (`first`) sets them, so the buffer needs no clearing; the shift is its top-left pixel, a
/// sample close to the row's mean, so that the f32 sums do not cancel when the mean is large
/// against the spread (as [`group_stats`]).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn tile_moments<S: Simd, const T: usize>(
    row: &mut [f32],
    vals: &[[S::V; T]; T],
    (rows, cols): (usize, usize),
    first: bool,
    f0: usize,
    len: usize,
) {
    let f = row.len() / 3;
    let (shift, sums) = row.split_at_mut(f);
    let (s, q) = sums.split_at_mut(f);
    if first {
        st::<S>(&mut shift[f0..], vals[0][0], len);
    }
    let sh = ld::<S>(&shift[f0..], len);
    // Per tile row then across rows: short dependency chains.
    let mut ts = [S::zero(); T];
    let mut tq = [S::zero(); T];
    if rows == T && cols == T {
        for (i, vrow) in vals.iter().enumerate() {
            for &v in vrow {
                let d = S::sub(v, sh);
                ts[i] = S::add(ts[i], d);
                tq[i] = S::fma(d, d, tq[i]);
            }
        }
    } else {
        for (i, vrow) in vals.iter().enumerate().take(rows) {
            for &v in vrow.iter().take(cols) {
                let d = S::sub(v, sh);
                ts[i] = S::add(ts[i], d);
                tq[i] = S::fma(d, d, tq[i]);
            }
        }
    }
    let (mut s1, mut s2) = (ts[0], tq[0]);
    for i in 1..T {
        s1 = S::add(s1, ts[i]);
        s2 = S::add(s2, tq[i]);
    }
    if !first {
        s1 = S::add(ld::<S>(&s[f0..], len), s1);
        s2 = S::add(ld::<S>(&q[f0..], len), s2);
    }
    st::<S>(&mut s[f0..], s1, len);
    st::<S>(&mut q[f0..], s2, len);
}

/// `[mean; biased variance]` of every channel from the tile rows' moment sums (`[tile rows, 3,
/// f]`, see [`tile_moments`]; a tile row of `side` output lines, fewer at the bottom of an
/// image), combined in row order by Chan et al.'s pairwise update, in f64.
fn finish_row_moments(g: &ConvGeom, side: usize, stats: &[f32], mo: &mut [f32]) {
    let f = g.f;
    let tiles_y = g.oh.div_ceil(side);
    let mut acc = ChanMoments::new(f);
    let (mut mean, mut m2) = (vec![0f64; f], vec![0f64; f]);
    for (r, row) in stats.chunks_exact(3 * f).enumerate() {
        let nb = (side.min(g.oh - side * (r % tiles_y)) * g.ow) as f64;
        let (shift, sums) = row.split_at(f);
        let (s, q) = sums.split_at(f);
        mean.iter_mut().zip(s).for_each(|(m, &v)| *m = v as f64);
        m2.iter_mut().zip(q).for_each(|(m, &v)| *m = v as f64);
        mean_and_m2(nb, shift, &mut mean, &mut m2);
        acc.add(nb, &mean, &m2);
    }
    acc.write(mo);
}

/// `Bᵀ (d0, d1, d2, d3)` with `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(super) unsafe fn bt<S: Simd>(d0: S::V, d1: S::V, d2: S::V, d3: S::V) -> [S::V; 4] {
    [S::sub(d0, d2), S::add(d1, d2), S::sub(d2, d1), S::sub(d1, d3)]
}

/// `G (g0, g1, g2)` with `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]` (`half` = ½ in every lane).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn gm<S: Simd>(g0: S::V, g1: S::V, g2: S::V, half: S::V) -> [S::V; 4] {
    let even = S::add(g0, g2);
    [g0, S::mul(half, S::add(even, g1)), S::mul(half, S::sub(even, g1)), g2]
}

/// `Aᵀ (m0, m1, m2, m3)` with `Aᵀ = [1 1 1 0; 0 1 −1 −1]`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn at<S: Simd>(m0: S::V, m1: S::V, m2: S::V, m3: S::V) -> [S::V; 2] {
    [S::add(S::add(m0, m1), m2), S::sub(S::sub(m1, m2), m3)]
}
