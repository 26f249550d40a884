//! Run: `cargo bench -p cnnc-benches --bench optim`.
//!
//! Criterion benchmark of one optimiser update (`Optimizer::step_on`) over a model's trainable
//! parameters on 1 and 2 threads: the update `train::fit` runs after every training step, on
//! the executor's pool. Throughput is `Elements(parameters)`, so `elem/s` reads as parameters
//! updated per second.
//!
//! | model | parameters (shapes) | rule |
//! |---|---|---|
//! | mnist_cnn | 3×3×1×32, 32, 3×3×32×64, 64, 3136×128, 128, 128×10, 10 (421,642) | Adam |
//! | mnist_cnn | same | SGD with momentum 0.9 |

use cnnc_runtime::fpenv::FlushDenormals;
use cnnc_runtime::optim::{Optimizer, OptimizerKind};
use cnnc_runtime::pool::Pool;
use cnnc_runtime::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// The MNIST CNN's trainable parameters (HWIO kernels, biases, dense weights).
const MNIST_CNN: &[&[usize]] = &[
    &[3, 3, 1, 32],
    &[32],
    &[3, 3, 32, 64],
    &[64],
    &[3136, 128],
    &[128],
    &[128, 10],
    &[10],
];

fn bench_update(c: &mut Criterion) {
    let shapes: Vec<Vec<usize>> = MNIST_CNN.iter().map(|s| s.to_vec()).collect();
    let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let fill = |s: &Vec<usize>, k: f32| {
        let n: usize = s.iter().product();
        Tensor::from_vec(s, (0..n).map(|i| ((i as f32 + k) * 0.37).sin() * 1e-2).collect()).unwrap()
    };
    let grads: Vec<Tensor> = shapes.iter().map(|s| fill(s, 1.0)).collect();
    let mut group = c.benchmark_group("optimizer_update");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(total as u64));
    let sgd = OptimizerKind::Sgd {
        learning_rate: 0.01,
        momentum: 0.9,
        nesterov: false,
    };
    let _ftz = FlushDenormals::new();
    for (name, kind) in [("adam", OptimizerKind::adam_default()), ("sgd_momentum", sgd)] {
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            let mut opt = Optimizer::new(kind, &shapes);
            let mut params: Vec<Tensor> = shapes.iter().map(|s| fill(s, 0.0)).collect();
            let id = BenchmarkId::new(format!("mnist_cnn {name}"), format!("{threads} thread(s)"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    let mut refs: Vec<&mut Tensor> = params.iter_mut().collect();
                    opt.step_on(&pool, &mut refs, &grads).unwrap();
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_update);
criterion_main!(benches);
