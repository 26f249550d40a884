//! Up-front checks that parameters, datasets and batch sizes fit the executor, so that the
//! loops themselves cannot index out of bounds.

use super::TrainError;
use crate::data::{first_bad_label, Dataset};
use crate::exec::Executor;
use crate::tensor::Tensor;

pub(super) fn check_batch(exec: &dyn Executor, batch: usize) -> Result<(), TrainError> {
    let max = exec.batch_size();
    if batch == 0 || batch > max {
        return Err(TrainError::BatchSize { requested: batch, max });
    }
    Ok(())
}

/// `params` must match the executor's specs one for one.
pub(super) fn check_params(exec: &dyn Executor, params: &[Tensor]) -> Result<(), TrainError> {
    let specs = exec.params();
    if specs.len() != params.len() {
        return Err(TrainError::ParamCount {
            expected: specs.len(),
            found: params.len(),
        });
    }
    for (spec, p) in specs.iter().zip(params) {
        if p.shape != spec.shape || p.data.len() != spec.shape.iter().product::<usize>() {
            return Err(TrainError::ParamShape {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                found: p.shape.clone(),
            });
        }
    }
    Ok(())
}

/// The dataset's buffers are consistent, its samples have the input's size (the layout is
/// row-major, so `[28, 28]` feeds `[28, 28, 1]`) and its labels name one of the outputs.
pub(super) fn check_data(exec: &dyn Executor, data: &Dataset, what: &'static str) -> Result<(), TrainError> {
    if data.n == 0 {
        return Err(TrainError::Empty { what });
    }
    let len = data.sample_len();
    if len == 0 {
        return Err(TrainError::Inconsistent {
            what,
            reason: format!("samples shaped {:?} hold no values", data.sample_shape),
        });
    }
    if data.x.len() != data.n * len || data.y.len() != data.n {
        return Err(TrainError::Inconsistent {
            what,
            reason: format!(
                "{} samples shaped {:?} but {} values and {} labels",
                data.n,
                data.sample_shape,
                data.x.len(),
                data.y.len()
            ),
        });
    }
    let input = exec.input_shape();
    if len != input.iter().product::<usize>() {
        return Err(TrainError::InputShape {
            what,
            expected: input.to_vec(),
            found: data.sample_shape.clone(),
        });
    }
    if let Some((index, value)) = first_bad_label(&data.y, exec.output_size()) {
        return Err(TrainError::Label {
            what,
            index,
            value,
            classes: exec.output_size(),
        });
    }
    Ok(())
}
