
/// `acc += a·x`, elementwise: the vectorised inner loop of the GEMM-shaped kernels (fused
/// multiply-adds when the target has FMA, e.g. with `-C target-cpu=native`).
#[inline(always)]
pub(crate) fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (s, &v) in acc.iter_mut().zip(x) {
        #[cfg(target_feature = "fma")]
        {
            *s = a.mul_add(v, *s);
        }
        #[cfg(not(target_feature = "fma"))]
        {
            *s += a * v;
        }
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

#[inline(always)]
pub(crate) fn tanh(x: f64) -> f64 {
    x.tanh()
}
