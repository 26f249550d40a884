//! Direct convolution for few input channels (the first layers of CNNs: 1–4 channels, at most
//! [`MAX_TAPS`] taps `kh·kw·c`), forward (optionally fused with a tiling max-pool and its argmax)
//! and kernel gradient (from a dense `dy` or straight from a fused max-pool's gradient).
//!
//! The implicit GEMM's K = kh·kw·c is too short for its packing and K segments to pay, so these
//! kernels keep a whole output tile in registers across all taps:
//!
//! * Forward: a tile is P pixels of one output row × one block of output channels (one or two
//!   vectors); per tap, the weights are loaded once and each pixel's input value is broadcast
//!   (FMA with a memory broadcast). Input rows are copied once into a zero-padded slab, so any
//!   padding and stride work. A row of `ow` pixels is cut into equal tiles, the last one shifted
//!   back to end at the row's end (recomputing a few pixels the same way). A pixel step of 1
//!   (one channel, stride 1) is a compile-time constant, so pixel addresses are immediate
//!   offsets. ReLU is applied in registers; sigmoid and tanh by `Act::apply_slice` on the
//!   L1-hot row (the epilogue's functions, so the values agree). With a pool, the window's rows
//!   are computed into an L1 buffer, activated and max-pooled (with argmax) from there. Threads
//!   take contiguous pooled rows (output rows without a pool); every output is computed the
//!   same way whatever the split.
//! * Kernel gradient: a tile is T taps × one channel block of dw in registers; it walks every
//!   pixel of a fixed chunk of output rows (about [`CHUNK_PIXELS`]), one dy load per pixel and
//!   channel vector, one broadcast per tap. Chunks do not depend on the thread count; threads
//!   take contiguous chunks and the chunk partial sums are added in chunk order (in f64), so
//!   dw and db are bit-identical for any thread count. A pooled dy is expanded per chunk into
//!   a dense (L2-resident) block with vector selects on the argmax first.
//!
//! Channels are vectorised with 16-lane vectors on AVX-512, but 8-lane ones (still with 32
//! registers) when `f ≤ 8`, so LeNet's 6 channels use 6 of 8 lanes; blocks of channels past `f`
//! read zero-padded copies of the weights (and of dy where needed).
//!
//! `unsafe`: the tile loops read the slab, the padded weights and dy through raw pointers
//! (bounds are established by the drivers, see the SAFETY notes) and use the [`Simd`] intrinsics
//! inside [`KernelIsa::vectorize`].

use super::activation::Act;
use super::conv::{build_slab, slab_len, ConvGeom};
use super::epilogue::{finish_moments, mean_and_m2, Epilogue};
use super::pool2d::PoolGeom;
use super::pool_argmax::{pooled_grad, scatter_window};
use super::scratch::{self, Slot};
use super::simd::{ld, load_n, st, with_simd, Simd};
use super::{Ctx, KernelIsa};
use crate::pool::split_by_tasks;

/// Most input channels [`small_conv_applies`] takes.
const MAX_CHANNELS: usize = 4;
/// Most taps `kh·kw·c` [`small_conv_applies`] takes (7×7×1, 5×5×3 fit; LeNet's 5×5×6 does not).
const MAX_TAPS: usize = 100;
/// Output pixels per chunk of the kernel gradient's reduction (rounded to whole rows).
const CHUNK_PIXELS: usize = 512;
/// Slab floats a forward block aims at (L1-resident input rows).
const SLAB_FLOATS: usize = 8 * 1024;

/// Whether the small-channel direct kernels handle `g` (on any ISA; portable code elsewhere than
/// AVX-512/AVX2): at most 4 input channels and 100 taps `kh·kw·c`, any stride and padding.
pub fn small_conv_applies(isa: KernelIsa, g: &ConvGeom) -> bool {
    let _ = isa;
    g.c >= 1 && g.c <= MAX_CHANNELS && g.k() <= MAX_TAPS && g.f > 0 && g.oh > 0 && g.ow > 0
}

/// Where the kernel gradient's dy comes from.
pub enum SmallDy<'a> {
    /// The conv output's gradient `[n, oh, ow, f]`.
    Dense(&'a [f32]),
    /// Through a fused max-pool (window tiles the output exactly: stride = size, no padding,
    /// oh, ow multiples of the window): dy at a conv output pixel = `act.grad_from_output(y[q], dy[q])`
    /// if that pixel is the window's argmax (argmax[q] as f32 = row-major index inside the window,
    /// per channel), else 0. `y`, `dy`, `argmax` are `[n, ph, pw, f]`.
    Pooled {
        pool: &'a PoolGeom,
        argmax: &'a [f32],
        y: &'a [f32],
        dy: &'a [f32],
        act: Act,
    },
}

/// Lanes of the vector type [`with_simd`] picks.
fn lanes(isa: KernelIsa, f: usize) -> usize {
    match isa.checked() {
        KernelIsa::Avx512 if f > 8 => 16,
        _ => 8,
    }
}

