
/// `acc += a·x`, elementwise: the vectorised inner loop of the GEMM-shaped kernels.
#[inline(always)]
pub(crate) fn axpy(acc: &mut [f32], a: f32, x: &[f32]) {
    for (s, &v) in acc.iter_mut().zip(x) {
        *s = madd(a, v, *s);
    }
}

/// `s + a·b` (`core` has no `mul_add`: a multiply and an add).
#[inline(always)]
pub(crate) fn madd(a: f32, b: f32, s: f32) -> f32 {
    s + a * b
}

// `core` has no transcendental functions: these are accurate to a few ulps of f64, far more
// than the f32 results need.

/// `e^x`: Cody–Waite reduction to `|r| ≤ ln 2 / 2`, Taylor series, exact scaling by `2^k`.
pub(crate) fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.7 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let k = (x * core::f64::consts::LOG2_E + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
    let r = (x - k as f64 * LN2_HI) - k as f64 * LN2_LO;
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for i in 1..16 {
        term *= r / i as f64;
        sum += term;
    }
    // 2^k as two normal factors so that subnormal results stay exact.
    let (k1, k2) = (k / 2, k - k / 2);
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    sum * pow2(k1) * pow2(k2)
}

/// `√x` by Newton's method from the halved exponent.
pub(crate) fn sqrt(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 || x == f64::INFINITY {
        return x;
    }
    let mut y = f64::from_bits((x.to_bits() >> 1) + (0x3FF0_0000_0000_0000 >> 1));
    for _ in 0..8 {
        y = 0.5 * (y + x / y);
    }
    y
}
