//! 2-D convolution forward as an implicit GEMM: `y[M, F] = im2col(x)[M, K] · w[K, F]` with
//! M = n·oh·ow output pixels and K = kh·kw·c taps, NHWC input, HWIO kernel (packed into
//! column panels, see [`PackedB`]; read in place, rows `F` apart, when M ≤ 64: at batch 1 the
//! pack would cost more than the product, and the threads then split the panels, not the rows).
//!
//! Rows of the output are cut into blocks of pixels (the parallel tasks, split statically
//! across threads, sized so a block's working set stays in L2). Two ways to feed A:
//!
//! * Direct (output rows of 7+ pixels, kernels bigger than 1×1): the block's input rows are
//!   copied once into a zero-padded slab; a row tile (≤ MR pixels of one output row) reads each
//!   kernel row as a strided window of the slab (`lda = stride·c`), those windows being the
//!   micro-kernel's K segments. No im2col, any stride, any padding.
//! * im2col: per block and `kc`-long chunk of K, im2col writes the A block into a per-thread
//!   scratch buffer (skipped for 1×1 stride-1 unpadded convs, whose A is the input itself).
//!
//! Then every (B panel, row tile) pair runs the micro-kernel; the epilogue (bias, activation,
//! BN statistics) runs on the last K chunk while the tile is hot.

use super::activation::Act;
use super::conv_small::{conv2d_forward_small, small_conv_applies};
use super::epilogue::Epilogue;
use super::gemm::{block_rows, k_chunks, padded_ld, row_blocks, row_unit, A_BLOCK_BYTES, KC_MAX};
use super::im2col::im2col;
use super::microkernel::{run_tile, tile_shape, ALayout, Finish, Tile};
use super::pack::{with_pack, BRef, PackedB};
use super::scratch::{self, Slot};
use super::winograd::{conv2d_forward_winograd, winograd, winograd_applies, WinogradTile};
use super::{Ctx, KernelIsa};
use crate::pool::Pool;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

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
        let s = s.max(1);
        let total = (size.div_ceil(s).saturating_sub(1) * s + k).saturating_sub(size);
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
    pub fn new(
        n: usize,
        [h, w]: [usize; 2],
        c: usize,
        [kh, kw]: [usize; 2],
        f: usize,
        stride: [usize; 2],
        pad: Pad,
    ) -> Self {
        // 0 (rejected by the kernels) when the kernel does not fit the padded input.
        let out = |size: usize, k: usize, s: usize| if size >= k && s > 0 { (size - k) / s + 1 } else { 0 };
        let oh = out(h + pad.top + pad.bottom, kh, stride[0]);
        let ow = out(w + pad.left + pad.right, kw, stride[1]);
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
        Self::new(
            n,
            hw,
            c,
            k,
            f,
            stride,
            Pad {
                top,
                bottom,
                left,
                right,
            },
        )
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
        assert!(
            self.oh > 0 && self.ow > 0 && self.stride[0] > 0 && self.stride[1] > 0,
            "degenerate conv {self:?}"
        );
        assert_eq!(
            x,
            self.input_len(),
            "conv input has {x} elements, geometry {self:?} needs {}",
            self.input_len()
        );
        assert_eq!(
            w,
            self.kernel_len(),
            "conv kernel has {w} elements, expected {}",
            self.kernel_len()
        );
        assert_eq!(
            y,
            self.output_len(),
            "conv output has {y} elements, expected {}",
            self.output_len()
        );
    }
}

thread_local! {
    static PACKED: RefCell<PackedB> = RefCell::new(PackedB::new());
}

