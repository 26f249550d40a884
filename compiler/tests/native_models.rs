//! The kernels backend against the interpreter on the seed models (`models/*.yaml`) at small
//! batches: one training step (predictions, loss, every gradient, BN moving statistics after
//! the step), the same for a partial batch of one sample, and inference — all elementwise
//! within `Tolerance::KERNEL`. vgg16 (224×224 input) is too slow for the interpreter here.

use std::path::Path;

use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::native::{NativeExecutor, NativeOptions};
use cnnc_compiler::spec::load_model;
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Executor, InferenceSession, TargetLayout, Tensor};

const TOL: Tolerance = Tolerance::KERNEL;

fn uniform(len: usize, rng: &mut Rng, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect()
}

/// Initial parameters with BN statistics and affine parameters moved off their defaults, so
/// that inference and the moving-average update see non-trivial values.
fn params(ex: &dyn Executor, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    let mut ps = init_params(ex.params(), seed);
    for (p, spec) in ps.iter_mut().zip(ex.params()) {
        let (lo, hi) = match spec.name.rsplit('.').next() {
            Some("gamma") | Some("moving_variance") => (0.6, 1.4),
            Some("beta") | Some("moving_mean") | Some("bias") => (-0.2, 0.2),
            _ => continue,
        };
        p.data = uniform(p.data.len(), &mut rng, lo, hi);
    }
    ps
}

/// Targets for `n` samples in the executor's layout.
fn targets(ex: &dyn Executor, n: usize, rng: &mut Rng) -> Vec<f32> {
    let k = ex.output_size();
    let ids: Vec<usize> = (0..n).map(|_| rng.below(k)).collect();
    match ex.target_layout() {
        TargetLayout::ClassIds => ids.iter().map(|&c| c as f32).collect(),
        TargetLayout::Dense => {
            let mut t = vec![0f32; n * k];
            for (i, &c) in ids.iter().enumerate() {
                t[i * k + c] = 1.0;
            }
            t
        }
    }
}

fn executors(model: &str, batch: usize, opts: NativeOptions) -> (InterpExecutor, NativeExecutor) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(format!("{model}.yaml"));
    let spec = load_model(&path).unwrap_or_else(|e| panic!("{e}"));
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    let train = lower(&spec, batch, Mode::Training).unwrap();
    let inference = lower(&spec, batch, Mode::Inference).unwrap();
    let interp = InterpExecutor::new(train.clone(), inference.clone(), loss, from_logits).unwrap();
    let native = NativeExecutor::with_options(train, inference, loss, from_logits, opts).unwrap();
    (interp, native)
}

/// One training step and one prediction on `n` samples, native vs interpreter.
fn compare_step(model: &str, interp: &mut InterpExecutor, native: &mut NativeExecutor, n: usize, seed: u64) {
    assert_eq!(interp.params(), native.params());
    let mut rng = Rng::new(seed);
    let len: usize = native.input_shape().iter().product();
    let x = uniform(n * len, &mut rng, -1.0, 1.0);
    let y = targets(native, n, &mut rng);
    let p0 = params(native, seed);
    let trainable: Vec<Tensor> = native
        .params()
        .iter()
        .filter(|s| s.trainable)
        .map(|s| Tensor::zeros(&s.shape))
        .collect();
    let k = native.output_size();
    let step = 3;

    let (mut pi, mut gi, mut yi) = (p0.clone(), trainable.clone(), vec![0f32; n * k]);
    let ri = interp.train_step(&mut pi, &mut gi, &x, &y, n, step, &mut yi);
    let (mut pn, mut gn, mut yn) = (p0.clone(), trainable, vec![0f32; n * k]);
    let rn = native.train_step(&mut pn, &mut gn, &x, &y, n, step, &mut yn);

    let what = |s: &str| format!("{model} n={n}: {s}");
    TOL.assert_close(&what("loss"), &[rn.loss], &[ri.loss]);
    TOL.assert_close(&what("training predictions"), &yn, &yi);
    let names = native.params().iter().filter(|s| s.trainable).map(|s| &s.name);
    for ((name, a), b) in names.zip(&gn).zip(&gi) {
        assert_eq!(a.shape, b.shape, "{}", what(name));
        TOL.assert_close(&what(&format!("gradient of {name}")), &a.data, &b.data);
    }
    for ((spec, a), b) in native.params().iter().zip(&pn).zip(&pi) {
        TOL.assert_close(&what(&format!("{} after the step", spec.name)), &a.data, &b.data);
    }

    let (mut qi, mut qn) = (vec![0f32; n * k], vec![0f32; n * k]);
    interp.predict(&pi, &x, n, &mut qi);
    native.predict(&pn, &x, n, &mut qn);
    TOL.assert_close(&what("inference predictions"), &qn, &qi);
}

fn check_model(model: &str, batch: usize, threads: usize) {
    check_model_steps(model, batch, threads, true);
}

