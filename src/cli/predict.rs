//! `cnnc predict`: run a model on an `.npy` array of inputs and write `[N, outputs]` float32
//! predictions (the model's final activation applied), atomically.

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
    let (input_shape, _) = backend::model_shapes(&spec)?;
    let (shape, x) = load_npy_images(&a.input).or_cli()?;
    let n = shape[0];
    let source = a.input.display().to_string();
    data::check_sample_shape(&source, "prediction data", &shape[1..], &input_shape)?;
    if n == 0 {
        return Err(CliError::new(format!("{}: holds no samples", a.input.display())));
    }
    let loss = LossSetup::resolve(None, false, &spec.training)?;
    let batch = a.batch_size.or(spec.training.batch_size).unwrap_or(32).min(n);
    let work = backend::Workload {
        training: false,
        partial: vec![(n % batch, false)],
    };
    let built = backend::build(&spec, batch, loss, &a.run, &work)?;
    backend::report(&spec, &built);
    let mut exec = built.exec;
    let params = load_weights(&a.weights, exec.params()).or_cli()?;
    let out = exec.output_size();
    let preds = predict(exec.as_mut(), &params, &x, n).or_cli()?;
    backend::print_profile(exec.as_ref());
    write_npy_f32(&a.output, &[n, out], &preds).or_cli()?;
    eprintln!("wrote {} predictions of {out} values to {}", n, a.output.display());
    Ok(())
}
