//! The training loop against a tiny executor written here: a linear softmax classifier with
//! a non-trainable running mean of its inputs (standing in for BN moving statistics).

mod support;

use cnnc_runtime::data::Dataset;
use cnnc_runtime::init::init_params;
use cnnc_runtime::optim::{Optimizer, OptimizerKind};
use cnnc_runtime::rng::Rng;
use cnnc_runtime::train::{
    evaluate, fit, predict, BatchLog, EpochLog, FitConfig, History, LossFn, SilentObserver, TrainError, TrainObserver,
    Validation,
};
use cnnc_runtime::{Executor, Init, ModelIo, ParamSpec, StepResult, TargetLayout, Tensor};
use support::{assert_close, Tol};

#[derive(Clone, Copy, PartialEq)]
enum Poison {
    NanLoss,
    InfGradient,
}

/// `p = softmax(x · W + b)`, sparse categorical crossentropy; params `[W, mean, b]`.
struct LinearSoftmax {
    d: usize,
    k: usize,
    io: ModelIo,
    /// First feature of every sample of every training call, in order.
    seen: Vec<f32>,
    /// Sample count of every training call.
    calls: Vec<usize>,
    poison: Option<(u64, Poison)>,
}

impl LinearSoftmax {
    fn new(d: usize, k: usize, batch: usize) -> Self {
        let spec = |name: &str, shape: Vec<usize>, init, trainable| ParamSpec {
            name: name.into(),
            shape,
            init,
            trainable,
        };
        LinearSoftmax {
            d,
            k,
            io: ModelIo {
                batch_size: batch,
                input_shape: vec![d],
                output_size: k,
                target_layout: TargetLayout::ClassIds,
                params: vec![
                    spec("dense.kernel", vec![d, k], Init::GlorotUniform, true),
                    spec("stats.moving_mean", vec![d], Init::Zeros, false),
                    spec("dense.bias", vec![k], Init::Zeros, true),
                ],
            },
            seen: vec![],
            calls: vec![],
            poison: None,
        }
    }

    /// Softmax probabilities `[n, k]`.
    fn forward(&self, params: &[Tensor], x: &[f32], n: usize, out: &mut [f32]) {
        let (w, b) = (&params[0].data, &params[2].data);
        for i in 0..n {
            let row = &mut out[i * self.k..(i + 1) * self.k];
            for (j, r) in row.iter_mut().enumerate() {
                *r = b[j] + (0..self.d).map(|c| x[i * self.d + c] * w[c * self.k + j]).sum::<f32>();
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row
                .iter_mut()
                .map(|v| {
                    *v = (*v - max).exp();
                    *v
                })
                .sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
    }
}

impl Executor for LinearSoftmax {
    fn backend_name(&self) -> &str {
        "test-linear"
    }
    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn train_step(
        &mut self,
        params: &mut [Tensor],
        grads: &mut [Tensor],
        x: &[f32],
        y: &[f32],
        n: usize,
        step: u64,
        preds: &mut [f32],
    ) -> StepResult {
        assert!(n >= 1 && n <= self.io.batch_size && x.len() == n * self.d && preds.len() == n * self.k);
        self.calls.push(n);
        self.seen.extend((0..n).map(|i| x[i * self.d]));
        for c in 0..self.d {
            let mean = (0..n).map(|i| x[i * self.d + c]).sum::<f32>() / n as f32;
            params[1].data[c] = 0.9 * params[1].data[c] + 0.1 * mean;
        }
        let labels: Vec<usize> = match self.io.target_layout {
            TargetLayout::ClassIds => y.iter().map(|&v| v as usize).collect(),
            TargetLayout::Dense => y
                .chunks_exact(self.k)
                .map(|row| {
                    assert_eq!(row.iter().sum::<f32>(), 1.0, "one-hot targets");
                    row.iter().position(|&v| v == 1.0).unwrap()
                })
                .collect(),
        };
        self.forward(params, x, n, preds);
        let mut loss = 0.0;
        grads.iter_mut().for_each(|g| g.data.fill(0.0));
        for (i, &label) in labels.iter().enumerate() {
            loss -= preds[i * self.k + label].ln() / n as f32;
            for j in 0..self.k {
                let dz = (preds[i * self.k + j] - f32::from(j == label)) / n as f32;
                grads[1].data[j] += dz;
                for c in 0..self.d {
                    grads[0].data[c * self.k + j] += x[i * self.d + c] * dz;
                }
            }
        }
        match self.poison {
            Some((s, Poison::NanLoss)) if s == step => loss = f32::NAN,
            Some((s, Poison::InfGradient)) if s == step => grads[1].data[0] = f32::INFINITY,
            _ => {}
        }
        StepResult { loss }
    }

    fn predict(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32]) {
        assert!(n >= 1 && n <= self.io.batch_size);
        self.forward(params, x, n, preds);
    }
}

/// Three separable blobs in 4-d: class c is centred on 2·e_c; feature 0 of sample i is
/// replaced by `i` when `numbered` so that the executor can tell samples apart.
fn blobs(n: usize, seed: u64, numbered: bool) -> Dataset {
    let mut rng = Rng::new(seed);
    let mut x = Vec::with_capacity(n * 4);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % 3;
        for f in 0..4 {
            let v = if f == c { 2.0 } else { 0.0 } + 0.5 * rng.normal();
            x.push(if numbered && f == 3 { i as f32 } else { v });
        }
        y.push(c as f32);
    }
    if numbered {
        // Put the id first.
        for s in x.chunks_exact_mut(4) {
            s.swap(0, 3);
        }
    }
    Dataset::new(x, y, vec![4], 3).unwrap()
}

