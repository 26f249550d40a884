//! Batch normalisation over `x [rows, c]` (rows = N·H·W): batch moments, normalise + scale +
//! shift (+ a residual) + activation in one pass, the backward pass fused with the mask of the
//! activation after BN, and the moving-statistics update.
//!
//! Moments are `[2, c]`: the mean row, then the biased variance row. With `x̂ = (x − μ)/√(σ² + ε)`
//! and `g = act'(y)·dy` (just `dy` without an activation), the backward pass is
//! `dx = γ/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂))`, `dγ = Σ g·x̂`, `dβ = Σ g`.
//!
//! Reductions sum 16-row blocks in f32, then the blocks in f64, per thread over contiguous row
//! ranges; per-thread partials are combined in thread order (so results depend only on the
//! thread count). Per-channel coefficients are computed in f64.

use std::ops::Range;

use super::activation::Act;
use super::channel_period;
use super::elementwise::{par_rows, parallel};
use super::epilogue::shifted_sums;
use super::norm_apply::{self, Affine};
use super::norm_grad::{
    grad_input, grad_sums, ActGrad, ActIn, DxCoef, LinearGrad, ReluGrad, Rows, SigmoidGrad, TanhGrad,
};
use super::Ctx;

/// Runs `f(rows, partial)` over contiguous row ranges (one per thread when the work of `len`
/// values is large enough) and returns the partials (`width` f64 each) summed in thread order.
fn par_partials<F>(ctx: &Ctx, rows: usize, len: usize, width: usize, f: F) -> Vec<f64>
where
    F: Fn(Range<usize>, &mut [f64]) + Sync,
{
    if !parallel(ctx, len) || rows < 2 {
        let mut p = vec![0.0; width];
        f(0..rows, &mut p);
        return p;
    }
    let mut parts = vec![vec![0f64; width]; ctx.threads()];
    ctx.pool.run_with_state(&mut parts, rows, |p, _t, r| {
        if !r.is_empty() {
            f(r, p)
        }
    });
    let mut total = vec![0f64; width];
    for p in &parts {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// Writes `[mean; biased variance]` of the columns of `x [rows, c]` into `out [2, c]`. Sums are
/// taken about the first row (shifted) to avoid cancellation.
pub fn moments(ctx: &Ctx, rows: usize, c: usize, x: &[f32], out: &mut [f32]) {
    assert!(x.len() == rows * c && out.len() == 2 * c, "moments: operand lengths");
    if rows == 0 || c == 0 {
        out.fill(0.0);
        return;
    }
    let shift = &x[..c];
    let isa = ctx.isa;
    let mut sums = vec![0f64; 2 * c];
    for part in channel_period::parts(c, rows) {
        let (pc, xs, sh) = (part.c, &x[part.range.clone()], part.expand(shift));
        let s = par_partials(ctx, part.rows, xs.len(), 2 * pc, |r, p| {
            let (s1, s2) = p.split_at_mut(pc);
            shifted_sums(isa, &xs[r.start * pc..r.end * pc], &sh, s1, s2);
        });
        part.fold(&s, &mut sums);
    }
    let inv = 1.0 / rows as f64;
    for ch in 0..c {
        let d = sums[ch] * inv;
        out[ch] = (shift[ch] as f64 + d) as f32;
        out[c + ch] = (sums[c + ch] * inv - d * d).max(0.0) as f32;
    }
}

/// `scale[c] = gamma[c] / √(var[c] + eps)` (f64 arithmetic); `gamma = None` means γ = 1.
pub fn bn_scale(var: &[f32], gamma: Option<&[f32]>, eps: f32, scale: &mut [f32]) {
    assert_eq!(var.len(), scale.len(), "bn_scale: operand lengths");
    for (ch, (s, &v)) in scale.iter_mut().zip(var).enumerate() {
        let g = gamma.map_or(1.0, |g| g[ch] as f64);
        *s = (g / (v as f64 + eps as f64).sqrt()) as f32;
    }
}

/// `y = act((x − mean)·scale + beta [+ residual])` per channel of `x [rows, c]` (`scale` from
/// [`bn_scale`]).
#[allow(clippy::too_many_arguments)]
pub fn bn_apply(
    ctx: &Ctx,
    c: usize,
    x: &[f32],
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    y: &mut [f32],
) {
    assert!(
        c > 0 && x.len() == y.len() && x.len().is_multiple_of(c),
        "bn_apply: operand lengths"
    );
    assert!(
        mean.len() == c && scale.len() == c && beta.len() == c,
        "bn_apply: per-channel operands"
    );
    if let Some(r) = residual {
        assert_eq!(r.len(), x.len(), "bn_apply: residual length");
    }
    for part in channel_period::parts(c, x.len() / c) {
        let r = part.range.clone();
        let (mean, scale, beta) = (part.expand(mean), part.expand(scale), part.expand(beta));
        let res = residual.map(|v| &v[r.clone()]);
        apply_rows(ctx, part.c, &x[r.clone()], &mean, &scale, &beta, res, act, &mut y[r]);
    }
}

/// [`bn_apply`] over rows of `c` values (the per-channel operands `c` long).
#[allow(clippy::too_many_arguments)]
fn apply_rows(
    ctx: &Ctx,
    c: usize,
    x: &[f32],
    mean: &[f32],
    scale: &[f32],
    beta: &[f32],
    residual: Option<&[f32]>,
    act: Act,
    y: &mut [f32],
) {
    let k = Affine { mean, scale, beta };
    par_rows(ctx, x.len() / c, c, y, |rows, out| {
        norm_apply::apply_rows(ctx.isa, c, x, k, residual, act, rows, out)
    });
}

/// Operands of the BN backward pass over `x [rows, c]`.
#[derive(Clone, Copy, Debug)]
pub struct BnBackward<'a> {
    pub c: usize,
    /// BN's input.
    pub x: &'a [f32],
    /// The batch moments `[2, c]` BN normalised with.
    pub moments: &'a [f32],
    /// γ (`None`: dx is not needed).
    pub gamma: Option<&'a [f32]>,
    pub eps: f32,
    /// The activation after BN, and its output `y` (needed unless linear, or recomputed).
    pub act: Act,
    pub y: Option<&'a [f32]>,
    /// β, given to recompute a ReLU's mask from `x` instead of reading `y`: the forward's
    /// [`bn_apply`] without a residual made `y = max((x − μ)·scale + β, 0)`, and the same f32
    /// operations here give the same sign bit for bit. One activation-sized operand fewer to
    /// read in each of the two passes.
    pub beta: Option<&'a [f32]>,
    /// Gradient of the activation's output (of BN's output when linear).
    pub dy: &'a [f32],
}

/// BN backward fused with the activation's mask: writes `dx` (when given, needs γ), `dγ` and
/// `dβ` (when given).
pub fn bn_backward(
    ctx: &Ctx,
    b: &BnBackward,
    dx: Option<&mut [f32]>,
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) {
    let c = b.c;
    assert!(
        c > 0 && b.x.len().is_multiple_of(c) && b.dy.len() == b.x.len(),
        "bn_backward: operand lengths"
    );
    assert_eq!(b.moments.len(), 2 * c, "bn_backward: moments must be [2, {c}]");
    if let Some(beta) = b.beta {
        assert!(
            b.act == Act::Relu && b.gamma.is_some(),
            "bn_backward: only a ReLU's mask is recomputed, and it needs gamma"
        );
        assert_eq!(beta.len(), c, "bn_backward: beta length");
    } else if b.act != Act::Linear {
        let y =
            b.y.expect("bn_backward: the activation's output is needed for its gradient");
        assert_eq!(y.len(), b.x.len(), "bn_backward: activation output length");
    }
    // One monomorphised loop nest per activation (no branch inside the vector loops).
    match b.act {
        Act::Linear => backward::<LinearGrad>(ctx, b, dx, dgamma, dbeta),
        Act::Relu => backward::<ReluGrad>(ctx, b, dx, dgamma, dbeta),
        Act::Sigmoid => backward::<SigmoidGrad>(ctx, b, dx, dgamma, dbeta),
        Act::Tanh => backward::<TanhGrad>(ctx, b, dx, dgamma, dbeta),
    }
}

/// [`bn_backward`] with the activation's gradient `G`: two passes over each
/// [`Part`](channel_period::Part) of the rows (`norm_grad`).
fn backward<G: ActGrad>(
    ctx: &Ctx,
    b: &BnBackward,
    dx: Option<&mut [f32]>,
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) {
    let c = b.c;
    let rows = b.x.len() / c;
    let (mean, var) = b.moments.split_at(c);
    let inv: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + b.eps as f64).sqrt()) as f32)
        .collect();
    let mut scale = vec![0f32; c];
    let beta = match (b.act, b.beta, b.gamma) {
        (Act::Linear, ..) => None,
        (_, Some(beta), Some(gamma)) => {
            bn_scale(var, Some(gamma), b.eps, &mut scale);
            Some(beta)
        }
        _ => None,
    };
    let parts = channel_period::parts(c, rows);
    // Pass 1: Σg and Σg·x̂ per channel.
    let mut sums = vec![0f64; 2 * c];
    for part in &parts {
        let r = part.range.clone();
        let (mean, inv, scale) = (part.expand(mean), part.expand(&inv), part.expand(&scale));
        let beta = beta.map(|v| part.expand(v));
        let rows = part_rows(b, part, &scale, beta.as_deref());
        let s = par_partials(ctx, part.rows, r.len(), 2 * part.c, |r, p| {
            let (sg, sgx) = p.split_at_mut(part.c);
            grad_sums::<G>(ctx.isa, rows, r, &mean, &inv, sg, sgx);
        });
        part.fold(&s, &mut sums);
    }
    let (sum_g, sum_gx) = sums.split_at(c);
    if let Some(d) = dgamma {
        assert_eq!(d.len(), c, "bn_backward: dgamma length");
        d.iter_mut().zip(sum_gx).for_each(|(o, &v)| *o = v as f32);
    }
    if let Some(d) = dbeta {
        assert_eq!(d.len(), c, "bn_backward: dbeta length");
        d.iter_mut().zip(sum_g).for_each(|(o, &v)| *o = v as f32);
    }
    let Some(dx) = dx else { return };
    assert_eq!(dx.len(), b.x.len(), "bn_backward: dx length");
    let gamma = b.gamma.expect("bn_backward: dx needs gamma");
    assert_eq!(gamma.len(), c, "bn_backward: gamma length");
    // dx = k·g − k·inv·mean(g·x̂)·(x − μ) − k·mean(g), k = γ·inv.
    let m = rows.max(1) as f64;
    let (mut ka, mut kb, mut kd) = (vec![0f32; c], vec![0f32; c], vec![0f32; c]);
    for ch in 0..c {
        let s = 1.0 / (var[ch] as f64 + b.eps as f64).sqrt();
        let k = gamma[ch] as f64 * s;
        ka[ch] = k as f32;
        kb[ch] = (-k * s * sum_gx[ch] / m) as f32;
        kd[ch] = (-k * sum_g[ch] / m) as f32;
    }
    for part in &parts {
        let r = part.range.clone();
        let (mean, scale) = (part.expand(mean), part.expand(&scale));
        let beta = beta.map(|v| part.expand(v));
        let rows = part_rows(b, part, &scale, beta.as_deref());
        let k = [part.expand(&ka), part.expand(&kb), part.expand(&kd)];
        let k = DxCoef {
            ka: &k[0],
            kb: &k[1],
            kd: &k[2],
            mean: &mean,
        };
        par_rows(ctx, part.rows, part.c, &mut dx[r], |r, out| {
            grad_input::<G>(ctx.isa, rows, r, k, out)
        });
    }
}

