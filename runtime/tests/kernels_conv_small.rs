//! The small-channel direct convolution (`conv_small`): forward with every activation and bias,
//! fused 2×2 / 3×3 max-pool with its argmax, kernel and bias gradients from dense and from
//! pooled dy; f = 6, 16, 20, 32, 48, strides 1 and 2, valid / SAME / asymmetric padding, batch 1
//! and several; every ISA, 1 and 2 threads, bit-identical across thread counts.
//!
//! Tolerance: each value is a sum of at most 100 products, accumulated in f32 in tap (or pixel)
//! order, checked against an f64 reference within `SMALL_ULPS · ε · (S + 1)`, with `S` the same
//! sum over absolute values (`Σ|x||w| + |bias|`, or `Σ|x||dy|`): the rounding error of a dot
//! product is a few ulps of the magnitudes summed, not of the result. The `+ 1` covers the
//! activations' own error (a few ulps of values ≤ 1; they are 1-Lipschitz).

mod kernels_common;
mod support;

use cnnc_runtime::kernels::pool2d::{max_pool, max_pool_grad_act, PoolGeom};
use cnnc_runtime::kernels::{
    conv2d_forward, conv2d_forward_small, conv2d_grad_kernel, conv2d_grad_kernel_small, small_conv_applies, Act,
    ConvGeom, Ctx, Epilogue, Pad, SmallDy,
};
use cnnc_runtime::pool::Pool;
use kernels_common::{conv_grad_kernel_ref, conv_ref, data, isas, pools};
use support::{assert_close, Tol};

/// Allowed error in units of `ε · (S + 1)` (see the module comment): the worst observed over
/// these cases and every ISA is about 1.5 (printed by the tests), so 8 leaves a 5× margin.
const SMALL_ULPS: f32 = 8.0;

const ACTS: [Act; 4] = [Act::Linear, Act::Relu, Act::Sigmoid, Act::Tanh];

/// Geometries with the pool window each is checked with (`None`: not tiled by one).
fn cases() -> Vec<(ConvGeom, Option<[usize; 2]>)> {
    vec![
        // mnist_cnn/conv1, batch 1 and 3.
        (ConvGeom::same(1, [28, 28], 1, [3, 3], 32, [1, 1]), Some([2, 2])),
        (ConvGeom::same(3, [12, 10], 1, [3, 3], 32, [1, 1]), Some([2, 2])),
        // lenet5/conv1: 6 channels.
        (ConvGeom::valid(2, [28, 28], 1, [5, 5], 6, [1, 1]), Some([2, 2])),
        (ConvGeom::same(2, [16, 16], 3, [3, 3], 16, [1, 1]), Some([2, 2])),
        (ConvGeom::same(1, [9, 12], 1, [3, 3], 16, [1, 1]), Some([3, 3])),
        (ConvGeom::valid(1, [11, 13], 2, [3, 3], 6, [2, 2]), None),
        (ConvGeom::same(2, [15, 9], 3, [3, 3], 20, [2, 2]), Some([2, 1])),
        (ConvGeom::valid(1, [14, 14], 1, [7, 7], 48, [1, 1]), Some([2, 2])),
        (
            ConvGeom::new(
                2,
                [5, 7],
                4,
                [3, 2],
                9,
                [1, 1],
                Pad {
                    top: 2,
                    bottom: 0,
                    left: 1,
                    right: 3,
                },
            ),
            None,
        ),
    ]
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Panics unless `|actual − expected| ≤ SMALL_ULPS·ε·(scale + 1)` elementwise; returns the
/// worst error in those units.
fn check(actual: &[f32], expected: &[f32], scale: &[f32], what: &str) -> f32 {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let mut worst = 0f32;
    for (i, ((&a, &e), &s)) in actual.iter().zip(expected).zip(scale).enumerate() {
        let units = (a - e).abs() / (f32::EPSILON * (s + 1.0));
        assert!(
            !a.is_nan() && units <= SMALL_ULPS,
            "{what}: [{i}] got {a}, expected {e}: {units} ε·(scale + 1) (scale = {s})"
        );
        worst = worst.max(units);
    }
    worst
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The expected activated forward and its error scale.
fn forward_ref(g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], act: Act) -> (Vec<f32>, Vec<f32>) {
    let mut y = conv_ref(g, x, w);
    let mut scale = conv_ref(g, &abs(x), &abs(w));
    for (i, (v, s)) in y.iter_mut().zip(scale.iter_mut()).enumerate() {
        *v = act.apply(*v + bias[i % g.f]);
        *s += bias[i % g.f].abs();
    }
    (y, scale)
}

/// Max-pool of `y` with the row-major window index of each first (strict `>`) maximum.
fn pool_ref(pg: &PoolGeom, y: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut out, mut idx) = (vec![0f32; pg.output_len()], vec![0f32; pg.output_len()]);
    let [a, b] = pg.size;
    for n in 0..pg.n {
        for py in 0..pg.oh {
            for px in 0..pg.ow {
                for k in 0..pg.c {
                    let at = |i: usize, j: usize| y[((n * pg.h + py * a + i) * pg.w + px * b + j) * pg.c + k];
                    let (mut best, mut bi) = (at(0, 0), 0);
                    for i in 0..a {
                        for j in 0..b {
                            if at(i, j) > best {
                                best = at(i, j);
                                bi = i * b + j;
                            }
                        }
                    }
                    let o = ((n * pg.oh + py) * pg.ow + px) * pg.c + k;
                    out[o] = best;
                    idx[o] = bi as f32;
                }
            }
        }
    }
    (out, idx)
}