/// `y = epilogue(conv(x, w))`: x `[n, h, w, c]`, w `[kh, kw, c, f]` (HWIO), y `[n, oh, ow, f]`.
/// Packs `w` on every call (or transforms it, where [`use_winograd`]); use
/// [`conv2d_forward_packed`] to reuse a pack.
pub fn conv2d_forward(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &[f32], epi: Epilogue, y: &mut [f32]) {
    g.check(x.len(), w.len(), y.len());
    if small_conv_applies(ctx.isa, g) {
        // The small kernel sums BN's moments row by row while each row is in L1 (`bn_table`:
        // conv + moments 0.1 ms above the conv alone on cifar10_cnn/conv1, against 0.3 ms
        // through the GEMM path's epilogue), except after sigmoid or tanh (applied to whole
        // rows) and on channel counts that leave vectors part empty (lenet5/conv1's 6 of 8
        // lanes), where a moments pass over rows widened to whole vectors is 7% faster.
        let mut epi = epi;
        let in_kernel = g.f.is_multiple_of(8) && matches!(epi.act, Act::Linear | Act::Relu);
        let after = if in_kernel { None } else { epi.moments.take() };
        conv2d_forward_small(ctx, g, x, w, epi, None, y);
        if let Some(mo) = after {
            super::norm::moments(ctx, g.m(), g.f, y, mo);
        }
        return;
    }
    if use_winograd(ctx.isa, g) {
        // Transforms the HWIO kernel directly: no pack for the direct path.
        return conv2d_forward_winograd(ctx, WinogradTile::for_geom(g), g, x, w, epi, y);
    }
    if few_rows_in_place(ctx.isa, g) {
        let nr = 2 * tile_shape(ctx.isa.checked()).1;
        let mut epi = epi;
        epi.check(g.f);
        let ctx = &ctx.for_work(g.flops());
        if ctx.threads() > 1 && epi.moments.is_none() {
            return unpacked_by_columns(ctx, g, x, w, nr, &epi, y);
        }
        let b = BRef::Rows {
            b: w,
            stride: g.f,
            panels: g.f / nr,
            nr,
        };
        return product(ctx, g, x, b, &mut epi, y);
    }
    with_pack(&PACKED, |p| {
        p.pack_on(ctx.for_work(g.flops()).pool, ctx.isa, g.k(), g.f, w, false);
        conv2d_forward_packed(ctx, g, x, p, epi, y);
    })
}

/// [`conv2d_forward`] with the kernel already packed (`PackedB::from_matrix(isa, K, F, w, false)`
/// with K = kh·kw·c, for `ctx.isa`).
pub fn conv2d_forward_packed(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &PackedB, mut epi: Epilogue, y: &mut [f32]) {
    g.check(x.len(), g.kernel_len(), y.len());
    assert!(
        w.fits(ctx.isa, g.k(), g.f),
        "packed kernel does not match the conv or the ISA"
    );
    epi.check(g.f);
    implicit_gemm(ctx, g, x, w, &mut epi, y);
}

/// The forward implicit GEMM (also used by the stride-1 input gradient): Winograd where
/// [`use_winograd`] says so, else the direct path when output rows are wide enough for good row
/// tiles, else im2col.
pub(crate) fn implicit_gemm(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &PackedB, epi: &mut Epilogue, y: &mut [f32]) {
    let ctx = &ctx.for_work(g.flops());
    if use_winograd(ctx.isa, g) {
        winograd(ctx, g, x, w, epi, y)
    } else {
        product(ctx, g, x, BRef::Packed(w), epi, y)
    }
}

/// Whether [`conv2d_forward`] without BN statistics reads the HWIO kernel in place, row by row
/// (2–8 KB apart for 512–2048 filters), rather than packing or transforming it: few output
/// pixels, a direct or im2col product. A caller that keeps the kernel fixed over many calls
/// (an inference session) reads it faster packed once, through [`conv2d_forward_packed`].
pub fn reads_kernel_in_place(isa: KernelIsa, g: &ConvGeom) -> bool {
    !small_conv_applies(isa, g) && !use_winograd(isa, g) && few_rows_in_place(isa, g)
}

/// The GEMM paths' choice of reading the kernel in place: few rows, whole column panels.
fn few_rows_in_place(isa: KernelIsa, g: &ConvGeom) -> bool {
    g.m() <= UNPACKED_B_MAX_ROWS && g.f.is_multiple_of(2 * tile_shape(isa.checked()).1)
}

/// Output pixels (GEMM rows) up to which the forward reads the HWIO kernel in place rather than
/// packing it: a pack reads and writes all of B, which at batch 1 costs more than the product
/// with so few rows (ResNet-18's 4×4×512 layers: 16 rows against a 9.4 MB kernel).
const UNPACKED_B_MAX_ROWS: usize = 64;

