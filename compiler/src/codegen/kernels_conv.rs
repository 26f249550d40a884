//! Bodies of the convolution templates: forward (with its epilogue and a fused max-pool) and
//! both gradients. Shared pieces (blocks, tap coordinates, epilogue) are in `kernels_gemm`.
//!
//! Forward: per output row, pixels whose taps all lie inside the input (the interior, known
//! at emit time) go `mr` at a time — the block's `mr × nb` accumulators share every load of
//! the kernel — and border pixels one at a time with padding checks. A fused max-pool walks
//! the pooled map instead, each window's pixels through the same code, `mr` windows at a time.

use crate::ir::Activation;
use crate::kernel_ir::kernel::{pool_tiles, pooled_hw};
use crate::kernel_ir::{ConvGeom, Epilogue, PooledDy, Schedule};

use super::kernels::act_grad_expr;
use super::kernels_gemm::{
    block_width, block_width_line, declare_stats, epilogue, finish_stats, open_block, open_j0, out_coord, row_block,
    tap_coord, tile_width, width,
};
use super::writer::{add, mul, Code};

/// Output columns `[lo, hi)` whose every tap lies inside the input (no padding checks).
fn interior(g: &ConvGeom) -> (usize, usize) {
    let (s, pl, kw, w) = (g.strides[1], g.pad.left, g.kernel_hw[1], g.in_hw[1]);
    let lo = pl.div_ceil(s);
    let hi = if w + pl >= kw {
        ((w + pl - kw) / s + 1).min(g.out_hw[1])
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// The taps of one output pixel `(n, oh, ow)` accumulated into `acc` (columns `j0..`).
fn conv_taps(c: &mut Code, g: &ConvGeom, wdt: &str) {
    let [h, w] = g.in_hw;
    let [kh, kw] = g.kernel_hw;
    let (cc, f) = (g.c, g.f);
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, g.out_hw[0], kh);
    c.open(format!("for kw in 0..{kw}"));
    tap_coord(c, "iw", "ow", "kw", g.strides[1], g.pad.left, w, g.out_hw[1], kw);
    c.line(format!("let xs = &x[((n * {h} + ih) * {w} + iw) * {cc}..][..{cc}];"));
    c.line(format!("let ws = &w[(kh * {kw} + kw) * {} + j0..];", cc * f));
    c.open("for (ci, &xv) in xs.iter().enumerate()");
    c.line(format!("axpy(acc, xv, &ws[{}..][..{wdt}]);", mul("ci", f)));
    c.close();
    c.close();
    c.close();
}

/// The taps of `mr` interior pixels `(n, oh, first + m·step)` accumulated into
/// `acc: [[f32; nb]; mr]`.
fn block_taps(c: &mut Code, g: &ConvGeom, first: &str, step: usize, mr: usize, wdt: &str) {
    let [h, w] = g.in_hw;
    let [kh, kw] = g.kernel_hw;
    let (cc, f, sw) = (g.c, g.f, g.strides[1]);
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, g.out_hw[0], kh);
    c.line(format!("let xr = &x[(n * {h} + ih) * {}..][..{}];", w * cc, w * cc));
    c.open(format!("for kw in 0..{kw}"));
    let mut col = add(&mul(first, sw), "kw");
    if g.pad.left > 0 {
        col = format!("{col} - {}", g.pad.left);
    }
    if cc > 1 {
        col = format!("({col}) * {cc}");
    }
    c.line(format!("let x0 = {col};"));
    c.line(format!("let ws = &w[(kh * {kw} + kw) * {} + j0..];", cc * f));
    c.open(format!("for ci in 0..{cc}"));
    c.line(format!("let wr = &ws[{}..][..{wdt}];", mul("ci", f)));
    c.open(format!("for m in 0..{mr}"));
    c.line(format!(
        "axpy(&mut acc[m][..{wdt}], xr[x0 + {} + ci], wr);",
        mul("m", step * sw * cc)
    ));
    c.close();
    c.close();
    c.close();
    c.close();
}

