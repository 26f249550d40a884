
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
    let tc: [[V; 4]; 4] = array_with(|j| winograd_bt(d[0][j], d[1][j], d[2][j], d[3][j]));
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
    let s0: [V; 4] = array_with(|j| m[j] + m[4 + j] + m[8 + j]);
    let s1: [V; 4] = array_with(|j| m[4 + j] - m[8 + j] - m[12 + j]);
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
    let cols: [[V; 3]; 4] = array_with(|j| winograd_gt(m[j], m[4 + j], m[8 + j], m[12 + j]));
    let mut k = [V::zero(); 9];
    for kh in 0..3 {
        k[3 * kh..3 * kh + 3].copy_from_slice(&winograd_gt(cols[0][kh], cols[1][kh], cols[2][kh], cols[3][kh]));
    }
    k
}

// ---- Winograd F(4×4, 3×3): a 4×4 output tile from a 6×6 window, 36 multiplies per tile and
// channel pair instead of 144 (Lavin & Gray's matrices; rounding a few times F(2×2)'s):
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1],
//   G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1],
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].

/// `Bᵀ d` of six values.
#[inline(always)]
fn winograd_bt6(d: [V; 6]) -> [V; 6] {
    let (two, four, five) = (V::splat(2.0), V::splat(4.0), V::splat(5.0));
    let (p, q) = (d[4] - d[2], d[3] - d[1]);
    [
        (d[4] - d[2] * five) + d[0] * four,
        (d[3] + d[4]) - (d[1] + d[2]) * four,
        (d[4] - d[3]) + (d[1] - d[2]) * four,
        p + q * two,
        p - q * two,
        (d[5] - d[3] * five) + d[1] * four,
    ]
}

/// `G g` of three kernel taps.
#[inline(always)]
fn winograd_g6(g0: V, g1: V, g2: V) -> [V; 6] {
    let (sixth, quarter) = (V::splat(1.0 / 6.0), V::splat(0.25));
    let even = g0 + g2;
    let (a, b) = (g0 * quarter + g2, g1 * V::splat(0.5));
    [
        g0 * quarter,
        V::zero() - (even + g1) * sixth,
        V::zero() - (even - g1) * sixth,
        (a + b) * sixth,
        (a - b) * sixth,
        g2,
    ]
}

/// `Aᵀ m` of six products.
#[inline(always)]
fn winograd_at6(m: [V; 6]) -> [V; 4] {
    let (s, d) = (m[1] + m[2], m[1] - m[2]);
    let (t, e) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + s + t,
        d + e * V::splat(2.0),
        s + t * V::splat(4.0),
        (d + e * V::splat(8.0)) + m[5],
    ]
}

/// `G g Gᵀ` (6×6, row-major) of sixteen 3×3 kernels `g` (row-major taps, one per lane).
#[inline(always)]
pub(crate) fn winograd_kernel4(g: [V; 9]) -> [V; 36] {
    // The columns of G g, then G on each of its rows.
    let cols: [[V; 6]; 3] = array_with(|j| winograd_g6(g[j], g[3 + j], g[6 + j]));
    let mut u = [V::zero(); 36];
    for i in 0..6 {
        u[6 * i..6 * i + 6].copy_from_slice(&winograd_g6(cols[0][i], cols[1][i], cols[2][i]));
    }
    u
}

/// `Bᵀ d B` (6×6, row-major) of a 6×6 input window `d[row][column]` of sixteen channels.
#[inline(always)]
pub(crate) fn winograd_input4(d: [[V; 6]; 6]) -> [V; 36] {
    let cols: [[V; 6]; 6] = array_with(|j| winograd_bt6(array_with(|i| d[i][j])));
    let mut v = [V::zero(); 36];
    for i in 0..6 {
        v[6 * i..6 * i + 6].copy_from_slice(&winograd_bt6(array_with(|j| cols[j][i])));
    }
    v
}

/// `Aᵀ m A` (4×4, row-major) of the 6×6 products `m` (row-major) of sixteen channels.
#[inline(always)]
pub(crate) fn winograd_output4(m: [V; 36]) -> [V; 16] {
    let cols: [[V; 4]; 6] = array_with(|j| winograd_at6(array_with(|i| m[6 * i + j])));
    let mut y = [V::zero(); 16];
    for i in 0..4 {
        y[4 * i..4 * i + 4].copy_from_slice(&winograd_at6(array_with(|j| cols[j][i])));
    }
    y
}