fn setup(batch: usize, seed: u64) -> (LinearSoftmax, Vec<Tensor>, Optimizer) {
    let exec = LinearSoftmax::new(4, 3, batch);
    let params = init_params(exec.params(), seed);
    let opt = Optimizer::new(
        OptimizerKind::adam_default().with_learning_rate(0.05),
        &[vec![4, 3], vec![3]],
    );
    (exec, params, opt)
}

fn cfg(epochs: usize, batch_size: usize) -> FitConfig {
    FitConfig {
        epochs,
        batch_size,
        seed: 11,
        ..FitConfig::default()
    }
}

#[test]
fn learns_separable_blobs() {
    let (mut exec, mut params, mut opt) = setup(16, 1);
    let train = blobs(300, 1, false);
    let mut c = cfg(8, 16);
    c.validation = Validation::Data(blobs(90, 2, false));
    let h = fit(&mut exec, &mut params, &mut opt, &train, &c, &mut SilentObserver).unwrap();
    assert_eq!(h.epochs.len(), 8);
    let (first, last) = (&h.epochs[0], h.last().unwrap());
    assert!(last.loss < first.loss, "{first:?} -> {last:?}");
    assert!(last.accuracy > 0.95 && last.val_accuracy.unwrap() > 0.95, "{last:?}");
    assert_eq!(
        opt.iterations(),
        8 * 19,
        "300 / 16 = 18 full batches + 1 partial, per epoch"
    );
}

#[test]
fn same_seed_same_weights_bit_for_bit() {
    let run = |seed: u64| {
        let (mut exec, mut params, mut opt) = setup(8, 4);
        let c = FitConfig { seed, ..cfg(3, 8) };
        fit(
            &mut exec,
            &mut params,
            &mut opt,
            &blobs(50, 3, false),
            &c,
            &mut SilentObserver,
        )
        .unwrap();
        params
    };
    let bits = |p: Vec<Tensor>| p.into_iter().flat_map(|t| t.data).map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(bits(run(9)), bits(run(9)));
    assert_ne!(bits(run(9)), bits(run(10)), "the seed drives the shuffle");
}

#[test]
fn last_partial_batch_is_trained_and_each_epoch_is_a_permutation() {
    let (mut exec, mut params, mut opt) = setup(4, 0);
    let data = blobs(10, 0, true);
    fit(&mut exec, &mut params, &mut opt, &data, &cfg(3, 4), &mut SilentObserver).unwrap();
    assert_eq!(exec.calls, vec![4, 4, 2, 4, 4, 2, 4, 4, 2]);
    let epochs: Vec<Vec<f32>> = exec.seen.chunks(10).map(|c| c.to_vec()).collect();
    for e in &epochs {
        let mut ids: Vec<usize> = e.iter().map(|&v| v as usize).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..10).collect::<Vec<_>>());
    }
    assert_ne!(epochs[0], epochs[1], "reshuffled every epoch");

    let (mut exec, mut params, mut opt) = setup(4, 0);
    let c = FitConfig {
        shuffle: false,
        ..cfg(2, 3)
    };
    fit(&mut exec, &mut params, &mut opt, &data, &c, &mut SilentObserver).unwrap();
    let ordered: Vec<f32> = (0..10).chain(0..10).map(|i| i as f32).collect();
    assert_eq!(exec.seen, ordered);
    assert_eq!(exec.calls, vec![3, 3, 3, 1, 3, 3, 3, 1]);
}

