//! The row-wise kernels against naive loops in f64: elementwise ops, pooling (TF SAME/VALID
//! padding, first-maximum gradients, real-element averages), batch normalisation, softmax and
//! the losses, optimiser updates. Every kernel runs on 1 and 2 threads with sizes above the
//! parallel threshold, and on every ISA this CPU has.

mod support;

use cnnc_runtime::kernels::activation::Act;
use cnnc_runtime::kernels::conv::Pad;
use cnnc_runtime::kernels::norm::{self, BnBackward};
use cnnc_runtime::kernels::optim::{self, Rule};
use cnnc_runtime::kernels::pool2d::{self, PoolGeom};
use cnnc_runtime::kernels::softmax::{self, LossKind, Targets};
use cnnc_runtime::kernels::{elementwise as ew, Ctx, KernelIsa};
use cnnc_runtime::pool::Pool;
use cnnc_runtime::rng::{dropout_keep, Rng};
use support::{assert_close, Tol};

const TOL: Tol = Tol { abs: 1e-5, rel: 1e-4 };
/// Sums over many rows (BN statistics and their gradients).
const SUM_TOL: Tol = Tol { abs: 1e-4, rel: 1e-3 };

fn data(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| lo + (hi - lo) * r.uniform()).collect()
}

/// Calls `f` with every (pool, ISA) combination: 1 and 2 threads, every supported ISA.
fn each_ctx(mut f: impl FnMut(&Ctx, &str)) {
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        for isa in KernelIsa::all_supported() {
            let ctx = Ctx::with_isa(&pool, isa);
            f(&ctx, &format!("{threads} thread(s), {}", isa.name()));
        }
    }
}

fn act_ref(a: Act, x: f32) -> f32 {
    let x = x as f64;
    (match a {
        Act::Linear => x,
        Act::Relu => x.max(0.0),
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Act::Tanh => x.tanh(),
    }) as f32
}

fn act_grad_ref(a: Act, y: f32, d: f32) -> f32 {
    let (y, d) = (y as f64, d as f64);
    (match a {
        Act::Linear => d,
        Act::Relu => {
            if y > 0.0 {
                d
            } else {
                0.0
            }
        }
        Act::Sigmoid => d * y * (1.0 - y),
        Act::Tanh => d * (1.0 - y * y),
    }) as f32
}

const ACTS: [Act; 4] = [Act::Linear, Act::Relu, Act::Sigmoid, Act::Tanh];

#[test]
fn elementwise_ops_match_loops() {
    let (rows, c) = (1500, 37);
    let len = rows * c;
    let x = data(len, 1, -4.0, 4.0);
    let z = data(len, 2, -1.0, 1.0);
    let bias = data(c, 3, -1.0, 1.0);
    each_ctx(|ctx, at| {
        let mut y = vec![0f32; len];
        for a in ACTS {
            ew::act(ctx, a, &x, &mut y);
            let want: Vec<f32> = x.iter().map(|&v| act_ref(a, v)).collect();
            assert_close(&y, &want, TOL, &format!("act {a:?}, {at}"));
            let mut inplace = x.clone();
            ew::act_in_place(ctx, a, &mut inplace);
            assert_close(&inplace, &want, TOL, &format!("act in place {a:?}, {at}"));
            let out = want.clone();
            ew::act_grad(ctx, a, &out, &z, &mut y);
            let want: Vec<f32> = out.iter().zip(&z).map(|(&o, &d)| act_grad_ref(a, o, d)).collect();
            assert_close(&y, &want, TOL, &format!("act grad {a:?}, {at}"));
            let mut r = x.clone();
            ew::add_act_in_place(ctx, a, &mut r, &z);
            let want: Vec<f32> = x.iter().zip(&z).map(|(&v, &w)| act_ref(a, v + w)).collect();
            assert_close(&r, &want, TOL, &format!("residual add + {a:?}, {at}"));
        }
        ew::bias_add(ctx, c, &x, &bias, &mut y);
        let want: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v + bias[i % c]).collect();
        assert_close(&y, &want, TOL, &format!("bias add, {at}"));
        ew::add(ctx, &x, &z, &mut y);
        let want: Vec<f32> = x.iter().zip(&z).map(|(a, b)| a + b).collect();
        assert_close(&y, &want, TOL, &format!("add, {at}"));
        ew::copy(ctx, &x, &mut y);
        assert_eq!(y, x, "copy, {at}");
        ew::fill(&mut y, 2.5);
        assert!(y.iter().all(|&v| v == 2.5), "fill, {at}");
        // Narrow channel counts are summed as widened rows, with a tail of rows (1500 = 24·62 + 12).
        for c in [c, 6, 10] {
            let x = &x[..rows * c];
            let mut s = vec![0f32; c];
            ew::reduce_rows(ctx, rows, c, x, &mut s);
            let want: Vec<f32> = (0..c)
                .map(|j| (0..rows).map(|i| x[i * c + j] as f64).sum::<f64>() as f32)
                .collect();
            assert_close(&s, &want, SUM_TOL, &format!("reduce rows of {c}, {at}"));
        }
    });
    let mut s = vec![0f32; rows];
    ew::reduce_cols(rows, c, &x, &mut s);
    let want: Vec<f32> = (0..rows)
        .map(|i| x[i * c..(i + 1) * c].iter().map(|&v| v as f64).sum::<f64>() as f32)
        .collect();
    assert_close(&s, &want, TOL, "reduce cols");
}

