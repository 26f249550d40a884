//! Speed of a generated crate against the kernels backend (1 thread) on the seed MNIST CNN at
//! batch 128: inference and one training step, the crate built for the default x86-64 target
//! and with `-C target-cpu=native`. Ignored by default (timing, not correctness; the crate
//! builds take a while):
//! `cargo test --release -p cnnc-compiler --test codegen_perf -- --ignored --nocapture`.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cnnc_compiler::codegen::{generate, CodegenOptions};
use cnnc_compiler::ir::LossKind;
use cnnc_compiler::native::NativeExecutor;
use cnnc_compiler::spec::load_model;
use cnnc_runtime::init::init_params;
use cnnc_runtime::{Executor, Tensor};

const BATCH: usize = 128;
const STEPS: usize = 10;

const BENCH: &str = r#"
use std::time::Instant;
use mnist_cnn::*;

fn main() {
    let steps: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let params: Vec<f32> = (0..PARAMS_F32S).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
    let mut m = Model::from_params(params).unwrap();
    let x: Vec<f32> = (0..INPUT_F32S).map(|i| (i % 255) as f32 / 255.0).collect();
    let y: Vec<f32> = (0..TARGET_F32S).map(|i| (i % OUTPUTS) as f32).collect();
    let (mut out, mut g) = (vec![0f32; OUTPUT_F32S], vec![0f32; GRADS_F32S]);
    m.forward(&x, &mut out);
    m.train_step(&x, &y, 1, &mut g);
    let t = Instant::now();
    for _ in 0..steps {
        m.forward(&x, &mut out);
    }
    let f = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    let t = Instant::now();
    for s in 0..steps {
        m.train_step(&x, &y, s as u64 + 2, &mut g);
    }
    let s = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    println!("{f:.2} {s:.2}");
}
"#;

fn generated(rustflags: &str, tag: &str) -> (f64, f64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist_cnn.yaml");
    let spec = load_model(&path).unwrap();
    let c = generate(&spec, &CodegenOptions::new(&spec, BATCH)).unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("codegen_perf/mnist_cnn");
    let _ = std::fs::remove_dir_all(&dir);
    c.write_to(&dir).unwrap();
    std::fs::write(dir.join("examples/bench.rs"), BENCH).unwrap();
    let target = dir.with_file_name(format!("target-{tag}"));
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

fn native() -> (f64, f64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist_cnn.yaml");
    let spec = load_model(&path).unwrap();
    let mut ex = NativeExecutor::from_spec(&spec, BATCH, LossKind::SparseCategoricalCrossentropy, false, 1).unwrap();
    let mut params = init_params(ex.params(), 1);
    let mut grads: Vec<Tensor> = ex
        .params()
        .iter()
        .filter(|p| p.trainable)
        .map(|p| Tensor::zeros(&p.shape))
        .collect();
    let len: usize = ex.input_shape().iter().product();
    let x: Vec<f32> = (0..BATCH * len).map(|i| (i % 255) as f32 / 255.0).collect();
    let y: Vec<f32> = (0..BATCH).map(|i| (i % 10) as f32).collect();
    let mut preds = vec![0f32; BATCH * 10];
    ex.predict(&params, &x, BATCH, &mut preds);
    ex.train_step(&mut params, &mut grads, &x, &y, BATCH, 1, &mut preds);
    let t = Instant::now();
    for _ in 0..STEPS {
        ex.predict(&params, &x, BATCH, &mut preds);
    }
    let f = t.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
    let t = Instant::now();
    for s in 0..STEPS {
        ex.train_step(&mut params, &mut grads, &x, &y, BATCH, s as u64 + 2, &mut preds);
    }
    (f, t.elapsed().as_secs_f64() * 1e3 / STEPS as f64)
}

#[test]
#[ignore = "timing"]
fn generated_crate_against_native_mnist_cnn() {
    let (nf, ns) = native();
    println!("native, 1 thread:            forward {nf:7.2} ms   train step {ns:7.2} ms  (batch {BATCH})");
    for (flags, tag) in [("", "x86-64"), ("-C target-cpu=native", "native")] {
        let (f, s) = generated(flags, tag);
        println!("generated, target {tag:7}: forward {f:7.2} ms   train step {s:7.2} ms");
    }
}
