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
                    transpose_into(panel, nr, &b[c0 * k..], k, w, k);
                    if w < nr {
                        panel.chunks_exact_mut(nr).for_each(|row| row[w..].fill(0.0));
                    }
                } else {
                    for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                        dst[..w].copy_from_slice(&b[p * n + c0..p * n + c0 + w]);
                        dst[w..].fill(0.0);
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
                transpose_into(&mut panel[tap * f * nr..(tap + 1) * f * nr], nr, src, f, cols, f);
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

impl Default for PackedB {
    fn default() -> Self {
        PackedB::new()
    }
}

/// `dst[p·ld + q] = src[q·src_ld + p]` for `q < cols`, `p < rows`: a transpose in 16×16 blocks
/// so both sides stay within a few cache lines.
pub(crate) fn transpose_into(dst: &mut [f32], ld: usize, src: &[f32], src_ld: usize, cols: usize, rows: usize) {
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
