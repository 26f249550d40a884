//! What a backend's training and inference graphs must agree on, checked once for every backend:
//! the same batch, input and prediction shapes, and inference parameters that are training
//! parameters of the same shapes. The agreed shapes become the runtime's [`ModelIo`].

use cnnc_runtime::ModelIo;

use crate::autodiff::AutodiffError;
use crate::ir::{Graph, LossKind, OutputRole};

/// The [`ModelIo`] of the training graph `train` for `loss`, whose parameters are `train`'s.
/// `None` when the graph lacks its input or prediction.
pub fn model_io(train: &Graph, loss: LossKind) -> Option<ModelIo> {
    let (input, pred) = input_and_prediction(train)?;
    Some(io_of(train, &input, &pred, loss))
}

fn io_of(train: &Graph, input: &[usize], pred: &[usize], loss: LossKind) -> ModelIo {
    ModelIo {
        batch_size: train.batch,
        input_shape: input[1..].to_vec(),
        output_size: pred[1..].iter().product(),
        target_layout: loss.target_layout(),
        params: train.param_specs(),
    }
}

/// Checks `inference` against the training graph `train` (see the module doc); returns the
/// model's [`ModelIo`] and, for each inference parameter in order, its index among `train`'s.
pub fn paired_io(train: &Graph, inference: &Graph, loss: LossKind) -> Result<(ModelIo, Vec<usize>), AutodiffError> {
    let mismatch = |msg: String| AutodiffError::GraphMismatch {
        train: train.name.clone(),
        inference: inference.name.clone(),
        msg,
    };
    let (Some((input, pred)), Some(inf_io)) = (input_and_prediction(train), input_and_prediction(inference)) else {
        return Err(mismatch("a graph lacks its input or prediction".into()));
    };
    if (input.clone(), pred.clone()) != inf_io || train.batch != inference.batch || input.first() != Some(&train.batch)
    {
        return Err(mismatch("batch, input or prediction shapes differ".into()));
    }
    let io = io_of(train, &input, &pred, loss);
    let mut inference_params = Vec::new();
    for id in inference.params() {
        let name = inference.param_info(id).map_or("", |(n, _)| n);
        let idx = io
            .params
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| mismatch(format!("parameter '{name}' is not in the training graph")))?;
        if io.params[idx].shape != inference.shape(id).0 {
            return Err(mismatch(format!("parameter '{name}' has two shapes")));
        }
        inference_params.push(idx);
    }
    Ok((io, inference_params))
}

/// `(input shape, prediction shape)` of `g`, batch axis included.
fn input_and_prediction(g: &Graph) -> Option<(Vec<usize>, Vec<usize>)> {
    let input = g.shape(g.input()?).0.clone();
    let pred = g.shape(g.output(&OutputRole::Prediction)?).0.clone();
    Some((input, pred))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::training_graph;
    use crate::ir::Mode;
    use crate::lower::lower;
    use crate::spec::parse_model;
    use std::path::Path;

    const MODEL: &str = "name: m\ninput: [6, 6, 1]\nlayers:\n  - conv2d: {filters: 2, kernel_size: 3}\n  - flatten\n  - dense: {units: 3, activation: softmax}\n";
    const LOSS: LossKind = LossKind::SparseCategoricalCrossentropy;

    fn graphs(train_batch: usize, inference_batch: usize) -> (Graph, Graph) {
        let spec = parse_model(MODEL, Path::new("m.yaml")).expect("model");
        let train = lower(&spec, train_batch, Mode::Training).expect("training graph");
        let train = training_graph(&train, LOSS, false).expect("differentiable");
        (
            train,
            lower(&spec, inference_batch, Mode::Inference).expect("inference graph"),
        )
    }

    #[test]
    fn matching_graphs_give_the_model_io_and_the_parameter_map() {
        let (train, inference) = graphs(4, 4);
        let (io, map) = paired_io(&train, &inference, LOSS).expect("paired");
        assert_eq!(
            (io.batch_size, io.input_shape.as_slice(), io.output_size),
            (4, &[6, 6, 1][..], 3)
        );
        assert_eq!(map, vec![0, 1, 2, 3]);
        assert_eq!(model_io(&train, LOSS), Some(io));
    }

    #[test]
    fn a_batch_mismatch_is_refused() {
        let (train, inference) = graphs(4, 2);
        let err = paired_io(&train, &inference, LOSS).expect_err("mismatch").to_string();
        assert!(err.contains("batch, input or prediction shapes differ"), "{err}");
    }
}
