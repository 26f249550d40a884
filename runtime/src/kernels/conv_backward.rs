//! Convolution gradients.
//!
//! * Input gradient, stride 1, at least a vector's worth of input channels: a forward implicit
//!   GEMM of `dy` with the kernel flipped in space and transposed in channels
//!   (`w'[ky', kx', f, c] = w[kh−1−ky', kw−1−kx', c, f]`) and padding `k − 1 − pad`, so it
//!   gathers (no scatter, any row split is race-free).
//! * Input gradient, strided 1×1 unpadded (ResNet's shortcuts) with output rows of a row tile
//!   or more: `dy · wᵀ` straight into the input pixels the outputs read, the others zeroed.
//! * Input gradient, other strides or fewer channels: `dcols = dy · wᵀ` in blocks of output
//!   pixels, then col2im scatter-adds each block into `dx`; threads own whole images, blocks may
//!   span several.
//! * Kernel gradient: `dw[K, F] = Σ_pixels im2col(x)ᵀ · dy`, directly from a zero-padded input
//!   slab (no im2col) unless output rows are very narrow, else through im2col blocks. Threads split
//!   the K rows of dw and walk all pixels in the same order, so dw is bit-identical for any
//!   thread count. The optional bias gradient `Σ dy` is summed in f64 (by thread 0).

use super::conv::{build_slab, implicit_gemm, line_tiles, slab_len, use_winograd_grad_kernel, ConvGeom, Pad};
use super::conv_small::{conv2d_grad_kernel_small, small_conv_applies, SmallDy};
use super::epilogue::Epilogue;
use super::gemm::{block_rows, k_chunks, padded_ld, A_BLOCK_BYTES};
use super::im2col::{col2im_add, im2col};
use super::microkernel::{run_tile, tile_shape, ALayout, Tile};
use super::pack::{with_pack, PackedB};
use super::scratch::{self, Slot};
use super::winograd::WinogradTile;
use super::winograd_grad::conv2d_grad_kernel_winograd;
use super::{Ctx, KernelIsa};
use crate::pool::split_by_tasks;
use std::cell::RefCell;

thread_local! {
    static PACKED: RefCell<PackedB> = RefCell::new(PackedB::new());
}

/// Pixels per block of the kernel gradient's reduction (its GEMM's K chunk).
const PIXELS: usize = 256;
/// Kernel-gradient rows (taps) im2col'd per block.
const TAPS: usize = 256;

/// `dx = ∂L/∂x` from `dy [n, oh, ow, f]` and the kernel `w [kh, kw, c, f]`; `dx` is overwritten.
pub fn conv2d_grad_input(ctx: &Ctx, g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    g.check(dx.len(), w.len(), dy.len());
    let ctx = &ctx.for_work(g.flops());
    let p = g.pad;
    // The gather writes dx's channels as its GEMM columns: fewer than a vector's worth (LeNet's
    // 6) waste most lanes, and the scatter's GEMM (columns = taps × channels) is then faster.
    let (mr, lanes) = tile_shape(ctx.isa.checked());
    let narrow = g.c < lanes;
    if g.stride == [1, 1] && !narrow && p.top < g.kh && p.bottom < g.kh && p.left < g.kw && p.right < g.kw {
        gather_stride1(ctx, g, dy, w, dx);
    } else if g.kh == 1 && g.kw == 1 && p == Pad::default() && !narrow && g.ow >= mr {
        // (Output rows narrower than a row tile fill its tiles better through the scatter.)
        strided_pointwise(ctx, g, dy, w, dx);
    } else {
        scatter(ctx, g, dy, w, dx);
    }
}

