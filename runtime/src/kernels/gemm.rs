//! General matrix multiply `C[m, n] (+)= op(A)·op(B)` with the micro-kernel, cache blocking
//! (kc chunks of K so a B micro-panel stays in L1; mc row blocks so the A block stays in L2)
//! and the epilogue (residual accumulate, bias, activation, BN statistics).
//!
//! A is copied per row block and K chunk into a row-major scratch block with a padded stride
//! (from `[m, k]`, or `[k, m]` when `trans_a`). B is packed into column panels, except when C
//! has only a few rows and B is `[k, n]`: then each B element is used by few rows, so packing
//! would cost more than it saves (the batch-1 dense layer, a GEMV); only a last panel narrower
//! than whole vectors is copied.
//!
//! Threads split row blocks of C when there are enough rows (each thread writes its own rows);
//! otherwise they split the column panels into private buffers copied into C afterwards.
//! Either way every element of C is summed in the same order (the K chunking depends only on
//! K) for any thread count, and the BN statistics are summed per fixed group of rows and
//! combined in group order, so the whole result (moments included) is bit-identical across
//! thread counts.

use super::epilogue::{finish_moments, group_stats, Epilogue};
use super::microkernel::{run_tile, tile_shape, ALayout, Finish, Tile};
use super::pack::{copy_rows, with_pack, PackedB};
use super::scratch::{self, Slot};
use super::{Ctx, KernelIsa};
use crate::kernels::activation::Act;
use crate::pool::{split_by_tasks, task_range, Pool};
use std::cell::RefCell;
use std::ops::Range;

/// Shape and operand layouts of a GEMM. A is stored `[m, k]` (`[k, m]` if `trans_a`), B is
/// stored `[k, n]` (`[n, k]` if `trans_b`), C is `[m, n]`; all row-major and contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmGeom {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl GemmGeom {
    /// `C[m, n] = A[m, k]·B[k, n]`.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmGeom {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
        }
    }

    pub fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }
}

/// Longest K chunk: the B micro-panel (kc × 32 floats) and an A row tile stay within L1.
pub(crate) const KC_MAX: usize = 256;
/// Bytes of A block kept per thread (half of a 2 MiB L2).
pub(crate) const A_BLOCK_BYTES: usize = 1024 * 1024;
/// Bytes of a GEMM's packed A block (it is re-read for every column panel).
pub(crate) const GEMM_A_BYTES: usize = 256 * 1024;
/// Row tiles per group of rows whose BN statistics are summed together. Row blocks are whole
/// groups, so the statistics' summation order does not depend on how rows are cut into blocks.
const STAT_GROUP_TILES: usize = 4;

/// K chunking: `(chunks, kc)` with chunks of near-equal length at most `KC_MAX`.
pub(crate) fn k_chunks(k: usize) -> (usize, usize) {
    let chunks = k.div_ceil(KC_MAX).max(1);
    (chunks, k.div_ceil(chunks).max(1))
}

/// Row stride of a scratch block of `kc` columns: a whole number of cache lines, padded so
/// rows do not alias in the L1 sets.
pub(crate) fn padded_ld(kc: usize) -> usize {
    let ld = kc.div_ceil(16) * 16;
    if ld.is_multiple_of(256) {
        ld + 16
    } else {
        ld
    }
}

/// Rows per BN-statistics group for tiles of `mr` rows.
pub(crate) fn stat_group(mr: usize) -> usize {
    STAT_GROUP_TILES * mr
}

/// The unit row blocks are made of: whole statistics groups when the epilogue takes BN
/// statistics (their summation order must not depend on the blocks), else one row tile — finer
/// blocks share a small GEMM (batch-1 inference) more evenly between threads.
pub(crate) fn row_unit(mr: usize, moments: bool) -> usize {
    if moments {
        stat_group(mr)
    } else {
        mr
    }
}

/// Rows per block: whole `group`s (see [`row_unit`]), an `ld`-wide A block within `budget`
/// bytes, and a block count that is a multiple of the thread count (equal shares).
pub(crate) fn block_rows(m: usize, ld: usize, group: usize, threads: usize, budget: usize) -> usize {
    let by_cache = (budget / (ld.max(1) * 4) / group).max(1) * group;
    let blocks = m.div_ceil(by_cache).div_ceil(threads.max(1)) * threads.max(1);
    m.div_ceil(blocks).div_ceil(group).max(1) * group
}

