//! `cnnc train`: fit a model on a dataset, report per-epoch metrics and the test score, save
//! the weights (atomically), the history and the curves.

use cnnc_runtime::data::{dataset_files, validation_split_at};
use cnnc_runtime::init::init_params;
use cnnc_runtime::optim::{Optimizer, OptimizerKind};
use cnnc_runtime::train::{evaluate, fit, FitConfig, TrainError, Validation};
use cnnc_runtime::weights::{load_weights, save_weights};
use cnnc_runtime::Tensor;

use super::args::{OptimizerChoice, TrainArgs};
use super::backend::{self, LossSetup};
use super::data;
use super::error::{CliError, OrCli};
use super::paths::{check_no_clobber, check_output_path, Named};
use super::plot::{self, Curves};
use super::progress::ProgressObserver;

pub fn run(a: TrainArgs) -> Result<(), CliError> {
    let spec = backend::load_spec(&a.model)?;
    let t = &spec.training;
    check_paths(&a)?;
    if let Some(p) = &a.plot {
        plot::check_extension(p)?;
    }

    let loss = LossSetup::resolve(a.loss, a.from_logits, t)?;
    let batch = a.batch_size.or(t.batch_size).unwrap_or(32);
    let validation_split = a.validation_split.or(t.validation_split).unwrap_or(0.0);
    if !(0.0..1.0).contains(&validation_split) {
        return Err(CliError::new(format!(
            "validation split {validation_split} must be in [0, 1)"
        )));
    }
    let opt_kind = optimizer(&a, t.optimizer.as_deref(), t.learning_rate, t.momentum)?;

    let (input_shape, classes) = backend::model_io(&spec)?;
    let pair = a.train_x.as_ref().zip(a.train_y.as_ref());
    let loaded = data::load(a.data.data.as_deref(), pair, classes)?;
    data::check(&loaded.source, "training data", &loaded.train, classes, &input_shape)?;
    if let Some(test) = &loaded.test {
        data::check(&loaded.source, "test data", test, classes, &input_shape)?;
    }
    let specs = backend::param_specs(&spec)?;
    let mut params: Vec<Tensor> = match &a.init_weights {
        Some(w) => load_weights(w, &specs).or_cli()?,
        None => init_params(&specs, a.seed),
    };
    let work = workload(&loaded, batch, validation_split, a.steps);
    let built = backend::build(&spec, batch, loss, &a.run, &work)?;
    let mut exec = built.exec;
    backend::check_params(exec.as_ref(), &specs)?;
    let shapes: Vec<Vec<usize>> = specs.iter().filter(|s| s.trainable).map(|s| s.shape.clone()).collect();
    let mut opt = Optimizer::new(opt_kind, &shapes);

    let n_fit = loaded.train.n - (loaded.train.n as f32 * validation_split) as usize;
    let batches = n_fit.div_ceil(batch).max(1);
    // `--steps` bounds the run: only the epochs it reaches are announced.
    let epochs = match (a.epochs.or(t.epochs), a.steps) {
        (Some(e), Some(s)) => e.min(s.div_ceil(batches)),
        (Some(e), None) => e,
        (None, Some(s)) => s.div_ceil(batches),
        (None, None) => 1,
    };
    eprintln!(
        "{}: {} training samples from {}, batch {batch}, {epochs} epoch(s), {} backend ({:.2}s to build{}), {} thread{}",
        spec.name,
        loaded.train.n,
        loaded.source,
        exec.backend_name(),
        built.seconds,
        built.note,
        built.threads,
        if built.threads == 1 { "" } else { "s" },
    );
    let cfg = FitConfig {
        epochs,
        batch_size: batch,
        shuffle: !a.no_shuffle,
        seed: a.seed,
        max_steps: a.steps,
        validation: if validation_split > 0.0 {
            Validation::Split(validation_split)
        } else {
            Validation::None
        },
        loss: loss.loss_fn(),
        initial_epoch: 0,
    };
    let mut observer = ProgressObserver::new(epochs);
    let history = match fit(exec.as_mut(), &mut params, &mut opt, &loaded.train, &cfg, &mut observer) {
        Ok(h) => h,
        Err(e @ TrainError::NonFinite { .. }) => {
            if let Some(path) = &a.save {
                save_weights(path, &specs, &params).or_cli()?;
                eprintln!("saved the last finite weights to {}", path.display());
            }
            return Err(CliError::new(e.to_string()));
        }
        Err(e) => return Err(CliError::new(e.to_string())),
    };

    if let Some(test) = &loaded.test {
        let (l, acc) = evaluate(exec.as_mut(), &params, test, batch, cfg.loss).or_cli()?;
        println!("test loss: {l:.4} - test accuracy: {acc:.4} ({} samples)", test.n);
    }
    backend::print_profile(exec.as_ref());
    if let Some(path) = &a.save {
        save_weights(path, &specs, &params).or_cli()?;
        eprintln!("saved weights to {}", path.display());
    }
    if let Some(path) = &a.history {
        history.write_csv(path).or_cli()?;
    }
    if let Some(path) = &a.plot {
        let col = |f: fn(&cnnc_runtime::train::EpochLog) -> Option<f32>| -> Vec<f32> {
            history.epochs.iter().filter_map(f).collect()
        };
        let curves = Curves {
            loss: &col(|e| Some(e.loss)),
            accuracy: &col(|e| Some(e.accuracy)),
            val_loss: &col(|e| e.val_loss),
            val_accuracy: &col(|e| e.val_accuracy),
        };
        plot::write(path, &curves)?;
    }
    Ok(())
}

