//! Packing of the B operand into column panels: `[ceil(n/NR)][k][NR]`, each panel holding NR
//! consecutive columns for every k (zero-padded past `n`), so the micro-kernel streams one
//! panel contiguously. NR is twice the ISA's vector width (32 for AVX-512).

use super::microkernel::tile_shape;
use super::KernelIsa;

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
        assert_eq!(b.len(), k * n, "B has {} elements, expected {k}×{n}", b.len());
        let nr = 2 * tile_shape(isa).1;
        self.k = k;
        self.n = n;
        self.nr = nr;
        let panels = n.div_ceil(nr);
        self.data.clear();
        self.data.resize(panels * k * nr, 0.0);
        for (j, panel) in self.data.chunks_exact_mut((k * nr).max(1)).enumerate().take(panels) {
            let c0 = j * nr;
            let w = nr.min(n - c0);
            if trans {
                // B[p][c0 + q] = b[(c0 + q)·k + p]
                for q in 0..w {
                    let src = &b[(c0 + q) * k..(c0 + q + 1) * k];
                    for (p, &v) in src.iter().enumerate() {
                        panel[p * nr + q] = v;
                    }
                }
            } else {
                for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
                    dst[..w].copy_from_slice(&b[p * n + c0..p * n + c0 + w]);
                }
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
