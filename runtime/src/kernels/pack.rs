//! Packing of the B operand into column panels: `[ceil(n/NR)][k][NR]`, each panel holding NR
//! consecutive columns for every k (zero-padded past `n`), so the micro-kernel streams one
//! panel contiguously. NR is twice the ISA's vector width (32 for AVX-512).

use super::microkernel::tile_shape;
use super::KernelIsa;
use crate::pool::{split_by_tasks, Pool};

/// Packs smaller than this many values are done on the calling thread.
const PAR_MIN_VALUES: usize = 64 * 1024;

/// A B operand (`k × n`) packed into column panels for one ISA's micro-kernel. Build it once
/// per weight update (training) or once at load time (inference) and reuse it.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedB {
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) nr: usize,
    pub(crate) data: Vec<f32>,
}

impl PackedB {
    /// An empty pack to refill with [`PackedB::pack`] (reuses its allocation).
    pub fn new() -> PackedB {
        PackedB {
            k: 0,
            n: 0,
            nr: 1,
            data: Vec::new(),
        }
    }

    /// Packs `B` (`[k, n]` row-major, or `[n, k]` when `trans`) for `isa`'s micro-kernel.
    pub fn from_matrix(isa: KernelIsa, k: usize, n: usize, b: &[f32], trans: bool) -> PackedB {
        let mut p = PackedB::new();
        p.pack(isa, k, n, b, trans);
        p
    }

    /// Refills this pack from `B` (`[k, n]`, or `[n, k]` when `trans`).
    pub fn pack(&mut self, isa: KernelIsa, k: usize, n: usize, b: &[f32], trans: bool) {
        self.pack_on(Pool::inline(), isa, k, n, b, trans);
    }

    /// [`PackedB::pack`] with the panels split over `pool`'s threads (a weight matrix packed
    /// on every training step would otherwise be a serial stretch of its GEMM).
    pub fn pack_on(&mut self, pool: &Pool, isa: KernelIsa, k: usize, n: usize, b: &[f32], trans: bool) {
        assert_eq!(b.len(), k * n, "B has {} elements, expected {k}×{n}", b.len());
        let nr = 2 * tile_shape(isa).1;
        self.k = k;
        self.n = n;
        self.nr = nr;
        let panels = n.div_ceil(nr);
        // Every value is written below (padding columns included): no need to zero first.
        self.data.resize(panels * k * nr, 0.0);
        let threads = if panels * k * nr >= PAR_MIN_VALUES {
            pool.threads()
        } else {
            1
        };
        let mut parts: Vec<(usize, &mut [f32])> = split_by_tasks(&mut self.data, panels, threads, |j| j * k * nr)
            .into_iter()
            .map(|(r, mine)| (r.start, mine))
            .collect();
        let pack_panels = |(j0, dst): &mut (usize, &mut [f32])| {
            for (dj, panel) in dst.chunks_exact_mut((k * nr).max(1)).enumerate() {
                let c0 = (*j0 + dj) * nr;
                let w = nr.min(n - c0);
                if trans {
                    // B[p][c0 + q] = b[(c0 + q)·k + p]
                    transpose_into(isa, panel, nr, &b[c0 * k..], k, w, k);
                    if w < nr {
                        panel.chunks_exact_mut(nr).for_each(|row| row[w..].fill(0.0));
                    }
                } else {
                    copy_rows(panel, nr, w, &b[c0..], n);
                    if w < nr {
                        panel.chunks_exact_mut(nr).for_each(|row| row[w..].fill(0.0));
                    }
                }
            }
        };
        if threads == 1 {
            parts.iter_mut().for_each(pack_panels);
        } else {
            pool.run_with_state(&mut parts, panels, |part, _t, _range| pack_panels(part));
        }
    }