/// Convolution forward: `(x, w, [bias], [res]) -> (y, [moments])`.
pub(crate) fn conv2d(c: &mut Code, g: &ConvGeom, e: &Epilogue, s: &Schedule) -> Result<(), String> {
    if e.act == Activation::Softmax {
        return Err("softmax in a convolution epilogue".into());
    }
    let (n, [oh, ow], f) = (g.n, g.out_hw, g.f);
    let nb = tile_width(f, s);
    let full = f.is_multiple_of(nb);
    let wdt = width(nb, full);
    let fs = f.to_string();
    let (lo, hi) = interior(g);
    if e.bn_stats {
        declare_stats(c, f);
    }
    match &e.max_pool {
        None => {
            let mr = row_block(s).min(hi - lo);
            c.line(format!(
                "// [{n}, {oh}, {ow}, {f}] outputs, {nb} channels at a time; columns {lo}..{hi} {mr} pixels at a time"
            ));
            c.open(format!("for n in 0..{n}"));
            c.open(format!("for oh in 0..{oh}"));
            let one = |c: &mut Code| {
                c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow) * {f};"));
                open_j0(c, "0", &fs, nb, nb == f);
                open_block(c, "acc", nb, f, &fs, full);
                conv_taps(c, g, &wdt);
                epilogue(c, e, e.bn_stats);
                c.line("y[row + j0..][..wd].copy_from_slice(acc);");
                c.close();
            };
            if mr > 1 {
                c.line("let mut ow = 0;");
                c.open(format!("while ow < {ow}"));
                c.open(format!("if {}ow + {mr} <= {hi}", at_least("ow", lo)));
                open_j0(c, "0", &fs, nb, nb == f);
                block_width_line(c, nb, f, &fs, full);
                c.line(format!("let mut acc = [[0f32; {nb}]; {mr}];"));
                block_taps(c, g, "ow", 1, mr, &wdt);
                c.open("for (m, acc) in acc.iter_mut().enumerate()");
                c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow + m) * {f};"));
                c.line("let acc = &mut acc[..wd];");
                epilogue(c, e, e.bn_stats);
                c.line("y[row + j0..][..wd].copy_from_slice(acc);");
                c.close();
                c.close();
                c.line(format!("ow += {mr};"));
                c.else_();
                one(c);
                c.line("ow += 1;");
                c.close();
                c.close();
            } else {
                c.open(format!("for ow in 0..{ow}"));
                one(c);
                c.close();
            }
            c.close();
            c.close();
        }
        Some(win) => {
            if !pool_tiles(g.out_hw, win) {
                return Err("the fused max-pool window does not tile the convolution output".into());
            }
            if e.argmax && e.residual {
                return Err("an argmax after a residual add".into());
            }
            let argmax = e.argmax;
            let [sh, sw] = win.size;
            let (ph, pw) = (oh / sh, ow / sw);
            // Windows whose pixels are all interior: pw·sw ≥ lo and (pw + 1)·sw ≤ hi.
            let (plo, phi) = (lo.div_ceil(sw), (hi / sw).max(lo.div_ceil(sw)));
            let mr = row_block(s).min(phi - plo);
            c.line(format!(
                "// [{n}, {ph}, {pw}, {f}] max-pooled outputs ({sh}x{sw} windows of the [{n}, {oh}, {ow}, {f}] convolution), {nb} channels at a time; window columns {plo}..{phi} {mr} at a time"
            ));
            c.open(format!("for n in 0..{n}"));
            c.open(format!("for ph in 0..{ph}"));
            let pixel = |c: &mut Code, ow_expr: &str| {
                c.line(format!("let oh = {};", add(&mul("ph", sh), &format!("t / {sw}"))));
                c.line(format!("let ow = {ow_expr};"));
                if e.residual {
                    c.line(format!("let row = ((n * {oh} + oh) * {ow} + ow) * {f};"));
                }
            };
            let one = |c: &mut Code| {
                c.line(format!("let prow = ((n * {ph} + ph) * {pw} + pw) * {f};"));
                open_j0(c, "0", &fs, nb, nb == f);
                open_block(c, "best", nb, f, &fs, full);
                if argmax {
                    c.line(format!("let mut arg = [0f32; {nb}];"));
                    c.line("let arg = &mut arg[..wd];");
                }
                c.open(format!("for t in 0..{}", sh * sw));
                pixel(c, &add(&mul("pw", sw), &format!("t % {sw}")));
                open_block(c, "acc", nb, f, &fs, full);
                conv_taps(c, g, &wdt);
                epilogue(c, e, e.bn_stats);
                max_into(c, "best", "acc", argmax.then_some("arg"));
                c.close();
                c.line("y[prow + j0..][..wd].copy_from_slice(best);");
                if argmax {
                    c.line("argmax[prow + j0..][..wd].copy_from_slice(arg);");
                }
                c.close();
            };
            if mr > 1 {
                c.line("let mut pw = 0;");
                c.open(format!("while pw < {pw}"));
                c.open(format!("if {}pw + {mr} <= {phi}", at_least("pw", plo)));
                open_j0(c, "0", &fs, nb, nb == f);
                block_width_line(c, nb, f, &fs, full);
                c.line(format!("let mut best = [[0f32; {nb}]; {mr}];"));
                if argmax {
                    c.line(format!("let mut arg = [[0f32; {nb}]; {mr}];"));
                }
                c.open(format!("for t in 0..{}", sh * sw));
                c.line(format!("let oh = {};", add(&mul("ph", sh), &format!("t / {sw}"))));
                c.line(format!("let owb = {};", add(&mul("pw", sw), &format!("t % {sw}"))));
                c.line(format!("let mut acc = [[0f32; {nb}]; {mr}];"));
                block_taps(c, g, "owb", sw, mr, &wdt);
                if argmax {
                    // (no residual with an argmax: the pass never fuses one)
                    c.open("for ((acc, best), arg) in acc.iter_mut().zip(best.iter_mut()).zip(arg.iter_mut())");
                    c.line("let arg = &mut arg[..wd];");
                } else if e.residual {
                    c.open("for (m, (acc, best)) in acc.iter_mut().zip(best.iter_mut()).enumerate()");
                    c.line(format!(
                        "let row = ((n * {oh} + oh) * {ow} + owb + {}) * {f};",
                        mul("m", sw)
                    ));
                } else {
                    c.open("for (acc, best) in acc.iter_mut().zip(best.iter_mut())");
                }
                c.line("let (acc, best) = (&mut acc[..wd], &mut best[..wd]);");
                epilogue(c, e, e.bn_stats);
                max_into(c, "best", "acc", argmax.then_some("arg"));
                c.close();
                c.close();
                c.open("for (m, best) in best.iter().enumerate()");
                c.line(format!(
                    "y[((n * {ph} + ph) * {pw} + pw + m) * {f} + j0..][..wd].copy_from_slice(&best[..wd]);"
                ));
                if argmax {
                    c.line(format!(
                        "argmax[((n * {ph} + ph) * {pw} + pw + m) * {f} + j0..][..wd].copy_from_slice(&arg[m][..wd]);"
                    ));
                }
                c.close();
                c.close();
                c.line(format!("pw += {mr};"));
                c.else_();
                one(c);
                c.line("pw += 1;");
                c.close();
                c.close();
            } else {
                c.open(format!("for pw in 0..{pw}"));
                one(c);
                c.close();
            }
            c.close();
            c.close();
        }
    }
    if e.bn_stats {
        finish_stats(c, f, n * oh * ow);
    }
    Ok(())
}

