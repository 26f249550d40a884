//! `cnnc eval`: loss and accuracy of saved weights on a dataset (its test split when it has one).

use cnnc_runtime::train::evaluate;
use cnnc_runtime::weights::load_weights;

use super::args::EvalArgs;
use super::backend::{self, LossSetup};
use super::data;
use super::error::{CliError, OrCli};

pub fn run(a: EvalArgs) -> Result<(), CliError> {
    let spec = backend::load_spec(&a.model)?;
    let loss = LossSetup::resolve(None, false, &spec.training)?;
    let batch = a.batch_size.or(spec.training.batch_size).unwrap_or(32);
    let (input_shape, classes) = backend::model_io(&spec)?;
    let pair = a.x.as_ref().zip(a.y.as_ref());
    let loaded = data::load(a.data.data.as_deref(), pair, classes)?;
    let (name, set) = match &loaded.test {
        Some(test) => ("test", test),
        None => ("all", &loaded.train),
    };
    data::check(&loaded.source, "evaluation data", set, classes, &input_shape)?;
    let work = backend::Workload {
        training: false,
        partial: vec![(set.n % batch, false)],
    };
    let specs = backend::param_specs(&spec)?;
    let params = load_weights(&a.weights, &specs).or_cli()?;
    let built = backend::build(&spec, batch, loss, &a.run, &work)?;
    backend::report(&spec, &built);
    let mut exec = built.exec;
    backend::check_params(exec.as_ref(), &specs)?;
    let (l, acc) = evaluate(exec.as_mut(), &params, set, batch, loss.loss_fn()).or_cli()?;
    println!(
        "{} samples ({name} of {}): loss: {l:.4} - accuracy: {acc:.4}",
        set.n, loaded.source
    );
    backend::print_profile(exec.as_ref());
    Ok(())
}