#[test]
fn the_seed_first_layers_are_small_and_lenet_conv2_is_not() {
    let isa = cnnc_runtime::kernels::KernelIsa::detect();
    assert!(small_conv_applies(
        isa,
        &ConvGeom::same(128, [28, 28], 1, [3, 3], 32, [1, 1])
    ));
    assert!(small_conv_applies(
        isa,
        &ConvGeom::valid(128, [28, 28], 1, [5, 5], 6, [1, 1])
    ));
    assert!(small_conv_applies(
        isa,
        &ConvGeom::same(64, [32, 32], 3, [3, 3], 32, [1, 1])
    ));
    assert!(!small_conv_applies(
        isa,
        &ConvGeom::valid(128, [12, 12], 6, [5, 5], 16, [1, 1])
    ));
    assert!(!small_conv_applies(
        isa,
        &ConvGeom::same(8, [14, 14], 32, [3, 3], 64, [1, 1])
    ));
}

#[test]
fn forward_matches_reference_for_every_activation_bit_identical_across_threads() {
    let pools = pools();
    let mut worst = 0f32;
    for (g, _) in cases() {
        let (x, w, bias) = (data(g.input_len(), 1), data(g.kernel_len(), 2), data(g.f, 3));
        for isa in isas() {
            for act in ACTS {
                let (want, scale) = forward_ref(&g, &x, &w, &bias, act);
                let mut first: Option<Vec<f32>> = None;
                for pool in &pools {
                    let ctx = Ctx::with_isa(pool, isa);
                    let mut y = vec![f32::NAN; g.output_len()];
                    let epi = Epilogue::none().with_bias(&bias).with_act(act);
                    conv2d_forward_small(&ctx, &g, &x, &w, epi, None, &mut y);
                    let what = format!("{g:?} {isa:?} {act:?} {} thread(s)", pool.threads());
                    worst = worst.max(check(&y, &want, &scale, &what));
                    // The generic entry dispatches here: same bits.
                    let mut y2 = vec![f32::NAN; g.output_len()];
                    let epi = Epilogue::none().with_bias(&bias).with_act(act);
                    conv2d_forward(&ctx, &g, &x, &w, epi, &mut y2);
                    assert_eq!(bits(&y), bits(&y2), "{what}: conv2d_forward differs");
                    match &first {
                        None => first = Some(y),
                        Some(y1) => assert_eq!(bits(y1), bits(&y), "{what}: differs from 1 thread"),
                    }
                }
            }
            // No bias.
            let mut y = vec![0f32; g.output_len()];
            conv2d_forward_small(
                &Ctx::with_isa(&pools[0], isa),
                &g,
                &x,
                &w,
                Epilogue::none(),
                None,
                &mut y,
            );
            let zero = vec![0f32; g.f];
            let (want, scale) = forward_ref(&g, &x, &w, &zero, Act::Linear);
            check(&y, &want, &scale, &format!("{g:?} {isa:?} no bias"));
        }
    }
    println!("forward: worst error {worst} ε·(S + 1)");
}