/// The unpacked forward with its output channels split among the threads (a few rows give
/// the row split nothing to share): each thread computes its panels' columns into a block of
/// its own, copied into `y` after. Per column the same sums as on one thread.
fn unpacked_by_columns(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &[f32], nr: usize, epi: &Epilogue, y: &mut [f32]) {
    let (m, f) = (g.m(), g.f);
    let panels = f / nr;
    let mut parts: Vec<(usize, usize, Vec<f32>)> = vec![(0, 0, Vec::new()); ctx.threads()];
    let one = Ctx {
        pool: Pool::inline(),
        isa: ctx.isa,
    };
    ctx.pool
        .run_with_state(&mut parts, panels, |(c0, cols, out), _t, range| {
            (*c0, *cols) = (range.start * nr, range.len() * nr);
            if range.is_empty() {
                return;
            }
            out.resize(m * *cols, 0.0);
            let part = ConvGeom { f: *cols, ..*g };
            let b = BRef::Rows {
                b: &w[*c0..],
                stride: f,
                panels: range.len(),
                nr,
            };
            let mut epi = Epilogue {
                bias: epi.bias.map(|b| &b[*c0..*c0 + *cols]),
                act: epi.act,
                moments: None,
            };
            product(&one, &part, x, b, &mut epi, out);
        });
    for (c0, cols, out) in parts.iter().filter(|p| p.1 > 0) {
        for (row, src) in y.chunks_exact_mut(f).zip(out.chunks_exact(*cols)) {
            row[*c0..c0 + cols].copy_from_slice(src);
        }
    }
}

/// The direct path when output rows are wide enough for good row tiles, else im2col.
fn product(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: BRef, epi: &mut Epilogue, y: &mut [f32]) {
    if g.kh * g.kw > 1 && g.ow >= DIRECT_MIN_WIDTH {
        direct(ctx, g, x, w, epi, y)
    } else {
        im2col_gemm(ctx, g, x, w, epi, y)
    }
}

/// Whether the convolutions (`implicit_gemm`: the forward and the stride-1 input gradient; and
/// the kernel gradient, [`use_winograd_grad_kernel`]) compute `g` on `isa` by Winograd — whose
/// rounding differs from a dot product's — (F(2×2, 3×3) or F(4×4, 3×3), see
/// [`WinogradTile::for_geom`]; 2.25× or 4× fewer multiplies) rather than the direct path: 3×3 stride-1 convs (any padding, so also their input gradient)
/// with at least [`WINOGRAD_MIN_CHANNELS`] input and output channels, on AVX-512. Measured with
/// `conv_one` at one thread (F(2×2)): 1.2–1.8× the direct path's speed on every seed layer with 32+
/// channels both ways (MNIST conv2, CIFAR-10 conv2–6, ResNet-18 64–512), but 2.5–7× slower on
/// the first layers (1 or 3 input channels: its 16 GEMMs then have K = c, far too short). The
/// epilogue does not matter: BN moments are summed after the output transform.
///
/// Not for calls of fewer than [`WINOGRAD_MIN_F2_TILES`] 2×2 tiles when F(2×2) is the tile:
/// the batch-1 CIFAR-10 CNN's 8×8 layers (16 tiles: GEMMs of 16 rows, 2.25× fewer multiplies
/// than the direct path's 64 pixels × 9 taps) ran at 0.6–0.8× the direct path's speed
/// (`native_perf`, `WINOGRAD=0`); F(4×4)'s 4× pays from 16 tiles on.
pub fn use_winograd(isa: KernelIsa, g: &ConvGeom) -> bool {
    WINOGRAD.load(Ordering::Relaxed)
        && winograd_applies(g)
        && g.c >= WINOGRAD_MIN_CHANNELS
        && g.f >= WINOGRAD_MIN_CHANNELS
        && isa.checked() == KernelIsa::Avx512
        && (WinogradTile::for_geom(g) == WinogradTile::F4x4 || WinogradTile::F2x2.tiles(g) >= WINOGRAD_MIN_F2_TILES)
}

/// Fewest 2×2 output tiles for which [`use_winograd`] picks F(2×2, 3×3).
const WINOGRAD_MIN_F2_TILES: usize = 64;

