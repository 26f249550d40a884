//! Bodies of the row-wise templates: pooling and its gradients, elementwise operations,
//! softmax, reductions and channel concatenation/slicing. Loops run over rows (all axes but
//! the channel axis) with the channel loop innermost and contiguous.

use crate::ir::Activation;
use crate::kernel_ir::{EwOp, PoolGeom, PoolKind};

use super::kernels::{act_fn, act_grad_expr};
use super::kernels_gemm::tap_coord;
use super::writer::{f32_lit, Code};

/// Opens `for n / oh / ow` over a pooling output and binds `ro`, the output row offset.
fn open_windows(c: &mut Code, g: &PoolGeom) {
    let [oh, ow] = g.out_hw;
    c.open(format!("for n in 0..{}", g.n));
    c.open(format!("for oh in 0..{oh}"));
    c.open(format!("for ow in 0..{ow}"));
    c.line(format!("let ro = ((n * {oh} + oh) * {ow} + ow) * {};", g.c));
}

/// Opens the taps of the current window and binds `xo`, the input row offset.
fn open_taps(c: &mut Code, g: &PoolGeom) {
    let [h, w] = g.in_hw;
    let win = &g.window;
    c.open(format!("for kh in 0..{}", win.size[0]));
    tap_coord(
        c,
        "ih",
        "oh",
        "kh",
        win.strides[0],
        win.pad.top,
        h,
        g.out_hw[0],
        win.size[0],
    );
    c.open(format!("for kw in 0..{}", win.size[1]));
    tap_coord(
        c,
        "iw",
        "ow",
        "kw",
        win.strides[1],
        win.pad.left,
        w,
        g.out_hw[1],
        win.size[1],
    );
    c.line(format!("let xo = ((n * {h} + ih) * {w} + iw) * {};", g.c));
}

fn close(c: &mut Code, levels: usize) {
    for _ in 0..levels {
        c.close();
    }
}

/// `(argmax, [y], dy) -> (dx)`: each window's gradient (times the activation's derivative at
/// the pooled `y`) to the tap `argmax` names, 0 to the others; the windows tile `dx`.
pub(crate) fn max_pool_grad_argmax(c: &mut Code, g: &PoolGeom, act_grad: Option<Activation>) -> Result<(), String> {
    let (ch, [h, w], [sh, sw]) = (g.c, g.in_hw, g.window.size);
    if !crate::kernel_ir::kernel::pool_tiles(g.in_hw, &g.window) {
        return Err("an argmax max-pool gradient over windows that do not tile the map".into());
    }
    open_windows(c, g);
    unpool_window(
        c,
        g.window.size,
        ch,
        &format!("((n * {h} + oh * {sh} + t / {sw}) * {w} + ow * {sw} + t % {sw}) * {ch}"),
        "dx",
        "ro",
        act_grad,
    )?;
    close(c, 3);
    Ok(())
}

/// One pooled window's gradient unpooled: for each of its taps `t`, the `ch` values from
/// `dst[o]` (`o` the expression `first`, of `t`) get the window's gradient (`dy[src + ci]`,
/// times the activation's derivative at `y[src + ci]`) where `argmax` names `t`, else 0. Each
/// value is written once, by a select (no data-dependent branch).
pub(crate) fn unpool_window(
    c: &mut Code,
    [sh, sw]: [usize; 2],
    ch: usize,
    first: &str,
    dst: &str,
    src: &str,
    act_grad: Option<Activation>,
) -> Result<(), String> {
    let (y, dy) = (format!("y[{src} + ci]"), format!("dy[{src} + ci]"));
    let grad = act_grad_expr(act_grad.unwrap_or(Activation::Linear), &y, &dy)?;
    c.open(format!("for t in 0..{}", sh * sw));
    c.line(format!("let o = {first};"));
    c.open(format!("for ci in 0..{ch}"));
    c.line(format!(
        "{dst}[o + ci] = if argmax[{src} + ci] == t as f32 {{ {grad} }} else {{ 0.0 }};"
    ));
    c.close();
    c.close();
    Ok(())
}