/// Refuses, before any work, outputs that cannot be written or would overwrite an input (the
/// model, the data, initial weights other than by `--save`) or one another.
fn check_paths(a: &TrainArgs) -> Result<(), CliError> {
    let outputs: Vec<Named> = [
        named("--save", &a.save),
        named("--history", &a.history),
        named("--plot", &a.plot),
    ]
    .into_iter()
    .flatten()
    .collect();
    for &(flag, p) in &outputs {
        check_output_path(flag, p)?;
    }
    let data_files = a.data.data.as_deref().map(dataset_files).unwrap_or_default();
    let inputs: Vec<Named> = [
        Some(("the model", a.model.as_path())),
        named("--train-x", &a.train_x),
        named("--train-y", &a.train_y),
        named("--init-weights", &a.init_weights),
    ]
    .into_iter()
    .flatten()
    .chain(data_files.iter().map(|p| ("a file of --data", p.as_path())))
    .collect();
    check_no_clobber(&outputs, &inputs, &[("--save", "--init-weights")])
}

/// An optional path flag, with its name when given.
fn named<'a>(flag: &'a str, path: &'a Option<std::path::PathBuf>) -> Option<Named<'a>> {
    path.as_deref().map(|p| (flag, p))
}

/// The batch sizes besides `batch` that training will call the backend with: the last batch
/// of an epoch (when the run gets there), the last validation and test batches.
fn workload(loaded: &data::Loaded, batch: usize, validation_split: f32, steps: Option<usize>) -> backend::Workload {
    let n = loaded.train.n;
    let n_fit = if validation_split > 0.0 {
        validation_split_at(n, validation_split).unwrap_or(n)
    } else {
        n
    };
    let mut partial = Vec::new();
    if steps.is_none_or(|s| s >= n_fit.div_ceil(batch)) {
        partial.push((n_fit % batch, true));
    }
    partial.push(((n - n_fit) % batch, false));
    if let Some(test) = &loaded.test {
        partial.push((test.n % batch, false));
    }
    backend::Workload {
        training: true,
        partial,
    }
}

/// The optimiser: the flag, else the model's `training.optimizer`, else Keras's `compile`
/// default (rmsprop); learning rate and momentum likewise.
fn optimizer(
    a: &TrainArgs,
    name: Option<&str>,
    lr: Option<f32>,
    momentum: Option<f32>,
) -> Result<OptimizerKind, CliError> {
    let mut kind = match a.optimizer {
        Some(OptimizerChoice::Adam) => OptimizerKind::adam_default(),
        Some(OptimizerChoice::Sgd) => OptimizerKind::sgd_default(),
        Some(OptimizerChoice::Rmsprop) => OptimizerKind::rmsprop_default(),
        None => match name {
            Some(n) => OptimizerKind::from_keras_name(n)
                .ok_or_else(|| CliError::new(format!("unknown optimizer {n:?} (use adam, sgd or rmsprop)")))?,
            None => OptimizerKind::rmsprop_default(),
        },
    };
    if let Some(lr) = a.learning_rate.or(lr) {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(CliError::new(format!("learning rate {lr} must be a positive number")));
        }
        kind = kind.with_learning_rate(lr as f64);
    }
    if let Some(m) = a.momentum.or(momentum) {
        if !(0.0..1.0).contains(&m) {
            return Err(CliError::new(format!("momentum {m} must be in [0, 1)")));
        }
        kind = kind.with_momentum(m as f64);
    }
    if a.nesterov {
        match &mut kind {
            OptimizerKind::Sgd { nesterov, .. } => *nesterov = true,
            _ => return Err(CliError::new("--nesterov applies to sgd only")),
        }
    }
    Ok(kind)
}
