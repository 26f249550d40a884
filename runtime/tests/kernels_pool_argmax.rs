//! Max-pooling with argmax and its gradient, and the conv with a max-pool in its epilogue,
//! against the kernels they replace in a training step: `max_pool` (values), a first-maximum
//! reference (indices), `max_pool_grad_act` on the unpooled activation (gradients), and
//! `conv2d_forward` + `max_pool` (the pooled conv). Ties are made common by quantised inputs.
//! The replacements compute the same values in the same order, so the comparisons are exact.

mod support;

use cnnc_runtime::kernels::activation::Act;
use cnnc_runtime::kernels::norm;
use cnnc_runtime::kernels::pool2d::{self, PoolGeom};
use cnnc_runtime::kernels::{
    bn_act_max_pool_argmax, conv2d_forward, conv2d_forward_pooled, max_pool_argmax, max_pool_grad_argmax,
    pooled_conv_workspace, BnAffine, ConvGeom, Ctx, Epilogue, KernelIsa,
};
use cnnc_runtime::pool::Pool;
use cnnc_runtime::rng::Rng;
use support::{assert_close, Tol};

/// The replacements are exact: the same operations on the same values.
const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

/// `len` values in [-2, 2) rounded to halves (many ties).
fn quantised(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len)
        .map(|_| ((r.uniform() * 4.0 - 2.0) * 2.0).round() / 2.0)
        .collect()
}

fn each_ctx(mut f: impl FnMut(&Ctx, &str)) {
    cnnc_runtime::kernels::set_parallel_min_flops(0);
    for threads in [1, 2] {
        let pool = Pool::new(threads);
        for isa in KernelIsa::all_supported() {
            f(
                &Ctx::with_isa(&pool, isa),
                &format!("{threads} thread(s), {}", isa.name()),
            );
        }
    }
}

/// Row-major index in its window of each output's first maximum.
fn argmax_ref(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; g.output_len()];
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                for c in 0..g.c {
                    let (mut best, mut arg) = (f32::NEG_INFINITY, usize::MAX);
                    for t in 0..g.size[0] * g.size[1] {
                        let (ih, iw) = (oh * g.size[0] + t / g.size[1], ow * g.size[1] + t % g.size[1]);
                        let v = x[((n * g.h + ih) * g.w + iw) * g.c + c];
                        if arg == usize::MAX || v > best {
                            (best, arg) = (v, t);
                        }
                    }
                    out[((n * g.oh + oh) * g.ow + ow) * g.c + c] = arg as f32;
                }
            }
        }
    }
    out
}

fn act_apply(a: Act, v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    a.apply_slice(&mut v);
    v
}

#[test]
fn pooling_with_argmax_matches_max_pool_and_its_gradient() {
    // (n, [h, w], c, window): channel counts below, at and above a vector; 2x2 and 3x2 windows.
    let cases = [
        (3, [8, 6], 5, [2, 2]),
        (2, [12, 10], 16, [2, 2]),
        (4, [6, 8], 37, [3, 2]),
        (16, [16, 16], 32, [2, 2]),
    ];
    for (i, &(n, hw, c, size)) in cases.iter().enumerate() {
        let g = PoolGeom::valid(n, hw, c, size, size);
        let pre = quantised(g.input_len(), 40 + i as u64);
        let dy = quantised(g.output_len(), 50 + i as u64);
        for act in [Act::Linear, Act::Relu, Act::Sigmoid, Act::Tanh] {
            // The pool's input is the activation's output.
            let x = act_apply(act, &pre);
            let want_arg = argmax_ref(&g, &x);
            each_ctx(|ctx, at| {
                let what = |k: &str| format!("case {i} {act:?} {k}, {at}");
                let (mut y, mut want_y) = (vec![f32::NAN; g.output_len()], vec![f32::NAN; g.output_len()]);
                let mut arg = vec![f32::NAN; g.output_len()];
                pool2d::max_pool(ctx, &g, &x, &mut want_y);
                max_pool_argmax(ctx, &g, &x, &mut y, &mut arg);
                assert_close(&y, &want_y, EXACT, &what("values"));
                assert_close(&arg, &want_arg, EXACT, &what("argmax"));
                let (mut dx, mut want_dx) = (vec![f32::NAN; g.input_len()], vec![f32::NAN; g.input_len()]);
                pool2d::max_pool_grad_act(ctx, &g, &x, &dy, act, &mut want_dx);
                max_pool_grad_argmax(ctx, &g, &arg, &y, &dy, act, &mut dx);
                assert_close(&dx, &want_dx, EXACT, &what("gradient"));
            });
        }
    }
}