/// `v >= lo && ` as source, or nothing when `lo` is 0.
fn at_least(v: &str, lo: usize) -> String {
    if lo == 0 {
        String::new()
    } else {
        format!("{v} >= {lo} && ")
    }
}

/// `best = acc` on the window's first pixel (`t == 0`), else the elementwise maximum.
fn max_into(c: &mut Code, best: &str, acc: &str, arg: Option<&str>) {
    c.open("if t == 0");
    c.line(format!("{best}.copy_from_slice({acc});"));
    if let Some(a) = arg {
        c.line(format!("{a}.fill(0.0);"));
    }
    c.else_();
    match arg {
        None => c.line(format!(
            "for (b, &v) in {best}.iter_mut().zip({acc}.iter()) {{ if v > *b {{ *b = v; }} }}"
        )),
        // The first maximum keeps its index: a later equal value does not take over.
        Some(a) => c.line(format!(
            "for ((b, a), &v) in {best}.iter_mut().zip({a}.iter_mut()).zip({acc}.iter()) {{ if v > *b {{ *b = v; *a = t as f32; }} }}"
        )),
    }
    c.close();
}

/// Gradient of the input: `(dy, w) -> (dx)`, with scratch `wt`. The kernel is first
/// transposed to `[KH, KW, F, C]` in `wt`, so that each input pixel accumulates, per tap and
/// output channel, an `axpy` over a block of contiguous input channels — the forward
/// convolution's loop nest run backwards through the taps.
pub(crate) fn conv_grad_input(c: &mut Code, g: &ConvGeom, s: &Schedule) {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let (n, cc, f) = (g.n, g.c, g.f);
    let taps = kh * kw;
    let nb = block_width(cc, s);
    let full = cc.is_multiple_of(nb);
    c.line(format!("// wt = the kernel as [{kh}, {kw}, {f}, {cc}]"));
    c.open(format!("for t in 0..{taps}"));
    c.open(format!("for ci in 0..{cc}"));
    c.open(format!("for fi in 0..{f}"));
    c.line(format!(
        "wt[(t * {f} + fi) * {cc} + ci] = w[(t * {cc} + ci) * {f} + fi];"
    ));
    c.close();
    c.close();
    c.close();
    c.line(format!(
        "// [{n}, {h}, {w}, {cc}] input gradients, {nb} channels at a time"
    ));
    c.open(format!("for n in 0..{n}"));
    c.open(format!("for i in 0..{h}"));
    c.open(format!("for j in 0..{w}"));
    c.line(format!("let row = ((n * {h} + i) * {w} + j) * {cc};"));
    open_j0(c, "0", &cc.to_string(), nb, nb == cc);
    open_block(c, "acc", nb, cc, &cc.to_string(), full);
    c.open(format!("for kh in 0..{kh}"));
    out_coord(c, "oh", "i", "kh", g.strides[0], g.pad.top, oh);
    c.open(format!("for kw in 0..{kw}"));
    out_coord(c, "ow", "j", "kw", g.strides[1], g.pad.left, ow);
    c.line(format!("let ds = &dy[((n * {oh} + oh) * {ow} + ow) * {f}..][..{f}];"));
    c.line(format!("let wts = &wt[(kh * {kw} + kw) * {} + j0..];", f * cc));
    c.open("for (fi, &d) in ds.iter().enumerate()");
    c.line(format!(
        "axpy(acc, d, &wts[{}..][..{}]);",
        mul("fi", cc),
        width(nb, full)
    ));
    c.close();
    c.close();
    c.close();
    c.line("dx[row + j0..][..wd].copy_from_slice(acc);");
    for _ in 0..4 {
        c.close();
    }
}

