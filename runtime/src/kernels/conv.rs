//! 2-D convolution forward as an implicit GEMM: `y[M, F] = im2col(x)[M, K] · w[K, F]` with
//! M = n·oh·ow output pixels and K = kh·kw·c taps, NHWC input, HWIO kernel.
//!
//! Rows of the output are cut into blocks of `mc` pixels (the parallel tasks, split statically
//! across threads). For each block and each `kc`-long chunk of K, im2col writes the A block
//! into a per-thread scratch buffer (skipped for 1×1 stride-1 unpadded convs, whose A is the
//! input itself), then every (B panel, row tile) pair runs the micro-kernel; the epilogue
//! (bias, activation, BN statistics) runs on the last chunk while the tile is hot.

use super::epilogue::{accumulate_stats, finish_moments, Epilogue};
use super::im2col::im2col;
use super::microkernel::{run_tile, tile_shape, ALayout, Finish, Tile};
use super::pack::PackedB;
use super::scratch::{self, Slot};
use super::{Ctx, KernelIsa};
use crate::pool::task_range;
use std::cell::RefCell;

/// Explicit padding (TensorFlow's: may be asymmetric).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    /// TensorFlow SAME padding of `size` input with `k` kernel and stride `s` along one axis:
    /// `(before, after)` with `total = max((ceil(size/s) − 1)·s + k − size, 0)`, before = total/2.
    pub fn same_1d(size: usize, k: usize, s: usize) -> (usize, usize) {
        let total = ((size.div_ceil(s) - 1) * s + k).saturating_sub(size);
        (total / 2, total - total / 2)
    }
}

/// Geometry of a convolution `x [n, h, w, c] ⋆ kernel [kh, kw, c, f] → y [n, oh, ow, f]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub f: usize,
    /// `[vertical, horizontal]`.
    pub stride: [usize; 2],
    pub pad: Pad,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// A geometry with explicit padding; the output size follows from it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(n: usize, [h, w]: [usize; 2], c: usize, [kh, kw]: [usize; 2], f: usize, stride: [usize; 2], pad: Pad) -> Self {
        let oh = (h + pad.top + pad.bottom).saturating_sub(kh) / stride[0] + 1;
        let ow = (w + pad.left + pad.right).saturating_sub(kw) / stride[1] + 1;
        ConvGeom {
            n,
            h,
            w,
            c,
            kh,
            kw,
            f,
            stride,
            pad,
            oh,
            ow,
        }
    }

    /// TensorFlow `padding="same"`.
    pub fn same(n: usize, hw: [usize; 2], c: usize, k: [usize; 2], f: usize, stride: [usize; 2]) -> Self {
        let (top, bottom) = Pad::same_1d(hw[0], k[0], stride[0]);
        let (left, right) = Pad::same_1d(hw[1], k[1], stride[1]);
        Self::new(n, hw, c, k, f, stride, Pad { top, bottom, left, right })
    }

    /// TensorFlow `padding="valid"`.
    pub fn valid(n: usize, hw: [usize; 2], c: usize, k: [usize; 2], f: usize, stride: [usize; 2]) -> Self {
        Self::new(n, hw, c, k, f, stride, Pad::default())
    }

    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    pub fn kernel_len(&self) -> usize {
        self.kh * self.kw * self.c * self.f
    }
    pub fn output_len(&self) -> usize {
        self.n * self.oh * self.ow * self.f
    }
    /// GEMM rows: output pixels.
    pub fn m(&self) -> usize {
        self.n * self.oh * self.ow
    }
    /// GEMM depth: kernel taps × input channels.
    pub fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }
    /// Multiply-adds × 2 of the forward pass (each gradient costs the same).
    pub fn flops(&self) -> usize {
        2 * self.m() * self.k() * self.f
    }
    /// 1×1, stride 1, unpadded: A is the input itself.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == Pad::default()
    }

    pub(crate) fn check(&self, x: usize, w: usize, y: usize) {
        assert!(self.oh > 0 && self.ow > 0 && self.stride[0] > 0 && self.stride[1] > 0, "degenerate conv {self:?}");
        assert_eq!(x, self.input_len(), "conv input has {x} elements, geometry {self:?} needs {}", self.input_len());
        assert_eq!(w, self.kernel_len(), "conv kernel has {w} elements, expected {}", self.kernel_len());
        assert_eq!(y, self.output_len(), "conv output has {y} elements, expected {}", self.output_len());
    }
}

/// Longest K chunk: the B micro-panel (kc × 32 floats) and an A row tile stay within L1.
pub(crate) const KC_MAX: usize = 320;
/// Bytes of A block kept per thread (a quarter of a 1 MiB L2).
pub(crate) const A_BLOCK_BYTES: usize = 256 * 1024;

/// K chunking: `(chunks, kc)` with chunks of near-equal length at most `KC_MAX`.
pub(crate) fn k_chunks(k: usize) -> (usize, usize) {
    let chunks = k.div_ceil(KC_MAX).max(1);
    (chunks, k.div_ceil(chunks))
}

/// Row stride of a scratch block of `kc` columns, padded so rows do not alias in L1 sets.
pub(crate) fn padded_ld(kc: usize) -> usize {
    let ld = kc.div_ceil(16) * 16;
    if ld % 256 == 0 {
        ld + 16
    } else {
        ld
    }
}

