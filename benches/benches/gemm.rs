//! Run: `cargo bench -p cnnc-benches --bench gemm` (one shape: `... --bench gemm -- square`;
//! two threads: `CNNC_BENCH_THREADS=2 cargo bench -p cnnc-benches --bench gemm`).
//!
//! Criterion benchmarks of `gemm` on the dense layers of the MNIST CNN, the CIFAR-10 CNN and
//! ResNet18 (forward `x·W`, input gradient `dy·Wᵀ`, weight gradient `xᵀ·dy`, at each model's
//! training batch), a batch-1 dense layer, a conv-shaped product and two squares. Throughput
//! is `Elements(flops)`, so criterion's `elem/s` reads as FLOP/s (`Gelem/s` = GFLOP/s).
//!
//! | name | m × n × k | trans_a | trans_b |
//! |---|---|---|---|
//! | mnist_cnn/dense1 fwd | 128 × 128 × 3136 | no | no |
//! | mnist_cnn/dense1 dx | 128 × 3136 × 128 | no | yes |
//! | mnist_cnn/dense1 dW | 3136 × 128 × 128 | yes | no |
//! | mnist_cnn/dense2 fwd | 128 × 10 × 128 | no | no |
//! | cifar10_cnn/dense1 fwd | 64 × 128 × 8192 | no | no |
//! | cifar10_cnn/dense1 dx | 64 × 8192 × 128 | no | yes |
//! | cifar10_cnn/dense1 dW | 8192 × 128 × 64 | yes | no |
//! | resnet18/f1 fwd | 32 × 10 × 512 | no | no |
//! | batch1 dense 3136x128 | 1 × 128 × 3136 | no | no |
//! | conv-like 25088x64x288 | 25088 × 64 × 288 | no | no |
//! | square 512 | 512 × 512 × 512 | no | no |
//! | square 1024 | 1024 × 1024 × 1024 | no | no |
//!
//! The table is `cnnc_benches::GEMM_SHAPES`.

use cnnc_benches::{data, fma_peak_gflops, GEMM_SHAPES};
use cnnc_runtime::kernels::{gemm, Act, Ctx, Epilogue};
use cnnc_runtime::pool::Pool;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

fn bench_gemm(c: &mut Criterion) {
    if let Some((isa, p)) = fma_peak_gflops() {
        println!("single-core {isa} FMA peak: {p:.1} GFLOP/s (criterion's Gelem/s below = GFLOP/s)");
    }
    let threads = std::env::var("CNNC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pool = Pool::new(threads);
    let ctx = Ctx::new(&pool);
    println!("gemm benchmarks: {} thread(s), ISA {:?}", pool.threads(), ctx.isa);
    let mut group = c.benchmark_group("gemm");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for s in GEMM_SHAPES {
        let g = s.geom;
        let (a, b) = (data(g.m * g.k, 1), data(g.k * g.n, 2));
        let mut out = vec![0f32; g.m * g.n];
        group.throughput(Throughput::Elements(g.flops() as u64));
        let id = BenchmarkId::new(s.name, format!("{}x{}x{}", g.m, g.n, g.k));
        group.bench_function(id, |bench| {
            bench.iter(|| gemm(&ctx, &g, &a, &b, &mut out, false, Epilogue::none()))
        });
    }
    // The dense-layer forward with its fused bias + ReLU epilogue.
    let g = GEMM_SHAPES[0].geom;
    let (a, b, bias) = (data(g.m * g.k, 1), data(g.k * g.n, 2), data(g.n, 3));
    let mut out = vec![0f32; g.m * g.n];
    group.throughput(Throughput::Elements(g.flops() as u64));
    group.bench_function(
        BenchmarkId::new("mnist_cnn/dense1 fwd +bias+relu", "128x128x3136"),
        |bench| {
            bench.iter(|| {
                let epi = Epilogue::none().with_bias(&bias).with_act(Act::Relu);
                gemm(&ctx, &g, &a, &b, &mut out, false, epi)
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