/// Gradient of the kernel: `(x, dy) -> (dw, [db])`. Per output row `(n, oh)`, tap and input
/// channel, a block of `dw` is held in an accumulator while the row's pixels add
/// `x·dy[pixel, block]` to it, so `dw` is read and written once per output row.
pub(crate) fn conv_grad_kernel(
    c: &mut Code,
    g: &ConvGeom,
    bias_grad: bool,
    pooled: Option<&PooledDy>,
    s: &Schedule,
) -> Result<(), String> {
    let [h, w] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = g.kernel_hw;
    let (n, cc, f) = (g.n, g.c, g.f);
    let nb = block_width(f, s);
    let full = f.is_multiple_of(nb);
    c.line("dw.fill(0.0);");
    c.line(format!(
        "// Σ over the [{n}, {oh}, {ow}] output pixels, a row of {ow} at a time"
    ));
    c.open(format!("for n in 0..{n}"));
    c.open(format!("for oh in 0..{oh}"));
    match pooled {
        None => c.line(format!("let drow = &dy[(n * {oh} + oh) * {}..][..{}];", ow * f, ow * f)),
        Some(pd) => pooled_dy_row(c, g, pd)?,
    }
    c.open(format!("for kh in 0..{kh}"));
    tap_coord(c, "ih", "oh", "kh", g.strides[0], g.pad.top, h, oh, kh);
    c.line(format!("let xrow = &x[(n * {h} + ih) * {}..][..{}];", w * cc, w * cc));
    c.open(format!("for kw in 0..{kw}"));
    c.open(format!("for ci in 0..{cc}"));
    c.line(format!("let base = ((kh * {kw} + kw) * {cc} + ci) * {f};"));
    open_j0(c, "0", &f.to_string(), nb, nb == f);
    open_block(c, "acc", nb, f, &f.to_string(), full);
    c.line("acc.copy_from_slice(&dw[base + j0..][..wd]);");
    c.open(format!("for ow in 0..{ow}"));
    tap_coord(c, "iw", "ow", "kw", g.strides[1], g.pad.left, w, ow, kw);
    c.line(format!(
        "axpy(acc, xrow[{}], &drow[{} + j0..][..{}]);",
        add(&mul("iw", cc), "ci"),
        mul("ow", f),
        width(nb, full)
    ));
    c.close();
    c.line("dw[base + j0..][..wd].copy_from_slice(acc);");
    for _ in 0..6 {
        c.close();
    }
    if bias_grad {
        c.line(format!("let mut sb = [0f64; {f}]; // Σdy per channel"));
        match pooled {
            None => {
                c.open(format!("for dr in dy.chunks_exact({f})"));
                c.line("for (s, &d) in sb.iter_mut().zip(dr) { *s += d as f64; }");
            }
            // dy is 0 but at each window's argmax, where it is the pooled gradient.
            Some(pd) => {
                c.open(format!("for q in 0..{}", dy_len(g, pd)));
                c.line(format!(
                    "sb[q % {f}] += ({}) as f64;",
                    act_grad_expr(pd.act_grad.unwrap_or(Activation::Linear), "y[q]", "dy[q]")?
                ));
            }
        }
        c.close();
        c.line("for (o, &s) in db.iter_mut().zip(&sb) { *o = s as f32; }");
    }
    Ok(())
}