/// Whether `conv2d_grad_kernel` computes the kernel gradient of `g` by Winograd F(3×3, 2×2) or
/// F(3×3, 4×4) (`conv2d_grad_kernel_winograd`: 16 or 36 GEMMs over the batch's 2×2 or 4×4 dy
/// tiles, 2.25× or 4× fewer multiplies; the tile as the forward's) rather than the direct or im2col path: the same convs as [`use_winograd`] (3×3
/// stride 1, 32+ channels both ways, AVX-512, [`set_winograd`] on). Measured with `conv_one
/// dw`/`wdw` (interleaved, see RESULTS.md): faster on every such seed layer, most on the
/// small-image, many-channel ones where the direct path's rows are short.
pub(crate) fn use_winograd_grad_kernel(isa: KernelIsa, g: &ConvGeom) -> bool {
    use_winograd(isa, g)
}

/// See [`set_winograd`].
static WINOGRAD: AtomicBool = AtomicBool::new(true);

/// Enables (the default) or disables, process-wide, Winograd in the convolutions that
/// [`use_winograd`] picks it for (forward and stride-1 input gradient) and the kernel gradients
/// [`use_winograd_grad_kernel`] picks it for. Disabled, they take the
/// direct path: for benchmarks and tests that compare the two.
pub fn set_winograd(enabled: bool) {
    WINOGRAD.store(enabled, Ordering::Relaxed);
}

/// Fewest input (its GEMMs' K) and output channels for which Winograd is chosen.
const WINOGRAD_MIN_CHANNELS: usize = 32;

/// Narrowest output row the direct path takes (its tiles never span output rows).
const DIRECT_MIN_WIDTH: usize = 7;

/// Row tiles of one output row of `ow` pixels: `(first pixel, pixels)`, balanced, at most `mr`.
pub(crate) fn line_tiles(ow: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    let nt = ow.div_ceil(mr);
    let (base, extra) = (ow / nt, ow % nt);
    (0..nt).map(move |t| (t * base + t.min(extra), base + usize::from(t < extra)))
}

/// K chunks of the direct path: `(k0, segment length, segment offsets)`, where a segment is a
/// contiguous run of the slab for one tile row — a whole kernel row (`kw·c` floats: its taps
/// are adjacent pixels) when it fits `KC_MAX`, else one tap's channels, cut into equal runs
/// when even those do not fit — and its offset is relative to the tile's top-left input pixel
/// in a zero-padded slab of row stride `wp` pixels. Segments are grouped while they fit.
fn direct_chunks(g: &ConvGeom, wp: usize) -> Vec<(usize, usize, Vec<usize>)> {
    let c = g.c;
    let row = g.kw * c;
    let mut chunks = Vec::new();
    if row <= KC_MAX {
        let per = (KC_MAX / row).max(1);
        for r0 in (0..g.kh).step_by(per) {
            chunks.push((
                r0 * row,
                row,
                (r0..(r0 + per).min(g.kh)).map(|ky| ky * wp * c).collect(),
            ));
        }
    } else if c <= KC_MAX {
        let taps = g.kh * g.kw;
        let tap_off = |t: usize| ((t / g.kw) * wp + t % g.kw) * c;
        let per = (KC_MAX / c).max(1);
        for t0 in (0..taps).step_by(per) {
            chunks.push((t0 * c, c, (t0..(t0 + per).min(taps)).map(tap_off).collect()));
        }
    } else {
        let parts = c.div_ceil(KC_MAX);
        let len = c.div_ceil(parts);
        for t in 0..g.kh * g.kw {
            let off = ((t / g.kw) * wp + t % g.kw) * c;
            for c0 in (0..c).step_by(len) {
                chunks.push((t * c + c0, len.min(c - c0), vec![off + c0]));
            }
        }
    }
    chunks
}