/// Channel blocking: `(vectors per block, block width, padded width)`. Two vectors per block
/// when the channel vectors pair up, else one (no all-padding vectors).
fn blocking(isa: KernelIsa, f: usize) -> (usize, usize, usize) {
    let l = lanes(isa, f);
    let nvec = f.div_ceil(l);
    let nv = if nvec.is_multiple_of(2) { 2 } else { 1 };
    (nv, nv * l, nvec * l)
}

/// Largest tile (pixels for the forward, taps for the kernel gradient) for `nv` vectors of
/// accumulators: 24 registers of accumulators.
fn max_tile(nv: usize) -> usize {
    if nv == 1 {
        24
    } else {
        12
    }
}

/// `n` items in equal tiles of at most `max`: the tile size.
fn tile_size(n: usize, max: usize) -> usize {
    n.div_ceil(n.div_ceil(max).max(1)).max(1)
}

/// `match $key { (nv, t) => $f::<$S, [$step,] nv, t>($args) }` over the listed `(nv, t)` pairs.
macro_rules! dispatch {
    ($key:expr; $f:ident::<$S:tt> $args:tt; $(($nv:literal, $t:literal))*) => {
        match $key {
            $(($nv, $t) => $f::<$S, $nv, $t> $args,)*
            key => unreachable!("no tile {key:?}"),
        }
    };
    ($key:expr; $f:ident::<$S:tt, $step:tt> $args:tt; $(($nv:literal, $t:literal))*) => {
        match $key {
            $(($nv, $t) => $f::<$S, $step, $nv, $t> $args,)*
            key => unreachable!("no tile {key:?}"),
        }
    };
}

/// Pixel tiles the forward is compiled for (one vector of channels, then two).
const PX_TILES: [&[usize]; 2] = [&[24, 20, 16, 12, 8, 6, 4, 3, 2, 1], &[12, 10, 8, 6, 4, 3, 2, 1]];

/// The forward's tile: the smallest compiled one holding `ow` in as many tiles as the largest
/// would need, but no wider than the row.
fn px_tile(ow: usize, nv: usize) -> usize {
    let menu = PX_TILES[nv - 1];
    let want = tile_size(ow, menu[0]);
    menu.iter()
        .rev()
        .copied()
        .find(|&p| p >= want && p <= ow)
        .unwrap_or_else(|| menu.iter().copied().find(|&p| p <= ow).unwrap_or(1))
}

/// Calls `fwd_row::<S, STEP, nv, p>` for the compiled pixel tiles.
macro_rules! fwd_dispatch {
    ($key:expr; $S:tt, $step:tt; $($arg:expr),*) => {
        dispatch!($key; fwd_row::<$S, $step>($($arg),*);
            (1, 24) (1, 20) (1, 16) (1, 12) (1, 8) (1, 6) (1, 4) (1, 3) (1, 2) (1, 1)
            (2, 12) (2, 10) (2, 8) (2, 6) (2, 4) (2, 3) (2, 2) (2, 1))
    };
}

/// Calls `dw_tile::<S, nv, t>` for every tap tile size.
macro_rules! dw_dispatch {
    ($key:expr; $S:tt; $($arg:expr),*) => {
        dispatch!($key; dw_tile::<$S>($($arg),*);
            (1, 1) (1, 2) (1, 3) (1, 4) (1, 5) (1, 6) (1, 7) (1, 8) (1, 9) (1, 10) (1, 11) (1, 12) (1, 13) (1, 14) (1, 15) (1, 16) (1, 17) (1, 18) (1, 19) (1, 20) (1, 21) (1, 22) (1, 23) (1, 24)
            (2, 1) (2, 2) (2, 3) (2, 4) (2, 5) (2, 6) (2, 7) (2, 8) (2, 9) (2, 10) (2, 11) (2, 12))
    };
}

/// The conv as the tile loops see it, in floats.
#[derive(Clone, Copy)]
struct Shape {
    kh: usize,
    /// Taps of one kernel row: `kw·c` (adjacent in the slab).
    kwc: usize,
    /// Slab row stride: `wp·c`.
    xrow: usize,
    /// Slab distance between adjacent output pixels: `sw·c`.
    step: usize,
    ow: usize,
    f: usize,
    /// Padded channel width (row stride of the padded weights).
    ldw: usize,
}

impl Shape {
    fn new(g: &ConvGeom, ldw: usize) -> Shape {
        let wp = g.w + g.pad.left + g.pad.right;
        Shape {
            kh: g.kh,
            kwc: g.kw * g.c,
            xrow: wp * g.c,
            step: g.stride[1] * g.c,
            ow: g.ow,
            f: g.f,
            ldw,
        }
    }
}