/// Pooled `[n, ph, pw, f]` elements of the conv `g` pooled by `pd`.
fn dy_len(g: &ConvGeom, pd: &PooledDy) -> usize {
    let [ph, pw] = pooled_hw(g.out_hw, &pd.window);
    g.n * ph * pw * g.f
}

/// Binds `drow`, output row `oh` of image `n` of the conv's gradient, rebuilt from the pooled
/// gradient `dy`, the pooled activation `y` and the `argmax` of every window: the window's
/// gradient (times the activation's derivative) at its argmax, 0 elsewhere.
fn pooled_dy_row(c: &mut Code, g: &ConvGeom, pd: &PooledDy) -> Result<(), String> {
    let (ow, f) = (g.out_hw[1], g.f);
    if !pool_tiles(g.out_hw, &pd.window) {
        return Err("a pooled kernel gradient over windows that do not tile the output".into());
    }
    let ([sh, sw], [ph, pw]) = (pd.window.size, pooled_hw(g.out_hw, &pd.window));
    let grad = act_grad_expr(pd.act_grad.unwrap_or(Activation::Linear), "y[q]", "dy[q]")?;
    c.line(format!(
        "let mut drow = [0f32; {}]; // [{ow}, {f}] of output row oh",
        ow * f
    ));
    c.open(format!("for (owi, px) in drow.chunks_exact_mut({f}).enumerate()"));
    c.line(format!("let at = ((n * {ph} + oh / {sh}) * {pw} + owi / {sw}) * {f};"));
    c.line(format!("let t = ((oh % {sh}) * {sw} + owi % {sw}) as f32;"));
    c.open("for (ch, d) in px.iter_mut().enumerate()");
    c.line("let q = at + ch;");
    c.line(format!("*d = if argmax[q] == t {{ {grad} }} else {{ 0.0 }};"));
    c.close();
    c.close();
    c.line("let drow = &drow[..];");
    Ok(())
}
