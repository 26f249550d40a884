//! Bodies of the batch-norm templates (moments, apply, the backward family, moving averages)
//! and of the losses. Statistics, sums and losses are accumulated in f64, as the interpreter
//! does; per-element work is f32 with per-channel coefficients.

use crate::ir::{Activation, LossKind, Moment};
use crate::kernel_ir::{BnSource, PoolGeom};

use super::kernels::{act_fn, act_grad_expr};
use super::writer::{f32_typed, Code};

/// Keras's `epsilon()`, the clip bound for probabilities.
const CLIP: &str = "1e-7f32";

/// `(x) -> (moments [2, C])`: mean, then biased variance (two passes, f64).
pub(crate) fn moments(c: &mut Code, rows: usize, ch: usize) {
    c.line(format!("let (mut mean, mut var) = ([0f64; {ch}], [0f64; {ch}]);"));
    c.open(format!("for xr in x.chunks_exact({ch})"));
    c.line("for (m, &v) in mean.iter_mut().zip(xr) { *m += v as f64; }");
    c.close();
    c.line(format!("for m in mean.iter_mut() {{ *m /= {rows}.0; }}"));
    c.open(format!("for xr in x.chunks_exact({ch})"));
    c.line("for ((s, &v), &m) in var.iter_mut().zip(xr).zip(&mean) { let d = v as f64 - m; *s += d * d; }");
    c.close();
    c.open(format!("for j in 0..{ch}"));
    c.line("moments[j] = mean[j] as f32;");
    c.line(format!("moments[{ch} + j] = (var[j] / {rows}.0) as f32;"));
    c.close();
}

/// `y = act(γ·(x − mean)/√(var + ε) + β [+ res])`, max-pooled with an argmax when `pool` is
/// given (see [`bn_apply_pooled`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_apply(
    c: &mut Code,
    _rows: usize,
    ch: usize,
    eps: f32,
    act: Activation,
    source: BnSource,
    residual: bool,
    pool: Option<&PoolGeom>,
) -> Result<(), String> {
    if act == Activation::Softmax {
        return Err("softmax after batch normalisation is not elementwise".into());
    }
    let (mean, var) = match source {
        BnSource::Batch => (format!("moments[..{ch}]"), format!("moments[{ch}..]")),
        BnSource::Moving => ("mean[..]".to_string(), "var[..]".to_string()),
    };
    c.line(format!("const EPS: f64 = {} as f64;", f32_typed(eps)));
    bn_scale(c, ch, &mean, &var);
    if let Some(g) = pool {
        if residual || !matches!(act, Activation::Linear | Activation::Relu) {
            return Err("a pooled batch norm takes no residual and a linear or ReLU activation".into());
        }
        bn_apply_pooled(c, g, act);
        return Ok(());
    }
    let f = act_fn(act);
    let value = |r: &str| {
        let v = format!("(v - m) * s + b{r}");
        match f {
            Some(f) => format!("{f}({v})"),
            None => v,
        }
    };
    if residual {
        c.open(format!(
            "for ((yr, xr), rr) in y.chunks_exact_mut({ch}).zip(x.chunks_exact({ch})).zip(res.chunks_exact({ch}))"
        ));
        c.open(
            "for ((((o, &v), &r), &m), (&s, &b)) in yr.iter_mut().zip(xr).zip(rr).zip(mu).zip(scale.iter().zip(beta))",
        );
        c.line(format!("*o = {};", value(" + r")));
    } else {
        c.open(format!(
            "for (yr, xr) in y.chunks_exact_mut({ch}).zip(x.chunks_exact({ch}))"
        ));
        c.open("for (((o, &v), &m), (&s, &b)) in yr.iter_mut().zip(xr).zip(mu).zip(scale.iter().zip(beta))");
        c.line(format!("*o = {};", value("")));
    }
    c.close();
    c.close();
    Ok(())
}