/// A strided 1×1 unpadded conv's input gradient (ResNet's shortcuts): every input pixel gets
/// at most one output pixel's `dy · wᵀ`, so the GEMM tiles write straight into `dx` — a tile
/// holds pixels of one output row, `stride·c` apart in `dx` — and only the pixels no output
/// reads are zeroed: no column buffer, no zero-fill of the whole map, no scatter-add. The same
/// sums as the scatter path (which added them to zeros).
fn strided_pointwise(ctx: &Ctx, g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (c, f) = (g.c, g.f);
    let [sh, sw] = g.stride;
    let img = g.h * g.w * c;
    let threads = ctx.threads();
    let (chunks, kc) = k_chunks(f);
    with_pack(&PACKED, |packed| {
        // B[f][ci] = w[ci][f]: w is [C, F] = B transposed.
        packed.pack_on(ctx.pool, isa, f, c, w, true);
        let packed = &*packed;
        let mut parts = image_parts(dx, g.n, img, threads);
        // Threads own whole images.
        ctx.pool.run_with_state(&mut parts, g.n, |(dxp, img0), _t, range| {
            for n in range {
                let dxi = &mut dxp[(n - *img0) * img..][..img]; // [h, w, c]
                for (ih, row) in dxi.chunks_exact_mut(g.w * c).enumerate() {
                    if ih % sh != 0 || ih / sh >= g.oh {
                        row.fill(0.0);
                        continue;
                    }
                    for (iw, px) in row.chunks_exact_mut(c).enumerate() {
                        if iw % sw != 0 || iw / sw >= g.ow {
                            px.fill(0.0);
                        }
                    }
                }
                for oy in 0..g.oh {
                    let r0 = (n * g.oh + oy) * g.ow; // first dy row of this output row
                    let at = oy * sh * g.w * c; // dx offset of its first pixel, in the image
                    for ch in 0..chunks {
                        let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(f));
                        for j in 0..packed.panels() {
                            let c0 = j * nr;
                            for (ox0, px) in line_tiles(g.ow, mr) {
                                let tile = Tile {
                                    rows: px,
                                    cols: nr.min(c - c0),
                                    kc: k1 - k0,
                                    a: &dy[(r0 + ox0) * f + k0..],
                                    lda: f,
                                    a_layout: ALayout::RowMajor,
                                    segs: None,
                                    b: packed.panel_from(j, k0),
                                    b_stride: nr,
                                    ldc: sw * c,
                                    accumulate: ch > 0,
                                    finish: None,
                                };
                                run_tile(isa, &tile, &mut dxi[at + ox0 * sw * c + c0..]);
                            }
                        }
                    }
                }
            }
        });
    });
}

fn gather_stride1(ctx: &Ctx, g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (kh, kw, c, f) = (g.kh, g.kw, g.c, g.f);
    let flipped = ConvGeom {
        n: g.n,
        h: g.oh,
        w: g.ow,
        c: f,
        kh,
        kw,
        f: c,
        stride: [1, 1],
        pad: Pad {
            top: kh - 1 - g.pad.top,
            bottom: kh - 1 - g.pad.bottom,
            left: kw - 1 - g.pad.left,
            right: kw - 1 - g.pad.right,
        },
        oh: g.h,
        ow: g.w,
    };
    with_pack(&PACKED, |packed| {
        packed.pack_flipped(ctx.isa, [kh, kw, c, f], w);
        implicit_gemm(ctx, &flipped, dy, packed, &mut Epilogue::none(), dx);
    });
}

fn scatter(ctx: &Ctx, g: &ConvGeom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (k, f) = (g.k(), g.f);
    let pix = g.oh * g.ow;
    let img = g.h * g.w * g.c;
    let threads = ctx.threads();
    let (chunks, kc) = k_chunks(f);
    let ldk = padded_ld(k);
    // Blocks of output pixels (spanning images of the same thread) sized for the cache only.
    let mc = block_rows(g.m(), ldk, mr, 1, A_BLOCK_BYTES);
    with_pack(&PACKED, |packed| {
        // B[f][kk] = w[kk][f]: w is [K, F] = B transposed.
        packed.pack_on(ctx.pool, isa, f, k, w, true);
        let packed = &*packed;
        let mut parts = image_parts(dx, g.n, img, threads);
        // Threads own whole images (col2im scatters within an image); every dx element gets
        // its contributions in pixel order whatever the blocks, so results match across threads.
        ctx.pool.run_with_state(&mut parts, g.n, |(dxp, img0), _t, range| {
            dxp.fill(0.0);
            let (p0, p1) = (range.start * pix, range.end * pix);
            if p1 <= p0 {
                return;
            }
            scratch::with(Slot::A, mc.min(p1 - p0) * ldk, |cols| {
                for r0 in (p0..p1).step_by(mc) {
                    let rows = mc.min(p1 - r0);
                    for ch in 0..chunks {
                        let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(f));
                        for j in 0..packed.panels() {
                            let c0 = j * nr;
                            for i in (0..rows).step_by(mr) {
                                let tile = Tile {
                                    rows: mr.min(rows - i),
                                    cols: nr.min(k - c0),
                                    kc: k1 - k0,
                                    a: &dy[(r0 + i) * f + k0..],
                                    lda: f,
                                    a_layout: ALayout::RowMajor,
                                    segs: None,
                                    b: packed.panel_from(j, k0),
                                    b_stride: nr,
                                    ldc: ldk,
                                    accumulate: ch > 0,
                                    finish: None,
                                };
                                run_tile(isa, &tile, &mut cols[i * ldk + c0..]);
                            }
                        }
                    }
                    // Vectorised for the ISA (its adds were SSE-width without the target features).
                    isa.vectorize(
                        #[inline(always)]
                        || col2im_add(g, cols, ldk, r0, rows, dxp, *img0),
                    );
                }
            });
        });
    });
}

