//! `cnnc predict`: run a model on an `.npy` array of inputs and write its float32 predictions
//! (the model's final activation applied) as `[N, ..output shape]`, atomically: `[N, classes]`
//! for a classifier, `[N, H, W, C]` for a model ending in feature maps.

use cnnc_compiler::ir::LossKind;
use cnnc_compiler::spec::ModelSpec;
use cnnc_runtime::data::{load_npy_images, write_npy_f32};
use cnnc_runtime::train::predict;
use cnnc_runtime::weights::load_weights;

use super::args::PredictArgs;
use super::backend::{self, LossSetup};
use super::data;
use super::error::{CliError, OrCli};
use super::paths::{check_no_clobber, check_output_path};

pub fn run(a: PredictArgs) -> Result<(), CliError> {
    check_output_path("--output", &a.output)?;
    let inputs = [
        ("the model", a.model.as_path()),
        ("--input", a.input.as_path()),
        ("--weights", a.weights.as_path()),
    ];
    check_no_clobber(&[("--output", a.output.as_path())], &inputs, &[])?;
    let spec = backend::load_spec(&a.model)?;
    let (input_shape, output_shape) = backend::model_shapes(&spec)?;
    let (shape, x) = load_npy_images(&a.input).or_cli()?;
    let n = shape[0];
    let source = a.input.display().to_string();
    data::check_sample_shape(&source, "prediction data", &shape[1..], &input_shape)?;
    if n == 0 {
        return Err(CliError::new(format!("{}: holds no samples", a.input.display())));
    }
    let loss = prediction_loss(&spec, &output_shape)?;
    let batch = a.batch_size.or(spec.training.batch_size).unwrap_or(32).min(n);
    let work = backend::Workload {
        training: false,
        partial: vec![(n % batch, false)],
    };
    let specs = backend::param_specs(&spec)?;
    let params = load_weights(&a.weights, &specs).or_cli()?;
    let built = backend::build(&spec, batch, loss, &a.run, &work)?;
    backend::report(&spec, &built);
    let mut exec = built.exec;
    backend::check_params(exec.as_ref(), &specs)?;
    let preds = predict(exec.as_mut(), &params, &x, n).or_cli()?;
    backend::print_profile(exec.as_ref());
    let shape: Vec<usize> = std::iter::once(n).chain(output_shape.iter().copied()).collect();
    write_npy_f32(&a.output, &shape, &preds).or_cli()?;
    eprintln!(
        "wrote {n} predictions of shape {output_shape:?} to {}",
        a.output.display()
    );
    Ok(())
}

/// The loss the backends are built with. Predict never trains, but the backends also build a
/// training program, and the cross-entropies need a vector of class scores: a model ending in
/// feature maps gets mean squared error, which takes any output shape.
fn prediction_loss(spec: &ModelSpec, output_shape: &[usize]) -> Result<LossSetup, CliError> {
    if output_shape.len() == 1 {
        return LossSetup::resolve(None, false, &spec.training);
    }
    Ok(LossSetup {
        kind: LossKind::MeanSquaredError,
        from_logits: false,
    })
}