#[test]
fn dropout_uses_the_shared_mask() {
    let len = 70_001;
    let x = data(len, 4, -1.0, 1.0);
    let (rate, seed, step) = (0.3, 42, 7);
    let scale = 1.0 / (1.0 - rate);
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(seed, step, i as u64, rate) {
                v * scale
            } else {
                0.0
            }
        })
        .collect();
    each_ctx(|ctx, at| {
        let mut y = vec![0f32; len];
        ew::dropout(ctx, rate, seed, step, &x, &mut y);
        assert_eq!(y, want, "dropout, {at}");
    });
}

#[test]
fn concat_and_slice_channels() {
    let rows = 5;
    let (a, b) = (data(rows * 3, 5, -1.0, 1.0), data(rows * 2, 6, -1.0, 1.0));
    let mut y = vec![0f32; rows * 5];
    ew::concat_part(rows, 5, 0, 3, &a, &mut y);
    ew::concat_part(rows, 5, 3, 2, &b, &mut y);
    for r in 0..rows {
        assert_eq!(&y[r * 5..r * 5 + 3], &a[r * 3..r * 3 + 3]);
        assert_eq!(&y[r * 5 + 3..r * 5 + 5], &b[r * 2..r * 2 + 2]);
    }
    let mut s = vec![0f32; rows * 2];
    ew::slice_channels(rows, 5, 3, 2, &y, &mut s);
    assert_eq!(s, b);
}

/// Naive pooling with TF semantics: `(pooled, max-grad, avg-grad)` for `dy`.
fn pool_ref(g: &PoolGeom, x: &[f32], dy: &[f32], max: bool) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0f32; g.output_len()];
    let mut dx = vec![0f64; g.input_len()];
    let c = g.c;
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let taps: Vec<usize> = (0..g.size[0])
                    .filter_map(|t| (oh * g.stride[0] + t).checked_sub(g.pad.top).filter(|&i| i < g.h))
                    .flat_map(|ih| {
                        (0..g.size[1])
                            .filter_map(move |t| (ow * g.stride[1] + t).checked_sub(g.pad.left).filter(|&j| j < g.w))
                            .map(move |iw| ((n * g.h + ih) * g.w + iw) * c)
                    })
                    .collect();
                let yo = ((n * g.oh + oh) * g.ow + ow) * c;
                for ch in 0..c {
                    if taps.is_empty() {
                        continue;
                    }
                    if max {
                        let mut arg = taps[0] + ch;
                        for &t in &taps[1..] {
                            if x[t + ch] > x[arg] {
                                arg = t + ch;
                            }
                        }
                        y[yo + ch] = x[arg];
                        dx[arg] += dy[yo + ch] as f64;
                    } else {
                        let k = taps.len() as f64;
                        y[yo + ch] = (taps.iter().map(|&t| x[t + ch] as f64).sum::<f64>() / k) as f32;
                        for &t in &taps {
                            dx[t + ch] += dy[yo + ch] as f64 / k;
                        }
                    }
                }
            }
        }
    }
    (y, dx.iter().map(|&v| v as f32).collect())
}