/// Each thread's whole images of `dx` (`n` of `img` values each), with its first image's index.
fn image_parts(dx: &mut [f32], n: usize, img: usize, threads: usize) -> Vec<(&mut [f32], usize)> {
    split_by_tasks(dx, n, threads, |i| i * img)
        .into_iter()
        .map(|(r, part)| (part, r.start))
        .collect()
}

/// `dw = ∂L/∂w [kh, kw, c, f]` from `x [n, h, w, c]` and `dy [n, oh, ow, f]` (overwritten);
/// with `dbias`, also `Σ dy` per output channel.
pub fn conv2d_grad_kernel(ctx: &Ctx, g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32], dbias: Option<&mut [f32]>) {
    g.check(x.len(), dw.len(), dy.len());
    if let Some(b) = &dbias {
        assert_eq!(b.len(), g.f, "bias gradient has {} entries, expected {}", b.len(), g.f);
    }
    if small_conv_applies(ctx.isa, g) {
        return conv2d_grad_kernel_small(ctx, g, x, SmallDy::Dense(dy), dw, dbias);
    }
    if use_winograd_grad_kernel(ctx.isa, g) {
        return conv2d_grad_kernel_winograd(ctx, WinogradTile::for_geom(g), g, x, dy, dw, dbias);
    }
    let ctx = &ctx.for_work(g.flops());
    if g.ow >= DIRECT_MIN_WIDTH {
        grad_kernel_direct(ctx, g, x, dy, dw, dbias)
    } else {
        grad_kernel_im2col(ctx, g, x, dy, dw, dbias)
    }
}

/// Narrowest output row for the direct kernel gradient (each output row is one K segment of
/// `ow` steps; shorter segments cost more in overhead than im2col does).
const DIRECT_MIN_WIDTH: usize = 4;

