//! Run: `cargo bench -p cnnc-benches --bench conv_bn` (one layer: `... --bench conv_bn -- resnet18/64`;
//! two threads: `CNNC_BENCH_THREADS=2 cargo bench -p cnnc-benches --bench conv_bn`; quick check:
//! `... --bench conv_bn -- --test`).
//!
//! Criterion benchmarks of conv → batch norm (training mode, batch statistics) → ReLU on every
//! conv layer of the MNIST CNN, LeNet-5, the CIFAR-10 CNN and ResNet18 (CIFAR-10), at each
//! model's training batch size, forward and backward, three ways (see `cnnc_benches::bn`):
//!
//! * `fused`: the kernels backend's kernels — the conv whose epilogue also yields BN's moments,
//!   then one normalise + scale + shift + ReLU pass; backward, BN's backward with the ReLU mask
//!   folded in (dz, dγ, dβ in one kernel), then the conv's input and kernel gradients (a model's
//!   first layer has no input gradient: its input is the data, and the compiled program
//!   computes none);
//! * `unfused`: the runtime's separate kernels in the order an unfused program runs them —
//!   conv, moments, normalise, ReLU; backward, ReLU gradient, BN input gradient, γ gradient, β
//!   reduction, then the conv gradients;
//! * `interp`: the reference interpreter on the same IR ops, on the layers of at most
//!   [`INTERP_MAX_FLOPS`] (it runs at well under a GFLOP/s).
//!
//! Throughput is `Elements(flops)` with the convolution's FLOPs only (backward: the
//! gradients it computes), so criterion's `Gelem/s` reads as GFLOP/s and fused / unfused ratios are time
//! ratios. The bar: fused ≥ 1.3× unfused, forward and backward.
//!
//! | layer | input (H×W×C) | kernel | filters | stride | padding | batch |
//! |---|---|---|---|---|---|---|
//! | mnist_cnn/conv1 | 28×28×1 | 3×3 | 32 | 1 | same | 128 |
//! | mnist_cnn/conv2 | 14×14×32 | 3×3 | 64 | 1 | same | 128 |
//! | lenet5/conv1 | 28×28×1 | 5×5 | 6 | 1 | valid | 128 |
//! | lenet5/conv2 | 12×12×6 | 5×5 | 16 | 1 | valid | 128 |
//! | cifar10_cnn/conv1 | 32×32×3 | 3×3 | 32 | 1 | same | 64 |
//! | cifar10_cnn/conv2 | 32×32×32 | 3×3 | 32 | 1 | same | 64 |
//! | cifar10_cnn/conv3 | 16×16×32 | 3×3 | 64 | 1 | same | 64 |
//! | cifar10_cnn/conv4 | 16×16×64 | 3×3 | 64 | 1 | same | 64 |
//! | cifar10_cnn/conv5 | 8×8×64 | 3×3 | 128 | 1 | same | 64 |
//! | cifar10_cnn/conv6 | 8×8×128 | 3×3 | 128 | 1 | same | 64 |
//! | resnet18/stem | 32×32×3 | 3×3 | 64 | 1 | same | 32 |
//! | resnet18/64 | 32×32×64 | 3×3 | 64 | 1 | same | 32 |
//! | resnet18/down128 | 32×32×64 | 3×3 | 128 | 2 | same | 32 |
//! | resnet18/short128 | 32×32×64 | 1×1 | 128 | 2 | same | 32 |
//! | resnet18/128 | 16×16×128 | 3×3 | 128 | 1 | same | 32 |
//! | resnet18/down256 | 16×16×128 | 3×3 | 256 | 2 | same | 32 |
//! | resnet18/short256 | 16×16×128 | 1×1 | 256 | 2 | same | 32 |
//! | resnet18/256 | 8×8×256 | 3×3 | 256 | 1 | same | 32 |
//! | resnet18/down512 | 8×8×256 | 3×3 | 512 | 2 | same | 32 |
//! | resnet18/short512 | 8×8×256 | 1×1 | 512 | 2 | same | 32 |
//! | resnet18/512 | 4×4×512 | 3×3 | 512 | 1 | same | 32 |
//!
//! The table is `cnnc_benches::CONV_SHAPES` (LeNet-5 and the MNIST/CIFAR-10 CNNs have no BN:
//! their shapes are benched as if a BN followed each conv, as in the issue).
//!
//! `bn_relu_max_pool` (training, batch statistics): BN's normalise + ReLU pass with the 2×2
//! max-pool and its argmax fused in (`fused`: `bn_act_max_pool_argmax`, the unpooled map never
//! stored) against the normalise + ReLU pass, then `max_pool_argmax` on the stored map
//! (`unfused`), at every BN → ReLU → max-pool of the seed models, batch 128; `Gelem/s` counts
//! the values BN normalises:
//!
//! | site | BN input (H×W×C) | pool | batch |
//! |---|---|---|---|
//! | baseline_cifar10/b1 | 32×32×6 | 2×2 | 128 |
//! | vgg16_cifar10/stage1 | 32×32×64 | 2×2 | 128 |
//! | vgg16_cifar10/stage2 | 16×16×128 | 2×2 | 128 |
//! | vgg16_cifar10/stage3 | 8×8×256 | 2×2 | 128 |
//! | vgg16_cifar10/stage4 | 4×4×512 | 2×2 | 128 |
//! | vgg16_cifar10/stage5 | 2×2×512 | 2×2 | 128 |