#[test]
fn validation_split_holds_out_the_last_samples() {
    let (mut exec, mut params, mut opt) = setup(4, 0);
    let data = blobs(10, 0, true);
    let c = FitConfig {
        validation: Validation::Split(0.2),
        ..cfg(2, 4)
    };
    let h = fit(&mut exec, &mut params, &mut opt, &data, &c, &mut SilentObserver).unwrap();
    assert!(exec.seen.iter().all(|&id| id < 8.0), "trains on samples 0..8 only");
    assert_eq!(exec.calls, vec![4, 4, 4, 4]);
    let (_, tail) = data.split_validation(0.2).unwrap();
    let (loss, acc) = evaluate(&mut exec, &params, &tail, 2, c.loss).unwrap();
    let last = h.last().unwrap();
    assert_close(
        &[last.val_loss.unwrap(), last.val_accuracy.unwrap()],
        &[loss, acc],
        Tol::TIGHT,
        "val",
    );
}

/// Parameters after `steps` successful steps (0-based steps 0..steps).
fn params_after(steps: usize) -> Vec<Tensor> {
    let (mut exec, mut params, mut opt) = setup(4, 2);
    let c = FitConfig {
        max_steps: Some(steps),
        ..cfg(5, 4)
    };
    fit(
        &mut exec,
        &mut params,
        &mut opt,
        &blobs(12, 5, false),
        &c,
        &mut SilentObserver,
    )
    .unwrap();
    params
}

#[test]
fn non_finite_loss_stops_with_the_last_good_parameters() {
    for (poison, what) in [
        (Poison::NanLoss, "the loss (NaN)"),
        (Poison::InfGradient, "the gradient of dense.bias"),
    ] {
        let (mut exec, mut params, mut opt) = setup(4, 2);
        exec.poison = Some((4, poison));
        let err = fit(
            &mut exec,
            &mut params,
            &mut opt,
            &blobs(12, 5, false),
            &cfg(5, 4),
            &mut SilentObserver,
        )
        .unwrap_err();
        match &err {
            TrainError::NonFinite {
                step,
                epoch,
                batch,
                what: w,
            } => assert_eq!((*step, *epoch, *batch, w.as_str()), (4, 1, 1, what)),
            other => panic!("expected NonFinite, got {other}"),
        }
        assert!(err.to_string().contains("epoch 2, batch 2"), "{err}");
        // Trainable parameters untouched by the bad step, moving statistics restored.
        assert_eq!(params, params_after(4), "{what}");
        assert_eq!(opt.iterations(), 4);
    }
}

#[test]
fn predict_any_count_and_evaluate_from_probabilities() {
    let (mut exec, params, _) = setup(3, 7);
    let data = blobs(7, 8, false);
    let preds = predict(&mut exec, &params, &data.x, 7).unwrap();
    assert_eq!(preds.len(), 21);
    let mut one = vec![0.0; 3];
    let mut losses = vec![];
    let mut correct = 0;
    for i in 0..7 {
        exec.forward(&params, &data.x[i * 4..(i + 1) * 4], 1, &mut one);
        assert_close(&preds[i * 3..i * 3 + 3], &one, Tol::TIGHT, &format!("sample {i}"));
        let label = data.y[i] as usize;
        losses.push(-one[label].clamp(1e-7, 1.0 - 1e-7).ln());
        correct += usize::from(cnnc_runtime::train::argmax(&one) == label);
    }
    let mean = losses.iter().sum::<f32>() / 7.0;
    let (loss, acc) = evaluate(
        &mut exec,
        &params,
        &data,
        3,
        LossFn::SparseCategoricalCrossentropy { from_logits: false },
    )
    .unwrap();
    assert_close(&[loss, acc], &[mean, correct as f32 / 7.0], Tol::TIGHT, "evaluate");
    assert!(
        predict(&mut exec, &params, &data.x[..5], 2).is_err(),
        "length must match n"
    );
}