/// Direct convolution: no im2col. Each row block's input rows are copied once into a zero-padded
/// slab; a tile of pixels within one output row then reads, for every kernel tap, a strided
/// window of the slab (`lda = stride·c`), the taps being the micro-kernel's K segments.
fn direct(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: BRef, epi: &mut Epilogue, y: &mut [f32]) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (m, n, c) = (g.m(), g.f, g.c);
    let [sh, sw] = g.stride;
    let wp = g.w + g.pad.left + g.pad.right;
    let chunks = direct_chunks(g, wp);
    let kc_max = chunks.iter().map(|ch| ch.1 * ch.2.len()).max().unwrap_or(1);
    // Blocks of whole output rows ("lines"): the slab rows they read plus their output rows and
    // one K chunk of B within the L2 budget; statistics groups of whole lines too.
    let line_bytes = (sh * wp * c + g.ow * n) * 4;
    let fixed = (kc_max * n + g.kh * wp * c) * 4;
    let budget = A_BLOCK_BYTES.saturating_sub(fixed).max(A_BLOCK_BYTES / 4);
    let group_lines = row_unit(mr, epi.moments.is_some()).div_ceil(g.ow);
    let by_cache = (budget / line_bytes / group_lines).max(1) * group_lines;
    let lines = g.n * g.oh;
    let threads = ctx.threads();
    let blocks = lines.div_ceil(by_cache).div_ceil(threads) * threads;
    let block_lines = lines.div_ceil(blocks).div_ceil(group_lines).max(1) * group_lines;
    let (bias, act) = (epi.bias, epi.act);
    let mc = block_lines * g.ow;
    let group = group_lines * g.ow;
    let slab_len = slab_len(g, block_lines, wp);
    row_blocks(
        ctx.pool,
        isa,
        m,
        n,
        mc,
        group,
        y,
        epi.moments.as_deref_mut(),
        |r0, rows, out| {
            let (l0, l1) = (r0 / g.ow, (r0 + rows) / g.ow);
            scratch::with(Slot::A, slab_len, |slab| {
                let (runs, used) = build_slab(g, x, l0, l1, wp, slab);
                let slab = &slab[..used];
                for (ci, (k0, seg_len, segs)) in chunks.iter().enumerate() {
                    let last = ci + 1 == chunks.len();
                    for j in 0..w.panels() {
                        let c0 = j * nr;
                        let cols = nr.min(n - c0);
                        let finish = last.then(|| Finish {
                            bias: bias.map(|b| &b[c0..]),
                            act,
                        });
                        let b = w.panel_from(j, *k0);
                        let mut line = 0;
                        for &(_, oy0, oy1, soff) in &runs {
                            for oy in oy0..oy1 {
                                let row_base = soff + (oy - oy0) * sh * wp * c;
                                for (ox0, px) in line_tiles(g.ow, mr) {
                                    let tile = Tile {
                                        rows: px,
                                        cols,
                                        kc: *seg_len,
                                        a: &slab[row_base + ox0 * sw * c..],
                                        lda: sw * c,
                                        a_layout: ALayout::RowMajor,
                                        segs: Some(segs),
                                        b,
                                        b_stride: w.stride(),
                                        ldc: n,
                                        accumulate: ci > 0,
                                        finish,
                                    };
                                    run_tile(isa, &tile, &mut out[(line * g.ow + ox0) * n + c0..]);
                                }
                                line += 1;
                            }
                        }
                    }
                }
            });
        },
    );
}

/// Floats of a slab for any `lines` consecutive output lines (see [`build_slab`]).
pub(crate) fn slab_len(g: &ConvGeom, lines: usize, wp: usize) -> usize {
    // One run per image touched, each at most (its lines)·sh + kh padded rows.
    (lines * g.stride[0] + (lines.div_ceil(g.oh) + 1) * g.kh) * wp * g.c
}

/// One image's run of output lines in a slab: `(image, oy0, oy1, slab offset)`.
pub(crate) type SlabRun = (usize, usize, usize, usize);

/// Copies the zero-padded input rows that output lines `l0..l1` (line = image·oh + oy) read
/// into `slab`, one run per image: run `(img, oy0, oy1, off)` holds padded rows
/// `oy0·sh .. (oy1−1)·sh + kh` as `[rows, wp, c]` from `off`. Returns the runs and floats used.
pub(crate) fn build_slab(
    g: &ConvGeom,
    x: &[f32],
    l0: usize,
    l1: usize,
    wp: usize,
    slab: &mut [f32],
) -> (Vec<SlabRun>, usize) {
    let (sh, c) = (g.stride[0], g.c);
    let mut runs = Vec::new();
    let mut off = 0;
    let mut l = l0;
    while l < l1 {
        let (img, oy0) = (l / g.oh, l % g.oh);
        let oy1 = g.oh.min(oy0 + (l1 - l));
        let rows = (oy1 - 1) * sh + g.kh - oy0 * sh;
        fill_slab(g, x, img, oy0 * sh, rows, wp, &mut slab[off..off + rows * wp * c]);
        runs.push((img, oy0, oy1, off));
        off += rows * wp * c;
        l += oy1 - oy0;
    }
    (runs, off)
}