/// The pooled form of [`bn_apply`]: each window's maximum of `act((x − μ)·scale + β)` and the
/// row-major index in the window of its first maximum, as the runtime's
/// `bn_act_max_pool_argmax` computes them; the unpooled map is never stored.
fn bn_apply_pooled(c: &mut Code, g: &PoolGeom, act: Activation) {
    let ([h, w], [oh, ow], ch) = (g.in_hw, g.out_hw, g.c);
    let [wh, ww] = g.window.size;
    let relu = act == Activation::Relu;
    c.line(format!(
        "// [{}, {oh}, {ow}, {ch}] maxima of {wh}x{ww} windows of [{}, {h}, {w}, {ch}]",
        g.n, g.n
    ));
    c.open(format!("for p in 0..{}", g.n * oh * ow));
    // Pooled pixel p = (n·oh + py)·ow + px, without `% 1` for a side of 1 (clippy denies it).
    let n = if oh * ow == 1 {
        "p".to_string()
    } else {
        format!("p / {}", oh * ow)
    };
    let py = match (oh, ow) {
        (1, _) => "0".to_string(),
        (_, 1) => format!("p % {oh}"),
        _ => format!("p / {ow} % {oh}"),
    };
    let px = if ow == 1 { "0".to_string() } else { format!("p % {ow}") };
    c.line(format!("let (n, py, px) = ({n}, {py}, {px});"));
    c.line(format!(
        "let (yo, ao) = (&mut y[p * {ch}..][..{ch}], &mut argmax[p * {ch}..][..{ch}]);"
    ));
    c.open(format!("for t in 0..{}", wh * ww));
    c.line(format!(
        "let xr = &x[((n * {h} + py * {wh} + t / {ww}) * {w} + px * {ww} + t % {ww}) * {ch}..][..{ch}];"
    ));
    c.open(format!("for j in 0..{ch}"));
    c.line("let v = (xr[j] - mu[j]) * scale[j] + beta[j];");
    if relu {
        c.line("let v = if v > 0.0 { v } else { 0.0 };");
    }
    c.line("if t == 0 || v > yo[j] { yo[j] = v; ao[j] = t as f32; }");
    c.close();
    c.close();
    c.close();
}

/// `mu` (the mean) and `scale = γ/√(var + ε)` as `bn_apply` computes them (the `EPS` const
/// declared).
fn bn_scale(c: &mut Code, ch: usize, mean: &str, var: &str) {
    c.line(format!("let mu = &{mean};"));
    c.line(format!("let mut scale = [0f32; {ch}]; // γ/√(var + ε)"));
    c.open(format!("for ((s, &g), &v) in scale.iter_mut().zip(gamma).zip(&{var})"));
    c.line("*s = (g as f64 / sqrt(v as f64 + EPS)) as f32;");
    c.close();
}

/// Where BN backward's activation gradient finds the activation's output `y`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mask {
    /// No activation.
    None,
    /// Read from `y`.
    Y,
    /// A ReLU's, recomputed from `x` and `beta` exactly as `bn_apply` computed its input.
    FromX,
}

impl Mask {
    /// Read from `y` unless `act` is linear.
    pub(crate) fn of(act: Activation) -> Mask {
        if act == Activation::Linear {
            Mask::None
        } else {
            Mask::Y
        }
    }
}

