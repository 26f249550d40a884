//! GEMM against a naive triple loop: odd shapes, transposes, accumulate, epilogues, every ISA,
//! 1 and 2 threads, and bit-identical results across runs and thread counts.

mod kernels_common;
mod support;

use cnnc_runtime::kernels::{gemm, Act, Ctx, Epilogue, GemmGeom};
use kernels_common::{data, gemm_ref, isas, pools, KERNEL_TOL};
use support::assert_close;

const SHAPES: [(usize, usize, usize); 13] = [
    (1, 1, 1),
    (1, 128, 300),
    (1, 120, 256),
    // Batch-1 layers large enough for the GEMV's two halves of K (odd K, ragged columns).
    (1, 130, 601),
    (1, 128, 3136),
    (2, 10, 128),
    (13, 31, 7),
    (14, 32, 288),
    (15, 33, 17),
    (29, 65, 129),
    (100, 10, 3136),
    (128, 64, 700),
    (257, 96, 33),
];

#[test]
fn gemm_matches_reference_on_odd_shapes_and_transposes() {
    for pool in pools() {
        for isa in isas() {
            let ctx = Ctx::with_isa(&pool, isa);
            for &(m, n, k) in &SHAPES {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a = data(m * k, 1);
                    let b = data(k * n, 2);
                    let g = GemmGeom {
                        m,
                        n,
                        k,
                        trans_a: ta,
                        trans_b: tb,
                    };
                    let mut c = vec![f32::NAN; m * n];
                    gemm(&ctx, &g, &a, &b, &mut c, false, Epilogue::none());
                    let what = format!("{m}x{n}x{k} ta={ta} tb={tb} {isa:?} threads={}", pool.threads());
                    assert_close(&c, &gemm_ref(m, n, k, &a, ta, &b, tb), KERNEL_TOL, &what);
                }
            }
        }
    }
}

#[test]
fn gemm_epilogue_bias_activation_accumulate_and_moments() {
    for pool in pools() {
        for isa in isas() {
            let ctx = Ctx::with_isa(&pool, isa);
            for &(m, n, k) in &SHAPES {
                for act in [Act::Linear, Act::Relu, Act::Sigmoid, Act::Tanh] {
                    let (a, b, bias, c0) = (data(m * k, 3), data(k * n, 4), data(n, 5), data(m * n, 6));
                    let mut c = c0.clone();
                    let mut moments = vec![0f32; 2 * n];
                    let epi = Epilogue::none()
                        .with_bias(&bias)
                        .with_act(act)
                        .with_moments(&mut moments);
                    gemm(&ctx, &GemmGeom::new(m, n, k), &a, &b, &mut c, true, epi);
                    let r = gemm_ref(m, n, k, &a, false, &b, false);
                    let expected: Vec<f32> = (0..m * n).map(|i| act.apply(r[i] + c0[i] + bias[i % n])).collect();
                    let what = format!("{m}x{n}x{k} {act:?} {isa:?} threads={}", pool.threads());
                    assert_close(&c, &expected, KERNEL_TOL, &what);
                    let mut mref = vec![0f32; 2 * n];
                    for j in 0..n {
                        let col: Vec<f64> = (0..m).map(|i| expected[i * n + j] as f64).collect();
                        let mean = col.iter().sum::<f64>() / m as f64;
                        mref[j] = mean as f32;
                        mref[n + j] = (col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64) as f32;
                    }
                    assert_close(&moments, &mref, KERNEL_TOL, &format!("moments of {what}"));
                }
            }
        }
    }
}

