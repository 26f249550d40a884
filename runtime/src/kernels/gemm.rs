//! General matrix multiply `C[m, n] (+)= op(A)·op(B)` with the micro-kernel, cache blocking
//! (kc chunks of K so a B micro-panel stays in L1; mc row blocks so the A block stays in L2)
//! and the epilogue (bias, activation, BN statistics).
//!
//! A is read in place (`[m, k]` row-major, or `[k, m]` when `trans_a`, read column-wise).
//! B is packed into column panels, except when C has only a few rows and B is `[k, n]` with
//! `n` a multiple of the panel width: then each B element is used by few rows, so packing
//! would cost more than it saves (the batch-1 dense layer, a GEMV).
//!
//! Threads split the rows of C when there are enough (each thread writes its own rows);
//! otherwise they split the column panels into private buffers copied into C afterwards.
//! Either way every element of C is summed in the same order for any thread count.

use super::epilogue::{accumulate_stats, finish_moments, Epilogue};
use super::microkernel::{run_tile, tile_shape, ALayout, Finish, Tile};
use super::pack::PackedB;
use super::{Ctx, KernelIsa};
use crate::kernels::activation::Act;
use crate::pool::task_range;
use std::cell::RefCell;

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

/// B as the micro-kernel reads it.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    Packed(&'a PackedB),
    /// `[k, n]` row-major in place (`n` a multiple of the panel width).
    Direct(&'a [f32], usize),
}

impl<'a> BSrc<'a> {
    /// Panel `j` from row `k0` on, and the stride between its rows.
    #[inline]
    fn panel(&self, j: usize, k0: usize, nr: usize) -> (&'a [f32], usize) {
        match *self {
            BSrc::Packed(p) => (p.panel_from(j, k0), nr),
            BSrc::Direct(b, n) => (&b[k0 * n + j * nr..], n),
        }
    }
}

thread_local! {
    static PACKED: RefCell<PackedB> = RefCell::new(PackedB::new());
}