#[test]
fn pooling_matches_tf_semantics() {
    // (n, hw, c, window, stride, same): overlapping, strided, odd sizes, SAME and VALID.
    let cases = [
        (64, [28, 28], 32, [2, 2], [2, 2], false),
        (3, [7, 9], 5, [3, 3], [2, 2], true),
        (2, [8, 8], 16, [3, 3], [1, 1], true),
        (2, [5, 5], 3, [2, 2], [2, 2], true),
        (2, [10, 7], 4, [3, 2], [3, 3], false),
        (1, [6, 6], 2, [2, 2], [3, 3], false),
    ];
    for (i, &(n, hw, c, size, stride, same)) in cases.iter().enumerate() {
        let g = if same {
            PoolGeom::same(n, hw, c, size, stride)
        } else {
            PoolGeom::valid(n, hw, c, size, stride)
        };
        // Quantised values make ties common: the first maximum must get the gradient.
        let x: Vec<f32> = data(g.input_len(), 10 + i as u64, -2.0, 2.0)
            .iter()
            .map(|v| (v * 2.0).round() / 2.0)
            .collect();
        let dy = data(g.output_len(), 20 + i as u64, -1.0, 1.0);
        let (ymax, dmax) = pool_ref(&g, &x, &dy, true);
        let (yavg, davg) = pool_ref(&g, &x, &dy, false);
        let relu_x: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
        let (_, drelu) = pool_ref(&g, &relu_x, &dy, true);
        let drelu: Vec<f32> = drelu
            .iter()
            .zip(&relu_x)
            .map(|(&d, &r)| if r > 0.0 { d } else { 0.0 })
            .collect();
        each_ctx(|ctx, at| {
            let what = |k: &str| format!("case {i} {k}, {at}");
            let mut y = vec![f32::NAN; g.output_len()];
            let mut dx = vec![f32::NAN; g.input_len()];
            pool2d::max_pool(ctx, &g, &x, &mut y);
            assert_close(&y, &ymax, TOL, &what("max"));
            pool2d::max_pool_grad(ctx, &g, &x, &dy, &mut dx);
            assert_close(&dx, &dmax, TOL, &what("max grad"));
            pool2d::max_pool_grad_act(ctx, &g, &relu_x, &dy, Act::Relu, &mut dx);
            assert_close(&dx, &drelu, TOL, &what("max grad + relu grad"));
            pool2d::avg_pool(ctx, &g, &x, &mut y);
            assert_close(&y, &yavg, TOL, &what("avg"));
            dx.fill(f32::NAN);
            pool2d::avg_pool_grad(ctx, &g, &dy, &mut dx);
            assert_close(&dx, &davg, TOL, &what("avg grad"));
        });
    }
}

#[test]
fn global_average_pooling() {
    let (n, hw, c) = (40, 49, 64);
    let x = data(n * hw * c, 30, -1.0, 1.0);
    let dy = data(n * c, 31, -1.0, 1.0);
    let want: Vec<f32> = (0..n * c)
        .map(|i| {
            let (s, ch) = (i / c, i % c);
            ((0..hw).map(|p| x[(s * hw + p) * c + ch] as f64).sum::<f64>() / hw as f64) as f32
        })
        .collect();
    let want_dx: Vec<f32> = (0..n * hw * c)
        .map(|i| (dy[(i / (hw * c)) * c + i % c] as f64 / hw as f64) as f32)
        .collect();
    each_ctx(|ctx, at| {
        let mut y = vec![0f32; n * c];
        pool2d::global_avg_pool(ctx, n, hw, c, &x, &mut y);
        assert_close(&y, &want, TOL, &format!("global avg, {at}"));
        let mut dx = vec![0f32; n * hw * c];
        pool2d::global_avg_pool_grad(ctx, n, hw, c, &dy, &mut dx);
        assert_close(&dx, &want_dx, TOL, &format!("global avg grad, {at}"));
    });
}

/// Two-pass f64 moments `[mean; var]` of `x [rows, c]`.
fn moments_ref(rows: usize, c: usize, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mean: Vec<f64> = (0..c)
        .map(|j| (0..rows).map(|i| x[i * c + j] as f64).sum::<f64>() / rows as f64)
        .collect();
    let var: Vec<f64> = (0..c)
        .map(|j| (0..rows).map(|i| (x[i * c + j] as f64 - mean[j]).powi(2)).sum::<f64>() / rows as f64)
        .collect();
    (mean, var)
}