/// Rows per block: a multiple of `mr` whose A block fits the budget, and small enough that
/// every thread gets at least two blocks when there are enough rows.
pub(crate) fn block_rows(m: usize, ld: usize, mr: usize, threads: usize) -> usize {
    let by_cache = (A_BLOCK_BYTES / (ld * 4)).max(mr) / mr * mr;
    let by_threads = m.div_ceil(2 * threads).div_ceil(mr) * mr;
    by_cache.min(by_threads).max(mr)
}

thread_local! {
    static PACKED: RefCell<PackedB> = RefCell::new(PackedB::new());
}

/// `y = epilogue(conv(x, w))`: x `[n, h, w, c]`, w `[kh, kw, c, f]` (HWIO), y `[n, oh, ow, f]`.
/// Packs `w` on every call; use [`conv2d_forward_packed`] to reuse a pack.
pub fn conv2d_forward(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &[f32], epi: Epilogue, y: &mut [f32]) {
    g.check(x.len(), w.len(), y.len());
    PACKED.with(|p| {
        let mut p = p.borrow_mut();
        p.pack(ctx.isa, g.k(), g.f, w, false);
        conv2d_forward_packed(ctx, g, x, &p, epi, y);
    })
}

/// [`conv2d_forward`] with the kernel already packed (`PackedB::from_matrix(isa, K, F, w, false)`
/// with K = kh·kw·c, for `ctx.isa`).
pub fn conv2d_forward_packed(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &PackedB, mut epi: Epilogue, y: &mut [f32]) {
    g.check(x.len(), g.kernel_len(), y.len());
    assert!(w.fits(ctx.isa, g.k(), g.f), "packed kernel does not match the conv or the ISA");
    epi.check(g.f);
    implicit_gemm(ctx, g, x, w, &mut epi, y);
}

/// Per-thread state of a GEMM-shaped kernel: its rows of the output and its partial sums.
struct Part<'a> {
    y: &'a mut [f32],
    row0: usize,
    partial: Vec<f64>,
}

/// The forward implicit GEMM (also used by the stride-1 input gradient).
pub(crate) fn implicit_gemm(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &PackedB, epi: &mut Epilogue, y: &mut [f32]) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (m, k, n) = (g.m(), g.k(), g.f);
    let (chunks, kc) = k_chunks(k);
    let pointwise = g.is_pointwise();
    let ld = if pointwise { k } else { padded_ld(kc) };
    let threads = ctx.threads();
    let mc = block_rows(m, ld, mr, threads);
    let blocks = m.div_ceil(mc);
    let stats = epi.moments.is_some();
    let (bias, act) = (epi.bias, epi.act);

    // Thread t owns blocks task_range(blocks, threads, t): a contiguous run of output rows.
    let mut parts: Vec<Part> = Vec::with_capacity(threads);
    let mut rest = y;
    for t in 0..threads {
        let r = task_range(blocks, threads, t);
        let (row0, row1) = ((r.start * mc).min(m), (r.end * mc).min(m));
        let (mine, tail) = rest.split_at_mut((row1 - row0) * n);
        rest = tail;
        parts.push(Part {
            y: mine,
            row0,
            partial: vec![0.0; if stats { 2 * n } else { 0 }],
        });
    }

    ctx.pool.run_with_state(&mut parts, blocks, |part, _t, range| {
        for blk in range {
            let r0 = blk * mc;
            let rows = mc.min(m - r0);
            let out = &mut part.y[(r0 - part.row0) * n..(r0 - part.row0 + rows) * n];
            scratch::with(Slot::A, if pointwise { 0 } else { rows * ld }, |buf| {
                for ch in 0..chunks {
                    let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(k));
                    let a: &[f32] = if pointwise {
                        &x[r0 * k + k0..(r0 + rows) * k]
                    } else {
                        im2col(g, x, r0, rows, k0, k1, buf, ld);
                        &buf[..]
                    };
                    let last = ch + 1 == chunks;
                    for j in 0..w.panels() {
                        let c0 = j * nr;
                        let cols = nr.min(n - c0);
                        let finish = last.then(|| Finish {
                            bias: bias.map(|b| &b[c0..]),
                            act,
                        });
                        for i in (0..rows).step_by(mr) {
                            let tile = Tile {
                                rows: mr.min(rows - i),
                                cols,
                                kc: k1 - k0,
                                a: &a[i * ld..],
                                lda: ld,
                                a_layout: ALayout::RowMajor,
                                b: w.panel_from(j, k0),
                                b_stride: nr,
                                ldc: n,
                                accumulate: ch > 0,
                                finish,
                            };
                            run_tile(isa, &tile, &mut out[i * n + c0..]);
                        }
                    }
                }
            });
            if stats {
                accumulate_stats(isa, out, n, &mut part.partial);
            }
        }
    });

    if let Some(mo) = epi.moments.as_deref_mut() {
        let partials: Vec<Vec<f64>> = parts.into_iter().map(|p| p.partial).collect();
        finish_moments(&partials, m, n, mo);
    }
}

/// The packed-kernel cache key helper for callers that keep packs: whether `w` matches.
pub fn packed_kernel(isa: KernelIsa, g: &ConvGeom, w: &[f32]) -> PackedB {
    PackedB::from_matrix(isa, g.k(), g.f, w, false)
}