/// `C (+)= epilogue(op(A)·op(B))`; with `accumulate` the product is added to C's contents
/// before the epilogue.
pub fn gemm(ctx: &Ctx, g: &GemmGeom, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool, mut epi: Epilogue) {
    let (m, n, k) = (g.m, g.n, g.k);
    assert_eq!(a.len(), m * k, "A has {} elements, expected {m}×{k}", a.len());
    assert_eq!(b.len(), k * n, "B has {} elements, expected {k}×{n}", b.len());
    assert_eq!(c.len(), m * n, "C has {} elements, expected {m}×{n}", c.len());
    epi.check(n);
    if m == 0 || n == 0 {
        return;
    }
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        super::epilogue::apply_rows(isa, c, n, &mut epi);
        return;
    }
    let direct = !g.trans_b && n % nr == 0 && m <= 2 * mr;
    if direct {
        run(ctx, g, a, BSrc::Direct(b, n), c, accumulate, &mut epi);
    } else {
        PACKED.with(|p| {
            let mut p = p.borrow_mut();
            p.pack(isa, k, n, b, g.trans_b);
            run(ctx, g, a, BSrc::Packed(&p), c, accumulate, &mut epi);
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
    let isa = ctx.isa.checked();
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    let (m, n) = (g.m, g.n);
    let job = Job {
        isa,
        g: *g,
        a,
        b,
        bias: epi.bias,
        act: epi.act,
        accumulate,
    };
    let threads = ctx.threads();
    let panels = n.div_ceil(nr);
    let tiles = m.div_ceil(mr);
    let stats = epi.moments.is_some();
    let width = if stats { 2 * n } else { 0 };
    let partials: Vec<Vec<f64>>;
    if threads == 1 || tiles >= 2 * threads || panels < threads {
        // Split rows: tasks are row tiles; thread t owns a contiguous run of rows of C.
        let mut parts: Vec<(&mut [f32], usize, Vec<f64>)> = Vec::with_capacity(threads);
        let mut rest = c;
        for t in 0..threads {
            let r = task_range(tiles, threads, t);
            let (r0, r1) = ((r.start * mr).min(m), (r.end * mr).min(m));
            let (mine, tail) = rest.split_at_mut((r1 - r0) * n);
            rest = tail;
            parts.push((mine, r0, vec![0.0; width]));
        }
        ctx.pool.run_with_state(&mut parts, tiles, |(out, r0, partial), _t, range| {
            let rows = (range.end * mr).min(m) - (range.start * mr).min(m);
            if rows > 0 {
                block(&job, *r0, rows, 0..panels, out, n, 0, partial);
            }
        });
        partials = parts.into_iter().map(|p| p.2).collect();
    } else {
        // Split column panels into private [m, cols] buffers, copied into C afterwards.
        let mut parts: Vec<(Vec<f32>, Vec<f64>)> = (0..threads).map(|_| (Vec::new(), vec![0.0; width])).collect();
        let cref: &[f32] = c;
        ctx.pool.run_with_state(&mut parts, panels, |(buf, partial), _t, range| {
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
            block(&job, 0, m, range, buf, w, c0, partial);
        });
        for (t, (buf, _)) in parts.iter().enumerate() {
            let r = task_range(panels, threads, t);
            let (c0, c1) = (r.start * nr, (r.end * nr).min(n));
            if c1 > c0 {
                for (dst, src) in c.chunks_exact_mut(n).zip(buf.chunks_exact(c1 - c0)) {
                    dst[c0..c1].copy_from_slice(src);
                }
            }
        }
        partials = parts.into_iter().map(|p| p.1).collect();
    }
    if let Some(mo) = epi.moments.as_deref_mut() {
        finish_moments(&partials, m, n, mo);
    }
}

/// C rows `r0..r0 + rows`, panels `panels`, into `out` (`[rows, ldc]`, column 0 of `out` is
/// column `col0` of C). Rows are walked in L2-sized blocks, K in L1-sized chunks.
#[allow(clippy::too_many_arguments)]
fn block(
    job: &Job,
    r0: usize,
    rows: usize,
    panels: std::ops::Range<usize>,
    out: &mut [f32],
    ldc: usize,
    col0: usize,
    partial: &mut [f64],
) {
    let (mr, lanes) = tile_shape(job.isa);
    let nr = 2 * lanes;
    let GemmGeom { m, n, k, trans_a, .. } = job.g;
    let (chunks, kc) = super::conv::k_chunks(k);
    // Row block: A block of mc × kc floats in L2.
    let mc = (super::conv::A_BLOCK_BYTES / (kc * 4)).max(mr) / mr * mr;
    let stats = !partial.is_empty();
    for b0 in (0..rows).step_by(mc) {
        let brows = mc.min(rows - b0);
        for ch in 0..chunks {
            let (k0, k1) = (ch * kc, ((ch + 1) * kc).min(k));
            let last = ch + 1 == chunks;
            for j in panels.clone() {
                let c = j * nr;
                let cols = nr.min(n - c);
                let (bp, b_stride) = job.b.panel(j, k0, nr);
                let finish = last.then(|| Finish {
                    bias: job.bias.map(|b| &b[c..]),
                    act: job.act,
                });
                for i in (0..brows).step_by(mr) {
                    let row = r0 + b0 + i;
                    let (a, lda, a_layout) = if trans_a {
                        (&job.a[k0 * m + row..], m, ALayout::ColMajor)
                    } else {
                        (&job.a[row * k + k0..], k, ALayout::RowMajor)
                    };
                    let tile = Tile {
                        rows: mr.min(brows - i),
                        cols,
                        kc: k1 - k0,
                        a,
                        lda,
                        a_layout,
                        b: bp,
                        b_stride,
                        ldc,
                        accumulate: ch > 0 || job.accumulate,
                        finish,
                    };
                    run_tile(job.isa, &tile, &mut out[(b0 + i) * ldc + (c - col0)..]);
                }
            }
        }
        if stats {
            let blk = &out[b0 * ldc..(b0 + brows) * ldc];
            if ldc == n {
                accumulate_stats(job.isa, blk, n, partial);
            } else {
                // Private column buffer: accumulate its columns at their place in C.
                let (sum, sq) = partial.split_at_mut(n);
                let mut p = vec![0.0; 2 * ldc];
                accumulate_stats(job.isa, blk, ldc, &mut p);
                sum[col0..col0 + ldc].iter_mut().zip(&p[..ldc]).for_each(|(d, s)| *d += s);
                sq[col0..col0 + ldc].iter_mut().zip(&p[ldc..]).for_each(|(d, s)| *d += s);
            }
        }
    }
}
