//! The kernels backend against the interpreter on small models built for coverage: windowed
//! average pooling, overlapping SAME max pooling, tanh/sigmoid, BN without scale/center (graph
//! constants), concatenation, MSE and crossentropy from probabilities, and every seed-style model
//! also with fusion off (one kernel per node: moments, separate BN gradients, reduce, loss and
//! loss gradient, softmax and its gradient) and with BN not folded (moving-statistics BN).

use std::path::Path;

use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::native::{NativeExecutor, NativeOptions};
use cnnc_compiler::spec::{load_model, parse_model, ModelSpec};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Executor, TargetLayout, Tensor};

const TOL: Tolerance = Tolerance::KERNEL;

/// A model with every pooling flavour, tanh and sigmoid, BN with constant γ/β, a concatenation.
const POOLS: &str = "
name: pools
input: [9, 9, 3]
layers:
  - conv2d: {name: c1, filters: 8, kernel_size: 3, padding: same, activation: tanh}
  - average_pooling2d: {name: a1, pool_size: 3, strides: 2, padding: same}
  - conv2d: {name: c2, filters: 6, kernel_size: 2, padding: valid}
  - batch_normalization: {name: b1, center: false, scale: false}
  - activation: {name: s1, activation: sigmoid}
  - max_pooling2d: {name: m1, pool_size: 3, strides: 1, padding: same}
  - conv2d: {name: c3, inputs: [b1], filters: 4, kernel_size: 1}
  - concatenate: {name: cat, inputs: [m1, c3]}
  - average_pooling2d: {name: a2, pool_size: 2, padding: valid}
  - flatten
  - dense: {name: d1, units: 5, activation: softmax}
";

fn spec(text: &str) -> ModelSpec {
    parse_model(text, Path::new("inline.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn seed_spec(model: &str) -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{model}.yaml"));
    load_model(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn uniform(len: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

/// Runs one training step and one prediction on both backends and compares everything.
fn compare(spec: &ModelSpec, batch: usize, loss: LossKind, from_logits: bool, opts: NativeOptions, n: usize) {
    let what = |s: &str| {
        format!(
            "{} (fuse={}, fold_bn={}) n={n}: {s}",
            spec.name, opts.fuse, opts.fold_bn
        )
    };
    let train = lower(spec, batch, Mode::Training).unwrap();
    let inference = lower(spec, batch, Mode::Inference).unwrap();
    let mut interp = InterpExecutor::new(train.clone(), inference.clone(), loss, from_logits).unwrap();
    let mut native = NativeExecutor::with_options(train, inference, loss, from_logits, opts).unwrap();
    let mut rng = Rng::new(7);
    let len: usize = native.input_shape().iter().product();
    let k = native.output_size();
    let x = uniform(n * len, &mut rng, -1.0, 1.0);
    let y: Vec<f32> = match native.target_layout() {
        TargetLayout::ClassIds => (0..n).map(|_| rng.below(k) as f32).collect(),
        TargetLayout::Dense => uniform(n * k, &mut rng, 0.0, 1.0),
    };
    let mut p0 = init_params(native.params(), 5);
    for (p, s) in p0.iter_mut().zip(native.params()) {
        if s.name.ends_with("moving_variance") {
            p.data = uniform(p.data.len(), &mut rng, 0.5, 1.5);
        } else if s.name.ends_with("moving_mean") || s.name.ends_with("bias") {
            p.data = uniform(p.data.len(), &mut rng, -0.3, 0.3);
        }
    }
    let g0: Vec<Tensor> = native
        .params()
        .iter()
        .filter(|s| s.trainable)
        .map(|s| Tensor::zeros(&s.shape))
        .collect();
    let (mut pi, mut gi, mut yi) = (p0.clone(), g0.clone(), vec![0f32; n * k]);
    let (mut pn, mut gn, mut yn) = (p0.clone(), g0, vec![0f32; n * k]);
    let li = interp.train_step(&mut pi, &mut gi, &x, &y, n, 9, &mut yi).loss;
    let ln = native.train_step(&mut pn, &mut gn, &x, &y, n, 9, &mut yn).loss;
    TOL.assert_close(&what("loss"), &[ln], &[li]);
    TOL.assert_close(&what("training predictions"), &yn, &yi);
    let names = native.params().iter().filter(|s| s.trainable).map(|s| s.name.clone());
    for ((name, a), b) in names.zip(&gn).zip(&gi) {
        TOL.assert_close(&what(&format!("gradient of {name}")), &a.data, &b.data);
    }
    for ((s, a), b) in native.params().iter().zip(&pn).zip(&pi) {
        TOL.assert_close(&what(&s.name), &a.data, &b.data);
    }
    let (mut qi, mut qn) = (vec![0f32; n * k], vec![0f32; n * k]);
    interp.predict(&pi, &x, n, &mut qi);
    native.predict(&pn, &x, n, &mut qn);
    TOL.assert_close(&what("inference predictions"), &qn, &qi);
}

fn variants(threads: usize) -> [NativeOptions; 3] {
    let base = NativeOptions {
        threads,
        ..NativeOptions::default()
    };
    [
        base,
        NativeOptions { fuse: false, ..base },
        NativeOptions { fold_bn: false, ..base },
    ]
}

#[test]
fn pooling_flavours_concat_and_constant_bn() {
    let s = spec(POOLS);
    for opts in variants(1) {
        compare(&s, 3, LossKind::SparseCategoricalCrossentropy, false, opts, 3);
        compare(&s, 3, LossKind::SparseCategoricalCrossentropy, false, opts, 2);
    }
}

#[test]
fn losses_from_probabilities_and_mse() {
    let s = spec(POOLS);
    let opts = NativeOptions {
        threads: 2,
        ..NativeOptions::default()
    };
    // A softmax output fed to MSE: the softmax gradient runs as its own kernel.
    compare(&s, 2, LossKind::MeanSquaredError, false, opts, 2);
    compare(&s, 2, LossKind::CategoricalCrossentropy, false, opts, 2);
    compare(&s, 2, LossKind::CategoricalCrossentropy, true, opts, 1);
}

#[test]
fn seed_models_unfused_and_unfolded() {
    for (model, batch) in [("baseline_cifar10", 2), ("mnist_cnn", 2), ("inception10", 2)] {
        let s = seed_spec(model);
        let loss = s.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
        let from_logits = s.training.from_logits.unwrap_or(false);
        for opts in variants(2) {
            compare(&s, batch, loss, from_logits, opts, batch);
        }
    }
}

#[test]
fn invalid_graphs_are_errors_not_panics() {
    let s = spec(POOLS);
    let train = lower(&s, 2, Mode::Training).unwrap();
    let other = lower(&seed_spec("mnist_cnn"), 2, Mode::Inference).unwrap();
    let loss = LossKind::SparseCategoricalCrossentropy;
    let err = NativeExecutor::new(train.clone(), other, loss, false, 1).unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
    let err = NativeExecutor::new(lower(&s, 2, Mode::Inference).unwrap(), train, loss, false, 1).unwrap_err();
    assert!(err.to_string().contains("training-mode"), "{err}");
}