/// `(x) -> (y)`: max (padding never wins), average over the real elements, or global average.
pub(crate) fn pool(c: &mut Code, kind: PoolKind, g: &PoolGeom) -> Result<(), String> {
    let ch = g.c;
    match kind {
        PoolKind::GlobalAvg => {
            let hw = g.in_hw[0] * g.in_hw[1];
            if g.out_hw != [1, 1] {
                return Err(format!("global pooling to {:?}", g.out_hw));
            }
            c.open(format!(
                "for (yr, xs) in y.chunks_exact_mut({ch}).zip(x.chunks_exact({}))",
                hw * ch
            ));
            c.line("yr.fill(0.0);");
            c.open(format!("for px in xs.chunks_exact({ch})"));
            c.line("for (s, &v) in yr.iter_mut().zip(px) { *s += v; }");
            c.close();
            c.line(format!("for s in yr.iter_mut() {{ *s /= {hw}.0; }}"));
            c.close();
        }
        PoolKind::Max | PoolKind::Avg => {
            let max = kind == PoolKind::Max;
            open_windows(c, g);
            c.line(format!("let yr = &mut y[ro..][..{ch}];"));
            if max {
                c.line("let mut first = true;");
            } else {
                c.line("yr.fill(0.0);");
                c.line("let mut count = 0u32;");
            }
            open_taps(c, g);
            c.line(format!("let xs = &x[xo..][..{ch}];"));
            if max {
                c.open("if first");
                c.line("yr.copy_from_slice(xs);");
                c.line("first = false;");
                c.else_();
                c.line("for (b, &v) in yr.iter_mut().zip(xs) { if v > *b { *b = v; } }");
                c.close();
            } else {
                c.line("for (s, &v) in yr.iter_mut().zip(xs) { *s += v; }");
                c.line("count += 1;");
            }
            close(c, 2);
            if max {
                c.line("if first { yr.fill(0.0); }");
            } else {
                c.open("if count > 0");
                c.line("let k = count as f32;");
                c.line("for s in yr.iter_mut() { *s /= k; }");
                c.close();
            }
            close(c, 3);
        }
    }
    Ok(())
}

/// Max: `(x, dy) -> (dx)`, each window's gradient to its first maximum; Avg, GlobalAvg:
/// `(dy) -> (dx)`, shared by the window's real elements.
pub(crate) fn pool_grad(
    c: &mut Code,
    kind: PoolKind,
    g: &PoolGeom,
    act_grad: Option<Activation>,
) -> Result<(), String> {
    let ch = g.c;
    match kind {
        PoolKind::GlobalAvg => {
            let hw = g.in_hw[0] * g.in_hw[1];
            c.open(format!(
                "for (ds, dxs) in dy.chunks_exact({ch}).zip(dx.chunks_exact_mut({}))",
                hw * ch
            ));
            c.open(format!("for px in dxs.chunks_exact_mut({ch})"));
            c.line(format!("for (o, &d) in px.iter_mut().zip(ds) {{ *o = d / {hw}.0; }}"));
            c.close();
            c.close();
        }
        PoolKind::Max => {
            c.line("dx.fill(0.0);");
            open_windows(c, g);
            c.line(format!("let ds = &dy[ro..][..{ch}];"));
            c.line(format!("let mut best = [f32::NEG_INFINITY; {ch}];"));
            c.line(format!("let mut arg = [usize::MAX; {ch}];"));
            open_taps(c, g);
            c.line(format!("let xs = &x[xo..][..{ch}];"));
            c.open(format!("for ci in 0..{ch}"));
            c.line("// strictly greater: a later equal value does not take over (first maximum)");
            c.open("if xs[ci] > best[ci] || arg[ci] == usize::MAX");
            c.line("best[ci] = xs[ci];");
            c.line("arg[ci] = xo + ci;");
            c.close();
            close(c, 3);
            c.open("for (&i, &d) in arg.iter().zip(ds)");
            c.line("if i != usize::MAX { dx[i] += d; }");
            c.close();
            close(c, 3);
            if let Some(a) = act_grad {
                // The fused gradient of the activation whose output `x` is.
                let e = act_grad_expr(a, "yv", "d")?;
                c.line(format!(
                    "for (o, &yv) in dx.iter_mut().zip(x) {{ let d = *o; *o = {e}; }}"
                ));
            }
        }
        PoolKind::Avg => {
            let win = &g.window;
            let [h, w] = g.in_hw;
            c.line("dx.fill(0.0);");
            open_windows(c, g);
            c.line(format!("let ds = &dy[ro..][..{ch}];"));
            c.line("// real (unpadded) elements of the window");
            let count = |c: &mut Code, axis: usize, o: &str, size: usize| {
                let (s, p, k) = (win.strides[axis], [win.pad.top, win.pad.left][axis], win.size[axis]);
                c.line(format!(
                    "let {o}n = (0..{k}).filter(|&t| usize::wrapping_sub({o} * {s} + t, {p}) < {size}).count();"
                ));
            };
            count(c, 0, "oh", h);
            count(c, 1, "ow", w);
            c.line("if ohn * own == 0 { continue; }");
            c.line("let k = (ohn * own) as f32;");
            open_taps(c, g);
            c.line(format!(
                "for (o, &d) in dx[xo..][..{ch}].iter_mut().zip(ds) {{ *o += d / k; }}"
            ));
            close(c, 5);
        }
    }
    Ok(())
}

