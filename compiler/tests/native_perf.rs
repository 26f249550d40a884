//! Training throughput of the kernels backend on the seed MNIST CNN (Adam, batch 128) with 1
//! and 2 threads. Ignored by default (timing, not correctness):
//! `cargo test --release -p cnnc-compiler --test native_perf -- --ignored --nocapture`.
//! `NATIVE_PROFILE=1` also prints per-kernel times.

use std::path::Path;
use std::time::Instant;

use cnnc_compiler::ir::LossKind;
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::load_model;
use cnnc_runtime::init::init_params;
use cnnc_runtime::optim::{Optimizer, OptimizerKind};
use cnnc_runtime::rng::Rng;
use cnnc_runtime::train::trainable_refs;
use cnnc_runtime::{Executor, InferenceSession, Tensor};

/// CPU time of this process so far (user + system, from `/proc/self/stat`, in seconds; Linux
/// clock ticks of 1/100 s), or `None` where unavailable.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The native executor of `models/{model}.yaml` for `batch` images on `threads` threads.
/// `WINOGRAD=0` turns Winograd off (the direct convolutions instead), `WINOGRAD_TILE=2|4` makes
/// it use F(2×2, 3×3) or F(4×4, 3×3) everywhere, to compare them.
fn executor(model: &str, batch: usize, threads: usize) -> NativeExecutor {
    use cnnc_runtime::kernels::{set_winograd, set_winograd_tile, WinogradTile};
    if std::env::var("WINOGRAD").is_ok_and(|v| v == "0") {
        set_winograd(false);
    }
    match std::env::var("WINOGRAD_TILE").as_deref() {
        Ok("2") => set_winograd_tile(Some(WinogradTile::F2x2)),
        Ok("4") => set_winograd_tile(Some(WinogradTile::F4x4)),
        _ => {}
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{model}.yaml"));
    let spec = load_model(&path).unwrap_or_else(|e| panic!("{e}"));
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    NativeExecutor::from_spec(&spec, batch, loss, from_logits, threads).unwrap()
}

fn throughput(model: &str, batch: usize, threads: usize, steps: usize) -> f64 {
    let mut ex = executor(model, batch, threads);
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
    let trainable: Vec<usize> = (0..params.len()).filter(|&i| ex.params()[i].trainable).collect();
    let shapes: Vec<Vec<usize>> = trainable.iter().map(|&i| params[i].shape.clone()).collect();
    let mut opt = Optimizer::new(OptimizerKind::adam_default(), &shapes);
    // One training step as `fit` runs it: gradients, then the Adam update (timed apart).
    let mut step = |ex: &mut NativeExecutor, params: &mut [Tensor], s: u64| -> f64 {
        ex.train_step(params, &mut grads, &x, &y, batch, s, &mut preds);
        let t0 = Instant::now();
        let mut refs = trainable_refs(params, &trainable);
        opt.step_on(ex.pool().unwrap(), &mut refs, &grads).unwrap();
        t0.elapsed().as_secs_f64()
    };
    for s in 0..3 {
        step(&mut ex, &mut params, s + 1);
    }
    let profile = std::env::var("NATIVE_PROFILE").is_ok();
    ex.set_profiling(profile);
    let cpu0 = cpu_seconds();
    let mut update = 0.0;
    let mut times: Vec<f64> = (0..steps)
        .map(|s| {
            let t0 = Instant::now();
            update += step(&mut ex, &mut params, s as u64 + 4);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = cpu_seconds().zip(cpu0).map(|(a, b)| (a - b) / steps as f64);
    println!(
        "  of which the Adam update: {:.2} ms/step (mean)",
        update / steps as f64 * 1e3
    );
    if std::env::var("STEP_LOG").is_ok() {
        let ms: Vec<String> = times.iter().map(|t| format!("{:.1}", t * 1e3)).collect();
        println!("  steps (ms, in order): {}", ms.join(" "));
    }
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / steps as f64;
    let (median, min) = (times[steps / 2], times[0]);
    // The machine may be shared: the median step is the figure to quote.
    let ips = batch as f64 / median;
    println!(
        "{model} batch {batch}, {threads} thread(s): median {:.2} ms/step ({ips:.0} images/s), mean {:.2} ms, min {:.2} ms ({:.0} images/s)",
        median * 1e3,
        mean * 1e3,
        min * 1e3,
        batch as f64 / min
    );
    if let Some(cpu) = cpu {
        // With one thread, CPU time per step is the step's time on an otherwise idle core.
        println!(
            "  CPU time {:.2} ms/step ({:.0} images/s per core)",
            cpu * 1e3,
            batch as f64 / cpu
        );
    }
    let mut best = f64::MAX;
    for _ in 0..steps.min(20) {
        let t0 = Instant::now();
        ex.predict(&params, &x, batch, &mut preds);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "  inference: fastest {:.2} ms per batch ({:.0} images/s)",
        best * 1e3,
        batch as f64 / best
    );
    if profile {
        print!("{}", ex.profile_report());
    }
    ips
}

/// `THREADS=2` measures only that thread count; 1 and 2 by default.
fn thread_counts() -> Vec<usize> {
    match std::env::var("THREADS").ok().and_then(|s| s.parse().ok()) {
        Some(t) => vec![t],
        None => vec![1, 2],
    }
}

#[test]
#[ignore = "timing"]
fn mnist_cnn_training_throughput() {
    let steps = std::env::var("STEPS").map_or(30, |s| s.parse().unwrap_or(30));
    // `MODEL=lenet5` (any model of models/, batch 128) measures another one.
    let model = std::env::var("MODEL").unwrap_or_else(|_| "mnist_cnn".into());
    for threads in thread_counts() {
        assert!(throughput(&model, 128, threads, steps) > 0.0);
    }
}

#[test]
#[ignore = "timing"]
fn resnet18_training_throughput() {
    let steps = std::env::var("STEPS").map_or(5, |s| s.parse().unwrap_or(5));
    for threads in [1, 2] {
        assert!(throughput("resnet18", 32, threads, steps) > 0.0);
    }
}

/// Batch-1 inference latency (fastest and median of many calls) with 1 and 2 threads.
fn latency(model: &str, threads: usize, calls: usize) {
    let mut ex = executor(model, 1, threads);
    let params = init_params(ex.params(), 1);
    let mut rng = Rng::new(2);
    let len: usize = ex.input_shape().iter().product();
    let x: Vec<f32> = (0..len).map(|_| rng.uniform()).collect();
    let mut preds = vec![0f32; ex.output_size()];
    for _ in 0..100 {
        ex.predict(&params, &x, 1, &mut preds);
    }
    let profile = std::env::var("NATIVE_PROFILE").is_ok();
    ex.set_profiling(profile);
    // Timed in an inference session, as ONNX Runtime's: BN is folded into the weights once.
    // `PLAIN_PREDICT=1` times plain `predict` calls, which fold it on every call.
    let plain = std::env::var("PLAIN_PREDICT").is_ok();
    let time_calls = |call: &mut dyn FnMut()| -> Vec<f64> {
        (0..calls)
            .map(|_| {
                let t0 = Instant::now();
                call();
                t0.elapsed().as_secs_f64()
            })
            .collect()
    };
    let mut times = if plain {
        time_calls(&mut || ex.predict(&params, &x, 1, &mut preds))
    } else {
        let mut session = InferenceSession::new(&mut ex, &params);
        time_calls(&mut || session.predict(&x, 1, &mut preds))
    };
    times.sort_by(f64::total_cmp);
    println!(
        "{model} batch 1, {threads} thread(s): fastest {:.1} us, median {:.1} us",
        times[0] * 1e6,
        times[calls / 2] * 1e6
    );
    if profile {
        print!("{}", ex.profile_report());
    }
}

#[test]
#[ignore = "timing"]
fn batch1_inference_latency() {
    // `MODEL=cifar10_cnn` measures another model.
    let models = std::env::var("MODEL").map_or(vec!["mnist_cnn".to_string(), "lenet5".to_string()], |m| vec![m]);
    for model in &models {
        for threads in [1, 2] {
            latency(model, threads, 2000);
        }
    }
}