/// BN's normalise pass with the ReLU and the pool fused (`bn_act_max_pool_argmax`) against
/// `bn_apply` then `max_pool_argmax` on the stored activation: the same values, bit for bit.
#[test]
fn pooled_bn_matches_bn_apply_then_pool() {
    let cases = [
        (3, [8, 6], 5, [2, 2]),
        (2, [12, 10], 37, [2, 2]),
        (4, [6, 8], 16, [3, 2]),
    ];
    for (i, &(n, hw, c, size)) in cases.iter().enumerate() {
        let g = PoolGeom::valid(n, hw, c, size, size);
        let x = quantised(g.input_len(), 60 + i as u64);
        let (mean, scale, beta) = (quantised(c, 61), quantised(c, 62), quantised(c, 63));
        for act in [Act::Linear, Act::Relu] {
            each_ctx(|ctx, at| {
                let what = |k: &str| format!("case {i} {act:?} {k}, {at}");
                let mut t = vec![f32::NAN; g.input_len()];
                norm::bn_apply(ctx, c, &x, &mean, &scale, &beta, None, act, &mut t);
                let (mut want_y, mut want_arg) = (vec![f32::NAN; g.output_len()], vec![f32::NAN; g.output_len()]);
                max_pool_argmax(ctx, &g, &t, &mut want_y, &mut want_arg);
                let (mut y, mut arg) = (vec![f32::NAN; g.output_len()], vec![f32::NAN; g.output_len()]);
                let bn = BnAffine {
                    mean: &mean,
                    scale: &scale,
                    beta: &beta,
                };
                bn_act_max_pool_argmax(ctx, &g, &x, bn, act, &mut y, &mut arg);
                assert_close(&y, &want_y, EXACT, &what("values"));
                assert_close(&arg, &want_arg, EXACT, &what("argmax"));
            });
        }
    }
}

#[test]
fn pooled_conv_matches_conv_then_pool() {
    // MNIST-like first and second layers, a 3-channel one, a batch that does not divide in
    // chunks, and a 5x5 valid sigmoid conv (LeNet-5); on AVX-512, Winograd convs pooled in
    // their output transform: F(4×4) with partial last tiles (14×14) and whole ones (8×8),
    // F(2×2) (one image; 10×10), a linear one with channels not a multiple of the lanes.
    let cases = [
        (ConvGeom::same(5, [28, 28], 1, [3, 3], 32, [1, 1]), Act::Relu),
        (ConvGeom::same(23, [14, 14], 32, [3, 3], 64, [1, 1]), Act::Relu),
        (ConvGeom::same(3, [16, 16], 3, [3, 3], 16, [1, 1]), Act::Tanh),
        (ConvGeom::valid(4, [28, 28], 1, [5, 5], 6, [1, 1]), Act::Sigmoid),
        (ConvGeom::same(4, [8, 8], 48, [3, 3], 32, [1, 1]), Act::Relu),
        (ConvGeom::same(1, [14, 14], 32, [3, 3], 40, [1, 1]), Act::Linear),
        (ConvGeom::same(3, [10, 10], 32, [3, 3], 32, [1, 1]), Act::Relu),
    ];
    for (i, &(g, act)) in cases.iter().enumerate() {
        let pg = PoolGeom::valid(g.n, [g.oh, g.ow], g.f, [2, 2], [2, 2]);
        let x = quantised(g.input_len(), 60 + i as u64);
        let w: Vec<f32> = quantised(g.kernel_len(), 70 + i as u64)
            .iter()
            .map(|v| v / 8.0)
            .collect();
        let bias = quantised(g.f, 80 + i as u64);
        each_ctx(|ctx, at| {
            let what = |k: &str| format!("case {i} {k}, {at}");
            let epi = || Epilogue::none().with_bias(&bias).with_act(act);
            let mut full = vec![f32::NAN; g.output_len()];
            conv2d_forward(ctx, &g, &x, &w, epi(), &mut full);
            let mut want = vec![f32::NAN; pg.output_len()];
            pool2d::max_pool(ctx, &pg, &full, &mut want);
            let want_arg = argmax_ref(&pg, &full);
            let mut ws = vec![0f32; pooled_conv_workspace(&g)];
            let (mut y, mut arg) = (vec![f32::NAN; pg.output_len()], vec![f32::NAN; pg.output_len()]);
            conv2d_forward_pooled(ctx, &g, &x, &w, epi(), &pg, &mut y, Some(&mut arg), &mut ws);
            assert_close(&y, &want, EXACT, &what("pooled values"));
            assert_close(&arg, &want_arg, EXACT, &what("argmax"));
            y.fill(f32::NAN);
            conv2d_forward_pooled(ctx, &g, &x, &w, epi(), &pg, &mut y, None, &mut ws);
            assert_close(&y, &want, EXACT, &what("pooled values without argmax"));
        });
    }
}