/// BN backward through the batch statistics, with the activation's mask (`g = act'(y)·dy`):
/// pass 1 gathers Σg and Σg·x̂ per channel (f64), pass 2 writes
/// `dx = γ/σ·(g − Σg/m − x̂·Σg·x̂/m)`. Writes whichever of dx, dγ (= Σg·x̂), dβ (= Σg) are asked.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_backward(
    c: &mut Code,
    rows: usize,
    ch: usize,
    eps: f32,
    act: Activation,
    mask: Mask,
    dx: bool,
    dgamma: bool,
    dbeta: bool,
) -> Result<(), String> {
    let g = act_grad_expr(act, "yv", "d")?;
    if mask == Mask::FromX && act != Activation::Relu {
        return Err("only a ReLU's mask is recomputed from its input".into());
    }
    // rows of (x, [y], dy) zipped as xr, yr, dr
    let rows_iter = if mask == Mask::Y {
        format!("x.chunks_exact({ch}).zip(y.chunks_exact({ch})).zip(dy.chunks_exact({ch}))")
    } else {
        format!("x.chunks_exact({ch}).zip(dy.chunks_exact({ch}))")
    };
    let rows_pat = if mask == Mask::Y { "((xr, yr), dr)" } else { "(xr, dr)" };
    let g_of = |c: &mut Code| match mask {
        Mask::Y => c.line(format!("let g = {{ let (yv, d) = (yr[j], dr[j]); {g} }};")),
        Mask::FromX => c.line(format!(
            "let g = {{ let (yv, d) = ((xr[j] - mu[j]) * scale[j] + beta[j], dr[j]); {g} }};"
        )),
        Mask::None => c.line("let g = dr[j];"),
    };
    c.line(format!("const EPS: f64 = {} as f64;", f32_typed(eps)));
    if mask == Mask::FromX {
        bn_scale(c, ch, &format!("moments[..{ch}]"), &format!("moments[{ch}..]"));
    }
    c.line(format!(
        "let (mut mean, mut inv) = ([0f64; {ch}], [0f64; {ch}]); // μ, 1/σ"
    ));
    c.open(format!("for j in 0..{ch}"));
    c.line("mean[j] = moments[j] as f64;");
    c.line(format!("inv[j] = 1.0 / sqrt(moments[{ch} + j] as f64 + EPS);"));
    c.close();
    c.line(format!(
        "let (mut sg, mut sgx) = ([0f64; {ch}], [0f64; {ch}]); // Σg, Σg·x̂"
    ));
    c.open(format!("for {rows_pat} in {rows_iter}"));
    c.open(format!("for j in 0..{ch}"));
    g_of(c);
    c.line("let g = g as f64;");
    c.line("sg[j] += g;");
    c.line("sgx[j] += g * (xr[j] as f64 - mean[j]) * inv[j];");
    c.close();
    c.close();
    if dgamma {
        c.line("for (o, &v) in dgamma.iter_mut().zip(&sgx) { *o = v as f32; }");
    }
    if dbeta {
        c.line("for (o, &v) in dbeta.iter_mut().zip(&sg) { *o = v as f32; }");
    }
    if dx {
        c.line("// dx = k·g − q·(x − μ) − r per channel");
        c.line(format!(
            "let (mut k, mut q, mut r) = ([0f32; {ch}], [0f32; {ch}], [0f32; {ch}]);"
        ));
        c.open(format!("for j in 0..{ch}"));
        c.line("let kj = gamma[j] as f64 * inv[j];");
        c.line("k[j] = kj as f32;");
        c.line(format!("q[j] = (kj * inv[j] * sgx[j] / {rows}.0) as f32;"));
        c.line(format!("r[j] = (kj * sg[j] / {rows}.0) as f32;"));
        c.close();
        c.open(format!(
            "for ({rows_pat}, o) in {rows_iter}.zip(dx.chunks_exact_mut({ch}))"
        ));
        c.open(format!("for j in 0..{ch}"));
        g_of(c);
        c.line("o[j] = k[j] * g - q[j] * (xr[j] - mean[j] as f32) - r[j];");
        c.close();
        c.close();
    }
    Ok(())
}

/// `out = momentum·moving + (1 − momentum)·statistic` (f64), in place when `in_place`.
pub(crate) fn moving_average(c: &mut Code, ch: usize, momentum: f32, moment: Moment, in_place: bool) {
    let stat = match moment {
        Moment::Mean => format!("moments[..{ch}]"),
        Moment::Variance => format!("moments[{ch}..]"),
    };
    c.line(format!("const MOMENTUM: f64 = {} as f64;", f32_typed(momentum)));
    if in_place {
        c.open(format!("for (v, &s) in moving.iter_mut().zip(&{stat})"));
        c.line("*v = (MOMENTUM * *v as f64 + (1.0 - MOMENTUM) * s as f64) as f32;");
    } else {
        c.open(format!("for ((o, &v), &s) in out.iter_mut().zip(moving).zip(&{stat})"));
        c.line("*o = (MOMENTUM * v as f64 + (1.0 - MOMENTUM) * s as f64) as f32;");
    }
    c.close();
}

