//! Speed of a generated crate against the kernels backend, on the seed MNIST CNN at batch 128
//! unless `MODEL` (a file of `models/`) and `BATCH` say otherwise: inference and the gradients of
//! one training step (forward, loss, backward; the kernels backend's step also updates), on one
//! thread (the crate built for the default x86-64 target and with `-C target-cpu=native`) and on
//! two (a crate generated for two threads). Ignored by default (timing, not correctness):
//! `[MODEL=resnet18 BATCH=32] [NATIVE_ONLY=1] cargo test --release -p cnnc-compiler --test codegen_perf -- --ignored --nocapture`
//! (`NATIVE_ONLY` skips the x86-64 build, minutes of scalar code on the larger models).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cnnc_compiler::codegen::{generate, package_name, CodegenOptions};
use cnnc_compiler::ir::LossKind;
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::load_model;
use cnnc_runtime::init::init_params;
use cnnc_runtime::{Executor, Tensor};

const STEPS: usize = 10;

/// The model (a file of `models/`, without `.yaml`) and batch size measured.
fn case() -> (String, usize) {
    let model = std::env::var("MODEL").unwrap_or_else(|_| "mnist_cnn".into());
    let batch = std::env::var("BATCH").ok().and_then(|b| b.parse().ok()).unwrap_or(128);
    (model, batch)
}

/// The bench example, after a `use <package>::*;` line.
const BENCH: &str = r#"
use std::time::Instant;

fn main() {
    let steps: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let params: Vec<f32> = (0..PARAMS_F32S).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
    let mut m = Model::from_params(params).unwrap();
    let x: Vec<f32> = (0..INPUT_F32S).map(|i| (i % 255) as f32 / 255.0).collect();
    let y: Vec<f32> = (0..TARGET_F32S).map(|i| (i % OUTPUTS) as f32).collect();
    let (mut out, mut g) = (vec![0f32; OUTPUT_F32S], vec![0f32; GRADS_F32S]);
    m.forward(&x, &mut out);
    m.gradients(&x, &y, 1, &mut g);
    let t = Instant::now();
    for _ in 0..steps {
        m.forward(&x, &mut out);
    }
    let f = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let t = Instant::now();
    for s in 0..steps {
        m.gradients(&x, &y, s as u64 + 2, &mut g);
    }
    let s = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!("{f:.2} {s:.2}");
}
"#;

fn generated(rustflags: &str, tag: &str, threads: usize) -> (f64, f64) {
    let (model, batch) = case();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/{model}.yaml"));
    let spec = load_model(&path).unwrap();
    let mut opts = CodegenOptions::new(&spec, batch);
    opts.threads = threads;
    let c = generate(&spec, &opts).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("codegen_perf/{model}"));
    let _ = std::fs::remove_dir_all(&dir);
    c.write_to(&dir).unwrap();
    let bench = format!("use {}::*;{BENCH}", package_name(&model));
    std::fs::write(dir.join("examples/bench.rs"), bench).unwrap();
    let target = dir.with_file_name(format!("target-{tag}-{threads}"));
    let t = Instant::now();
    let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--offline", "--quiet", "--release", "--example", "bench"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", rustflags)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    println!("generated crate ({tag}) built in {:.1}s", t.elapsed().as_secs_f64());
    let out = Command::new(target.join("release/examples/bench"))
        .arg(STEPS.to_string())
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = s.split_whitespace().map(|t| t.parse().unwrap()).collect();
    (v[0], v[1])
}

fn kernels(threads: usize) -> (f64, f64) {
    let (model, batch) = case();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/{model}.yaml"));
    let spec = load_model(&path).unwrap();
    let mut ex =
        NativeExecutor::from_spec(&spec, batch, LossKind::SparseCategoricalCrossentropy, false, threads).unwrap();
    let mut params = init_params(ex.params(), 1);
    let mut grads: Vec<Tensor> = ex
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| Tensor::zeros(&p.shape))
        .collect();
    let len: usize = ex.input_shape().iter().product();
    let classes = ex.output_size();
    let x: Vec<f32> = (0..batch * len).map(|i| (i % 255) as f32 / 255.0).collect();
    let y: Vec<f32> = (0..batch).map(|i| (i % classes) as f32).collect();
    let mut preds = vec![0f32; batch * classes];
    ex.predict(&params, &x, batch, &mut preds);
    ex.train_step(&mut params, &mut grads, &x, &y, batch, 1, &mut preds);
    let t = Instant::now();
    for _ in 0..STEPS {
        ex.predict(&params, &x, batch, &mut preds);
    }
    let f = t.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
    let t = Instant::now();
    for s in 0..STEPS {
        ex.train_step(&mut params, &mut grads, &x, &y, batch, s as u64 + 2, &mut preds);
    }
    (f, t.elapsed().as_secs_f64() * 1e3 / STEPS as f64)
}

#[test]
#[ignore = "timing"]
fn generated_crate_against_kernels() {
    let (model, batch) = case();
    for threads in [1, 2] {
        let (kf, ks) = kernels(threads);
        println!(
            "kernels backend, {threads} thread(s):       forward {kf:7.2} ms   gradients {ks:7.2} ms  ({model}, batch {batch})"
        );
        let targets: &[(&str, &str)] = if threads == 1 && std::env::var_os("NATIVE_ONLY").is_none() {
            &[("", "x86-64"), ("-C target-cpu=native", "native")]
        } else {
            &[("-C target-cpu=native", "native")]
        };
        for &(flags, tag) in targets {
            let (f, s) = generated(flags, tag, threads);
            println!("generated, target {tag:7}, {threads} thread(s): forward {f:7.2} ms   gradients {s:7.2} ms");
        }
    }
}