    /// Packs the B operand of the stride-1 input gradient as a forward conv of `dy`: the HWIO
    /// kernel `w [kh, kw, c, f]` flipped in space with its channels swapped,
    /// `B[(ky, kx, fo), ci] = w[kh−1−ky, kw−1−kx, ci, fo]` (`K = kh·kw·f` rows, `c` columns).
    pub(crate) fn pack_flipped(&mut self, isa: KernelIsa, [kh, kw, c, f]: [usize; 4], w: &[f32]) {
        assert_eq!(
            w.len(),
            kh * kw * c * f,
            "kernel has {} elements, expected {kh}×{kw}×{c}×{f}",
            w.len()
        );
        let nr = 2 * tile_shape(isa).1;
        let k = kh * kw * f;
        self.k = k;
        self.n = c;
        self.nr = nr;
        let panels = c.div_ceil(nr);
        self.data.clear();
        self.data.resize(panels * k * nr, 0.0);
        for (j, panel) in self.data.chunks_exact_mut((k * nr).max(1)).enumerate().take(panels) {
            let c0 = j * nr;
            let cols = nr.min(c - c0);
            for tap in 0..kh * kw {
                let (ky, kx) = (tap / kw, tap % kw);
                let src_tap = (kh - 1 - ky) * kw + (kw - 1 - kx);
                // Rows tap·f + fo of the panel: column q is w[src_tap, c0 + q, fo].
                let src = &w[(src_tap * c + c0) * f..];
                transpose_into(isa, &mut panel[tap * f * nr..(tap + 1) * f * nr], nr, src, f, cols, f);
            }
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Panel width (columns per panel).
    pub fn nr(&self) -> usize {
        self.nr
    }

    /// Number of column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// Panel `j` from row `k0` on (rows are `nr` apart).
    #[inline]
    pub(crate) fn panel_from(&self, j: usize, k0: usize) -> &[f32] {
        let start = (j * self.k + k0) * self.nr;
        &self.data[start..(j + 1) * self.k * self.nr]
    }

    /// Whether this pack fits `isa`'s micro-kernel and a `k × n` operand.
    pub fn fits(&self, isa: KernelIsa, k: usize, n: usize) -> bool {
        self.k == k && self.n == n && self.nr == 2 * tile_shape(isa).1
    }
}

/// B as the micro-kernel reads it: packed panels, or `panels` whole panels of `nr` columns of
/// a row-major matrix read in place (rows `stride` apart), for products with so few rows that
/// packing B would cost more than they do.
#[derive(Clone, Copy)]
pub(crate) enum BRef<'a> {
    Packed(&'a PackedB),
    Rows {
        b: &'a [f32],
        stride: usize,
        panels: usize,
        nr: usize,
    },
}

impl<'a> BRef<'a> {
    /// Number of column panels.
    pub fn panels(&self) -> usize {
        match *self {
            BRef::Packed(p) => p.panels(),
            BRef::Rows { panels, .. } => panels,
        }
    }

    /// Panel `j` from row `k0` on, rows [`BRef::stride`] apart.
    #[inline]
    pub fn panel_from(&self, j: usize, k0: usize) -> &'a [f32] {
        match *self {
            BRef::Packed(p) => p.panel_from(j, k0),
            BRef::Rows { b, stride, nr, .. } => &b[k0 * stride + j * nr..],
        }
    }

    /// Floats from one row of a panel to the next.
    pub fn stride(&self) -> usize {
        match *self {
            BRef::Packed(p) => p.nr(),
            BRef::Rows { stride, .. } => stride,
        }
    }
}

impl Default for PackedB {
    fn default() -> Self {
        PackedB::new()
    }
}

/// `dst[p·row..][..w] = src[p·ld..][..w]` for every whole `row`-float row of `dst` (the rest of
/// each row untouched). Whole rows of the micro-kernel's widths (14-row A tiles, 16- and
/// 32-column B panels) are fixed-size copies: a `memmove` call per short row cost a quarter of
/// the MNIST CNN's dense forward.
pub(crate) fn copy_rows(dst: &mut [f32], row: usize, w: usize, src: &[f32], ld: usize) {
    fn fixed<const N: usize>(dst: &mut [f32], src: &[f32], ld: usize) {
        for (p, d) in dst.as_chunks_mut::<N>().0.iter_mut().enumerate() {
            *d = src[p * ld..][..N].try_into().expect("a whole row");
        }
    }
    match (w, row) {
        (14, 14) => fixed::<14>(dst, src, ld),
        (16, 16) => fixed::<16>(dst, src, ld),
        (32, 32) => fixed::<32>(dst, src, ld),
        _ => {
            for (p, d) in dst.chunks_exact_mut(row.max(1)).enumerate() {
                d[..w].copy_from_slice(&src[p * ld..][..w]);
            }
        }
    }
}

/// `dst[p·ld + q] = src[q·src_ld + p]` for `q < cols`, `p < rows`. On AVX-512, each 16
/// columns of a destination row are one gather (the 16 source rows it reads stay in L1 for the
/// next 15 destination rows); elsewhere element by element in 16×16 blocks.
pub(crate) fn transpose_into(
    isa: KernelIsa,
    dst: &mut [f32],
    ld: usize,
    src: &[f32],
    src_ld: usize,
    cols: usize,
    rows: usize,
) {
    if cols == 0 || rows == 0 {
        return;
    }
    assert!(
        (cols - 1) * src_ld + rows <= src.len(),
        "transpose source out of bounds"
    );
    assert!(
        (rows - 1) * ld + cols <= dst.len(),
        "transpose destination out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if isa.checked() == KernelIsa::Avx512 && (cols - 1) * src_ld < i32::MAX as usize / 4 {
        // SAFETY: `checked()` confirmed avx512f; the bounds were asserted above and the byte
        // offsets of the gathers fit in i32.
        unsafe { transpose_gather(dst, ld, src, src_ld, cols, rows) };
        return;
    }
    const B: usize = 16;
    for p0 in (0..rows).step_by(B) {
        let p1 = (p0 + B).min(rows);
        for q0 in (0..cols).step_by(B) {
            for q in q0..(q0 + B).min(cols) {
                let s = &src[q * src_ld + p0..q * src_ld + p1];
                for (i, &v) in s.iter().enumerate() {
                    dst[(p0 + i) * ld + q] = v;
                }
            }
        }
    }
}

/// [`transpose_into`] by 16-lane gathers. Safety: the CPU has avx512f, the bounds asserted in
/// `transpose_into` hold and `(cols − 1)·src_ld·4` fits in i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_gather(dst: &mut [f32], ld: usize, src: &[f32], src_ld: usize, cols: usize, rows: usize) {
    use std::arch::x86_64::*;
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(src_ld as i32));
    for q0 in (0..cols).step_by(16) {
        let w = (cols - q0).min(16);
        let mask: __mmask16 = (((1u32 << w) - 1) & 0xffff) as u16;
        let base = src.as_ptr().add(q0 * src_ld);
        for p in 0..rows {
            let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, base.add(p));
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(p * ld + q0), mask, v);
        }
    }
}

/// Calls `f` with the thread-local pack `key`, or with a fresh one when it is already in use on
/// this thread (a kernel called from inside another's task).
pub(crate) fn with_pack<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<PackedB>>,
    f: impl FnOnce(&mut PackedB) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut p) => f(&mut p),
        Err(_) => f(&mut PackedB::new()),
    })
}