/// Copies padded rows `pr0..pr0 + rows` of image `img` (padded coordinates: input row
/// `pr − pad.top`, column `pc − pad.left`, zero outside the input) into `dst` (`[rows, wp, c]`).
fn fill_slab(g: &ConvGeom, x: &[f32], img: usize, pr0: usize, rows: usize, wp: usize, dst: &mut [f32]) {
    let c = g.c;
    let (left, right) = (g.pad.left * c, (wp - g.pad.left - g.w) * c);
    for (r, d) in dst.chunks_exact_mut(wp * c).take(rows).enumerate() {
        let ih = (pr0 + r) as isize - g.pad.top as isize;
        if ih < 0 || ih >= g.h as isize {
            d.fill(0.0);
            continue;
        }
        let src = &x[((img * g.h + ih as usize) * g.w) * c..][..g.w * c];
        d[..left].fill(0.0);
        d[left..left + g.w * c].copy_from_slice(src);
        d[left + g.w * c..left + g.w * c + right].fill(0.0);
    }
}

/// The im2col implicit GEMM: each row block's A is gathered into a scratch block per K chunk.
fn im2col_gemm(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: BRef, epi: &mut Epilogue, y: &mut [f32]) {
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (m, k, n) = (g.m(), g.k(), g.f);
    let (chunks, kc) = k_chunks(k);
    let pointwise = g.is_pointwise();
    let ld = if pointwise { k } else { padded_ld(kc) };
    // The A block, the block's C rows (re-read by every K chunk) and one K chunk of B share L2.
    let budget = A_BLOCK_BYTES.saturating_sub(kc * n * 4).max(A_BLOCK_BYTES / 4);
    let group = row_unit(mr, epi.moments.is_some());
    let mc = block_rows(m, ld + n, group, ctx.threads(), budget);
    let (bias, act) = (epi.bias, epi.act);
    row_blocks(
        ctx.pool,
        isa,
        m,
        n,
        mc,
        group,
        y,
        epi.moments.as_deref_mut(),
        |r0, rows, out| {
            scratch::with(Slot::A, if pointwise { 0 } else { rows * ld }, |buf| {
                for ch in 0..chunks {
                    let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(k));
                    let a: &[f32] = if pointwise {
                        &x[r0 * k + k0..(r0 + rows) * k]
                    } else {
                        im2col(g, x, r0..r0 + rows, k0..k1, buf, ld);
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
                                segs: None,
                                b: w.panel_from(j, k0),
                                b_stride: w.stride(),
                                ldc: n,
                                accumulate: ch > 0,
                                finish,
                            };
                            run_tile(isa, &tile, &mut out[i * n + c0..]);
                        }
                    }
                }
            });
        },
    );
}

/// The packed-kernel cache key helper for callers that keep packs: whether `w` matches.
pub fn packed_kernel(isa: KernelIsa, g: &ConvGeom, w: &[f32]) -> PackedB {
    PackedB::from_matrix(isa, g.k(), g.f, w, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[n, side, side, c]` → `f` channels, 3×3 "same".
    fn same(n: usize, side: usize, c: usize, f: usize) -> ConvGeom {
        ConvGeom::same(n, [side, side], c, [3, 3], f, [1, 1])
    }

    /// Which convolutions take Winograd at all: F(2×2) not for calls of few tiles (the batch-1
    /// CIFAR-10 CNN's 8×8 layers ran faster direct); F(4×4) and training batches still.
    #[test]
    fn winograd_or_direct() {
        let isa = KernelIsa::detect();
        if isa.checked() != KernelIsa::Avx512 {
            return; // Winograd is an AVX-512 path only.
        }
        for (g, want) in [
            (same(1, 8, 128, 128), false),
            (same(1, 4, 512, 512), false),
            (same(1, 16, 128, 128), true),
            (same(1, 14, 32, 64), true),
            (same(64, 8, 128, 128), true),
            (same(32, 4, 512, 512), true),
            (same(1, 8, 3, 32), false),
        ] {
            assert_eq!(use_winograd(isa, &g), want, "{g:?}");
        }
    }
}
