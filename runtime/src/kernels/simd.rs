//! The vector operations the GEMM micro-kernel is written in, one implementation per ISA:
//! AVX-512 (`__m512`, 16 lanes), AVX2+FMA (`__m256`, 8 lanes) and a portable one (`[f32; 8]`
//! arrays that LLVM vectorises for the baseline target).
//!
//! Every method is `#[inline(always)]` and has no `#[target_feature]` of its own: it is only
//! ever inlined into a `#[target_feature]` entry point of the matching ISA (see
//! `microkernel.rs`), where the intrinsics inline too. Calling the AVX methods anywhere else
//! is undefined behaviour on CPUs without the feature, hence `unsafe`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Vector operations of one ISA plus its register-tile shape.
pub(crate) trait Simd: Copy {
    type V: Copy;
    /// f32 lanes per vector.
    const LANES: usize;
    /// Rows of the micro-kernel's register tile (accumulators = MR × NV vectors).
    const MR: usize;

    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads lanes `0..n` (n ≤ LANES), zero elsewhere; never touches memory past `p + n`.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// Stores lanes `0..n` (n ≤ LANES) only.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    /// `a·b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane `if a > b { x } else { y }` (false when either is NaN).
    unsafe fn select_gt(a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
}

/// AVX-512F (with FMA): 32 zmm registers, so a 14 × 32 tile (28 accumulators).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    const MR: usize = 14;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        _mm512_maskz_loadu_ps(mask16(n), p)
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m512, n: usize) {
        _mm512_mask_storeu_ps(p, mask16(n), v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn select_gt(a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b), y, x)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// AVX2 + FMA: 16 ymm registers, so a 6 × 16 tile (12 accumulators).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn mask8(n: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
}

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    const MR: usize = 6;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        _mm256_maskload_ps(p, mask8(n))
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
        _mm256_maskstore_ps(p, mask8(n), v)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn select_gt(a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
        _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_GT_OQ>(a, b))
    }
}

/// Any CPU: 8-lane arrays; a 4 × 16 tile keeps the accumulators within 16 SSE registers.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = [f32; 8];
    const LANES: usize = 8;
    const MR: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        p.cast::<[f32; 8]>().read_unaligned()
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 8]) {
        p.cast::<[f32; 8]>().write_unaligned(v)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> [f32; 8] {
        let mut v = [0.0; 8];
        for (i, x) in v.iter_mut().enumerate().take(n) {
            *x = *p.add(i);
        }
        v
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: [f32; 8], n: usize) {
        for (i, x) in v.iter().enumerate().take(n) {
            *p.add(i) = *x;
        }
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        // mul + add (not `mul_add`, which is a libm call without hardware FMA).
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn sub(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    unsafe fn max(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i].max(b[i]))
    }
    #[inline(always)]
    unsafe fn select_gt(a: [f32; 8], b: [f32; 8], x: [f32; 8], y: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| if a[i] > b[i] { x[i] } else { y[i] })
    }
}

/// Lanes `0..n` from `p` (zero past them), `n ≤ LANES`: a whole load when `n` is all of them.
///
/// # Safety
/// The CPU must support `S`; `p` must be valid for `n` reads.
#[inline(always)]
pub(crate) unsafe fn load_n<S: Simd>(p: *const f32, n: usize) -> S::V {
    if n == S::LANES {
        S::load(p)
    } else {
        S::load_partial(p, n.min(S::LANES))
    }
}

/// Stores lanes `0..n` of `v` at `p`, `n ≤ LANES`.
///
/// # Safety
/// The CPU must support `S`; `p` must be valid for `n` writes.
#[inline(always)]
pub(crate) unsafe fn store_n<S: Simd>(p: *mut f32, v: S::V, n: usize) {
    if n == S::LANES {
        S::store(p, v)
    } else {
        S::store_partial(p, v, n.min(S::LANES))
    }
}

/// Lanes `0..len` of `s` (zero past them).
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn ld<S: Simd>(s: &[f32], len: usize) -> S::V {
    load_n::<S>(s[..len].as_ptr(), len)
}

/// Stores lanes `0..len` of `v` into `d`.
///
/// # Safety
/// The CPU must support `S`.
#[inline(always)]
pub(crate) unsafe fn st<S: Simd>(d: &mut [f32], v: S::V, len: usize) {
    store_n::<S>(d[..len].as_mut_ptr(), v, len)
}

/// Runs `$body` with the type `$S` bound to the [`Simd`] implementation of `$isa` (after
/// [`KernelIsa::checked`](super::KernelIsa::checked)), compiled with that ISA's target features
/// by `KernelIsa::vectorize`. With `narrow = cond`, AVX-512 runs 8-lane AVX2 vectors when
/// `cond` holds (a few output channels fill half a 16-lane vector at most).
macro_rules! with_simd {
    ($isa:expr, $S:ident, $body:block) => {
        $crate::kernels::simd::with_simd!($isa, narrow = false, $S, $body)
    };
    ($isa:expr, narrow = $narrow:expr, $S:ident, $body:block) => {{
        let isa: $crate::kernels::KernelIsa = $isa.checked();
        match isa {
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::KernelIsa::Avx512 if !$narrow => {
                type $S = $crate::kernels::simd::Avx512;
                isa.vectorize(
                    #[inline(always)]
                    || $body,
                )
            }
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::KernelIsa::Avx512 | $crate::kernels::KernelIsa::Avx2 => {
                type $S = $crate::kernels::simd::Avx2;
                isa.vectorize(
                    #[inline(always)]
                    || $body,
                )
            }
            _ => {
                type $S = $crate::kernels::simd::Portable;
                $body
            }
        }
    }};
}
pub(crate) use with_simd;
