//! Run: `cargo bench -p cnnc-benches --bench conv` (one layer: `... --bench conv -- resnet18/64`;
//! two threads: `CNNC_BENCH_THREADS=2 cargo bench -p cnnc-benches --bench conv`).
//!
//! Criterion benchmarks of the convolution kernels on every conv layer of the MNIST CNN, the
//! CIFAR-10 CNN and ResNet18 (CIFAR-10), at each model's training batch size: forward (with the
//! fused bias + ReLU epilogue), input gradient, and kernel gradient (with bias gradient), plus
//! fused vs unfused conv + bias + ReLU, Winograd F(2×2, 3×3) and F(4×4, 3×3) vs the direct
//! path (same FLOP count for all, so the throughputs compare), and the training step's
//! max-pool fusions (`conv_pool_argmax`: conv + ReLU + 2×2 max-pool with argmax — by the
//! small-channel kernel on the first layers, in the Winograd output transform on the others —
//! and, on the first layers, the kernel gradient from the pooled gradient, against conv then
//! pool and pool gradient then kernel gradient). Throughput is `Elements(flops)`, so criterion's `elem/s`
//! column reads as FLOP/s (`Gelem/s` = GFLOP/s); the single-core FMA peak is printed
//! first for comparison.
//!
//! | layer | input (H×W×C) | kernel | filters | stride | batch |
//! |---|---|---|---|---|---|
//! | mnist_cnn/conv1 | 28×28×1 | 3×3 | 32 | 1 | 128 |
//! | mnist_cnn/conv2 | 14×14×32 | 3×3 | 64 | 1 | 128 |
//! | cifar10_cnn/conv1 | 32×32×3 | 3×3 | 32 | 1 | 64 |
//! | cifar10_cnn/conv2 | 32×32×32 | 3×3 | 32 | 1 | 64 |
//! | cifar10_cnn/conv3 | 16×16×32 | 3×3 | 64 | 1 | 64 |
//! | cifar10_cnn/conv4 | 16×16×64 | 3×3 | 64 | 1 | 64 |
//! | cifar10_cnn/conv5 | 8×8×64 | 3×3 | 128 | 1 | 64 |
//! | cifar10_cnn/conv6 | 8×8×128 | 3×3 | 128 | 1 | 64 |
//! | resnet18/stem | 32×32×3 | 3×3 | 64 | 1 | 32 |
//! | resnet18/64 | 32×32×64 | 3×3 | 64 | 1 | 32 |
//! | resnet18/down128 | 32×32×64 | 3×3 | 128 | 2 | 32 |
//! | resnet18/short128 | 32×32×64 | 1×1 | 128 | 2 | 32 |
//! | resnet18/128 | 16×16×128 | 3×3 | 128 | 1 | 32 |
//! | resnet18/down256 | 16×16×128 | 3×3 | 256 | 2 | 32 |
//! | resnet18/short256 | 16×16×128 | 1×1 | 256 | 2 | 32 |
//! | resnet18/256 | 8×8×256 | 3×3 | 256 | 1 | 32 |
//! | resnet18/down512 | 8×8×256 | 3×3 | 512 | 2 | 32 |
//! | resnet18/short512 | 8×8×256 | 1×1 | 512 | 2 | 32 |
//! | resnet18/512 | 4×4×512 | 3×3 | 512 | 1 | 32 |
//!
//! All padding is TF SAME; the table is `cnnc_benches::CONV_SHAPES`.

use cnnc_benches::{conv_bias_relu_fused, conv_bias_relu_unfused, fma_peak_gflops, ConvData, CONV_SHAPES};
use cnnc_runtime::kernels::pool2d::{max_pool, PoolGeom};
use cnnc_runtime::kernels::{
    conv2d_forward_pooled, conv2d_grad_input, conv2d_grad_kernel, conv2d_grad_kernel_small, max_pool_grad_argmax,
    pooled_conv_workspace, set_winograd, set_winograd_tile, small_conv_applies, Act, Ctx, Epilogue, SmallDy,
    WinogradTile,
};
use cnnc_runtime::pool::Pool;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// Layers whose fused vs unfused epilogue is compared.
const FUSION_LAYERS: &[&str] = &["mnist_cnn/conv2", "cifar10_cnn/conv2", "resnet18/64", "resnet18/256"];

