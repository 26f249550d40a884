//! Generated crates built with cargo and run against the interpreter, elementwise within
//! `Tolerance::KERNEL`: forward predictions, then one training step — loss, every gradient and
//! the parameters after it (BN moving statistics) — for mnist_cnn (conv + fused max-pool,
//! dense), baseline_cifar10 (BN, dropout), lenet5 (sigmoid, loss on probabilities; weights
//! embedded in the crate) and
//! inception10 (concatenation, channel slices, 3x3 max-pool with padding, global average pool,
//! strided 1x1 convs), all at batch 2; and a `no_std` crate with embedded weights, built with
//! plain `cargo build` and run through its example, which must also refuse a weights file of
//! another model. Each crate is run through the `examples/check.rs` it ships, on raw f32
//! files; each has its own target directory under the test's. resnet18 (residual epilogues)
//! is `#[ignore]`d: its crate is the largest to build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cnnc_compiler::codegen::{generate, CodegenOptions, GeneratedCrate, MARKER};
use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::{load_model, ModelSpec};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::weights::save_weights;
use cnnc_runtime::{Executor, TargetLayout, Tensor};

const TOL: Tolerance = Tolerance::KERNEL;

fn tmp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("codegen").join(name)
}

fn spec(model: &str) -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{model}.yaml"));
    load_model(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// `cargo build --offline` of the crate at `dir` (`args` added), in `target-<dir name>` (one
/// per crate: their `check` examples would overwrite each other in a shared one).
fn cargo_build(dir: &Path, args: &[&str]) -> PathBuf {
    let target = tmp(&format!("target-{}", dir.file_name().unwrap().to_string_lossy()));
    let t = Instant::now();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--offline", "--quiet"])
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo build {args:?} in {} failed:\n{stderr}",
        dir.display()
    );
    assert!(
        !stderr.contains("warning"),
        "the generated crate builds with warnings:\n{stderr}"
    );
    eprintln!(
        "cargo build {args:?} of {}: {:.1}s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    target
}

/// Writes `c` into a fresh directory and builds its `check` example (release).
fn build_check(c: &GeneratedCrate, name: &str) -> PathBuf {
    let dir = tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    c.write_to(&dir).unwrap();
    assert!(dir.join(MARKER).is_file());
    cargo_build(&dir, &["--release", "--example", "check"]).join("release/examples/check")
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap();
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Runs the check binary; returns what it wrote.
fn check(bin: &Path, args: &[&Path], out: &Path) -> Vec<f32> {
    let mut cmd = Command::new(bin);
    for a in args {
        cmd.arg(a);
    }
    let o = cmd.arg(out).output().expect("check runs");
    assert!(
        o.status.success(),
        "check failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_f32(out)
}

fn uniform(len: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

/// The interpreter for `spec` at `batch`, parameters (BN statistics off their defaults), an
/// input and targets.
struct Case {
    interp: InterpExecutor,
    params: Vec<Tensor>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn case(spec: &ModelSpec, batch: usize, seed: u64) -> Case {
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    let train = lower(spec, batch, Mode::Training).unwrap();
    let inference = lower(spec, batch, Mode::Inference).unwrap();
    let interp = InterpExecutor::new(train, inference, loss, from_logits).unwrap();
    let mut rng = Rng::new(seed);
    let mut params = init_params(interp.params(), seed);
    for (p, s) in params.iter_mut().zip(interp.params()) {
        let (lo, hi) = match s.name.rsplit('.').next() {
            Some("gamma") | Some("moving_variance") => (0.6, 1.4),
            Some("beta") | Some("moving_mean") | Some("bias") => (-0.2, 0.2),
            _ => continue,
        };
        p.data = uniform(p.data.len(), &mut rng, lo, hi);
    }
    let len: usize = interp.input_shape().iter().product();
    let x = uniform(batch * len, &mut rng, -1.0, 1.0);
    let k = interp.output_size();
    let ids: Vec<usize> = (0..batch).map(|_| rng.below(k)).collect();
    let y = match interp.target_layout() {
        TargetLayout::ClassIds => ids.iter().map(|&c| c as f32).collect(),
        TargetLayout::Dense => {
            let mut t = vec![0f32; batch * k];
            for (i, &c) in ids.iter().enumerate() {
                t[i * k + c] = 1.0;
            }
            t
        }
    };
    Case { interp, params, x, y }
}

/// Writes the case's weights and input; returns (weights, input) paths in `dir`.
fn inputs(c: &Case, dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (w, x) = (dir.join("weights.safetensors"), dir.join("x.f32"));
    save_weights(&w, c.interp.params(), &c.params).unwrap();
    write_f32(&x, &c.x);
    (w, x)
}

/// `check forward` against `InterpExecutor::predict`.
fn compare_forward(model: &str, c: &mut Case, bin: &Path, weights: &Path, x: &Path) {
    let batch = c.interp.batch_size();
    let mut want = vec![0f32; batch * c.interp.output_size()];
    c.interp.predict(&c.params, &c.x, batch, &mut want);
    let got = check(bin, &["forward".as_ref(), weights, x], &x.with_file_name("out.f32"));
    TOL.assert_close(&format!("{model}: forward predictions"), &got, &want);
}

/// `check train` against `InterpExecutor::train_step`: loss, every gradient, and the
/// parameters after the step (BN moving statistics).
fn compare_train(model: &str, c: &mut Case, bin: &Path, weights: &Path, x: &Path, step: u64) {
    let batch = c.interp.batch_size();
    let dir = x.parent().unwrap();
    let yp = dir.join("y.f32");
    write_f32(&yp, &c.y);
    let specs = c.interp.params().to_vec();
    let mut grads: Vec<Tensor> = specs
        .iter()
        .filter(|s| s.trainable)
        .map(|s| Tensor::zeros(&s.shape))
        .collect();
    let mut params = c.params.clone();
    let mut preds = vec![0f32; batch * c.interp.output_size()];
    let (x_, y_) = (c.x.clone(), c.y.clone());
    let r = c
        .interp
        .train_step(&mut params, &mut grads, &x_, &y_, batch, step, &mut preds);
    let step_s = step.to_string();
    let got = check(
        bin,
        &["train".as_ref(), weights, x, &yp, step_s.as_ref()],
        &dir.join("train.f32"),
    );
    TOL.assert_close(&format!("{model}: loss"), &got[..1], &[r.loss]);
    let mut at = 1;
    for (s, g) in specs.iter().filter(|s| s.trainable).zip(&grads) {
        let n = g.data.len();
        TOL.assert_close(&format!("{model}: gradient of {}", s.name), &got[at..at + n], &g.data);
        at += n;
    }
    for (s, p) in specs.iter().zip(&params) {
        let n = p.data.len();
        TOL.assert_close(
            &format!("{model}: {} after the step", s.name),
            &got[at..at + n],
            &p.data,
        );
        at += n;
    }
    assert_eq!(at, got.len());
}

#[test]
fn mnist_cnn_training_crate_matches_the_interpreter() {
    let spec = spec("mnist_cnn");
    let c = generate(&spec, &CodegenOptions::new(&spec, 2)).unwrap();
    assert!(c.training_kernels.is_some());
    let bin = build_check(&c, "mnist_cnn");
    let mut case = case(&spec, 2, 5);
    let (w, x) = inputs(&case, &tmp("mnist_cnn-run"));
    compare_forward("mnist_cnn", &mut case, &bin, &w, &x);
    compare_train("mnist_cnn", &mut case, &bin, &w, &x, 3);
}

#[test]
fn baseline_cifar10_bn_dropout_crate_matches_the_interpreter() {
    let spec = spec("baseline_cifar10");
    let c = generate(&spec, &CodegenOptions::new(&spec, 2)).unwrap();
    let bin = build_check(&c, "baseline_cifar10");
    let mut case = case(&spec, 2, 7);
    let (w, x) = inputs(&case, &tmp("baseline_cifar10-run"));
    compare_forward("baseline_cifar10", &mut case, &bin, &w, &x);
    compare_train("baseline_cifar10", &mut case, &bin, &w, &x, 2);
}

/// Generate, build, compare forward and one training step; with `embed`, the crate embeds
/// the weights and runs on them (`Model::new()`).
fn check_model(model: &str, batch: usize, seed: u64, embed: bool) {
    let spec = spec(model);
    let mut case = case(&spec, batch, seed);
    let (w, x) = inputs(&case, &tmp(&format!("{model}-run")));
    let mut opts = CodegenOptions::new(&spec, batch);
    opts.embed_weights = embed.then(|| w.clone());
    let c = generate(&spec, &opts).unwrap();
    let bin = build_check(&c, model);
    let w = if embed { PathBuf::from("embedded") } else { w };
    compare_forward(model, &mut case, &bin, &w, &x);
    compare_train(model, &mut case, &bin, &w, &x, 4);
}

#[test]
fn lenet5_sigmoid_probability_loss_embedded_weights_crate_matches_the_interpreter() {
    check_model("lenet5", 2, 11, true);
}

#[test]
fn inception10_concat_slices_pools_crate_matches_the_interpreter() {
    check_model("inception10", 2, 13, false);
}

/// Residual epilogues (conv and BN with a skip connection), strided convolutions, global
/// average pooling: the heaviest crate (about 110 kernel functions), so run on demand with
/// `--ignored`.
#[test]
#[ignore = "builds a large crate"]
fn resnet18_residual_blocks_crate_matches_the_interpreter() {
    check_model("resnet18", 2, 17, false);
}

#[test]
fn no_std_crate_with_embedded_weights_builds_and_matches() {
    let spec = spec("baseline_cifar10");
    let mut case = case(&spec, 1, 9);
    let (w, x) = inputs(&case, &tmp("no_std-run"));
    let mut opts = CodegenOptions::new(&spec, 1);
    opts.no_std = true;
    opts.embed_weights = Some(w.clone());
    let c = generate(&spec, &opts).unwrap();
    assert!(c.training_kernels.is_none());
    let lib = c.file("src/lib.rs").unwrap();
    assert!(lib.contains("#![no_std]") && lib.contains("include_bytes!"));
    assert!(!lib.contains("Vec<") && !c.file("src/support.rs").unwrap().contains("Vec<"));
    let dir = tmp("no_std");
    let _ = std::fs::remove_dir_all(&dir);
    c.write_to(&dir).unwrap();
    cargo_build(&dir, &[]);
    let bin = cargo_build(&dir, &["--release", "--example", "check"]).join("release/examples/check");
    compare_forward("baseline_cifar10", &mut case, &bin, "embedded".as_ref(), &x);

    // The crate's own safetensors reader refuses another model's weights.
    let other = case_weights("mnist_cnn");
    let o = Command::new(&bin)
        .args([
            "forward".as_ref(),
            other.as_path(),
            x.as_path(),
            tmp("no_std-run/bad.f32").as_path(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("not a parameter of this model"),
        "{err}"
    );
}

/// A weights file of `model` (batch 1 parameters).
fn case_weights(model: &str) -> PathBuf {
    let c = case(&spec(model), 1, 1);
    inputs(&c, &tmp(&format!("{model}-weights"))).0
}