/// Full batch, a partial batch of one sample (its own program, no padding, sharing the arena),
/// and (`again`) the full batch once more after the switch.
fn check_model_steps(model: &str, batch: usize, threads: usize, again: bool) {
    let opts = NativeOptions {
        threads,
        ..NativeOptions::default()
    };
    let (mut interp, mut native) = executors(model, batch, opts);
    compare_step(model, &mut interp, &mut native, batch, 11);
    compare_step(model, &mut interp, &mut native, 1, 12);
    if again {
        compare_step(model, &mut interp, &mut native, batch, 13);
    }
}

#[test]
fn mnist_cnn() {
    check_model("mnist_cnn", 3, 1);
}

#[test]
fn mnist_cnn_two_threads() {
    check_model("mnist_cnn", 4, 2);
}

#[test]
fn lenet5() {
    check_model("lenet5", 3, 1);
}

#[test]
fn convnet_mnist() {
    check_model("convnet_mnist", 2, 2);
}

#[test]
fn baseline_cifar10_bn_dropout() {
    check_model("baseline_cifar10", 2, 1);
}

#[test]
fn lenet5_cifar10() {
    check_model("lenet5_cifar10", 3, 2);
}

#[test]
fn lenet_cifar10_categorical() {
    check_model("lenet_cifar10", 2, 1);
}

#[test]
fn lenet_mnist_dense() {
    check_model("lenet_mnist", 3, 1);
}

#[test]
fn cifar10_cnn() {
    check_model("cifar10_cnn", 2, 2);
}

#[test]
fn inception10() {
    check_model("inception10", 2, 2);
}

#[test]
fn resnet18() {
    // The interpreter needs seconds per step here: skip the third step.
    check_model_steps("resnet18", 2, 2, false);
}

/// An `InferenceSession` folds BN into the weights once per program instead of on every call:
/// its predictions are bitwise those of plain `predict` calls, across batch sizes (each its own
/// program and prepare stage in the shared arena), and after a training step and other
/// parameters ran in between (a new session prepares on its first call).
#[test]
fn inference_session_reuses_the_prepared_weights() {
    let (_, mut native) = executors("baseline_cifar10", 4, NativeOptions::default());
    let mut rng = Rng::new(21);
    let len: usize = native.input_shape().iter().product();
    let k = native.output_size();
    let x = uniform(4 * len, &mut rng, -1.0, 1.0);
    let calls = [4, 1, 1, 4, 2, 4];
    let plain = |ex: &mut NativeExecutor, ps: &[Tensor]| -> Vec<Vec<f32>> {
        calls
            .iter()
            .map(|&n| {
                let mut out = vec![0f32; n * k];
                ex.predict(ps, &x[..n * len], n, &mut out);
                out
            })
            .collect()
    };
    let in_session = |ex: &mut NativeExecutor, ps: &[Tensor]| -> Vec<Vec<f32>> {
        let mut s = InferenceSession::new(ex, ps);
        calls
            .iter()
            .map(|&n| {
                let mut out = vec![0f32; n * k];
                s.predict(&x[..n * len], n, &mut out);
                out
            })
            .collect()
    };
    let mut ps = params(&native, 22);
    assert_eq!(in_session(&mut native, &ps), plain(&mut native, &ps));
    // Training changes the parameters (and runs another program in the arena).
    let mut grads: Vec<Tensor> = native
        .params()
        .iter()
        .filter(|s| s.trainable)
        .map(|s| Tensor::zeros(&s.shape))
        .collect();
    let y = targets(&native, 4, &mut rng);
    native.train_step(&mut ps, &mut grads, &x, &y, 4, 1, &mut vec![0f32; 4 * k]);
    for p in ps.iter_mut() {
        p.data.iter_mut().for_each(|v| *v *= 1.25);
    }
    let want = plain(&mut native, &ps);
    // The arena now holds the old parameters' prepared weights for the batch of 4 the session
    // starts with: its first call must prepare regardless.
    let before = params(&native, 22);
    assert_ne!(want, plain(&mut native, &before), "the parameters changed");
    assert_eq!(in_session(&mut native, &ps), want);
}

/// In a session, a batch-1 conv that reads its kernel in place on every plain call (ResNet18's
/// 4×4 and 8×8 layers: few output pixels) reads a pack made once instead (on the session's
/// second call): the predictions agree with plain calls within the tolerance, and a plain call
/// afterwards drops the packs.
#[test]
fn inference_session_packs_in_place_kernels_once() {
    let (_, mut native) = executors("resnet18", 1, NativeOptions::default());
    let mut rng = Rng::new(31);
    let len: usize = native.input_shape().iter().product();
    let k = native.output_size();
    let x = uniform(len, &mut rng, -1.0, 1.0);
    let ps = params(&native, 32);
    let mut want = vec![0f32; k];
    native.predict(&ps, &x, 1, &mut want);
    let mut s = InferenceSession::new(&mut native, &ps);
    for call in 0..3 {
        let mut got = vec![0f32; k];
        s.predict(&x, 1, &mut got);
        TOL.assert_close(&format!("session call {call}"), &got, &want);
    }
    assert!(
        native.session_packed_kernels() > 0,
        "the session packed in-place kernels"
    );
    native.predict(&ps, &x, 1, &mut want);
    assert_eq!(native.session_packed_kernels(), 0, "a plain call drops them");
}