/// One forward tile: `out[j, ..cols] = Σ_taps x · w (+ bias)` for P pixels (`out` row stride `f`).
///
/// # Safety
/// `x` points at the tile's first pixel in a slab holding `kh` rows of `xrow` floats from there
/// (pixel `j` reads `x[ky·xrow + j·step + u]`, `u < kwc`); `w` has `kh·kwc` rows of `ldw` floats
/// with `NV` vectors from it; `bias` (if any) `NV` vectors; `out` P rows of `cols` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn fwd_tile<S: Simd, const STEP: usize, const NV: usize, const P: usize>(
    s: &Shape,
    x: *const f32,
    w: *const f32,
    bias: Option<*const f32>,
    relu: bool,
    out: *mut f32,
    cols: usize,
) {
    // A constant pixel step makes the pixels' addresses constant offsets (a run-time one chains
    // them through additions, which halves the speed).
    let step = if STEP == 0 { s.step } else { STEP };
    let mut acc = [[S::zero(); NV]; P];
    for ky in 0..s.kh {
        let xr = x.add(ky * s.xrow);
        let wr = w.add(ky * s.kwc * s.ldw);
        for u in 0..s.kwc {
            let mut wv = [S::zero(); NV];
            for (v, wv) in wv.iter_mut().enumerate() {
                *wv = S::load(wr.add(u * s.ldw + v * S::LANES));
            }
            for (j, acc) in acc.iter_mut().enumerate() {
                let xv = S::splat(*xr.add(j * step + u));
                for v in 0..NV {
                    acc[v] = S::fma(xv, wv[v], acc[v]);
                }
            }
        }
    }
    if let Some(b) = bias {
        let mut bv = [S::zero(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = S::load(b.add(v * S::LANES));
        }
        for acc in acc.iter_mut() {
            for v in 0..NV {
                acc[v] = S::add(acc[v], bv[v]);
            }
        }
    }
    if relu {
        for acc in acc.iter_mut() {
            for a in acc.iter_mut() {
                *a = S::max(*a, S::zero());
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let o = out.add(j * s.f);
        for (v, &a) in acc.iter().enumerate() {
            let c0 = v * S::LANES;
            if c0 + S::LANES <= cols {
                S::store(o.add(c0), a);
            } else if c0 < cols {
                S::store_partial(o.add(c0), a, cols - c0);
            }
        }
    }
}

/// One output row (`ow` pixels × `f` channels, before the activation) in tiles of P pixels.
///
/// # Safety
/// As [`fwd_tile`] for every tile: `x` at the row's first pixel, `out` `ow·f` floats, `w` and
/// `bias` padded to `ldw`; `P ≤ ow`.
#[inline(always)]
unsafe fn fwd_row<S: Simd, const STEP: usize, const NV: usize, const P: usize>(
    s: &Shape,
    x: *const f32,
    w: *const f32,
    bias: Option<*const f32>,
    relu: bool,
    out: *mut f32,
) {
    let bw = NV * S::LANES;
    let mut c0 = 0;
    while c0 < s.f {
        let cols = (s.f - c0).min(bw);
        for t in 0..s.ow.div_ceil(P) {
            // The last tile ends at the row's end (recomputing some pixels identically).
            let ox0 = (t * P).min(s.ow - P);
            fwd_tile::<S, STEP, NV, P>(
                s,
                x.add(ox0 * s.step),
                w.add(c0),
                bias.map(|b| b.add(c0)),
                relu,
                out.add(ox0 * s.f + c0),
                cols,
            );
        }
        c0 += bw;
    }
}

/// One forward thread's share of the work.
struct FwdShare<'a> {
    /// Its first row group (of `pa` output rows).
    first: usize,
    /// Its outputs, from `first`.
    y: &'a mut [f32],
    /// Its argmax outputs (a fused pool that keeps them).
    argmax: Option<&'a mut [f32]>,
    /// `[mean; M2]` of each statistics unit it takes (BN moments only).
    unit_stats: Vec<f64>,
}

/// Output pixels per BN-statistics unit of the forward (rounded to whole output rows).
const STAT_PIXELS: usize = 256;

/// Forward `y = act(conv(x, w) + bias)`. With `epi.moments` (no pool; a linear or ReLU `act`,
/// assert), the column statistics of `y` are taken row by row (`add_row_sums`) per unit of
/// about `STAT_PIXELS` (256) output pixels while the rows are in L1, and
/// the units combined in order (threads take whole units: the same bits for any thread count).
/// With `pool = Some((pg, argmax))` (window tiling the output exactly: stride = size, no padding,
/// `oh`, `ow` multiples of the window), only the max-pooled output `y [n, ph, pw, f]` is
/// written (the unpooled map stays in an L1 buffer), and with `argmax`, the row-major index
/// within the window of each output's first maximum (strict `>` over the activated values, as
/// `pool2d::max_pool`), as f32.
pub fn conv2d_forward_small(
    ctx: &Ctx,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    epi: Epilogue,
    pool: Option<(&PoolGeom, Option<&mut [f32]>)>,
    y: &mut [f32],
) {
    let mut epi = epi;
    let moments = epi.moments.take();
    assert!(
        moments.is_none() || pool.is_none() && matches!(epi.act, Act::Linear | Act::Relu),
        "conv2d_forward_small: BN statistics only without a fused pool, after a linear or ReLU output"
    );
    epi.check(g.f);
    assert!(
        small_conv_applies(ctx.isa, g),
        "conv2d_forward_small: {g:?} is not a small conv"
    );
    let pooled = pool.is_some();
    let (pa, pb, argmax) = match pool {
        Some((pg, am)) => {
            check_pool(g, pg);
            if let Some(a) = &am {
                assert_eq!(a.len(), pg.output_len(), "argmax has {} values", a.len());
            }
            (pg.size[0], pg.size[1], am)
        }
        None => (1, 1, None),
    };
    let out_len = g.output_len() / (pa * pb);
    g.check(x.len(), w.len(), out_len * pa * pb);
    assert_eq!(
        y.len(),
        out_len,
        "conv output has {} values, expected {out_len}",
        y.len()
    );
    let ctx = &ctx.for_work(g.flops());
    let isa = ctx.isa.checked();
    let (nv, _, ldw) = blocking(isa, g.f);
    let (wpad, bpad) = pad_weights(g, w, epi.bias, ldw);
    let s = Shape::new(g, ldw);
    let p = px_tile(g.ow, nv);
    let (pw_out, ph) = (g.ow / pb, g.oh / pa);
    // Row groups of `pa` output rows (one pooled row) each write `pw_out·f` outputs. Tasks are
    // units of `unit` groups: one group, or one statistics unit.
    let groups = g.n * ph;
    let group_out = pw_out * g.f;
    let unit = if moments.is_some() {
        STAT_PIXELS.div_ceil(g.ow)
    } else {
        1
    };
    let tasks = groups.div_ceil(unit);
    let first_group = |task: usize| (task * unit).min(groups);
    let stat_width = if moments.is_some() { 2 * g.f } else { 0 };
    let threads = ctx.threads();
    let ys = split_by_tasks(y, tasks, threads, |i| first_group(i) * group_out);
    let mut ams: Vec<Option<&mut [f32]>> = match argmax {
        Some(a) => split_by_tasks(a, tasks, threads, |i| first_group(i) * group_out)
            .into_iter()
            .map(|(_, a)| Some(a))
            .collect(),
        None => (0..threads).map(|_| None).collect(),
    };
    let mut shares: Vec<FwdShare> = ys
        .into_iter()
        .zip(ams.iter_mut())
        .map(|((r, y), am)| FwdShare {
            first: first_group(r.start),
            y,
            argmax: am.take(),
            unit_stats: vec![0.0; r.len() * stat_width],
        })
        .collect();
    let wp = g.w + g.pad.left + g.pad.right;
    // Slab blocks of whole statistics units.
    let block_groups = (SLAB_FLOATS / (unit * pa * g.stride[0] * s.xrow).max(1)).max(1) * unit;
    let act = epi.act;
    let has_bias = epi.bias.is_some();
    let relu = act == Act::Relu;
    ctx.pool.run_with_state(&mut shares, tasks, |share, _t, tasks| {
        let FwdShare {
            first,
            y: yp,
            argmax: am,
            unit_stats: stats,
        } = share;
        if tasks.is_empty() {
            return;
        }
        let range = first_group(tasks.start)..first_group(tasks.end);
        let lines_max = block_groups.min(range.len()) * pa;
        // `[shift; Σd; Σd²]` of the open statistics unit.
        let mut unit_sums = vec![0f32; if stat_width > 0 { 3 * ldw } else { 0 }];
        scratch::with(Slot::A, slab_len(g, lines_max, wp), |slab| {
            scratch::with(Slot::B, if pooled { pa * g.ow * g.f } else { 0 }, |buf| {
                for b0 in range.clone().step_by(block_groups) {
                    let b1 = (b0 + block_groups).min(range.end);
                    let (runs, _) = build_slab(g, x, b0 * pa, b1 * pa, wp, slab);
                    let mut grp = b0;
                    for &(_, oy0, oy1, off) in &runs {
                        for oy in (oy0..oy1).step_by(pa) {
                            let yo = &mut yp[(grp - *first) * group_out..][..group_out];
                            for r in 0..pa {
                                let xo = off + (oy + r - oy0) * g.stride[0] * s.xrow;
                                let dst: &mut [f32] = if pooled {
                                    &mut buf[r * g.ow * g.f..][..g.ow * g.f]
                                } else {
                                    &mut yo[..]
                                };
                                // The slab holds rows up to (oy1 − 1)·sh + kh from `off`.
                                assert!(xo + (s.kh - 1) * s.xrow + (g.ow - 1) * s.step + s.kwc <= slab.len());
                                with_simd!(isa, narrow = g.f <= 8, S, {
                                    // SAFETY: the slab rows of this output row and the padded
                                    // weights cover every read (assert above, `pad_weights`);
                                    // `dst` is one output row; p ≤ ow.
                                    unsafe {
                                        let bias = has_bias.then_some(bpad.as_ptr());
                                        let args =
                                            (&s, slab.as_ptr().add(xo), wpad.as_ptr(), bias, relu, dst.as_mut_ptr());
                                        let (a0, a1, a2, a3, a4, a5) = args;
                                        match s.step {
                                            1 => fwd_dispatch!((nv, p); S, 1; a0, a1, a2, a3, a4, a5),
                                            _ => fwd_dispatch!((nv, p); S, 0; a0, a1, a2, a3, a4, a5),
                                        }
                                    }
                                    // ReLU is applied in registers (`max(x, 0)`, as `Act::apply`).
                                    if !relu {
                                        act.apply_slice(dst);
                                    }
                                    if stat_width > 0 {
                                        // SAFETY: `S` is the checked ISA; `unit_sums` is 3·ldw.
                                        unsafe {
                                            add_row_sums::<S>(dst, g.f, grp.is_multiple_of(unit), &mut unit_sums)
                                        };
                                    }
                                });
                            }
                            if pooled {
                                let am = am
                                    .as_deref_mut()
                                    .map(|a| a[(grp - *first) * group_out..][..group_out].as_mut_ptr());
                                assert!(buf.len() >= pa * g.ow * g.f && yo.len() == group_out);
                                with_simd!(isa, narrow = g.f <= 8, S, {
                                    // SAFETY: sizes asserted above (`am` is sliced to `group_out`).
                                    unsafe {
                                        let args = (buf.as_ptr(), g.ow, g.f, pa, pb, yo.as_mut_ptr(), am);
                                        if (pa, pb) == (2, 2) {
                                            pool_rows::<S, 2, 2>(args.0, args.1, args.2, args.3, args.4, args.5, args.6)
                                        } else {
                                            pool_rows::<S, 0, 0>(args.0, args.1, args.2, args.3, args.4, args.5, args.6)
                                        }
                                    }
                                });
                            }
                            grp += 1;
                            if stat_width > 0 && (grp.is_multiple_of(unit) || grp == range.end) {
                                // The unit closes: its f32 sums become its mean and M2.
                                let u0 = (grp - 1) / unit * unit;
                                let at = (u0 - *first) / unit * stat_width;
                                let (mean, m2) = stats[at..at + stat_width].split_at_mut(g.f);
                                for ch in 0..g.f {
                                    mean[ch] = unit_sums[ldw + ch] as f64;
                                    m2[ch] = unit_sums[2 * ldw + ch] as f64;
                                }
                                mean_and_m2(((grp - u0) * g.ow) as f64, &unit_sums[..g.f], mean, m2);
                            }
                        }
                    }
                }
            })
        })
    });
    if let Some(mo) = moments {
        let partials: Vec<&[f64]> = shares
            .iter()
            .flat_map(|sh| sh.unit_stats.chunks_exact(stat_width))
            .collect();
        finish_moments(&partials, g.m(), unit * g.ow, g.f, mo);
    }
}

/// Adds each pixel of one output row `row` (`[ow, f]`, L1-hot) to the running f32 statistics
/// `sums = [shift; Σd; Σd²]` (a third each, `d = y − shift`), first taking the row's first
/// pixel as the shift and zeroing the sums if `opens`. Blocks of up to four channel vectors, two
/// pixels at a time (independent chains).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
unsafe fn add_row_sums<S: Simd>(row: &[f32], f: usize, opens: bool, sums: &mut [f32]) {
    let third = sums.len() / 3;
    let (sh, rest) = sums.split_at_mut(third);
    let (s1, s2) = rest.split_at_mut(third);
    if opens {
        sh[..f].copy_from_slice(&row[..f]);
        s1.fill(0.0);
        s2.fill(0.0);
    }
    let mut c0 = 0;
    while c0 < f {
        let len = (4 * S::LANES).min(f - c0);
        let (sh, s1, s2) = (&sh[c0..], &mut s1[c0..], &mut s2[c0..]);
        match len.div_ceil(S::LANES) {
            4 => chunk_sums::<S, 4>(row, f, c0, len, sh, s1, s2),
            3 => chunk_sums::<S, 3>(row, f, c0, len, sh, s1, s2),
            2 => chunk_sums::<S, 2>(row, f, c0, len, sh, s1, s2),
            _ => chunk_sums::<S, 1>(row, f, c0, len, sh, s1, s2),
        }
        c0 += len;
    }
}

/// [`add_row_sums`] of channels `c0..c0 + len` (`NV` vectors, the last one possibly partial).
///
/// # Safety
/// The CPU must support `S`; `c0 + len ≤ f` and `row` holds whole pixels of `f` channels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_sums<S: Simd, const NV: usize>(
    row: &[f32],
    f: usize,
    c0: usize,
    len: usize,
    sh: &[f32],
    s1: &mut [f32],
    s2: &mut [f32],
) {
    let lanes = |v: usize| S::LANES.min(len - v * S::LANES);
    let px = row.len() / f;
    let mut h = [S::zero(); NV];
    for (v, h) in h.iter_mut().enumerate() {
        *h = ld::<S>(&sh[v * S::LANES..], lanes(v));
    }
    // Even and odd pixels in separate sums (constant indices: the sums stay in registers).
    let (mut s, mut q) = ([[S::zero(); NV]; 2], [[S::zero(); NV]; 2]);
    let base = row[c0..].as_ptr();
    // Inlined into the ISA's target-feature context (a plain closure would not be).
    #[inline(always)]
    unsafe fn pixel<S: Simd, const NV: usize>(
        p: *const f32,
        len: usize,
        h: &[S::V; NV],
        s: &mut [S::V; NV],
        q: &mut [S::V; NV],
    ) {
        for v in 0..NV {
            let d = S::sub(load_n::<S>(p.add(v * S::LANES), S::LANES.min(len - v * S::LANES)), h[v]);
            s[v] = S::add(s[v], d);
            q[v] = S::fma(d, d, q[v]);
        }
    }
    let [s0, s1_] = &mut s;
    let [q0, q1] = &mut q;
    for j in (0..px - px % 2).step_by(2) {
        pixel::<S, NV>(base.add(j * f), len, &h, s0, q0);
        pixel::<S, NV>(base.add((j + 1) * f), len, &h, s1_, q1);
    }
    if px % 2 == 1 {
        pixel::<S, NV>(base.add((px - 1) * f), len, &h, s0, q0);
    }
    for v in 0..NV {
        let o = v * S::LANES;
        let (a, b) = (S::add(s[0][v], s[1][v]), S::add(q[0][v], q[1][v]));
        let (a, b) = (
            S::add(ld::<S>(&s1[o..], lanes(v)), a),
            S::add(ld::<S>(&s2[o..], lanes(v)), b),
        );
        st::<S>(&mut s1[o..], a, lanes(v));
        st::<S>(&mut s2[o..], b, lanes(v));
    }
}

/// Panics unless `pg` is a max-pool that tiles `g`'s output exactly.
fn check_pool(g: &ConvGeom, pg: &PoolGeom) {
    let [a, b] = pg.size;
    assert!(
        a > 0
            && b > 0
            && pg.stride == pg.size
            && pg.pad == Default::default()
            && (pg.n, pg.h, pg.w, pg.c) == (g.n, g.oh, g.ow, g.f)
            && g.oh.is_multiple_of(a)
            && g.ow.is_multiple_of(b),
        "fused pool {pg:?} does not tile the conv output {g:?}"
    );
}

/// Max-pools `pa` activated rows `buf [pa, ow, f]` into `y [ow/pb, f]`, with the row-major
/// window index of each first maximum (strict `>`, windows scanned row by row) in `argmax`.
///
/// # Safety
/// `buf` holds `pa·ow·f` floats, `y` and `argmax` (if any) `(ow/pb)·f`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pool_rows<S: Simd, const PA: usize, const PB: usize>(
    buf: *const f32,
    ow: usize,
    f: usize,
    pa: usize,
    pb: usize,
    y: *mut f32,
    argmax: Option<*mut f32>,
) {
    // Constant windows (PA, PB > 0) unroll the window loops.
    let (pa, pb) = if PA > 0 { (PA, PB) } else { (pa, pb) };
    let row = ow * f;
    for px in 0..ow / pb {
        let mut c0 = 0;
        while c0 < f {
            let n = S::LANES.min(f - c0);
            let load = |p: *const f32| {
                if n == S::LANES {
                    S::load(p)
                } else {
                    S::load_partial(p, n)
                }
            };
            let at = |i: usize, j: usize| buf.add(i * row + (px * pb + j) * f + c0);
            let mut best = load(at(0, 0));
            let mut idx = S::zero();
            for i in 0..pa {
                for j in 0..pb {
                    if i + j > 0 {
                        let v = load(at(i, j));
                        idx = S::select_gt(v, best, S::splat((i * pb + j) as f32), idx);
                        best = S::select_gt(v, best, v, best);
                    }
                }
            }
            let o = px * f + c0;
            if n == S::LANES {
                S::store(y.add(o), best);
                if let Some(a) = argmax {
                    S::store(a.add(o), idx);
                }
            } else {
                S::store_partial(y.add(o), best, n);
                if let Some(a) = argmax {
                    S::store_partial(a.add(o), idx, n);
                }
            }
            c0 += S::LANES;
        }
    }
}