/// The operands of `b`'s passes over the values of `part` (whose per-channel operands are
/// `scale`, `beta`); `beta` is given to recompute a ReLU's input.
fn part_rows<'a>(
    b: &BnBackward<'a>,
    part: &channel_period::Part,
    scale: &'a [f32],
    beta: Option<&'a [f32]>,
) -> Rows<'a> {
    let r = part.range.clone();
    let act = match (b.act, beta) {
        (Act::Linear, _) => ActIn::None,
        (_, Some(beta)) => ActIn::Recomputed { scale, beta },
        _ => ActIn::Output(&b.y.expect("checked in bn_backward")[r.clone()]),
    };
    Rows {
        c: part.c,
        x: &b.x[r.clone()],
        dy: &b.dy[r],
        act,
    }
}

/// `out = momentum·moving + (1 − momentum)·stat` (f64 arithmetic).
pub fn moving_average(moving: &[f32], stat: &[f32], momentum: f32, out: &mut [f32]) {
    assert!(
        moving.len() == stat.len() && out.len() == stat.len(),
        "moving_average: operand lengths"
    );
    let m = momentum as f64;
    for ((o, &v), &s) in out.iter_mut().zip(moving).zip(stat) {
        *o = (m * v as f64 + (1.0 - m) * s as f64) as f32;
    }
}

/// [`moving_average`] updating `moving` in place.
pub fn moving_average_in_place(moving: &mut [f32], stat: &[f32], momentum: f32) {
    assert_eq!(moving.len(), stat.len(), "moving_average: operand lengths");
    let m = momentum as f64;
    for (v, &s) in moving.iter_mut().zip(stat) {
        *v = (m * *v as f64 + (1.0 - m) * s as f64) as f32;
    }
}