/// Channel counts that are and are not widened into whole vectors, with and without a tail of
/// rows (`channel_period`: 6 channels are taken 24 rows at a time, 3 channels 48, 24 six, 32
/// four; 7 rows are fewer than one; 600 channels are not widened and end in a partial vector).
#[test]
fn batch_norm_forward_backward_and_moving_stats() {
    for (rows, c) in [
        (2000, 24),
        (2000, 32),
        (1003, 6),
        (100, 3),
        (7, 6),
        (300, 128),
        (50, 600),
    ] {
        batch_norm_case(rows, c);
    }
}

fn batch_norm_case(rows: usize, c: usize) {
    let eps = 1e-3f32;
    // An offset mean (cancellation) and a spread of scales per channel.
    let x: Vec<f32> = data(rows * c, 40, -1.0, 1.0)
        .iter()
        .enumerate()
        .map(|(i, &v)| 3.0 + v * (1.0 + (i % c) as f32 * 0.1))
        .collect();
    let gamma = data(c, 41, 0.5, 1.5);
    let beta = data(c, 42, -0.5, 0.5);
    let r = data(rows * c, 43, -1.0, 1.0);
    let dy = data(rows * c, 44, -1.0, 1.0);
    let (mean, var) = moments_ref(rows, c, &x);
    let moments: Vec<f32> = mean.iter().chain(&var).map(|&v| v as f32).collect();
    let inv: Vec<f64> = var.iter().map(|&v| 1.0 / (v + eps as f64).sqrt()).collect();
    let xhat = |i: usize| (x[i] as f64 - mean[i % c]) * inv[i % c];
    for act in [Act::Linear, Act::Relu, Act::Sigmoid, Act::Tanh] {
        // y = act(γ x̂ + β + r); g = act'(y)·dy; dx = γ·inv·(g − mean(g) − x̂·mean(g x̂)).
        let y: Vec<f32> = (0..rows * c)
            .map(|i| act_ref(act, (gamma[i % c] as f64 * xhat(i) + beta[i % c] as f64) as f32 + r[i]))
            .collect();
        let g: Vec<f64> = (0..rows * c).map(|i| act_grad_ref(act, y[i], dy[i]) as f64).collect();
        let sum =
            |f: &dyn Fn(usize) -> f64| -> Vec<f64> { (0..c).map(|j| (0..rows).map(|i| f(i * c + j)).sum()).collect() };
        let (sg, sgx) = (sum(&|i| g[i]), sum(&|i| g[i] * xhat(i)));
        let m = rows as f64;
        let dx: Vec<f32> = (0..rows * c)
            .map(|i| {
                let j = i % c;
                (gamma[j] as f64 * inv[j] * (g[i] - sg[j] / m - xhat(i) * sgx[j] / m)) as f32
            })
            .collect();
        each_ctx(|ctx, at| {
            let what = |k: &str| format!("{k} ({act:?}), [{rows}, {c}], {at}");
            let mut mo = vec![0f32; 2 * c];
            norm::moments(ctx, rows, c, &x, &mut mo);
            assert_close(&mo, &moments, Tol { abs: 1e-5, rel: 1e-5 }, &what("moments"));
            let mut scale = vec![0f32; c];
            norm::bn_scale(&moments[c..], Some(&gamma), eps, &mut scale);
            let mut out = vec![0f32; rows * c];
            norm::bn_apply(ctx, c, &x, &moments[..c], &scale, &beta, Some(&r), act, &mut out);
            assert_close(&out, &y, TOL, &what("bn_apply"));
            let b = BnBackward {
                c,
                x: &x,
                moments: &moments,
                gamma: Some(&gamma),
                eps,
                act,
                y: Some(&y),
                beta: None,
                dy: &dy,
            };
            let (mut got, mut dg, mut db) = (vec![0f32; rows * c], vec![0f32; c], vec![0f32; c]);
            norm::bn_backward(ctx, &b, Some(&mut got), Some(&mut dg), Some(&mut db));
            assert_close(&got, &dx, SUM_TOL, &what("bn dx"));
            let f = |v: &[f64]| v.iter().map(|&s| s as f32).collect::<Vec<f32>>();
            assert_close(&dg, &f(&sgx), SUM_TOL, &what("bn dgamma"));
            assert_close(&db, &f(&sg), SUM_TOL, &what("bn dbeta"));
        });
    }
    // A ReLU after BN without a residual: its mask recomputed from x and β gives the same
    // gradients, bit for bit, as reading the stored output.
    each_ctx(|ctx, at| {
        let mut scale = vec![0f32; c];
        norm::bn_scale(&moments[c..], Some(&gamma), eps, &mut scale);
        let mut y = vec![0f32; rows * c];
        norm::bn_apply(ctx, c, &x, &moments[..c], &scale, &beta, None, Act::Relu, &mut y);
        assert!(y.contains(&0.0) && y.iter().any(|&v| v > 0.0), "both sides of the mask");
        let want: Vec<f32> = (0..rows * c)
            .map(|i| ((x[i] - moments[i % c]) * scale[i % c] + beta[i % c]).max(0.0))
            .collect();
        assert_eq!(
            y, want,
            "bn_apply: the same f32 operations per value, [{rows}, {c}], {at}"
        );
        let stored = BnBackward {
            c,
            x: &x,
            moments: &moments,
            gamma: Some(&gamma),
            eps,
            act: Act::Relu,
            y: Some(&y),
            beta: None,
            dy: &dy,
        };
        let recomputed = BnBackward {
            y: None,
            beta: Some(&beta),
            ..stored
        };
        let mut outs = [(); 2].map(|_| (vec![0f32; rows * c], vec![0f32; c], vec![0f32; c]));
        for (b, (dx, dg, db)) in [stored, recomputed].iter().zip(outs.iter_mut()) {
            norm::bn_backward(ctx, b, Some(dx), Some(dg), Some(db));
        }
        assert_eq!(outs[0], outs[1], "recomputed ReLU mask, {at}");
    });
    let moving = data(c, 45, -1.0, 1.0);
    let want: Vec<f32> = moving
        .iter()
        .zip(&mean)
        .map(|(&v, &s)| (0.99 * v as f64 + 0.01 * (s as f32) as f64) as f32)
        .collect();
    let mut out = vec![0f32; c];
    norm::moving_average(&moving, &moments[..c], 0.99, &mut out);
    assert_close(&out, &want, Tol::TIGHT, "moving average");
    let mut inplace = moving.clone();
    norm::moving_average_in_place(&mut inplace, &moments[..c], 0.99);
    assert_eq!(inplace, out);
}