/// The kernel `[K, f]` and bias `[f]` with rows zero-padded to `ldw` (plus one spare row, so
/// no read of a padded block runs past the end).
fn pad_weights(g: &ConvGeom, w: &[f32], bias: Option<&[f32]>, ldw: usize) -> (Vec<f32>, Vec<f32>) {
    let f = g.f;
    let mut wpad = vec![0f32; (g.k() + 1) * ldw];
    for (d, s) in wpad.chunks_exact_mut(ldw).zip(w.chunks_exact(f)) {
        d[..f].copy_from_slice(s);
    }
    let mut bpad = vec![0f32; ldw];
    if let Some(b) = bias {
        bpad[..f].copy_from_slice(b);
    }
    (wpad, bpad)
}

/// One kernel-gradient tile: `T` taps (slab offsets `offs` from a pixel's first tap) × `NV`
/// vectors of channels, summed over every pixel of `lines` (slab offset of each output row's
/// first pixel; dy rows `ld` apart, `ow` per line, from `dy`), stored to `out[t·ldo + ..]`.
///
/// # Safety
/// Every `slab[line + ox·step + offs[t]]` and `dy[(l·ow + ox)·ld + ..NV·LANES]` must be in
/// bounds; `out` must hold `T` rows of `ldo ≥ NV·LANES` floats.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_tile<S: Simd, const NV: usize, const T: usize>(
    slab: *const f32,
    lines: &[usize],
    offs: &[usize],
    step: usize,
    ow: usize,
    dy: *const f32,
    ld: usize,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[S::zero(); NV]; T];
    let mut o = [0usize; T];
    o.copy_from_slice(&offs[..T]);
    for (l, &line) in lines.iter().enumerate() {
        let mut xp = slab.add(line);
        let mut dp = dy.add(l * ow * ld);
        for _ in 0..ow {
            let mut dv = [S::zero(); NV];
            for (v, dv) in dv.iter_mut().enumerate() {
                *dv = S::load(dp.add(v * S::LANES));
            }
            for (t, acc) in acc.iter_mut().enumerate() {
                let xv = S::splat(*xp.add(o[t]));
                for v in 0..NV {
                    acc[v] = S::fma(xv, dv[v], acc[v]);
                }
            }
            xp = xp.add(step);
            dp = dp.add(ld);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            S::store(out.add(t * ldo + v * S::LANES), a);
        }
    }
}

