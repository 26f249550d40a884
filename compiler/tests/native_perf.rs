//! Training throughput of the native backend on the seed MNIST CNN (Adam, batch 128) with 1
//! and 2 threads. Ignored by default (timing, not correctness):
//! `cargo test --release -p cnnc-compiler --test native_perf -- --ignored --nocapture`.
//! `NATIVE_PROFILE=1` also prints per-kernel times.

use std::path::Path;
use std::time::Instant;

use cnnc_compiler::ir::LossKind;
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::load_model;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Executor, Tensor};

fn throughput(model: &str, batch: usize, threads: usize, steps: usize) -> f64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(format!("{model}.yaml"));
    let spec = load_model(&path).unwrap_or_else(|e| panic!("{e}"));
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    let mut ex = NativeExecutor::from_spec(&spec, batch, loss, from_logits, threads).unwrap();
    let mut params = init_params(ex.params(), 1);
    let mut grads: Vec<Tensor> = ex
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| Tensor::zeros(&p.shape))
        .collect();
    let mut rng = Rng::new(2);
    let len: usize = ex.input_shape().iter().product();
    let x: Vec<f32> = (0..batch * len).map(|_| rng.uniform()).collect();
    let y: Vec<f32> = (0..batch).map(|_| rng.below(ex.output_size()) as f32).collect();
    let mut preds = vec![0f32; batch * ex.output_size()];
    for s in 0..3 {
        ex.train_step(&mut params, &mut grads, &x, &y, batch, s + 1, &mut preds);
    }
    let profile = std::env::var("NATIVE_PROFILE").is_ok();
    ex.set_profiling(profile);
    let t0 = Instant::now();
    for s in 0..steps {
        ex.train_step(&mut params, &mut grads, &x, &y, batch, s as u64 + 4, &mut preds);
    }
    let secs = t0.elapsed().as_secs_f64();
    let ips = (steps * batch) as f64 / secs;
    println!(
        "{model} batch {batch}, {threads} thread(s): {:.2} ms/step, {ips:.0} images/s",
        secs * 1e3 / steps as f64
    );
    if profile {
        print!("{}", ex.profile_report());
    }
    ips
}

#[test]
#[ignore = "timing"]
fn mnist_cnn_training_throughput() {
    let steps = std::env::var("STEPS").map_or(30, |s| s.parse().unwrap_or(30));
    for threads in [1, 2] {
        assert!(throughput("mnist_cnn", 128, threads, steps) > 0.0);
    }
}