/// Per-thread state of [`row_blocks`]: its rows of the output and its groups' statistics.
struct Part<'a> {
    y: &'a mut [f32],
    row0: usize,
    /// `[groups of this thread][2, n]` partial sums.
    stats: Vec<f64>,
}

/// Cuts `y` (`[m, n]`) into row blocks of `mc` rows (a multiple of `group`), split statically
/// over the pool's threads, and calls `body(r0, rows, out)` for each block with `out` = rows
/// `r0..r0 + rows` of `y`. With `moments`, each finished block's column statistics are summed
/// per `group` rows (while the block is hot) and the groups combined in order into
/// `[mean; biased variance]`: the same sums in the same order for any `mc` and thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn row_blocks<F>(
    pool: &Pool,
    isa: KernelIsa,
    m: usize,
    n: usize,
    mc: usize,
    group: usize,
    y: &mut [f32],
    moments: Option<&mut [f32]>,
    body: F,
) where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    debug_assert!(y.len() == m * n && mc.is_multiple_of(group));
    let threads = pool.threads();
    let blocks = m.div_ceil(mc);
    let width = if moments.is_some() { 2 * n } else { 0 };
    let row_of = |b: usize| (b * mc).min(m);
    let mut parts: Vec<Part> = split_by_tasks(y, blocks, threads, |b| row_of(b) * n)
        .into_iter()
        .map(|(r, mine)| {
            let (row0, row1) = (row_of(r.start), row_of(r.end));
            Part {
                y: mine,
                row0,
                stats: vec![0.0; (row1 - row0).div_ceil(group) * width],
            }
        })
        .collect();
    pool.run_with_state(&mut parts, blocks, |part, _t, range| {
        for blk in range {
            let r0 = blk * mc;
            let rows = mc.min(m - r0);
            let local = r0 - part.row0;
            let out = &mut part.y[local * n..(local + rows) * n];
            body(r0, rows, out);
            if width > 0 {
                for (gi, grp) in out.chunks(group * n).enumerate() {
                    let at = (local / group + gi) * width;
                    group_stats(isa, grp, n, &mut part.stats[at..at + width]);
                }
            }
        }
    });
    if let Some(mo) = moments {
        let partials: Vec<&[f64]> = parts.iter().flat_map(|p| p.stats.chunks_exact(width.max(1))).collect();
        finish_moments(&partials, m, group, n, mo);
    }
}

/// Whether `threads` split a GEMM with `m × n` C by row blocks, each owning a contiguous run of
/// C's rows (every thread reads all of B, nothing is copied), rather than by column panels
/// into private buffers: when there are rows enough for four row tiles (or two statistics
/// groups) per thread. Measured with `kernel_table dense1`: the MNIST CNN's m = 128 dense
/// gradients scale better split by rows, the CIFAR-10 CNN's m = 64 ones by columns.
fn splits_rows(threads: usize, m: usize, n: usize, (mr, nr): (usize, usize), moments: bool) -> bool {
    let panels = n.div_ceil(nr);
    threads == 1 || m >= 2 * threads * row_unit(mr, moments).max(2 * mr) || panels < threads
}

/// B as the micro-kernel reads it.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    Packed(&'a PackedB),
    /// `[k, n]` row-major read in place, except the last panel when its vector loads would run
    /// past the end of a row (`n` not a multiple of the vector width): that one is `tail`,
    /// packed `[k][nr]` and zero-padded.
    Direct {
        b: &'a [f32],
        n: usize,
        tail: Option<&'a [f32]>,
    },
}

impl<'a> BSrc<'a> {
    /// Panel `j` from row `k0` on, and the stride between its rows.
    #[inline]
    fn panel(&self, j: usize, k0: usize, nr: usize) -> (&'a [f32], usize) {
        match *self {
            BSrc::Packed(p) => (p.panel_from(j, k0), nr),
            BSrc::Direct { tail: Some(t), n, .. } if j + 1 == n.div_ceil(nr) => (&t[k0 * nr..], nr),
            BSrc::Direct { b, n, .. } => (&b[k0 * n + j * nr..], n),
        }
    }
}

thread_local! {
    static PACKED: RefCell<PackedB> = RefCell::new(PackedB::new());
}