/// Opens `for r in 0..rows`, binding `z` (the prediction row) and, for dense targets, `t`.
fn open_loss_rows(c: &mut Code, kind: LossKind, cols: usize, pred: &str) {
    c.open(format!("for (r, z) in {pred}.chunks_exact({cols}).enumerate()"));
    if kind != LossKind::SparseCategoricalCrossentropy {
        c.line(format!("let t = &target[r * {cols}..][..{cols}];"));
    }
}

/// The row's class id `k`, or `on_bad` when the target is not one.
fn class_or(c: &mut Code, cols: usize, on_bad: &str) {
    c.line(format!(
        "let Some(k) = class_id(target[r], {cols}) else {{ {on_bad} }};"
    ));
}

/// `(pred, target) -> (loss [])`: the batch mean of the per-row loss.
pub(crate) fn loss(c: &mut Code, kind: LossKind, from_logits: bool, rows: usize, cols: usize) {
    c.line("let mut total = 0f64;");
    open_loss_rows(c, kind, cols, "pred");
    match kind {
        LossKind::MeanSquaredError => {
            c.line("let s: f64 = z.iter().zip(t).map(|(&p, &t)| (p as f64 - t as f64) * (p as f64 - t as f64)).sum();");
            c.line(format!("total += s / {cols}.0;"));
        }
        _ => {
            let sparse = kind == LossKind::SparseCategoricalCrossentropy;
            if sparse {
                class_or(c, cols, "total = f64::NAN; continue;");
            }
            if from_logits {
                c.line("let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }) as f64;");
                c.line("let lse = max + ln(z.iter().map(|&v| exp(v as f64 - max)).sum::<f64>());");
                if sparse {
                    c.line("total += lse - z[k] as f64;");
                } else {
                    c.line("total += z.iter().zip(t).map(|(&v, &t)| t as f64 * (lse - v as f64)).sum::<f64>();");
                }
            } else if sparse {
                // As Keras: ln clip(p) taken as logits.
                c.line(format!(
                    "let s: f64 = z.iter().map(|&p| p.clamp({CLIP}, 1.0 - {CLIP}) as f64).sum();"
                ));
                c.line(format!("total += ln(s) - ln(z[k].clamp({CLIP}, 1.0 - {CLIP}) as f64);"));
            } else {
                // As Keras: the row divided by its sum, then clipped.
                c.line("let s: f32 = z.iter().sum();");
                c.open("for (&p, &t) in z.iter().zip(t)");
                c.line(format!(
                    "if t != 0.0 {{ total -= t as f64 * ln((p / s).clamp({CLIP}, 1.0 - {CLIP}) as f64); }}"
                ));
                c.close();
            }
        }
    }
    c.close();
    c.line(format!("loss[0] = (total / {rows}.0) as f32;"));
}