#[test]
fn dense_targets_are_one_hot() {
    let (mut exec, mut params, mut opt) = setup(8, 1);
    exec.io.target_layout = TargetLayout::Dense;
    let c = FitConfig {
        loss: LossFn::CategoricalCrossentropy { from_logits: false },
        validation: Validation::Split(0.25),
        ..cfg(4, 8)
    };
    let h = fit(
        &mut exec,
        &mut params,
        &mut opt,
        &blobs(60, 1, false),
        &c,
        &mut SilentObserver,
    )
    .unwrap();
    assert!(h.last().unwrap().val_accuracy.unwrap() > 0.9, "{h:?}");
}

#[derive(Default)]
struct Recorder {
    begins: Vec<(usize, usize)>,
    batches: Vec<BatchLog>,
    ends: Vec<EpochLog>,
    stop_after: Option<usize>,
}

impl TrainObserver for Recorder {
    fn on_epoch_begin(&mut self, epoch: usize, batches: usize) {
        self.begins.push((epoch, batches));
    }
    fn on_batch_end(&mut self, log: &BatchLog) {
        self.batches.push(log.clone());
    }
    fn on_epoch_end(&mut self, log: &EpochLog) {
        self.ends.push(log.clone());
    }
    fn should_stop(&mut self) -> bool {
        self.stop_after.is_some_and(|s| self.batches.len() >= s)
    }
}

#[test]
fn observer_sees_every_batch_and_epoch() {
    let (mut exec, mut params, mut opt) = setup(4, 0);
    let mut rec = Recorder::default();
    let c = FitConfig {
        initial_epoch: 2,
        ..cfg(2, 4)
    };
    let h = fit(&mut exec, &mut params, &mut opt, &blobs(10, 0, false), &c, &mut rec).unwrap();
    assert_eq!(rec.begins, vec![(2, 3), (3, 3)]);
    let ids: Vec<(u64, usize, usize)> = rec.batches.iter().map(|b| (b.step, b.epoch, b.batch)).collect();
    assert_eq!(
        ids,
        vec![(1, 2, 0), (2, 2, 1), (3, 2, 2), (4, 3, 0), (5, 3, 1), (6, 3, 2)]
    );
    assert!(rec
        .batches
        .iter()
        .all(|b| b.batches_per_epoch == 3 && b.images_per_sec > 0.0));
    // The epoch's figures are the running figures after its last batch.
    assert_eq!(rec.ends, h.epochs);
    assert_eq!(rec.ends[0].loss, rec.batches[2].loss);
    assert_eq!(rec.ends[1].accuracy, rec.batches[5].accuracy);
    assert!(rec.ends.iter().all(|e| e.val_loss.is_none()));

    let mut rec = Recorder {
        stop_after: Some(2),
        ..Recorder::default()
    };
    let h = fit(
        &mut exec,
        &mut params,
        &mut opt,
        &blobs(10, 0, false),
        &cfg(5, 4),
        &mut rec,
    )
    .unwrap();
    assert_eq!((rec.batches.len(), h.epochs.len()), (2, 1), "stops when asked");
}

#[test]
fn max_steps_ends_a_partial_epoch_with_validation() {
    let (mut exec, mut params, mut opt) = setup(4, 0);
    let c = FitConfig {
        max_steps: Some(4),
        validation: Validation::Split(0.2),
        ..cfg(10, 4)
    };
    let h = fit(
        &mut exec,
        &mut params,
        &mut opt,
        &blobs(20, 0, false),
        &c,
        &mut SilentObserver,
    )
    .unwrap();
    assert_eq!(opt.iterations(), 4);
    assert_eq!(h.epochs.len(), 1);
    assert!(h.epochs[0].val_loss.is_some());
}