/// Kernel gradient without im2col. A row tile of dw is up to MR channels of one tap; its
/// "A" over the pixels of one output row is a strided window of a zero-padded input slab read
/// column-major (`A[i][p] = slab[off + p·stride·c + i]`), so the output rows of a chunk of
/// pixels are the micro-kernel's K segments. Threads split the row tiles (contiguous rows of dw)
/// and walk every pixel chunk in the same order, so dw does not depend on the thread count.
fn grad_kernel_direct(ctx: &Ctx, g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32], dbias: Option<&mut [f32]>) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (c, f, kw) = (g.c, g.f, g.kw);
    let [sh, sw] = g.stride;
    let wp = g.w + g.pad.left + g.pad.right;
    // The dw rows of one kernel row (its `kw` taps × `c` channels) are contiguous in dw and in
    // every slab row, so a row tile spans taps: a 1-channel conv gets 3-row tiles (6
    // accumulators, enough to hide the FMA latency) instead of 1-row ones.
    let row_len = kw * c;
    let rtiles: Vec<(usize, usize)> = line_tiles(row_len, mr).collect();
    // (kernel row, first row within it, rows), in dw row order.
    let tiles: Vec<(usize, usize, usize)> = (0..g.kh)
        .flat_map(|ky| rtiles.iter().map(move |&(r0, r)| (ky, r0, r)))
        .collect();
    let lines = g.n * g.oh;
    let chunk_lines = (PIXELS / g.ow).max(1);
    let panels = f.div_ceil(nr);
    let threads = ctx.threads();
    let want_bias = dbias.is_some();
    let k_of = |i: usize| tiles.get(i).map_or(g.k(), |&(ky, r0, _)| ky * row_len + r0);
    let mut parts: Vec<(&mut [f32], usize, Vec<f64>)> = split_by_tasks(dw, tiles.len(), threads, |i| k_of(i) * f)
        .into_iter()
        .enumerate()
        .map(|(t, (r, part))| (part, k_of(r.start), vec![0.0; if t == 0 && want_bias { f } else { 0 }]))
        .collect();
    let chunk_px = chunk_lines * g.ow;
    let in_place = f.is_multiple_of(lanes);
    // Packed panel width: one vector when every column fits in it.
    let pw = if f <= lanes { lanes } else { nr };
    let unpadded = g.pad == Pad::default();
    ctx.pool
        .run_with_state(&mut parts, tiles.len(), |(dwp, k0, bsum), _t, range| {
            if range.is_empty() && bsum.is_empty() {
                return;
            }
            scratch::with(Slot::B, panels * chunk_px * nr, |bpack| {
                let slab_floats = if unpadded { 0 } else { slab_len(g, chunk_lines, wp) };
                scratch::with(Slot::A, slab_floats, |slab| {
                    for (ci, l0) in (0..lines).step_by(chunk_lines).enumerate() {
                        let l1 = (l0 + chunk_lines).min(lines);
                        let (p0, p1) = (l0 * g.ow, l1 * g.ow);
                        let dyb = &dy[p0 * f..p1 * f];
                        if !bsum.is_empty() {
                            add_columns(isa, dyb, f, bsum);
                        }
                        if range.is_empty() {
                            continue;
                        }
                        // dy's rows are B's; when whole vectors tile them, read them in place.
                        let (bsrc, b_stride, panel_len): (&[f32], usize, usize) = if in_place {
                            (dyb, f, nr)
                        } else {
                            pack_rows(dyb, p1 - p0, f, pw, bpack);
                            (&bpack[..], pw, (p1 - p0) * pw)
                        };
                        // A's rows: each output line's first input row, in a zero-padded slab
                        // copy, or (no padding: the slab would be a copy) in x itself.
                        let (src, segs): (&[f32], Vec<usize>) = if unpadded {
                            let first_row = |l: usize| ((l / g.oh * g.h + l % g.oh * sh) * g.w) * c;
                            (x, (l0..l1).map(first_row).collect())
                        } else {
                            let (runs, used) = build_slab(g, x, l0, l1, wp, slab);
                            let segs = runs
                                .iter()
                                .flat_map(|&(_, oy0, oy1, off)| {
                                    (oy0..oy1).map(move |oy| off + (oy - oy0) * sh * wp * c)
                                })
                                .collect();
                            (&slab[..used], segs)
                        };
                        for j in 0..panels {
                            let c0 = j * nr;
                            for &(ky, r0, rows) in &tiles[range.clone()] {
                                let tap_off = ky * wp * c + r0;
                                let tile = Tile {
                                    rows,
                                    cols: nr.min(f - c0),
                                    kc: g.ow,
                                    a: &src[tap_off..],
                                    lda: sw * c,
                                    a_layout: ALayout::ColMajor,
                                    segs: Some(&segs),
                                    b: &bsrc[j * panel_len..],
                                    b_stride,
                                    ldc: f,
                                    accumulate: ci > 0,
                                    finish: None,
                                };
                                run_tile(isa, &tile, &mut dwp[(ky * row_len + r0 - *k0) * f + c0..]);
                            }
                        }
                    }
                })
            })
        });
    if let Some(db) = dbias {
        for (d, s) in db.iter_mut().zip(&parts[0].2) {
            *d = *s as f32;
        }
    }
}

