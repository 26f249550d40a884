
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

// The kernel gradient, F(3×3, 2×2), the transpose of the forward's F(2×2, 3×3): per 2×2 tile u
// of dy and its 4×4 input window d, dw = G'ᵀ [(A' u A'ᵀ) ⊙ (Bᵀ d B)] G', summed over the tiles
// before the last transform. A' = [1 0; 1 1; 1 −1; 0 1] (Aᵀ transposed, the sign of its last
// row moved into G'ᵀ = [1 ½ ½ 0; 0 ½ −½ 0; 0 ½ ½ −1]).

/// `A' (p, q)`.
#[inline(always)]
fn winograd_a(p: V, q: V) -> [V; 4] {
    [p, p + q, p - q, q]
}

/// `A' u A'ᵀ` (4×4, row-major) of a 2×2 tile `u[row][column]` of sixteen output channels.
#[inline(always)]
pub(crate) fn winograd_dy(u: [[V; 2]; 2]) -> [V; 16] {
    // The columns of A' u, then A' on each of its rows.
    let (c0, c1) = (winograd_a(u[0][0], u[1][0]), winograd_a(u[0][1], u[1][1]));
    let mut w = [V::zero(); 16];
    for i in 0..4 {
        w[4 * i..4 * i + 4].copy_from_slice(&winograd_a(c0[i], c1[i]));
    }
    w
}

/// `G'ᵀ (m0, m1, m2, m3)`.
#[inline(always)]
fn winograd_gt(m0: V, m1: V, m2: V, m3: V) -> [V; 3] {
    let half = V::splat(0.5);
    let s = (m1 + m2) * half;
    [m0 + s, (m1 - m2) * half, s - m3]
}

/// `G'ᵀ m G'` (3×3, row-major taps) of the 4×4 reduced products `m` (row-major) of sixteen
/// channel pairs.
#[inline(always)]
pub(crate) fn winograd_dw(m: [V; 16]) -> [V; 9] {
    // cols[j][kh] = (G'ᵀ m)[kh][j], then G'ᵀ on each row kh of G'ᵀ m.
    let cols: [[V; 3]; 4] = core::array::from_fn(|j| winograd_gt(m[j], m[4 + j], m[8 + j], m[12 + j]));
    let mut k = [V::zero(); 9];
    for kh in 0..3 {
        k[3 * kh..3 * kh + 3].copy_from_slice(&winograd_gt(cols[0][kh], cols[1][kh], cols[2][kh], cols[3][kh]));
    }
    k
}