/// A group of 10 samples, 0.5 s warm-up and 2 s of measurement: the conv shapes are many.
fn short_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group
}

fn threads() -> usize {
    std::env::var("CNNC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

fn bench_conv(c: &mut Criterion) {
    if let Some((isa, p)) = fma_peak_gflops() {
        println!("single-core {isa} FMA peak: {p:.1} GFLOP/s (criterion's Gelem/s below = GFLOP/s)");
    }
    let pool = Pool::new(threads());
    let ctx = Ctx::new(&pool);
    println!("conv benchmarks: {} thread(s), ISA {:?}", pool.threads(), ctx.isa);
    println!("| layer | shape | GFLOP per pass |");
    for s in CONV_SHAPES {
        println!("| {} | {} | {:.3} |", s.name, s.id(), s.geom().flops() as f64 / 1e9);
    }
    for (dir, label) in [
        (0, "conv_forward_bias_relu"),
        (1, "conv_grad_input"),
        (2, "conv_grad_kernel_bias"),
    ] {
        let mut group = short_group(c, label);
        for s in CONV_SHAPES {
            let g = s.geom();
            let ConvData {
                x,
                w,
                bias,
                dy,
                mut y,
                mut dx,
                mut dw,
                mut db,
            } = ConvData::new(&g);
            group.throughput(Throughput::Elements(g.flops() as u64));
            let id = BenchmarkId::new(s.name, s.id());
            match dir {
                0 => {
                    group.bench_function(id, |b| b.iter(|| conv_bias_relu_fused(&ctx, &g, &x, &w, &bias, &mut y)));
                }
                1 => {
                    group.bench_function(id, |b| b.iter(|| conv2d_grad_input(&ctx, &g, &dy, &w, &mut dx)));
                }
                _ => {
                    group.bench_function(id, |b| {
                        b.iter(|| conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw, Some(&mut db)))
                    });
                }
            }
        }
        group.finish();
    }
}

fn bench_fusion(c: &mut Criterion) {
    let pool = Pool::new(threads());
    let ctx = Ctx::new(&pool);
    let mut group = short_group(c, "conv_bias_relu_fusion");
    for s in CONV_SHAPES.iter().filter(|s| FUSION_LAYERS.contains(&s.name)) {
        let g = s.geom();
        let ConvData { x, w, bias, mut y, .. } = ConvData::new(&g);
        group.throughput(Throughput::Elements(g.flops() as u64));
        group.bench_function(BenchmarkId::new(format!("{} fused", s.name), s.id()), |b| {
            b.iter(|| conv_bias_relu_fused(&ctx, &g, &x, &w, &bias, &mut y))
        });
        group.bench_function(BenchmarkId::new(format!("{} unfused", s.name), s.id()), |b| {
            b.iter(|| conv_bias_relu_unfused(&ctx, &g, &x, &w, &bias, &mut y))
        });
    }
    group.finish();
}

/// Winograd vs the direct path (`set_winograd`) on the same layers, in all three directions:
/// the speed-up `use_winograd` is chosen for.
fn bench_winograd(c: &mut Criterion) {
    let pool = Pool::new(threads());
    let ctx = Ctx::new(&pool);
    let mut group = short_group(c, "conv_winograd_vs_direct");
    for s in CONV_SHAPES.iter().filter(|s| FUSION_LAYERS.contains(&s.name)) {
        let g = s.geom();
        let ConvData {
            x,
            w,
            bias,
            dy,
            mut y,
            mut dx,
            mut dw,
            mut db,
        } = ConvData::new(&g);
        group.throughput(Throughput::Elements(g.flops() as u64));
        let paths = [
            (false, None, "direct"),
            (true, Some(WinogradTile::F2x2), "winograd F2x2"),
            (true, Some(WinogradTile::F4x4), "winograd F4x4"),
        ];
        for (winograd, tile, path) in paths {
            let id = |dir: &str| BenchmarkId::new(format!("{} {dir} {path}", s.name), s.id());
            set_winograd(winograd);
            set_winograd_tile(tile);
            group.bench_function(id("fwd"), |b| {
                b.iter(|| conv_bias_relu_fused(&ctx, &g, &x, &w, &bias, &mut y))
            });
            group.bench_function(id("dx"), |b| b.iter(|| conv2d_grad_input(&ctx, &g, &dy, &w, &mut dx)));
            group.bench_function(id("dw"), |b| {
                b.iter(|| conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw, Some(&mut db)))
            });
        }
    }
    set_winograd(true);
    set_winograd_tile(None);
    group.finish();
}