use cnnc_benches::bn::{ConvBn, InterpConvBn};
use cnnc_benches::{data, ConvShape, CONV_SHAPES};
use cnnc_runtime::kernels::norm;
use cnnc_runtime::kernels::pool2d::PoolGeom;
use cnnc_runtime::kernels::{bn_act_max_pool_argmax, max_pool_argmax, Act, BnAffine, Ctx};
use cnnc_runtime::pool::Pool;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::time::Duration;

/// Largest forward conv (FLOPs) the interpreter is benched on: the first layer of each model
/// and LeNet-5's two, about 0.1 s per forward each.
const INTERP_MAX_FLOPS: usize = 120_000_000;

fn threads() -> usize {
    std::env::var("CNNC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Ten flat samples in about 1.5 s per benchmark: 21 layers × 4 native variants plus the
/// interpreter's stay within a few minutes.
fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g
}

fn id(variant: &str, s: &ConvShape) -> BenchmarkId {
    BenchmarkId::new(format!("{} {variant}", s.name), s.id())
}

/// Fused vs unfused in one direction (`backward` false: forward) on every layer.
fn bench_native(c: &mut Criterion, ctx: &Ctx, backward: bool) {
    let mut group = group(
        c,
        if backward {
            "conv_bn_relu_backward"
        } else {
            "conv_bn_relu_forward"
        },
    );
    for s in CONV_SHAPES {
        let mut l = ConvBn::for_shape(ctx, s);
        group.throughput(Throughput::Elements(if backward {
            l.backward_flops()
        } else {
            l.forward_flops()
        }));
        for fused in [true, false] {
            let run = match (backward, fused) {
                (false, true) => ConvBn::forward_fused,
                (false, false) => ConvBn::forward_unfused,
                (true, true) => ConvBn::backward_fused,
                (true, false) => ConvBn::backward_unfused,
            };
            let variant = if fused { "fused" } else { "unfused" };
            group.bench_function(id(variant, s), |b| b.iter(|| run(&mut l, ctx)));
        }
    }
    group.finish();
}

/// The interpreter, forward and backward, on the small layers.
fn bench_interp(c: &mut Criterion, ctx: &Ctx) {
    let mut group = group(c, "conv_bn_relu_interp");
    for s in CONV_SHAPES.iter().filter(|s| s.geom().flops() <= INTERP_MAX_FLOPS) {
        let l = ConvBn::for_shape(ctx, s);
        let it = InterpConvBn::new(&l);
        group.throughput(Throughput::Elements(l.forward_flops()));
        group.bench_function(id("forward", s), |b| b.iter(|| black_box(it.forward())));
        group.throughput(Throughput::Elements(l.backward_flops()));
        group.bench_function(id("backward", s), |b| b.iter(|| black_box(it.backward())));
    }
    group.finish();
}

/// The BN → ReLU → max-pool sites of the seed models: (name, [H, W], C), batch 128.
const BN_POOL_SITES: [(&str, [usize; 2], usize); 6] = [
    ("baseline_cifar10/b1", [32, 32], 6),
    ("vgg16_cifar10/stage1", [32, 32], 64),
    ("vgg16_cifar10/stage2", [16, 16], 128),
    ("vgg16_cifar10/stage3", [8, 8], 256),
    ("vgg16_cifar10/stage4", [4, 4], 512),
    ("vgg16_cifar10/stage5", [2, 2], 512),
];

/// Normalise + ReLU with the max-pool fused in, against the two passes it replaces.
fn bench_bn_pool(c: &mut Criterion, ctx: &Ctx) {
    let mut group = group(c, "bn_relu_max_pool");
    for (name, hw, ch) in BN_POOL_SITES {
        let g = PoolGeom::valid(128, hw, ch, [2, 2], [2, 2]);
        let x = data(g.input_len(), 1);
        let (mean, scale, beta) = (data(ch, 2), data(ch, 3), data(ch, 4));
        let bn = BnAffine {
            mean: &mean,
            scale: &scale,
            beta: &beta,
        };
        let (mut t, mut y, mut arg) = (
            vec![0f32; g.input_len()],
            vec![0f32; g.output_len()],
            vec![0f32; g.output_len()],
        );
        let shape = format!("{}x{}x{}n128", hw[0], hw[1], ch);
        group.throughput(Throughput::Elements(g.input_len() as u64));
        group.bench_function(BenchmarkId::new(format!("{name} fused"), &shape), |b| {
            b.iter(|| bn_act_max_pool_argmax(ctx, &g, &x, bn, Act::Relu, &mut y, &mut arg))
        });
        group.bench_function(BenchmarkId::new(format!("{name} unfused"), &shape), |b| {
            b.iter(|| {
                norm::bn_apply(ctx, ch, &x, &mean, &scale, &beta, None, Act::Relu, &mut t);
                max_pool_argmax(ctx, &g, &t, &mut y, &mut arg)
            })
        });
    }
    group.finish();
}

fn bench_conv_bn(c: &mut Criterion) {
    let pool = Pool::new(threads());
    let ctx = Ctx::new(&pool);
    println!(
        "conv + BN + ReLU benchmarks: {} thread(s), ISA {:?}; Gelem/s = GFLOP/s of the conv",
        pool.threads(),
        ctx.isa
    );
    bench_native(c, &ctx, false);
    bench_native(c, &ctx, true);
    bench_bn_pool(c, &ctx);
    bench_interp(c, &ctx);
}

criterion_group!(benches, bench_conv_bn);
criterion_main!(benches);