/// dw (overwritten) and db (overwritten, Σ dy per channel) of a small-channel conv.
pub fn conv2d_grad_kernel_small(
    ctx: &Ctx,
    g: &ConvGeom,
    x: &[f32],
    dy: SmallDy,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    assert!(
        small_conv_applies(ctx.isa, g),
        "conv2d_grad_kernel_small: {g:?} is not a small conv"
    );
    let pa = match &dy {
        SmallDy::Dense(d) => {
            g.check(x.len(), dw.len(), d.len());
            1
        }
        SmallDy::Pooled {
            pool, argmax, y, dy, ..
        } => {
            g.check(x.len(), dw.len(), g.output_len());
            check_pool(g, pool);
            let len = pool.output_len();
            assert!(
                argmax.len() == len && y.len() == len && dy.len() == len,
                "pooled dy, y and argmax need {len} values"
            );
            pool.size[0]
        }
    };
    if let Some(b) = &db {
        assert_eq!(b.len(), g.f, "bias gradient has {} entries, expected {}", b.len(), g.f);
    }
    let ctx = &ctx.for_work(g.flops());
    let isa = ctx.isa.checked();
    let (nv, bw, ldw) = blocking(isa, g.f);
    let (k, f, ow) = (g.k(), g.f, g.ow);
    let s = Shape::new(g, ldw);
    // Chunks of whole output rows (whole pool windows): fixed, whatever the thread count.
    let lines = g.n * g.oh;
    let chunk_lines = (CHUNK_PIXELS / ow).max(1).div_ceil(pa) * pa;
    let chunks = lines.div_ceil(chunk_lines);
    // Tap tiles: T taps each, the last one shifted back to end at K.
    let t = tile_size(k, max_tile(nv));
    let tap_off = |tap: usize| (tap / s.kwc) * s.xrow + tap % s.kwc;
    // dy is read in place when its rows are whole blocks.
    let dense_in_place = matches!(dy, SmallDy::Dense(_)) && f == ldw;
    let part_len = (k + 1) * ldw;
    let want_db = db.is_some();
    let mut partials = vec![0f32; chunks * part_len];
    let threads = ctx.threads();
    let mut states: Vec<(usize, &mut [f32])> = split_by_tasks(&mut partials, chunks, threads, |i| i * part_len)
        .into_iter()
        .map(|(r, p)| (r.start, p))
        .collect();
    let wp = g.w + g.pad.left + g.pad.right;
    ctx.pool
        .run_with_state(&mut states, chunks, |(first, parts), _t, range| {
            if range.is_empty() {
                return;
            }
            scratch::with(Slot::A, slab_len(g, chunk_lines, wp), |slab| {
                let dbuf_len = if dense_in_place { 0 } else { chunk_lines * ow * ldw };
                scratch::with(Slot::B, dbuf_len, |dbuf| {
                    for ch in range.clone() {
                        let part = &mut parts[(ch - *first) * part_len..][..part_len];
                        let (l0, l1) = (ch * chunk_lines, ((ch + 1) * chunk_lines).min(lines));
                        let (runs, _) = build_slab(g, x, l0, l1, wp, slab);
                        let starts: Vec<usize> = runs
                            .iter()
                            .flat_map(|&(_, oy0, oy1, off)| {
                                (oy0..oy1).map(move |oy| off + (oy - oy0) * g.stride[0] * s.xrow)
                            })
                            .collect();
                        let px = (l1 - l0) * ow;
                        let (dsrc, ld): (&[f32], usize) = match &dy {
                            SmallDy::Dense(d) if dense_in_place => (&d[l0 * ow * f..l1 * ow * f], f),
                            SmallDy::Dense(d) => {
                                let src = &d[l0 * ow * f..l1 * ow * f];
                                for (o, i) in dbuf.chunks_exact_mut(ldw).zip(src.chunks_exact(f)) {
                                    o[..f].copy_from_slice(i);
                                    o[f..].fill(0.0);
                                }
                                (&dbuf[..px * ldw], ldw)
                            }
                            SmallDy::Pooled {
                                pool,
                                argmax,
                                y,
                                dy,
                                act,
                            } => {
                                let out = &mut dbuf[..px * ldw];
                                with_simd!(isa, narrow = f <= 8, S, {
                                    expand_pooled::<S>(g, pool, *act, argmax, y, dy, l0, l1, ldw, out)
                                });
                                (&dbuf[..px * ldw], ldw)
                            }
                        };
                        // db: Σ dy per channel of this chunk (rows of `ld`, a multiple of the lanes).
                        let (dwp, dbp) = part.split_at_mut(k * ldw);
                        if want_db {
                            assert!(dsrc.len() >= px * ld && dbp.len() >= ld);
                            with_simd!(isa, narrow = f <= 8, S, {
                                // SAFETY: `px` rows of `ld` floats in `dsrc`, `ld` in `dbp` (asserted).
                                unsafe { column_sums::<S>(dsrc.as_ptr(), px, ld, dbp.as_mut_ptr()) }
                            });
                        }
                        let last = starts.last().copied().unwrap_or(0);
                        assert!(last + (ow - 1) * s.step + tap_off(k - 1) < slab.len() && dsrc.len() >= px * ld);
                        for t0 in (0..k).step_by(t) {
                            let t0 = t0.min(k - t);
                            let offs: Vec<usize> = (t0..t0 + t).map(tap_off).collect();
                            for c0 in (0..ldw).step_by(bw) {
                                with_simd!(isa, narrow = f <= 8, S, {
                                    // SAFETY: every slab read is within the last row's reach (assert
                                    // above), dy rows hold `ld ≥ c0 + bw` floats (padded or f a
                                    // multiple of the block), `dwp` has K rows of `ldw`.
                                    unsafe {
                                        dw_dispatch!(
                                            (nv, t);
                                            S;
                                            slab.as_ptr(),
                                            &starts,
                                            &offs,
                                            s.step,
                                            ow,
                                            dsrc.as_ptr().add(c0),
                                            ld,
                                            dwp.as_mut_ptr().add(t0 * ldw + c0),
                                            ldw
                                        )
                                    }
                                });
                            }
                        }
                    }
                })
            })
        });
    // Chunk partials added in chunk order.
    let mut sum = vec![0f64; part_len];
    for p in partials.chunks_exact(part_len) {
        for (a, &v) in sum.iter_mut().zip(p) {
            *a += v as f64;
        }
    }
    for (d, s) in dw.chunks_exact_mut(f).zip(sum.chunks_exact(ldw)) {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = s as f32;
        }
    }
    if let Some(db) = db {
        for (d, &s) in db.iter_mut().zip(&sum[k * ldw..]) {
            *d = s as f32;
        }
    }
}