/// Layers followed by a 2×2 max-pool, whose pools the training step fuses
/// (`fuse_pool_argmax`; on the first layers also `fuse_argmax_dw`): the first layers by the
/// small-channel kernels, the others pooled in the Winograd output transform.
const POOLED_LAYERS: &[&str] = &[
    "mnist_cnn/conv1",
    "cifar10_cnn/conv1",
    "mnist_cnn/conv2",
    "cifar10_cnn/conv2",
];

/// The training step's pooled conv and pooled kernel gradient against the unfused sequences
/// they replace (FLOPs of the conv for both, so the throughputs compare).
fn bench_pool_argmax(c: &mut Criterion) {
    let pool = Pool::new(threads());
    let ctx = Ctx::new(&pool);
    let mut group = short_group(c, "conv_pool_argmax");
    for s in CONV_SHAPES.iter().filter(|s| POOLED_LAYERS.contains(&s.name)) {
        let g = s.geom();
        let ConvData {
            x,
            w,
            bias,
            mut y,
            mut dw,
            mut db,
            ..
        } = ConvData::new(&g);
        let pg = PoolGeom::valid(g.n, [g.oh, g.ow], g.f, [2, 2], [2, 2]);
        let (mut py, mut argmax) = (vec![0f32; pg.output_len()], vec![0f32; pg.output_len()]); // [N, PH, PW, F]
        let pdy = cnnc_benches::data(pg.output_len(), 5); // [N, PH, PW, F]
        let mut ws = vec![0f32; pooled_conv_workspace(&g).max(g.output_len())];
        let epi = || Epilogue::none().with_bias(&bias).with_act(Act::Relu);
        group.throughput(Throughput::Elements(g.flops() as u64));
        let id = |what: &str| BenchmarkId::new(format!("{} {what}", s.name), s.id());
        group.bench_function(id("fwd fused"), |b| {
            b.iter(|| conv2d_forward_pooled(&ctx, &g, &x, &w, epi(), &pg, &mut py, Some(&mut argmax), &mut ws))
        });
        group.bench_function(id("fwd unfused"), |b| {
            b.iter(|| {
                conv_bias_relu_fused(&ctx, &g, &x, &w, &bias, &mut y);
                max_pool(&ctx, &pg, &y, &mut py);
            })
        });
        if !small_conv_applies(ctx.isa, &g) {
            continue; // only the first layers' kernel gradient reads the pooled gradient
        }
        group.bench_function(id("dw fused"), |b| {
            b.iter(|| {
                let dy = SmallDy::Pooled {
                    pool: &pg,
                    argmax: &argmax,
                    y: &py,
                    dy: &pdy,
                    act: Act::Relu,
                };
                conv2d_grad_kernel_small(&ctx, &g, &x, dy, &mut dw, Some(&mut db))
            })
        });
        group.bench_function(id("dw unfused"), |b| {
            b.iter(|| {
                max_pool_grad_argmax(&ctx, &pg, &argmax, &py, &pdy, Act::Relu, &mut y);
                conv2d_grad_kernel(&ctx, &g, &x, &y, &mut dw, Some(&mut db));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_conv, bench_fusion, bench_winograd, bench_pool_argmax);
criterion_main!(benches);