/// BN statistics of an output whose mean is large against its spread (a bias of 1000, values
/// spread by about 1): E[y²] − mean² would lose the variance to cancellation in f32 sums; the
/// centred group statistics keep it to the tolerance of the f64 reference.
#[test]
fn gemm_moments_stay_precise_when_the_mean_dwarfs_the_spread() {
    let (m, n, k) = (1000, 48, 64);
    let (a, b) = (data(m * k, 11), data(k * n, 12));
    let bias = vec![1000.0f32; n];
    for pool in pools() {
        for isa in isas() {
            let ctx = Ctx::with_isa(&pool, isa);
            let mut c = vec![0f32; m * n];
            let mut moments = vec![0f32; 2 * n];
            let epi = Epilogue::none().with_bias(&bias).with_moments(&mut moments);
            gemm(&ctx, &GemmGeom::new(m, n, k), &a, &b, &mut c, false, epi);
            let mut mref = vec![0f32; 2 * n];
            for j in 0..n {
                let col: Vec<f64> = (0..m).map(|i| c[i * n + j] as f64).collect();
                let mean = col.iter().sum::<f64>() / m as f64;
                mref[j] = mean as f32;
                mref[n + j] = (col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64) as f32;
            }
            let what = format!("{isa:?} threads={}", pool.threads());
            assert_close(&moments, &mref, KERNEL_TOL, &format!("moments, {what}"));
        }
    }
}

#[test]
fn gemm_is_deterministic_and_thread_count_independent() {
    // A GEMM split by row blocks, and a batch-1 GEMV split into halves of K (accumulating into
    // C under a bias and a ReLU).
    for (m, n, k) in [(300, 96, 517), (1, 130, 601)] {
        let (a, b, bias, c0) = (data(m * k, 7), data(k * n, 8), data(n, 9), data(m * n, 10));
        for isa in isas() {
            let mut results = Vec::new();
            for pool in pools() {
                let ctx = Ctx::with_isa(&pool, isa);
                for _ in 0..2 {
                    let mut c = c0.clone();
                    let epi = Epilogue::none().with_bias(&bias).with_act(Act::Relu);
                    gemm(&ctx, &GemmGeom::new(m, n, k), &a, &b, &mut c, true, epi);
                    results.push(c);
                }
            }
            let r = gemm_ref(m, n, k, &a, false, &b, false);
            let expected: Vec<f32> = (0..m * n).map(|i| (r[i] + c0[i] + bias[i % n]).max(0.0)).collect();
            assert_close(&results[0], &expected, KERNEL_TOL, &format!("{m}x{n}x{k} {isa:?}"));
            for r in &results[1..] {
                assert!(
                    r.iter().zip(&results[0]).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{m}x{n}x{k} {isa:?} not bit-identical"
                );
            }
        }
    }
}

#[test]
fn gemm_and_conv_called_from_inside_pool_tasks() {
    use cnnc_runtime::kernels::{conv2d_forward, ConvGeom};
    use std::sync::Mutex;
    let (m, n, k) = (29, 65, 129);
    let (a, b) = (data(m * k, 9), data(k * n, 10));
    let expected = gemm_ref(m, n, k, &a, false, &b, false);
    let g = ConvGeom::same(2, [9, 9], 5, [3, 3], 7, [1, 1]);
    let (x, w) = (data(g.input_len(), 11), data(g.kernel_len(), 12));
    let conv_expected = kernels_common::conv_ref(&g, &x, &w);
    for pool in pools() {
        let ctx = Ctx::new(&pool);
        let results = Mutex::new(Vec::new());
        pool.run(4, |_| {
            // Nested: the pool is busy, so these run inline on this thread.
            let mut c = vec![0f32; m * n];
            gemm(&ctx, &GemmGeom::new(m, n, k), &a, &b, &mut c, false, Epilogue::none());
            let mut y = vec![0f32; g.output_len()];
            conv2d_forward(&ctx, &g, &x, &w, Epilogue::none(), &mut y);
            results.lock().unwrap().push((c, y));
        });
        let results = results.into_inner().unwrap();
        assert_eq!(results.len(), 4);
        for (c, y) in &results {
            assert_close(c, &expected, KERNEL_TOL, "nested gemm");
            assert_close(y, &conv_expected, KERNEL_TOL, "nested conv");
        }
    }
}
