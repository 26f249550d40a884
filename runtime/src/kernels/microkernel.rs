//! The GEMM micro-kernel: one `MR × (NV·LANES)` tile of C held in vector registers (14 × 32 =
//! 28 zmm accumulators on AVX-512) over a stretch of K, then the epilogue (accumulate into C,
//! bias, activation) while the tile is hot.
//!
//! A is read in place (no packing) as either row-major rows (`A[i][p] = a[i·lda + p]`: a GEMM's
//! A, an im2col block, or a strided window of a padded conv input) or column-major rows
//! (`A[i][p] = a[p·lda + i]`: a transposed A, or the input channels of a kernel gradient). The
//! K stretch may be a list of segments at different A offsets (the taps of a direct
//! convolution); B is a panel of `NR = 2·LANES` columns whose rows are `b_stride` apart (packed
//! panels: `b_stride = NR`). The accumulators are indexed only with constants (see `unroll!`)
//! so they stay in registers.
//!
//! [`run_tile`] is the safe entry: it checks that every index the tile touches lies inside the
//! slices it was given, then calls the instantiation for `(isa, rows, vectors, A layout)`
//! through a `#[target_feature]` function pointer.

use super::activation::Act;
use super::simd::{Portable, Simd};
use super::KernelIsa;

#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// How A is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ALayout {
    /// `A[i][p] = a[i·lda + p]`.
    RowMajor,
    /// `A[i][p] = a[p·lda + i]`.
    ColMajor,
}

/// What happens to a finished tile (only on the last K chunk).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Finish<'a> {
    /// Bias for the tile's columns (`cols` entries).
    pub bias: Option<&'a [f32]>,
    pub act: Act,
}

/// One tile: `C[0..rows, 0..cols] (+)= A[0..rows, 0..kc] · B[0..kc, 0..cols]`.
///
/// With `segs`, K is the concatenation of `segs.len()` segments of `kc` steps each, segment `s`
/// reading A from `a[segs[s]..]` (same layout and `lda`) and B from row `s·kc` on: the taps of
/// a direct convolution, each a strided window of the input.
pub(crate) struct Tile<'a> {
    pub rows: usize,
    pub cols: usize,
    pub kc: usize,
    pub a: &'a [f32],
    pub lda: usize,
    pub a_layout: ALayout,
    pub segs: Option<&'a [usize]>,
    pub b: &'a [f32],
    pub b_stride: usize,
    pub ldc: usize,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
    /// Epilogue for the last K chunk; `None` for earlier chunks.
    pub finish: Option<Finish<'a>>,
}

/// Raw form of a [`Tile`] handed to the instantiations (bounds already checked).
struct RawTile {
    cols: usize,
    kc: usize,
    a: *const f32,
    /// A offsets of the K segments (`nseg` of them, `kc` steps each).
    segs: *const usize,
    nseg: usize,
    lda: usize,
    b: *const f32,
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    finish: bool,
    bias: *const f32,
    act: Act,
}

type TileFn = unsafe fn(&RawTile);

/// Register-tile geometry of an ISA: (max rows MR, lanes per vector). Panels are 2 vectors wide.
pub(crate) fn tile_shape(isa: KernelIsa) -> (usize, usize) {
    match isa.checked() {
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx512 => (Avx512::MR, Avx512::LANES),
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx2 => (Avx2::MR, Avx2::LANES),
        _ => (Portable::MR, Portable::LANES),
    }
}

/// Computes one tile. Panics if any index the tile reads or writes is outside the slices.
#[inline]
pub(crate) fn run_tile(isa: KernelIsa, t: &Tile, c: &mut [f32]) {
    let (mr, lanes) = tile_shape(isa);
    let nr = 2 * lanes;
    assert!(
        t.rows >= 1 && t.rows <= mr && t.cols >= 1 && t.cols <= nr,
        "tile shape out of range"
    );
    const WHOLE: [usize; 1] = [0];
    let segs: &[usize] = t.segs.unwrap_or(&WHOLE);
    if t.kc > 0 && !segs.is_empty() {
        let a_last = match t.a_layout {
            ALayout::RowMajor => (t.rows - 1) * t.lda + t.kc - 1,
            ALayout::ColMajor => (t.kc - 1) * t.lda + t.rows - 1,
        };
        let max_off = segs.iter().copied().max().unwrap_or(0);
        assert!(max_off + a_last < t.a.len(), "A tile out of bounds");
        // The kernel loads whole vectors of B for the tile's vector count.
        let nv_cols = t.cols.div_ceil(lanes) * lanes;
        assert!(
            (segs.len() * t.kc - 1) * t.b_stride + nv_cols <= t.b.len(),
            "B panel out of bounds"
        );
    }
    assert!((t.rows - 1) * t.ldc + t.cols <= c.len(), "C tile out of bounds");
    let bias = match t.finish.and_then(|f| f.bias) {
        Some(b) => {
            assert!(b.len() >= t.cols, "bias shorter than the tile");
            b.as_ptr()
        }
        None => std::ptr::null(),
    };
    let raw = RawTile {
        cols: t.cols,
        kc: t.kc,
        a: t.a.as_ptr(),
        segs: segs.as_ptr(),
        nseg: segs.len(),
        lda: t.lda,
        b: t.b.as_ptr(),
        b_stride: t.b_stride,
        c: c.as_mut_ptr(),
        ldc: t.ldc,
        accumulate: t.accumulate,
        finish: t.finish.is_some(),
        bias,
        act: t.finish.map_or(Act::Linear, |f| f.act),
    };
    let nv = if t.cols > lanes { 2 } else { 1 };
    let f = pick(isa.checked(), t.rows, nv, t.a_layout);
    // SAFETY: `pick` returns an instantiation for an ISA that `checked()` confirmed the CPU
    // supports; every pointer offset it uses was bounds-checked above.
    unsafe { f(&raw) };
    if let Some(fin) = t.finish {
        if matches!(fin.act, Act::Sigmoid | Act::Tanh) {
            let act = fin.act;
            isa.vectorize(
                #[inline(always)]
                || {
                    if t.ldc == t.cols {
                        // Contiguous rows (a narrow conv's NHWC output): one long vector loop.
                        act.apply_slice(&mut c[..t.rows * t.cols]);
                    } else {
                        for r in 0..t.rows {
                            act.apply_slice(&mut c[r * t.ldc..r * t.ldc + t.cols]);
                        }
                    }
                },
            );
        }
    }
}