/// `C = epilogue(op(A)·op(B) [+ C])`: with `accumulate` the product is added to C's contents
/// (a residual) before the bias and the activation; the moments are those of the final C.
pub fn gemm(ctx: &Ctx, g: &GemmGeom, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool, mut epi: Epilogue) {
    let (m, n, k) = (g.m, g.n, g.k);
    assert_eq!(a.len(), m * k, "A has {} elements, expected {m}×{k}", a.len());
    assert_eq!(b.len(), k * n, "B has {} elements, expected {k}×{n}", b.len());
    assert_eq!(c.len(), m * n, "C has {} elements, expected {m}×{n}", c.len());
    epi.check(n);
    let isa = ctx.isa.checked();
    if n == 0 {
        return;
    }
    if m == 0 || k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        super::epilogue::apply_rows(isa, c, n, &mut epi);
        return;
    }
    if m == 1 && !g.trans_a && !g.trans_b && epi.moments.is_none() {
        super::gemv::gemv(ctx, [k, n], a, b, c, accumulate, &mut epi);
        return;
    }
    let (mr, lanes) = tile_shape(isa);
    // B is read in place when packing it would cost more than it saves: few rows of C use each
    // B value (a batch-1 layer), or a narrow B (≤ 4 panels) under a short A whose rows the
    // threads split (the MNIST CNN's 128 × 128 × 3136 dense forward: packing its 1.6 MB of
    // weights took a quarter of the call). Split by columns, each thread would stride through
    // half of every B row: slower than packing, measured (`gemm_one`, CIFAR-10 CNN dense1).
    let rows_split = splits_rows(
        ctx.for_work(g.flops()).threads(),
        m,
        n,
        (mr, 2 * lanes),
        epi.moments.is_some(),
    );
    let direct = !g.trans_b && (m <= 2 * mr || (n <= 4 * 2 * lanes && m <= 256 && rows_split));
    if direct && n.is_multiple_of(lanes) {
        run(ctx, g, a, BSrc::Direct { b, n, tail: None }, c, accumulate, &mut epi);
    } else if direct {
        let nr = 2 * lanes;
        let c0 = (n.div_ceil(nr) - 1) * nr;
        scratch::with(Slot::B, k * nr, |tail| {
            for (dst, src) in tail.chunks_exact_mut(nr).zip(b.chunks_exact(n)) {
                dst[..n - c0].copy_from_slice(&src[c0..]);
                dst[n - c0..].fill(0.0);
            }
            let b = BSrc::Direct { b, n, tail: Some(tail) };
            run(ctx, g, a, b, c, accumulate, &mut epi);
        });
    } else {
        with_pack(&PACKED, |p| {
            p.pack_on(ctx.for_work(g.flops()).pool, isa, k, n, b, g.trans_b);
            run(ctx, g, a, BSrc::Packed(p), c, accumulate, &mut epi);
        });
    }
}

/// What every block of one GEMM shares.
struct Job<'a> {
    isa: KernelIsa,
    g: GemmGeom,
    a: &'a [f32],
    b: BSrc<'a>,
    bias: Option<&'a [f32]>,
    act: Act,
    accumulate: bool,
}