/// `(pred, target) -> (dpred)`.
pub(crate) fn loss_grad(c: &mut Code, kind: LossKind, from_logits: bool, rows: usize, cols: usize) {
    let sparse = kind == LossKind::SparseCategoricalCrossentropy;
    c.open(format!(
        "for (r, (z, d)) in pred.chunks_exact({cols}).zip(dpred.chunks_exact_mut({cols})).enumerate()"
    ));
    match kind {
        LossKind::MeanSquaredError => {
            c.line(format!("let t = &target[r * {cols}..][..{cols}];"));
            c.line(format!(
                "for ((o, &p), &t) in d.iter_mut().zip(z).zip(t) {{ *o = (2.0 / {}.0 * (p as f64 - t as f64)) as f32; }}",
                rows * cols
            ));
        }
        _ => {
            if sparse {
                class_or(c, cols, "d.fill(0.0); continue;");
            } else {
                c.line(format!("let t = &target[r * {cols}..][..{cols}];"));
            }
            // The dense target value of column `j`.
            let tj = if sparse {
                "(if j == k { 1.0 } else { 0.0 })"
            } else {
                "t[j] as f64"
            };
            if from_logits {
                c.line("let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }) as f64;");
                c.line("let sum: f64 = z.iter().map(|&v| exp(v as f64 - max)).sum();");
                c.line(if sparse {
                    "let tsum = 1.0;"
                } else {
                    "let tsum: f64 = t.iter().map(|&v| v as f64).sum();"
                });
                c.open(format!("for j in 0..{cols}"));
                c.line("let s = exp(z[j] as f64 - max) / sum;");
                c.line(format!("d[j] = ((s * tsum - {tj}) / {rows}.0) as f32;"));
                c.close();
            } else if sparse {
                // d/dp_j of ln S - ln clip(p_k), S = Σ clip(p): 1/S - [j = k]/p_j, inside the clip.
                c.line(format!(
                    "let s: f64 = z.iter().map(|&p| p.clamp({CLIP}, 1.0 - {CLIP}) as f64).sum();"
                ));
                c.open(format!("for j in 0..{cols}"));
                c.line(format!("let (p, t) = (z[j], {tj});"));
                c.line(format!("let inside = ({CLIP}..=1.0 - {CLIP}).contains(&p);"));
                c.line(format!(
                    "d[j] = if inside {{ ((1.0 / s - t / p as f64) / {rows}.0) as f32 }} else {{ 0.0 }};"
                ));
                c.close();
            } else {
                // q = p / Σp, g_j = -t_j / q_j inside the clip: dL/dp_i = (g_i - Σ g_j q_j) / Σp.
                c.line("let s: f32 = z.iter().sum();");
                c.line(format!("let mut g = [0f64; {cols}];"));
                c.open(format!("for j in 0..{cols}"));
                c.line(format!("let (q, t) = (z[j] / s, {tj});"));
                c.line(format!("let inside = ({CLIP}..=1.0 - {CLIP}).contains(&q);"));
                c.line("g[j] = if t != 0.0 && inside { -t / q as f64 } else { 0.0 };");
                c.close();
                c.line("let dot: f64 = g.iter().zip(z).map(|(&g, &p)| g * (p / s) as f64).sum();");
                c.open(format!("for j in 0..{cols}"));
                c.line(format!("d[j] = ((g[j] - dot) / s as f64 / {rows}.0) as f32;"));
                c.close();
            }
        }
    }
    c.close();
}

/// Softmax + cross-entropy on logits: `(logits, target) -> (loss [], dlogits, [probs])`.
pub(crate) fn softmax_xent(c: &mut Code, rows: usize, classes: usize, sparse: bool, probs: bool) {
    c.line("let mut total = 0f64;");
    c.open(format!(
        "for (r, (z, d)) in logits.chunks_exact({classes}).zip(dlogits.chunks_exact_mut({classes})).enumerate()"
    ));
    c.line("let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }) as f64;");
    c.line("let sum: f64 = z.iter().map(|&v| exp(v as f64 - max)).sum();");
    c.line("let lse = max + ln(sum);");
    if probs {
        c.line(format!("let pr = &mut probs[r * {classes}..][..{classes}];"));
        c.line("for (o, &v) in pr.iter_mut().zip(z) { *o = (exp(v as f64 - max) / sum) as f32; }");
    }
    if sparse {
        class_or(c, classes, "total = f64::NAN; d.fill(0.0); continue;");
        c.line("total += lse - z[k] as f64;");
        c.open(format!("for j in 0..{classes}"));
        c.line("let t = if j == k { 1.0 } else { 0.0 };");
        c.line(format!(
            "d[j] = ((exp(z[j] as f64 - max) / sum - t) / {rows}.0) as f32;"
        ));
        c.close();
    } else {
        c.line(format!("let t = &target[r * {classes}..][..{classes}];"));
        c.line("let tsum: f64 = t.iter().map(|&v| v as f64).sum();");
        c.open(format!("for j in 0..{classes}"));
        c.line("let tj = t[j] as f64;");
        c.line("total += tj * (lse - z[j] as f64);");
        c.line(format!(
            "d[j] = ((exp(z[j] as f64 - max) / sum * tsum - tj) / {rows}.0) as f32;"
        ));
        c.close();
    }
    c.close();
    c.line(format!("loss[0] = (total / {rows}.0) as f32;"));
}