/// Moments taken in the small kernel: each unit of output rows sums f32 deviations from its
/// first pixel (a few hundred values), then units combine in f64. Against the f64
/// moments of the output itself, that leaves errors of a few f32 ulps of the values summed.
const MOMENTS_TOL: Tol = Tol { abs: 2e-6, rel: 1e-5 };

/// The f64 `[mean; biased variance]` of the columns of `y [rows, f]`.
fn moments_ref(y: &[f32], f: usize) -> Vec<f32> {
    let rows = y.len() / f;
    let mut out = vec![0f32; 2 * f];
    for j in 0..f {
        let mean = (0..rows).map(|i| y[i * f + j] as f64).sum::<f64>() / rows as f64;
        let var = (0..rows).map(|i| (y[i * f + j] as f64 - mean).powi(2)).sum::<f64>() / rows as f64;
        (out[j], out[f + j]) = (mean as f32, var as f32);
    }
    out
}

/// With BN's moments asked, a small conv keeps the small kernel's output bits, and its moments
/// match the f64 moments of that output, the same bits for any thread count. Most channel
/// counts here (16, 32, 48, 64) take them in the kernel, row by row, in units of whole rows:
/// one unit and many, a short last unit, rows of tiles that overlap (each pixel counted once);
/// `conv2d_forward` takes 6, 9 and 20 channels' in a separate pass, so the kernel is also called
/// directly.
#[test]
fn small_conv_moments_match_the_output_bit_identical_across_threads() {
    let mut geoms: Vec<ConvGeom> = cases().into_iter().map(|(g, _)| g).collect();
    geoms.push(ConvGeom::same(4, [32, 32], 3, [3, 3], 32, [1, 1]));
    geoms.push(ConvGeom::same(3, [28, 28], 1, [3, 3], 64, [1, 1]));
    for g in geoms {
        let (x, w, bias) = (data(g.input_len(), 4), data(g.kernel_len(), 5), data(g.f, 6));
        for isa in isas() {
            for act in [Act::Linear, Act::Relu] {
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for pool in &pools() {
                    let ctx = Ctx::with_isa(pool, isa);
                    let what = format!("{g:?} {isa:?} {act:?} {} thread(s)", pool.threads());
                    let mut want = vec![f32::NAN; g.output_len()];
                    let epi = Epilogue::none().with_bias(&bias).with_act(act);
                    conv2d_forward_small(&ctx, &g, &x, &w, epi, None, &mut want);
                    // Through `conv2d_forward`, then the small kernel itself for every count.
                    for direct in [false, true] {
                        let what = format!("{what} direct={direct}");
                        let (mut y, mut mo) = (vec![f32::NAN; g.output_len()], vec![f32::NAN; 2 * g.f]);
                        let epi = Epilogue::none().with_bias(&bias).with_act(act).with_moments(&mut mo);
                        if direct {
                            conv2d_forward_small(&ctx, &g, &x, &w, epi, None, &mut y);
                        } else {
                            conv2d_forward(&ctx, &g, &x, &w, epi, &mut y);
                        }
                        assert_eq!(bits(&y), bits(&want), "{what}: output");
                        assert_close(&mo, &moments_ref(&y, g.f), MOMENTS_TOL, &format!("{what}: moments"));
                        if direct {
                            match &first {
                                None => first = Some((y, mo)),
                                Some((fy, fm)) => assert!(
                                    bits(fy) == bits(&y) && bits(fm) == bits(&mo),
                                    "{what}: differs across threads"
                                ),
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn pooled_forward_matches_conv_then_max_pool_with_first_maximum_argmax() {
    let pools = pools();
    for (g, window) in cases() {
        let Some(size) = window else { continue };
        let pg = PoolGeom::valid(g.n, [g.oh, g.ow], g.f, size, size);
        let (x, w, bias) = (data(g.input_len(), 4), data(g.kernel_len(), 5), data(g.f, 6));
        for isa in isas() {
            for act in ACTS {
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for pool in &pools {
                    let ctx = Ctx::with_isa(pool, isa);
                    let what = format!("{g:?} pool {size:?} {isa:?} {act:?} {} thread(s)", pool.threads());
                    let epi = || Epilogue::none().with_bias(&bias).with_act(act);
                    // The unpooled map by the same kernel, pooled by pool2d::max_pool.
                    let mut full = vec![0f32; g.output_len()];
                    conv2d_forward_small(&ctx, &g, &x, &w, epi(), None, &mut full);
                    let mut want = vec![0f32; pg.output_len()];
                    max_pool(&ctx, &pg, &full, &mut want);
                    let (want_ref, want_idx) = pool_ref(&pg, &full);
                    assert_eq!(bits(&want), bits(&want_ref), "{what}: reference pool");
                    let (mut y, mut am) = (vec![f32::NAN; pg.output_len()], vec![f32::NAN; pg.output_len()]);
                    conv2d_forward_small(&ctx, &g, &x, &w, epi(), Some((&pg, Some(&mut am))), &mut y);
                    assert_eq!(bits(&y), bits(&want), "{what}: pooled values");
                    assert_eq!(am, want_idx, "{what}: argmax");
                    // Without the argmax.
                    let mut y2 = vec![f32::NAN; pg.output_len()];
                    conv2d_forward_small(&ctx, &g, &x, &w, epi(), Some((&pg, None)), &mut y2);
                    assert_eq!(bits(&y2), bits(&want), "{what}: pooled values without argmax");
                    match &first {
                        None => first = Some((y, am)),
                        Some((y1, a1)) => {
                            assert_eq!(bits(y1), bits(&y), "{what}: differs from 1 thread");
                            assert_eq!(a1, &am, "{what}: argmax differs from 1 thread");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn ties_go_to_the_first_maximum() {
    // ReLU of an all-negative conv: every window is all zeros, so the argmax is 0 everywhere.
    let g = ConvGeom::same(1, [8, 8], 1, [3, 3], 16, [1, 1]);
    let pg = PoolGeom::valid(1, [8, 8], 16, [2, 2], [2, 2]);
    let x = vec![1f32; g.input_len()];
    let w = vec![-1f32; g.kernel_len()];
    for isa in isas() {
        let pool = Pool::new(1);
        let ctx = Ctx::with_isa(&pool, isa);
        let (mut y, mut am) = (vec![1f32; pg.output_len()], vec![1f32; pg.output_len()]);
        let epi = Epilogue::none().with_act(Act::Relu);
        conv2d_forward_small(&ctx, &g, &x, &w, epi, Some((&pg, Some(&mut am))), &mut y);
        assert!(y.iter().all(|&v| v == 0.0) && am.iter().all(|&v| v == 0.0), "{isa:?}");
    }
}

#[test]
fn kernel_and_bias_gradients_match_reference_bit_identical_across_threads() {
    let pools = pools();
    let mut worst = 0f32;
    for (g, _) in cases() {
        let (x, dy) = (data(g.input_len(), 7), data(g.output_len(), 8));
        let want = conv_grad_kernel_ref(&g, &x, &dy);
        let scale = conv_grad_kernel_ref(&g, &abs(&x), &abs(&dy));
        let mut want_db = vec![0f64; g.f];
        for (i, v) in dy.iter().enumerate() {
            want_db[i % g.f] += *v as f64;
        }
        let want_db: Vec<f32> = want_db.into_iter().map(|v| v as f32).collect();
        let db_scale: Vec<f32> = {
            let mut s = vec![0f32; g.f];
            for (i, v) in dy.iter().enumerate() {
                s[i % g.f] += v.abs();
            }
            s
        };
        for isa in isas() {
            let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
            for pool in &pools {
                let ctx = Ctx::with_isa(pool, isa);
                let what = format!("{g:?} {isa:?} {} thread(s)", pool.threads());
                let (mut dw, mut db) = (vec![f32::NAN; g.kernel_len()], vec![f32::NAN; g.f]);
                conv2d_grad_kernel_small(&ctx, &g, &x, SmallDy::Dense(&dy), &mut dw, Some(&mut db));
                worst = worst.max(check(&dw, &want, &scale, &format!("{what}: dw")));
                check(&db, &want_db, &db_scale, &format!("{what}: db"));
                let mut dw2 = vec![f32::NAN; g.kernel_len()];
                conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw2, None);
                assert_eq!(bits(&dw), bits(&dw2), "{what}: conv2d_grad_kernel differs");
                match &first {
                    None => first = Some((dw, db)),
                    Some((dw1, db1)) => {
                        assert_eq!(bits(dw1), bits(&dw), "{what}: dw differs from 1 thread");
                        assert_eq!(bits(db1), bits(&db), "{what}: db differs from 1 thread");
                    }
                }
            }
        }
    }
    println!("kernel gradient: worst error {worst} ε·(S + 1)");
}

#[test]
fn pooled_kernel_gradient_matches_the_expanded_dy() {
    let pools = pools();
    for (g, window) in cases() {
        let Some(size) = window else { continue };
        let pg = PoolGeom::valid(g.n, [g.oh, g.ow], g.f, size, size);
        let (x, w, bias) = (data(g.input_len(), 9), data(g.kernel_len(), 10), data(g.f, 11));
        let pdy = data(pg.output_len(), 12);
        for isa in isas() {
            for act in ACTS {
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for pool in &pools {
                    let ctx = Ctx::with_isa(pool, isa);
                    let what = format!("{g:?} pool {size:?} {isa:?} {act:?} {} thread(s)", pool.threads());
                    let epi = || Epilogue::none().with_bias(&bias).with_act(act);
                    let mut full = vec![0f32; g.output_len()];
                    conv2d_forward_small(&ctx, &g, &x, &w, epi(), None, &mut full);
                    let (mut py, mut am) = (vec![0f32; pg.output_len()], vec![0f32; pg.output_len()]);
                    conv2d_forward_small(&ctx, &g, &x, &w, epi(), Some((&pg, Some(&mut am))), &mut py);
                    // The conv output's dy, by the pool's (and activation's) gradient.
                    let mut dy = vec![0f32; g.output_len()];
                    max_pool_grad_act(&ctx, &pg, &full, &pdy, act, &mut dy);
                    let want = conv_grad_kernel_ref(&g, &x, &dy);
                    let scale = conv_grad_kernel_ref(&g, &abs(&x), &abs(&dy));
                    let mut want_db = vec![0f64; g.f];
                    for (i, v) in dy.iter().enumerate() {
                        want_db[i % g.f] += *v as f64;
                    }
                    let want_db: Vec<f32> = want_db.into_iter().map(|v| v as f32).collect();
                    let (mut dw, mut db) = (vec![f32::NAN; g.kernel_len()], vec![f32::NAN; g.f]);
                    let sdy = SmallDy::Pooled {
                        pool: &pg,
                        argmax: &am,
                        y: &py,
                        dy: &pdy,
                        act,
                    };
                    conv2d_grad_kernel_small(&ctx, &g, &x, sdy, &mut dw, Some(&mut db));
                    check(&dw, &want, &scale, &format!("{what}: dw"));
                    let db_scale = vec![pg.output_len() as f32; g.f];
                    check(&db, &want_db, &db_scale, &format!("{what}: db"));
                    match &first {
                        None => first = Some((dw, db)),
                        Some((dw1, db1)) => {
                            assert_eq!(bits(dw1), bits(&dw), "{what}: dw differs from 1 thread");
                            assert_eq!(bits(db1), bits(&db), "{what}: db differs from 1 thread");
                        }
                    }
                }
            }
        }
    }
}