/// Kernel gradient through im2col blocks (very narrow outputs).
fn grad_kernel_im2col(ctx: &Ctx, g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32], dbias: Option<&mut [f32]>) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (k, f, m) = (g.k(), g.f, g.m());
    let threads = ctx.threads();
    let tiles = k.div_ceil(mr);
    let panels = f.div_ceil(nr);
    let pw = if f <= lanes { lanes } else { nr };
    let want_bias = dbias.is_some();
    // Thread t owns dw rows of tiles task_range(tiles, threads, t); thread 0 also sums dy.
    let k_of = |i: usize| (i * mr).min(k);
    let mut parts: Vec<(&mut [f32], usize, Vec<f64>)> = split_by_tasks(dw, tiles, threads, |i| k_of(i) * f)
        .into_iter()
        .enumerate()
        .map(|(t, (r, part))| (part, k_of(r.start), vec![0.0; if t == 0 && want_bias { f } else { 0 }]))
        .collect();
    let ld = padded_ld(TAPS.min(k));
    ctx.pool
        .run_with_state(&mut parts, tiles, |(dwp, k0, bsum), _t, range| {
            let (k0, k1) = (*k0, (range.end * mr).min(k));
            if k1 <= k0 && bsum.is_empty() {
                return;
            }
            scratch::with(Slot::B, panels * PIXELS * nr, |bpack| {
                scratch::with(Slot::A, PIXELS * ld, |cols| {
                    for (blk, p0) in (0..m).step_by(PIXELS).enumerate() {
                        let pixels = PIXELS.min(m - p0);
                        let dyb = &dy[p0 * f..(p0 + pixels) * f];
                        if !bsum.is_empty() {
                            add_columns(isa, dyb, f, bsum);
                        }
                        if k1 <= k0 {
                            continue;
                        }
                        pack_rows(dyb, pixels, f, pw, bpack);
                        for t0 in (k0..k1).step_by(TAPS) {
                            let taps = TAPS.min(k1 - t0);
                            im2col(g, x, p0..p0 + pixels, t0..t0 + taps, cols, ld);
                            for j in 0..panels {
                                let c0 = j * nr;
                                for i in (0..taps).step_by(mr) {
                                    let tile = Tile {
                                        rows: mr.min(taps - i),
                                        cols: nr.min(f - c0),
                                        kc: pixels,
                                        a: &cols[i..],
                                        lda: ld,
                                        a_layout: ALayout::ColMajor,
                                        segs: None,
                                        b: &bpack[j * pixels * pw..],
                                        b_stride: pw,
                                        ldc: f,
                                        accumulate: blk > 0,
                                        finish: None,
                                    };
                                    run_tile(isa, &tile, &mut dwp[(t0 - k0 + i) * f + c0..]);
                                }
                            }
                        }
                    }
                })
            })
        });
    if let Some(db) = dbias {
        for (d, s) in db.iter_mut().zip(&parts[0].2) {
            *d = *s as f32;
        }
    }
}

/// `sums[j] += Σ_r rows[r·n + j]` in f64, vectorised for `isa` (a bias gradient's reduction).
/// Narrow rows (a few channels) are summed as flat runs of `lcm(n, 16)` values in f32 first, so
/// the loop is whole vectors rather than a short loop per row.
pub(crate) fn add_columns(isa: KernelIsa, rows: &[f32], n: usize, sums: &mut [f64]) {
    let run = n * (16 / gcd(n, 16));
    isa.vectorize(
        #[inline(always)]
        || {
            let mut rest = rows;
            if n < 16 && rows.len() >= 4 * run {
                let mut acc = [0f32; 256];
                let acc = &mut acc[..run];
                let whole = rows.len() / run * run;
                for chunk in rows[..whole].chunks_exact(run) {
                    acc.iter_mut().zip(chunk).for_each(|(a, &v)| *a += v);
                }
                for (i, &a) in acc.iter().enumerate() {
                    sums[i % n] += a as f64;
                }
                rest = &rows[whole..];
            }
            for row in rest.chunks_exact(n) {
                sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
            }
        },
    )
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Packs `rows × n` row-major `src` into panels `[ceil(n/nr)][rows][nr]` (zero-padded).
fn pack_rows(src: &[f32], rows: usize, n: usize, nr: usize, dst: &mut [f32]) {
    for j in 0..n.div_ceil(nr) {
        let c0 = j * nr;
        let w = nr.min(n - c0);
        let panel = &mut dst[j * rows * nr..(j + 1) * rows * nr];
        for (r, d) in panel.chunks_exact_mut(nr).enumerate() {
            d[..w].copy_from_slice(&src[r * n + c0..r * n + c0 + w]);
            d[w..].fill(0.0);
        }
    }
}
