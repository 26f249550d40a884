
/// `acc += a·x`, elementwise: the vectorised inner loop of the GEMM-shaped kernels.
#[inline(always)]
pub(crate) fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (s, &v) in acc.iter_mut().zip(x) {
        *s = madd(a, v, *s);
    }
}

/// `s + a·b`: one fused multiply-add when the target has FMA (e.g. with
/// `-C target-cpu=native`), else a multiply and an add.
#[inline(always)]
pub(crate) fn madd(a: f32, b: f32, s: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, s)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        s + a * b
    }
}

#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    x.exp()
}

#[inline(always)]
pub(crate) fn ln(x: f64) -> f64 {
    x.ln()
}

#[inline(always)]
pub(crate) fn sqrt(x: f64) -> f64 {
    x.sqrt()
}