/// Repeats `$body` with `$i` bound to each constant `0..$n` (`$n` ≤ 16, a constant): every index
/// into the accumulator array is a literal, so LLVM keeps the accumulators in registers.
macro_rules! unroll {
    ($n:expr, $i:ident, $body:block) => {
        unroll!(@ $n, $i, $body, 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15)
    };
    (@ $n:expr, $i:ident, $body:block, $($k:literal)*) => {
        $(
            if $k < $n {
                let $i: usize = $k;
                $body
            }
        )*
    };
}

/// The generic micro-kernel; inlined into each ISA's `#[target_feature]` entry.
#[inline(always)]
unsafe fn tile<S: Simd, const MR: usize, const NV: usize, const COL_A: bool>(t: &RawTile) {
    let mut acc = [[S::zero(); NV]; MR];
    let (row_step, k_step) = if COL_A { (1, t.lda) } else { (t.lda, 1) };
    let mut b = t.b;
    for s in 0..t.nseg {
        let mut a = t.a.add(*t.segs.add(s));
        for _ in 0..t.kc {
            let mut bv = [S::zero(); NV];
            unroll!(NV, v, {
                bv[v] = S::load(b.add(v * S::LANES));
            });
            unroll!(MR, i, {
                let ai = S::splat(*a.add(i * row_step));
                unroll!(NV, v, {
                    acc[i][v] = S::fma(ai, bv[v], acc[i][v]);
                });
            });
            a = a.add(k_step);
            b = b.add(t.b_stride);
        }
    }
    let full = t.cols == NV * S::LANES;
    let relu = t.finish && t.act == Act::Relu;
    let mut bias = [S::zero(); NV];
    if t.finish && !t.bias.is_null() {
        unroll!(NV, v, {
            bias[v] = load_cols::<S>(t.bias.add(v * S::LANES), t.cols, v, full);
        });
    }
    unroll!(MR, i, {
        let c = t.c.add(i * t.ldc);
        unroll!(NV, v, {
            let cv = c.add(v * S::LANES);
            let mut x = acc[i][v];
            if t.accumulate {
                x = S::add(x, load_cols::<S>(cv, t.cols, v, full));
            }
            if t.finish {
                x = S::add(x, bias[v]);
                if relu {
                    x = S::max(x, S::zero());
                }
            }
            if full {
                S::store(cv, x);
            } else {
                S::store_partial(cv, x, t.cols.saturating_sub(v * S::LANES).min(S::LANES));
            }
        });
    });
}

/// Loads vector `v` of a row with `cols` valid entries.
#[inline(always)]
unsafe fn load_cols<S: Simd>(p: *const f32, cols: usize, v: usize, full: bool) -> S::V {
    if full {
        S::load(p)
    } else {
        S::load_partial(p, cols.saturating_sub(v * S::LANES).min(S::LANES))
    }
}

macro_rules! entries {
    ($name:ident, $isa:ty, $features:literal) => {
        #[target_feature(enable = $features)]
        unsafe fn $name<const MR: usize, const NV: usize, const COL_A: bool>(t: &RawTile) {
            tile::<$isa, MR, NV, COL_A>(t)
        }
    };
}

#[cfg(target_arch = "x86_64")]
entries!(tile_avx512, Avx512, "avx512f,fma");
#[cfg(target_arch = "x86_64")]
entries!(tile_avx2, Avx2, "avx2,fma");

unsafe fn tile_portable<const MR: usize, const NV: usize, const COL_A: bool>(t: &RawTile) {
    tile::<Portable, MR, NV, COL_A>(t)
}

macro_rules! table {
    ($f:ident, $rows:expr, $nv:expr, $col:expr; $($m:literal)*) => {
        match ($rows, $nv, $col) {
            $(
                ($m, 1, false) => $f::<$m, 1, false> as TileFn,
                ($m, 1, true) => $f::<$m, 1, true> as TileFn,
                ($m, _, false) => $f::<$m, 2, false> as TileFn,
                ($m, _, true) => $f::<$m, 2, true> as TileFn,
            )*
            _ => unreachable!("tile rows checked by run_tile"),
        }
    };
}

fn pick(isa: KernelIsa, rows: usize, nv: usize, layout: ALayout) -> TileFn {
    let col = layout == ALayout::ColMajor;
    match isa {
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx512 => table!(tile_avx512, rows, nv, col; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
        #[cfg(target_arch = "x86_64")]
        KernelIsa::Avx2 => table!(tile_avx2, rows, nv, col; 1 2 3 4 5 6),
        _ => table!(tile_portable, rows, nv, col; 1 2 3 4),
    }
}