fn run(ctx: &Ctx, g: &GemmGeom, a: &[f32], b: BSrc, c: &mut [f32], accumulate: bool, epi: &mut Epilogue) {
    let ctx = &ctx.for_work(g.flops());
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (m, n) = (g.m, g.n);
    let (_, kc) = k_chunks(g.k);
    let threads = ctx.threads();
    let group = row_unit(mr, epi.moments.is_some());
    let mc = block_rows(m, padded_ld(kc), group, threads, GEMM_A_BYTES);
    let job = Job {
        isa,
        g: *g,
        a,
        b,
        bias: epi.bias,
        act: epi.act,
        accumulate,
    };
    let panels = n.div_ceil(nr);
    if splits_rows(threads, m, n, (mr, nr), epi.moments.is_some()) {
        // Split row blocks: each thread owns a contiguous run of rows of C.
        row_blocks(
            ctx.pool,
            isa,
            m,
            n,
            mc,
            group,
            c,
            epi.moments.as_deref_mut(),
            |r0, rows, out| {
                block(&job, r0, rows, 0..panels, out, n, 0);
            },
        );
        return;
    }
    // Few rows, many columns: split column panels into private [m, cols] buffers.
    let mut parts: Vec<Vec<f32>> = vec![Vec::new(); threads];
    let cref: &[f32] = c;
    ctx.pool.run_with_state(&mut parts, panels, |buf, _t, range| {
        let (c0, c1) = (range.start * nr, (range.end * nr).min(n));
        if c1 <= c0 {
            return;
        }
        let w = c1 - c0;
        buf.resize(m * w, 0.0);
        if accumulate {
            for (dst, src) in buf.chunks_exact_mut(w).zip(cref.chunks_exact(n)) {
                dst.copy_from_slice(&src[c0..c1]);
            }
        }
        for r0 in (0..m).step_by(mc) {
            let rows = mc.min(m - r0);
            block(&job, r0, rows, range.clone(), &mut buf[r0 * w..(r0 + rows) * w], w, c0);
        }
    });
    for (t, buf) in parts.iter().enumerate() {
        let r = task_range(panels, threads, t);
        let (c0, c1) = (r.start * nr, (r.end * nr).min(n));
        if c1 > c0 {
            for (dst, src) in c.chunks_exact_mut(n).zip(buf.chunks_exact(c1 - c0)) {
                dst[c0..c1].copy_from_slice(src);
            }
        }
    }
    if let Some(mo) = epi.moments.as_deref_mut() {
        // The same row groups as the row split, summed in group order.
        let width = 2 * n;
        let mut stats = vec![0.0; m.div_ceil(group) * width];
        for (grp, s) in c.chunks(group * n).zip(stats.chunks_exact_mut(width)) {
            group_stats(isa, grp, n, s);
        }
        let partials: Vec<&[f64]> = stats.chunks_exact(width).collect();
        finish_moments(&partials, m, group, n, mo);
    }
}

/// C rows `r0..r0 + rows`, panels `panels`, into `out` (`[rows, ldc]`; column 0 of `out` is
/// column `col0` of C). K is walked in L1-sized chunks; each chunk's A block is copied into a
/// scratch block, then each B micro-panel serves every row tile of the block.
fn block(job: &Job, r0: usize, rows: usize, panels: Range<usize>, out: &mut [f32], ldc: usize, col0: usize) {
    let (mr, lanes) = tile_shape(job.isa);
    let nr = 2 * lanes;
    let GemmGeom { m, n, k, trans_a, .. } = job.g;
    let (chunks, kc) = k_chunks(k);
    // A row-major A is copied row by row with a padded stride (rows of a wide A would alias in
    // the L1 sets); a transposed one into column-major tiles of `mr` rows (one contiguous copy
    // per K step, and the kernel's broadcasts are constant offsets from one pointer).
    let (ld, layout) = if trans_a {
        (mr, ALayout::ColMajor)
    } else {
        (padded_ld(kc), ALayout::RowMajor)
    };
    let tile_len = |steps: usize| if trans_a { mr * steps } else { mr * ld };
    scratch::with(Slot::A, rows.div_ceil(mr) * tile_len(kc), |ablk| {
        for ch in 0..chunks {
            let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(k));
            if trans_a {
                // tile t: ablk[t·mr·steps + p·mr + i] = A[r0 + t·mr + i][k0 + p] = a[(k0 + p)·m + r0 + t·mr + i]
                for (t, tile) in ablk.chunks_mut(mr * (k1 - k0)).take(rows.div_ceil(mr)).enumerate() {
                    let h = mr.min(rows - t * mr);
                    copy_rows(tile, mr, h, &job.a[k0 * m + r0 + t * mr..], m);
                }
            } else {
                for (i, dst) in ablk.chunks_mut(ld).take(rows).enumerate() {
                    dst[..k1 - k0].copy_from_slice(&job.a[(r0 + i) * k + k0..(r0 + i) * k + k1]);
                }
            }
            let last = ch + 1 == chunks;
            for j in panels.clone() {
                let c = j * nr;
                let cols = nr.min(n - c);
                let (bp, b_stride) = job.b.panel(j, k0, nr);
                let finish = last.then(|| Finish {
                    bias: job.bias.map(|b| &b[c..]),
                    act: job.act,
                });
                for i in (0..rows).step_by(mr) {
                    let tile = Tile {
                        rows: mr.min(rows - i),
                        cols,
                        kc: k1 - k0,
                        a: &ablk[i / mr * tile_len(k1 - k0)..],
                        lda: ld,
                        a_layout: layout,
                        segs: None,
                        b: bp,
                        b_stride,
                        ldc,
                        accumulate: ch > 0 || job.accumulate,
                        finish,
                    };
                    run_tile(job.isa, &tile, &mut out[i * ldc + (c - col0)..]);
                }
            }
        }
    });
}