#[test]
fn mismatches_are_reported_before_training() {
    let data = blobs(10, 0, false);
    let (mut exec, mut params, mut opt) = setup(4, 0);
    let run =
        |exec: &mut LinearSoftmax, params: &mut Vec<Tensor>, opt: &mut Optimizer, data: &Dataset, c: &FitConfig| {
            fit(exec, params, opt, data, c, &mut SilentObserver)
                .unwrap_err()
                .to_string()
        };
    let msg = run(&mut exec, &mut params, &mut opt, &data, &cfg(1, 5));
    assert!(msg.contains("batch size 5 is outside 1..=4"), "{msg}");

    let mut bad = data.clone();
    bad.y[6] = 3.0;
    let msg = run(&mut exec, &mut params, &mut opt, &bad, &cfg(1, 4));
    assert!(msg.contains("training data: sample 6 has label 3"), "{msg}");

    let wide = Dataset::new(vec![0.0; 50], vec![0.0; 10], vec![5], 3).unwrap();
    let msg = run(&mut exec, &mut params, &mut opt, &wide, &cfg(1, 4));
    assert!(msg.contains("[5]") && msg.contains("[4]"), "{msg}");

    let c = FitConfig {
        validation: Validation::Data(wide),
        ..cfg(1, 4)
    };
    let msg = run(&mut exec, &mut params, &mut opt, &data, &c);
    assert!(msg.starts_with("validation data"), "{msg}");

    let mut short = params.clone();
    short.pop();
    let msg = run(&mut exec, &mut short, &mut opt, &data, &cfg(1, 4));
    assert!(msg.contains("2 parameter tensors given for a model with 3"), "{msg}");

    let mut wrong_opt = Optimizer::new(OptimizerKind::sgd_default(), &[vec![4, 3]]);
    let msg = run(&mut exec, &mut params, &mut wrong_opt, &data, &cfg(1, 4));
    assert!(msg.contains("optimiser"), "{msg}");
    assert!(exec.calls.is_empty(), "nothing was trained");
}

#[test]
fn loss_functions_match_keras_on_hand_values() {
    let p = [0.2f32, 0.7, 0.1];
    let sparse = LossFn::SparseCategoricalCrossentropy { from_logits: false };
    let cat = LossFn::CategoricalCrossentropy { from_logits: false };
    let z = [1.0f32, 3.0, -1.0];
    let lse = (1f32.exp() + 3f32.exp() + (-1f32).exp()).ln();
    let got = [
        sparse.sample_loss(&p, 1),
        sparse.sample_loss(&[0.0, 1.0, 0.0], 0),
        sparse.sample_loss(&[0.0, 1.0, 0.0], 1),
        cat.sample_loss(&[0.4, 1.4, 0.2], 1),
        LossFn::SparseCategoricalCrossentropy { from_logits: true }.sample_loss(&z, 2),
        LossFn::CategoricalCrossentropy { from_logits: true }.sample_loss(&z, 1),
        LossFn::MeanSquaredError.sample_loss(&p, 1),
    ];
    let want = [
        -(0.7f32.ln()),
        -(1e-7f32.ln()),         // clipped at epsilon
        -((1.0f32 - 1e-7).ln()), // clipped at 1 - epsilon
        -(0.7f32.ln()),          // renormalised first
        lse + 1.0,
        lse - 3.0,
        (0.04 + 0.09 + 0.01) / 3.0,
    ];
    assert_close(&got, &want, Tol::TIGHT, "losses");
    assert_eq!(LossFn::from_keras_name("mse", false), Some(LossFn::MeanSquaredError));
    assert_eq!(
        LossFn::from_keras_name("sparse_categorical_crossentropy", true)
            .unwrap()
            .to_string(),
        "sparse_categorical_crossentropy(from_logits=True)"
    );
}

#[test]
fn history_csv_has_keras_columns_and_is_written_atomically() {
    let mut h = History::default();
    h.epochs.push(EpochLog {
        epoch: 0,
        loss: 0.5,
        accuracy: 0.75,
        val_loss: Some(0.25),
        val_accuracy: Some(0.875),
        seconds: 1.23456,
    });
    h.epochs.push(EpochLog {
        epoch: 1,
        loss: 0.125,
        accuracy: 1.0,
        val_loss: None,
        val_accuracy: None,
        seconds: 2.0,
    });
    assert_eq!(
        h.to_csv(),
        "epoch,accuracy,loss,seconds,val_accuracy,val_loss\n0,0.75,0.5,1.235,0.875,0.25\n1,1,0.125,2.000,,\n"
    );
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("history.csv");
    h.write_csv(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), h.to_csv());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    h.epochs.pop();
    h.epochs[0].val_loss = None;
    assert_eq!(h.to_csv(), "epoch,accuracy,loss,seconds\n0,0.75,0.5,1.235\n");
    assert!(h.write_csv(&dir.path().join("missing/h.csv")).is_err());
}
