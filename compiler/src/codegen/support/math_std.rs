
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
