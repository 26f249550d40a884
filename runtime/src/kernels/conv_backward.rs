//! Convolution gradients.
//!
//! * Input gradient, stride 1: a forward implicit GEMM of `dy` with the kernel flipped in
//!   space and transposed in channels (`w'[ky', kx', f, c] = w[kh−1−ky', kw−1−kx', c, f]`) and
//!   padding `k − 1 − pad`, so it gathers (no scatter, any row split is race-free).
//! * Input gradient, other strides: per image, `dcols = dy · wᵀ` in row blocks, then col2im
//!   scatter-adds the block into the image's `dx`; threads own whole images.
//! * Kernel gradient: `dw[K, F] = Σ_pixels im2col(x)ᵀ · dy`. Threads split the K rows of dw
//!   (each im2cols only its own taps), and walk all pixels in the same order, so dw is
//!   bit-identical for any thread count. The optional bias gradient `Σ dy` is summed in f64.

use super::conv::{block_rows, implicit_gemm, k_chunks, padded_ld, ConvGeom, Pad};
use super::epilogue::Epilogue;
use super::im2col::{col2im_add, im2col};
use super::microkernel::{run_tile, tile_shape, ALayout, Tile};
use super::pack::PackedB;
use super::scratch::{self, Slot};
use super::Ctx;
use crate::pool::task_range;
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
    let p = g.pad;
    if g.stride == [1, 1] && p.top < g.kh && p.bottom < g.kh && p.left < g.kw && p.right < g.kw {
        gather_stride1(ctx, g, dy, w, dx);
    } else {
        scatter(ctx, g, dy, w, dx);
    }
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
    PACKED.with(|packed| {
        let mut packed = packed.borrow_mut();
        scratch::with(Slot::C, w.len(), |wt| {
            // wt[(ky', kx', fo), ci] = w[(kh-1-ky', kw-1-kx', ci), fo]
            for ky in 0..kh {
                for kx in 0..kw {
                    let src_tap = ((kh - 1 - ky) * kw + (kw - 1 - kx)) * c * f;
                    let dst_tap = (ky * kw + kx) * f * c;
                    for ci in 0..c {
                        for fo in 0..f {
                            wt[dst_tap + fo * c + ci] = w[src_tap + ci * f + fo];
                        }
                    }
                }
            }
            packed.pack(ctx.isa, kh * kw * f, c, wt, false);
        });
        implicit_gemm(ctx, &flipped, dy, &packed, &mut Epilogue::none(), dx);
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
    let rows_per_block = block_rows(pix, ldk, mr, 1);
    PACKED.with(|packed| {
        let mut packed = packed.borrow_mut();
        // B[f][kk] = w[kk][f]: w is [K, F] = B transposed.
        packed.pack(isa, f, k, w, true);
        let packed = &*packed;
        let mut parts: Vec<(&mut [f32], usize)> = Vec::with_capacity(threads);
        let mut rest = dx;
        for t in 0..threads {
            let r = task_range(g.n, threads, t);
            let (mine, tail) = rest.split_at_mut(r.len() * img);
            rest = tail;
            parts.push((mine, r.start));
        }
        ctx.pool.run_with_state(&mut parts, g.n, |(dxp, img0), _t, range| {
            dxp.fill(0.0);
            scratch::with(Slot::A, rows_per_block * ldk, |cols| {
                for n in range {
                    for r0 in (n * pix..(n + 1) * pix).step_by(rows_per_block) {
                        let rows = rows_per_block.min((n + 1) * pix - r0);
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
                        col2im_add(g, cols, ldk, r0, rows, dxp, *img0);
                    }
                }
            });
        });
    });
}

/// `dw = ∂L/∂w [kh, kw, c, f]` from `x [n, h, w, c]` and `dy [n, oh, ow, f]` (overwritten);
/// with `dbias`, also `Σ dy` per output channel.
pub fn conv2d_grad_kernel(ctx: &Ctx, g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32], dbias: Option<&mut [f32]>) {
    g.check(x.len(), dw.len(), dy.len());
    if let Some(b) = &dbias {
        assert_eq!(b.len(), g.f, "bias gradient has {} entries, expected {}", b.len(), g.f);
    }
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (k, f, m) = (g.k(), g.f, g.m());
    let threads = ctx.threads();
    let tiles = k.div_ceil(mr);
    let panels = f.div_ceil(nr);
    let want_bias = dbias.is_some();
    // Thread t owns dw rows of tiles task_range(tiles, threads, t); thread 0 also sums dy.
    let mut parts: Vec<(&mut [f32], usize, Vec<f64>)> = Vec::with_capacity(threads);
    let mut rest = dw;
    for t in 0..threads {
        let r = task_range(tiles, threads, t);
        let (k0, k1) = ((r.start * mr).min(k), (r.end * mr).min(k));
        let (mine, tail) = rest.split_at_mut((k1 - k0) * f);
        rest = tail;
        parts.push((mine, k0, vec![0.0; if t == 0 && want_bias { f } else { 0 }]));
    }
    let ld = padded_ld(TAPS.min(k));
    ctx.pool.run_with_state(&mut parts, tiles, |(dwp, k0, bsum), _t, range| {
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
                        for row in dyb.chunks_exact(f) {
                            bsum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
                        }
                    }
                    if k1 <= k0 {
                        continue;
                    }
                    pack_rows(dyb, pixels, f, nr, bpack);
                    for t0 in (k0..k1).step_by(TAPS) {
                        let taps = TAPS.min(k1 - t0);
                        im2col(g, x, p0, pixels, t0, t0 + taps, cols, ld);
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
                                    b: &bpack[j * pixels * nr..],
                                    b_stride: nr,
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
