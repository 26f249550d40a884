
// ---- Winograd F(2×2, 3×3) (Lavin & Gray 2015): the transforms of `kernels_winograd` --------
// A 2×2 output tile from a 4×4 input window d and a 3×3 kernel g: Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A,
// 16 multiplies per tile and channel pair instead of 36. Matrices (rows):
//   G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],  Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],
//   Aᵀ = [1 1 1 0; 0 1 −1 −1].

/// `G g Gᵀ` (4×4, row-major) of sixteen 3×3 kernels `g` (row-major taps, one per lane).
#[inline(always)]
pub(crate) fn winograd_kernel(g: [V; 9]) -> [V; 16] {
    let half = V::splat(0.5);
    // The rows of G g: 4 × 3.
    let mut r = [V::zero(); 12];
    for j in 0..3 {
        let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
        r[j] = a;
        r[3 + j] = (a + b + c) * half;
        r[6 + j] = (a - b + c) * half;
        r[9 + j] = c;
    }
    let mut u = [V::zero(); 16];
    for i in 0..4 {
        let (a, b, c) = (r[3 * i], r[3 * i + 1], r[3 * i + 2]);
        u[4 * i] = a;
        u[4 * i + 1] = (a + b + c) * half;
        u[4 * i + 2] = (a - b + c) * half;
        u[4 * i + 3] = c;
    }
    u
}

/// `Bᵀ x` of a column of four values.
#[inline(always)]
fn winograd_bt(a: V, b: V, c: V, e: V) -> [V; 4] {
    [a - c, b + c, c - b, b - e]
}

/// `Bᵀ d B` (4×4, row-major) of a 4×4 input window `d[row][column]` of sixteen channels.
#[inline(always)]
pub(crate) fn winograd_input(d: [[V; 4]; 4]) -> [V; 16] {
    // tc[j] = Bᵀ (column j of d), the columns of Bᵀ d.
    let tc: [[V; 4]; 4] = core::array::from_fn(|j| winograd_bt(d[0][j], d[1][j], d[2][j], d[3][j]));
    // Row i of (Bᵀ d) B is Bᵀ (row i of Bᵀ d).
    let mut v = [V::zero(); 16];
    for i in 0..4 {
        v[4 * i..4 * i + 4].copy_from_slice(&winograd_bt(tc[0][i], tc[1][i], tc[2][i], tc[3][i]));
    }
    v
}

/// `Aᵀ m A` (2×2, row-major) of the 4×4 products `m` (row-major) of sixteen channels.
#[inline(always)]
pub(crate) fn winograd_output(m: [V; 16]) -> [V; 4] {
    let s0: [V; 4] = core::array::from_fn(|j| m[j] + m[4 + j] + m[8 + j]);
    let s1: [V; 4] = core::array::from_fn(|j| m[4 + j] - m[8 + j] - m[12 + j]);
    [
        s0[0] + s0[1] + s0[2],
        s0[1] - s0[2] - s0[3],
        s1[0] + s1[1] + s1[2],
        s1[1] - s1[2] - s1[3],
    ]
}