pub(crate) fn elementwise(c: &mut Code, op: &EwOp, len: usize, channels: usize) -> Result<(), String> {
    match *op {
        EwOp::Act(a) => {
            act_grad_expr(a, "y", "d")?; // refuses softmax
            match act_fn(a) {
                Some(f) => c.line(format!("for (o, &v) in y.iter_mut().zip(x) {{ *o = {f}(v); }}")),
                None => c.line("y.copy_from_slice(x);"),
            }
        }
        EwOp::ActGrad(a) => {
            let e = act_grad_expr(a, "yv", "d")?;
            c.line(format!(
                "for ((o, &yv), &d) in dx.iter_mut().zip(y).zip(dy) {{ *o = {e}; }}"
            ));
        }
        EwOp::BiasAdd => {
            if channels == 0 || !len.is_multiple_of(channels) {
                return Err(format!("bias add of {len} values over {channels} channels"));
            }
            c.open(format!(
                "for (yr, xr) in y.chunks_exact_mut({channels}).zip(x.chunks_exact({channels}))"
            ));
            c.line("for ((o, &v), &b) in yr.iter_mut().zip(xr).zip(bias) { *o = v + b; }");
            c.close();
        }
        EwOp::Add => c.line("for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) { *o = u + v; }"),
        EwOp::Dropout { rate, seed } => {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("dropout rate {rate} outside [0, 1)"));
            }
            let r = f32_lit(rate);
            c.line(format!("let scale = 1.0f32 / (1.0 - {r});"));
            c.open("for (i, (o, &v)) in y.iter_mut().zip(x).enumerate()");
            c.line(format!(
                "*o = if dropout_keep({seed}, step, i as u64, {r}) {{ v * scale }} else {{ 0.0 }};"
            ));
            c.close();
        }
        EwOp::Copy => c.line("y.copy_from_slice(x);"),
        EwOp::Fill(v) => c.line(format!("y.fill({});", f32_lit(v))),
    }
    Ok(())
}

/// Row-wise softmax.
pub(crate) fn softmax(c: &mut Code, _rows: usize, cols: usize) {
    c.open(format!(
        "for (yr, xr) in y.chunks_exact_mut({cols}).zip(x.chunks_exact({cols}))"
    ));
    c.line("softmax_row(xr, yr);");
    c.close();
}

/// `dx = y·(dy − Σ_row y·dy)`.
pub(crate) fn softmax_grad(c: &mut Code, _rows: usize, cols: usize) {
    c.open(format!(
        "for ((o, yr), dr) in dx.chunks_exact_mut({cols}).zip(y.chunks_exact({cols})).zip(dy.chunks_exact({cols}))"
    ));
    c.line("let s: f64 = yr.iter().zip(dr).map(|(&a, &b)| a as f64 * b as f64).sum();");
    c.line("for ((o, &a), &b) in o.iter_mut().zip(yr).zip(dr) { *o = (a as f64 * (b as f64 - s)) as f32; }");
    c.close();
}

/// Sum over rows (f64).
pub(crate) fn reduce(c: &mut Code, _rows: usize, channels: usize) {
    c.line(format!("let mut s = [0f64; {channels}];"));
    c.open(format!("for xr in x.chunks_exact({channels})"));
    c.line("for (t, &v) in s.iter_mut().zip(xr) { *t += v as f64; }");
    c.close();
    c.line("for (o, &t) in y.iter_mut().zip(&s) { *o = t as f32; }");
}

/// Channel concatenation, part by part.
pub(crate) fn concat(c: &mut Code, rows: usize, parts: &[usize]) {
    let total: usize = parts.iter().sum();
    c.open(format!("for r in 0..{rows}"));
    let mut off = 0;
    for (i, &w) in parts.iter().enumerate() {
        c.line(format!(
            "y[r * {total} + {off}..][..{w}].copy_from_slice(&x{i}[r * {w}..][..{w}]);"
        ));
        off += w;
    }
    c.close();
}

pub(crate) fn slice_channels(
    c: &mut Code,
    _rows: usize,
    channels: usize,
    offset: usize,
    len: usize,
) -> Result<(), String> {
    if offset + len > channels {
        return Err(format!("channels {offset}..{} of {channels}", offset + len));
    }
    c.open(format!(
        "for (yr, xr) in y.chunks_exact_mut({len}).zip(x.chunks_exact({channels}))"
    ));
    c.line(format!("yr.copy_from_slice(&xr[{offset}..{}]);", offset + len));
    c.close();
    Ok(())
}