/// `out[..ld] = Σ` of `rows` rows of `ld` floats (a multiple of the lanes) from `src`.
///
/// # Safety
/// `src` holds `rows·ld` floats, `out` `ld`.
#[inline(always)]
unsafe fn column_sums<S: Simd>(src: *const f32, rows: usize, ld: usize, out: *mut f32) {
    for c0 in (0..ld).step_by(S::LANES) {
        let mut acc = S::zero();
        for r in 0..rows {
            acc = S::add(acc, S::load(src.add(r * ld + c0)));
        }
        S::store(out.add(c0), acc);
    }
}

/// The conv-output dy of lines `l0..l1` (whole pool windows) into `out [(l1−l0)·ow, ldw]`: each
/// window's gradient `act'(y)·dy` at its argmax, 0 elsewhere and in the padding channels.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn expand_pooled<S: Simd>(
    g: &ConvGeom,
    pg: &PoolGeom,
    act: Act,
    argmax: &[f32],
    y: &[f32],
    dy: &[f32],
    l0: usize,
    l1: usize,
    ldw: usize,
    out: &mut [f32],
) {
    let (pa, pb, f, ow) = (pg.size[0], pg.size[1], g.f, g.ow);
    let pw = pg.ow;
    assert!(ow == pw * pb && ldw.is_multiple_of(S::LANES));
    for pr in (l0 / pa)..(l1 / pa) {
        let lo = (pr * pa - l0) * ow;
        for pc in 0..pw {
            let q = (pr * pw + pc) * f;
            for c0 in (0..ldw).step_by(S::LANES) {
                let n = f.saturating_sub(c0).min(S::LANES);
                // SAFETY: the caller's `with_simd!` picked an `S` the CPU supports.
                unsafe {
                    let (gv, av) = if n == 0 {
                        (S::zero(), S::zero())
                    } else {
                        pooled_grad::<S>(act, argmax, y, dy, q + c0, n)
                    };
                    let at = &mut out[(lo + pc * pb) * ldw + c0..];
                    scatter_window::<S>(gv, av, [pa, pb], at, ow * ldw, ldw, S::LANES);
                }
            }
        }
    }
}
