//! Run: `cargo bench -p cnnc-benches --bench models` (one model: `... --bench models -- mnist_cnn`;
//! threads: `CNNC_BENCH_THREADS=1`, default 2).
//!
//! Whole-model speed, the figures the peers (`../shared/peers/bench.py`) report on the same
//! machine: training throughput (one `train_step`: forward, loss, backward, BN statistics, then
//! the runtime's Adam update, as the peers time it; batch 128, synthetic data) and batch-1
//! inference latency (in an `InferenceSession`, as ONNX Runtime's; `kernels-plain`: plain
//! `predict` calls), for the kernels backend, the generated crate (`native/<model>`: `cnnc
//! compile`'s crate, built for this CPU and cached as `--backend native` does; the first run
//! builds it) and the reference interpreter. Throughput is
//! `Elements(images)`, so criterion's `elem/s` reads as images/s; each line also gives GFLOP/s
//! (conv + dense MACs × 2, × 3 for training, as the peers count).
//!
//! | model | input | train batch | fwd GFLOP/img | peers' best train img/s | ORT b1 ms |
//! |---|---|---|---|---|---|
//! | mnist_cnn | 28×28×1 | 128 | 0.00848 | 6,067 (keras-tf) | 0.054 |
//! | lenet5 | 28×28×1 | 128 | 0.00056 | 26,559 (torch-cl) | 0.026 |
//! | cifar10_cnn | 32×32×3 | 128 | 0.07937 | 1,105 (keras-tf) | 0.337 |
//! | resnet18 | 32×32×3 | 128 | 1.11085 | 74 (torch-compile) | 3.682 |

use std::path::Path;
use std::time::Duration;

use cnnc_compiler::crate_backend::{CrateExecutor, CrateOptions, Purpose};
use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::{load_model, ModelSpec};
use cnnc_runtime::fpenv::FlushDenormals;
use cnnc_runtime::init::init_params;
use cnnc_runtime::optim::{Optimizer, OptimizerKind};
use cnnc_runtime::pool::Pool;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::train::trainable_refs;
use cnnc_runtime::{Executor, InferenceSession, TargetLayout, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// (model file, forward GFLOP per image as the peers count it).
const MODELS: [(&str, f64); 4] = [
    ("mnist_cnn", 0.00848),
    ("lenet5", 0.00056),
    ("cifar10_cnn", 0.07937),
    ("resnet18", 1.11085),
];
const TRAIN_BATCH: usize = 128;

fn spec(name: &str) -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{name}.yaml"));
    load_model(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn threads() -> usize {
    std::env::var("CNNC_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// The backends measured, by benchmark id.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Kernels,
    Native,
    Interp,
}

impl Backend {
    fn id(self) -> &'static str {
        match self {
            Backend::Kernels => "kernels",
            Backend::Native => "native",
            Backend::Interp => "interp",
        }
    }
}

fn executor(spec: &ModelSpec, batch: usize, backend: Backend) -> Box<dyn Executor> {
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let logits = spec.training.from_logits.unwrap_or(false);
    if backend == Backend::Native {
        let opts = CrateOptions {
            purpose: if batch == 1 {
                Purpose::Inference
            } else {
                Purpose::Training
            },
            announce: true,
            threads: threads(),
            ..CrateOptions::default()
        };
        return Box::new(CrateExecutor::new(spec, batch, loss, logits, opts).unwrap_or_else(|e| panic!("{e}")));
    }
    let train = lower(spec, batch, Mode::Training).unwrap();
    let infer = lower(spec, batch, Mode::Inference).unwrap();
    match backend {
        Backend::Kernels => Box::new(NativeExecutor::new(train, infer, loss, logits, threads()).unwrap()),
        _ => Box::new(InterpExecutor::new(train, infer, loss, logits).unwrap()),
    }
}

/// Synthetic inputs `[n, ..input]` and targets in the executor's layout.
fn batch(exec: &dyn Executor, n: usize) -> (Vec<f32>, Vec<f32>) {
    let len: usize = exec.input_shape().iter().product();
    let k = exec.output_size();
    let mut rng = Rng::new(1);
    let x = (0..n * len).map(|_| rng.uniform()).collect();
    let y = match exec.target_layout() {
        TargetLayout::ClassIds => (0..n).map(|i| (i % k) as f32).collect(),
        TargetLayout::Dense => (0..n * k)
            .map(|j| if j % k == (j / k) % k { 1.0 } else { 0.0 })
            .collect(),
    };
    (x, y)
}

fn train(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, gflop) in MODELS {
        let spec = spec(name);
        for backend in [Backend::Kernels, Backend::Native, Backend::Interp] {
            // The interpreter needs minutes per ResNet18 step; it is the oracle, not a contender.
            if backend == Backend::Interp && name == "resnet18" {
                continue;
            }
            let mut exec = executor(&spec, TRAIN_BATCH, backend);
            let mut params: Vec<Tensor> = init_params(exec.params(), 0);
            let mut grads: Vec<Tensor> = exec
                .params()
                .iter()
                .filter(|p| p.trainable)
                .map(|p| Tensor::zeros(&p.shape))
                .collect();
            let (x, y) = batch(exec.as_ref(), TRAIN_BATCH);
            let mut preds = vec![0.0; TRAIN_BATCH * exec.output_size()];
            group.throughput(Throughput::Elements(TRAIN_BATCH as u64));
            let id = BenchmarkId::new(backend.id(), name);
            let trainable: Vec<usize> = (0..params.len()).filter(|&i| exec.params()[i].trainable).collect();
            let shapes: Vec<Vec<usize>> = trainable.iter().map(|&i| params[i].shape.clone()).collect();
            let mut opt = Optimizer::new(OptimizerKind::adam_default(), &shapes);
            // As in the training loop (`train::fit`): the update runs with denormals flushed.
            let _ftz = FlushDenormals::new();
            let mut step = 0;
            group.bench_function(id, |b| {
                b.iter(|| {
                    step += 1;
                    exec.train_step(&mut params, &mut grads, &x, &y, TRAIN_BATCH, step, &mut preds);
                    // As in `train::fit`: the update on the executor's threads.
                    let mut refs = trainable_refs(&mut params, &trainable);
                    let pool = exec.pool().unwrap_or(Pool::inline());
                    opt.step_on(pool, &mut refs, &grads).unwrap();
                })
            });
            eprintln!(
                "  ({name}: {gflop} GFLOP/img forward; GFLOP/s = img/s x {:.4})",
                3.0 * gflop
            );
        }
    }
    group.finish();
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("infer_b1");
    for (name, _) in MODELS {
        let spec = spec(name);
        for backend in [Backend::Kernels, Backend::Native] {
            let mut exec = executor(&spec, 1, backend);
            let params: Vec<Tensor> = init_params(exec.params(), 0);
            let (x, _) = batch(exec.as_ref(), 1);
            let mut out = vec![0.0; exec.output_size()];
            group.throughput(Throughput::Elements(1));
            // As an ONNX Runtime session: the parameters are fixed for the session's life.
            let mut session = InferenceSession::new(exec.as_mut(), &params);
            group.bench_function(BenchmarkId::new(backend.id(), name), |b| {
                b.iter(|| session.predict(&x, 1, &mut out))
            });
            if backend == Backend::Kernels {
                // Plain `predict` calls, which must fold BN (and read kernels unpacked) every
                // time: what the session saves.
                group.bench_function(BenchmarkId::new("kernels-plain", name), |b| {
                    b.iter(|| exec.predict(&params, &x, 1, &mut out))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, train, latency);
criterion_main!(benches);