/// f64 softmax of one row.
fn softmax_ref(z: &[f32]) -> Vec<f64> {
    let max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn softmax_and_its_gradient() {
    let (rows, cols) = (2000, 21);
    let x = data(rows * cols, 50, -30.0, 30.0);
    let dy = data(rows * cols, 51, -1.0, 1.0);
    let want: Vec<f32> = x.chunks(cols).flat_map(softmax_ref).map(|v| v as f32).collect();
    let mut want_dx = vec![0f32; rows * cols];
    for r in 0..rows {
        let (y, d) = (&want[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let dot: f64 = y.iter().zip(d).map(|(&a, &b)| a as f64 * b as f64).sum();
        for j in 0..cols {
            want_dx[r * cols + j] = (y[j] as f64 * (d[j] as f64 - dot)) as f32;
        }
    }
    each_ctx(|ctx, at| {
        let mut y = vec![0f32; rows * cols];
        softmax::softmax(ctx, rows, cols, &x, &mut y);
        assert_close(&y, &want, TOL, &format!("softmax, {at}"));
        let mut z = x.clone();
        softmax::softmax_in_place(ctx, rows, cols, &mut z);
        assert_eq!(z, y, "softmax in place, {at}");
        softmax::softmax_grad(ctx, rows, cols, &want, &dy, &mut y);
        assert_close(&y, &want_dx, TOL, &format!("softmax grad, {at}"));
    });
}

#[test]
fn softmax_cross_entropy_fused_and_losses() {
    let (rows, k) = (7, 10);
    let z = data(rows * k, 60, -5.0, 5.0);
    let ids: Vec<f32> = (0..rows).map(|i| ((i * 3) % k) as f32).collect();
    let mut onehot = vec![0f32; rows * k];
    for (i, &c) in ids.iter().enumerate() {
        onehot[i * k + c as usize] = 1.0;
    }
    let n = rows as f64;
    let mut loss = 0f64;
    let mut probs = Vec::new();
    let mut grad = Vec::new();
    for r in 0..rows {
        let p = softmax_ref(&z[r * k..(r + 1) * k]);
        loss -= p[ids[r] as usize].ln();
        for j in 0..k {
            probs.push(p[j] as f32);
            grad.push(((p[j] - onehot[r * k + j] as f64) / n) as f32);
        }
    }
    let loss = (loss / n) as f32;
    for target in [Targets::Sparse(&ids), Targets::Dense(&onehot)] {
        let (mut d, mut p) = (vec![0f32; rows * k], vec![0f32; rows * k]);
        let l = softmax::softmax_xent(rows, k, &z, target, &mut d, Some(&mut p));
        assert_close(&[l], &[loss], TOL, &format!("xent loss {target:?}"));
        assert_close(&d, &grad, TOL, "xent dlogits");
        assert_close(&p, &probs, TOL, "xent probabilities");
        let kind = match target {
            Targets::Sparse(_) => LossKind::SparseCategoricalCrossentropy,
            Targets::Dense(_) => LossKind::CategoricalCrossentropy,
        };
        assert_close(
            &[softmax::loss(kind, true, rows, k, &z, target)],
            &[loss],
            TOL,
            "loss from logits",
        );
        softmax::loss_grad(kind, true, rows, k, &z, target, &mut d);
        assert_close(&d, &grad, TOL, "loss grad from logits");
        // From probabilities: −log p of the true class, gradient −1/(p N) there.
        let want_l = ids
            .iter()
            .enumerate()
            .map(|(r, &c)| -(probs[r * k + c as usize].clamp(1e-7, 1.0 - 1e-7) as f64).ln())
            .sum::<f64>()
            / n;
        assert_close(
            &[softmax::loss(kind, false, rows, k, &probs, target)],
            &[want_l as f32],
            TOL,
            "loss from p",
        );
        // Keras's loss depends on the whole row (it renormalises it), so every column has a
        // gradient: (1/S − t/p)/N with S = Σp (1 here, up to rounding).
        softmax::loss_grad(kind, false, rows, k, &probs, target, &mut d);
        for (i, (&g, &t)) in d.iter().zip(&onehot).enumerate() {
            let r = i / k;
            let s: f64 = probs[r * k..(r + 1) * k].iter().map(|&p| p as f64).sum();
            let want = ((1.0 / s - t as f64 / probs[i] as f64) / n) as f32;
            assert_close(&[g], &[want], TOL, "loss grad from p");
        }
        // Outputs that are not a distribution (LeNet's sigmoids): Keras renormalises the row, so
        // ten outputs of 0.5 give ln 10 whatever the class, and the gradient (1/5 − t/0.5)/N.
        let half = vec![0.5f32; rows * k];
        let l = softmax::loss(kind, false, rows, k, &half, target);
        assert_close(&[l], &[std::f32::consts::LN_10], TOL, "loss from sigmoid outputs");
        softmax::loss_grad(kind, false, rows, k, &half, target, &mut d);
        let want: Vec<f32> = onehot.iter().map(|&t| ((0.2 - t as f64 / 0.5) / n) as f32).collect();
        assert_close(&d, &want, TOL, "loss grad from sigmoid outputs");
    }
    // Mean squared error over every element.
    let t = data(rows * k, 61, -1.0, 1.0);
    let mse = z
        .iter()
        .zip(&t)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / (rows * k) as f64;
    let dense = Targets::Dense(&t);
    let l = softmax::loss(LossKind::MeanSquaredError, false, rows, k, &z, dense);
    assert_close(&[l], &[mse as f32], TOL, "mse");
    let mut d = vec![0f32; rows * k];
    softmax::loss_grad(LossKind::MeanSquaredError, false, rows, k, &z, dense, &mut d);
    let want: Vec<f32> = z
        .iter()
        .zip(&t)
        .map(|(&a, &b)| (2.0 * (a as f64 - b as f64) / (rows * k) as f64) as f32)
        .collect();
    assert_close(&d, &want, TOL, "mse grad");
    // A bad class id gives a NaN loss and no gradient for its row.
    let bad = [1.0, 12.0, 0.5, 3.0, 0.0, 1.0, 2.0];
    let mut d = vec![1f32; rows * k];
    let l = softmax::softmax_xent(rows, k, &z, Targets::Sparse(&bad), &mut d, None);
    assert!(l.is_nan());
    assert!(d[k..3 * k].iter().all(|&v| v == 0.0));
}

#[test]
fn optimizer_updates_follow_the_rules() {
    let len = 1000;
    let g = data(len, 70, -1.0, 1.0);
    let p0 = data(len, 71, -1.0, 1.0);
    let s0 = data(len, 72, 0.0, 0.5);
    let pool = Pool::new(1);
    let ctx = Ctx::new(&pool);
    let t = 3u64;
    // SGD, plain and with (Nesterov) momentum.
    for nesterov in [false, true] {
        let rule = Rule::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov,
        };
        let (mut p, mut v) = (p0.clone(), s0.clone());
        optim::update(&ctx, &rule, t, &mut p, &g, &mut [&mut v]);
        for i in 0..len {
            let vv = 0.9 * s0[i] - 0.1 * g[i];
            let pp = if nesterov {
                p0[i] + 0.9 * vv - 0.1 * g[i]
            } else {
                p0[i] + vv
            };
            assert_close(&[v[i], p[i]], &[vv, pp], Tol::TIGHT, "sgd momentum");
        }
    }
    let mut p = p0.clone();
    let plain = Rule::Sgd {
        lr: 0.1,
        momentum: 0.0,
        nesterov: false,
    };
    optim::update(&ctx, &plain, t, &mut p, &g, &mut []);
    let want: Vec<f32> = p0.iter().zip(&g).map(|(&w, &d)| w - 0.1 * d).collect();
    assert_close(&p, &want, Tol::TIGHT, "sgd");
    // Adam with bias correction at step t.
    let (b1, b2, eps, lr) = (0.9f32, 0.999f32, 1e-7f32, 0.01f32);
    let adam = Rule::Adam {
        lr,
        beta_1: b1,
        beta_2: b2,
        epsilon: eps,
    };
    let (mut p, mut m, mut v) = (p0.clone(), s0.clone(), s0.clone());
    optim::update(&ctx, &adam, t, &mut p, &g, &mut [&mut m, &mut v]);
    let alpha = lr as f64 * (1.0 - (b2 as f64).powi(t as i32)).sqrt() / (1.0 - (b1 as f64).powi(t as i32));
    for i in 0..len {
        let mm = s0[i] as f64 + (g[i] as f64 - s0[i] as f64) * (1.0 - b1 as f64);
        let vv = s0[i] as f64 + ((g[i] as f64).powi(2) - s0[i] as f64) * (1.0 - b2 as f64);
        let pp = p0[i] as f64 - alpha * mm / (vv.sqrt() + eps as f64);
        assert_close(&[m[i], v[i], p[i]], &[mm as f32, vv as f32, pp as f32], TOL, "adam");
    }
    // RMSprop, centered with momentum.
    let rms = Rule::RmsProp {
        lr,
        rho: 0.9,
        momentum: 0.5,
        epsilon: eps,
        centered: true,
    };
    let (mut p, mut v, mut a, mut mo) = (p0.clone(), s0.clone(), s0.clone(), s0.clone());
    optim::update(&ctx, &rms, t, &mut p, &g, &mut [&mut v, &mut a, &mut mo]);
    for i in 0..len {
        let vv = 0.9 * s0[i] as f64 + 0.1 * (g[i] as f64).powi(2);
        let aa = 0.9 * s0[i] as f64 + 0.1 * g[i] as f64;
        let inc = lr as f64 * g[i] as f64 / (vv - aa * aa + eps as f64).sqrt();
        let mm = 0.5 * s0[i] as f64 + inc;
        let want = [vv as f32, aa as f32, mm as f32, (p0[i] as f64 - mm) as f32];
        assert_close(&[v[i], a[i], mo[i], p[i]], &want, TOL, "rmsprop");
    }
}

#[test]
fn pool_geometry_follows_tf() {
    let g = PoolGeom::same(1, [7, 7], 1, [2, 2], [2, 2]);
    assert_eq!(
        (g.oh, g.ow, g.pad),
        (
            4,
            4,
            Pad {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1
            }
        )
    );
    let g = PoolGeom::valid(1, [7, 7], 1, [2, 2], [2, 2]);
    assert_eq!((g.oh, g.ow), (3, 3));
    let g = PoolGeom::valid(1, [1, 1], 1, [2, 2], [2, 2]);
    assert_eq!((g.oh, g.ow), (0, 0));
}
