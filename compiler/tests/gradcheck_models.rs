//! Finite-difference checks of the loss gradient of every seed model on a batch of two, through
//! the same `Executor` interface the training loop uses. A whole model has up to millions of
//! weights, so each check samples coordinates: in parameter tensors spread over the model
//! (first, last, between), the element with the largest gradient and elements drawn at random.
//! ReLU and max-pool make the loss piecewise smooth: a central difference that straddles a kink
//! is meaningless, so a coordinate counts only where the differences at `h` and `h/2` agree
//! (else another is drawn). VGG16 at 224×224 is covered by `vgg16_cifar10` (the same layers on 32×32 inputs):
//! one interpreted step of the full-size model takes seconds.

use cnnc_compiler::interp::InterpExecutor;
use cnnc_compiler::ir::{LossKind, Mode};
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::load_model;
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::init::init_params;
use cnnc_runtime::rng::Rng;
use cnnc_runtime::{Executor, TargetLayout, Tensor};

const BATCH: usize = 2;
/// Perturbation relative to max(1, |θ|).
const H: f32 = 1e-3;
/// Looser than `Tolerance::FINITE_DIFF` (the per-layer checks' bound): a first-layer weight
/// moves thousands of downstream ReLU inputs, and the few that cross zero within `h` shift the
/// f32 central difference by a few percent even where `h` and `h/2` agree. A wrong rule
/// (a missing term, a transposed operand) is off by far more.
const MODEL: Tolerance = Tolerance { abs: 3e-3, rel: 5e-2 };

fn check_model(file: &str, tensors: usize, per_tensor: usize) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models")
        .join(file);
    let spec = load_model(&path).unwrap();
    let loss = spec.training.loss.unwrap_or(LossKind::SparseCategoricalCrossentropy);
    let from_logits = spec.training.from_logits.unwrap_or(false);
    let train = lower(&spec, BATCH, Mode::Training).unwrap();
    let infer = lower(&spec, BATCH, Mode::Inference).unwrap();
    let mut exec = InterpExecutor::new(train, infer, loss, from_logits).unwrap();
    let specs = exec.params().to_vec();
    let mut params = init_params(&specs, 3);
    let len: usize = exec.input_shape().iter().product();
    let classes = exec.output_size();
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..BATCH * len).map(|_| rng.uniform()).collect(); // [N, H, W, C]
    let labels: Vec<usize> = (0..BATCH).map(|i| (i * 7 + 1) % classes).collect();
    let y: Vec<f32> = match exec.target_layout() {
        TargetLayout::ClassIds => labels.iter().map(|&l| l as f32).collect(), // [N]
        TargetLayout::Dense => labels
            .iter()
            .flat_map(|&l| (0..classes).map(move |k| if k == l { 1.0 } else { 0.0 }))
            .collect(), // [N, K]
    };
    let mut preds = vec![0.0; BATCH * classes];
    let trainable: Vec<usize> = (0..specs.len()).filter(|&i| specs[i].trainable).collect();
    let mut grads: Vec<Tensor> = trainable.iter().map(|&i| Tensor::zeros(&specs[i].shape)).collect();

    // BN's moving statistics change with every step but do not enter the training loss; each
    // evaluation starts from the same parameters anyway.
    let start = params.clone();
    exec.train_step(&mut params, &mut grads, &x, &y, BATCH, 0, &mut preds);
    let mut loss_at = |ps: &[Tensor]| -> f64 {
        let mut ps = ps.to_vec();
        let mut scratch: Vec<Tensor> = grads.iter().map(|g| Tensor::zeros(&g.shape)).collect();
        let mut preds = vec![0.0; BATCH * classes];
        exec.train_step(&mut ps, &mut scratch, &x, &y, BATCH, 0, &mut preds)
            .loss as f64
    };

    let picks: Vec<usize> = if trainable.len() <= tensors {
        (0..trainable.len()).collect()
    } else {
        (0..tensors)
            .map(|k| k * (trainable.len() - 1) / (tensors - 1))
            .collect()
    };
    let (mut analytic, mut numeric, mut names, mut kinks) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for t in picks {
        let p = trainable[t];
        let g = &grads[t].data;
        let largest = (0..g.len()).max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs())).unwrap();
        let mut candidates = vec![largest];
        candidates.extend((0..3 * per_tensor).map(|_| rng.below(g.len())));
        let mut taken = 0;
        for e in candidates {
            if taken == per_tensor {
                break;
            }
            let theta = start[p].data[e];
            let mut central = |h: f32| {
                let mut plus = start.clone();
                plus[p].data[e] = theta + h;
                let mut minus = start.clone();
                minus[p].data[e] = theta - h;
                ((loss_at(&plus) - loss_at(&minus)) / (2.0 * h as f64)) as f32
            };
            let h = H * theta.abs().max(1.0);
            let (coarse, fine) = (central(h), central(h / 2.0));
            if Tolerance::FINITE_DIFF.compare(&[coarse], &[fine]).is_err() {
                kinks += 1;
                continue;
            }
            analytic.push(g[e]);
            numeric.push(fine);
            names.push(format!("{}[{e}]", specs[p].name));
            taken += 1;
        }
    }
    assert!(
        analytic.len() >= 2 * kinks,
        "{file}: {kinks} kinks for {} checked coordinates",
        analytic.len()
    );
    if let Err(m) = MODEL.compare(&analytic, &numeric) {
        panic!("{file}: analytic vs finite-difference gradients differ: {m}\nsampled: {names:?}\nanalytic {analytic:?}\nnumeric {numeric:?}");
    }
    assert!(
        analytic.iter().any(|g| g.abs() > 1e-4),
        "{file}: every sampled gradient is ~0"
    );
}

/// `name: (tensors, elements per tensor)`: fewer samples where one interpreted step is slow.
macro_rules! models {
    ($($name:ident: ($tensors:expr, $per:expr)),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_model(concat!(stringify!($name), ".yaml"), $tensors, $per);
        }
    )*};
}

models!(
    mnist_cnn: (8, 2),
    cifar10_cnn: (8, 2),
    lenet5: (8, 2),
    lenet_mnist: (8, 2),
    lenet_cifar10: (8, 2),
    convnet_mnist: (8, 2),
    baseline_cifar10: (8, 2),
    lenet5_cifar10: (8, 2),
    alexnet8: (6, 1),
    vgg16_cifar10: (4, 1),
    inception10: (8, 2),
    resnet18: (4, 1),
);
