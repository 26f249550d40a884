//! Lowering: a validated [`ModelSpec`] → a forward [`ir::Graph`] for a fixed batch size.
//!
//! Each layer becomes a few nodes (see `lower/layers.rs`): parameters named
//! `<layer>.<kernel|bias|gamma|beta|moving_mean|moving_variance>` with Keras's initialisers,
//! activations as separate `Act` nodes, BatchNormalization as `BatchNormInference` or (training)
//! `Moments` → `BatchNormTrain` plus `MovingAverage` state updates, dropout only in training.
//! The graph's outputs are the prediction and, in training, the BN state updates; the loss and
//! the backward pass are added later by `autodiff`. Shape errors name the layer, its input
//! shapes and its line; sizes beyond the limits in `spec::validate` are refused.

mod layers;

use std::collections::HashMap;

use crate::error::{CompileError, SourceLoc};
use crate::ir::{Graph, GraphOutput, Mode, Op, OutputRole, Shape};
use crate::spec::{checked_order, ModelSpec, MAX_TENSOR_ELEMENTS, MODEL_INPUT};

use layers::Lowering;

/// Lowers `spec` to a forward graph for `batch` samples in `mode`.
pub fn lower(spec: &ModelSpec, batch: usize, mode: Mode) -> Result<Graph, CompileError> {
    let order = checked_order(spec)?;
    let file = SourceLoc::new(spec.source.clone(), None, None);
    let mut dims = vec![batch];
    dims.extend(&spec.input);
    match layers::numel(&dims) {
        _ if batch == 0 => return Err(CompileError::model(file, "the batch size must be at least 1")),
        Some(n) if n <= MAX_TENSOR_ELEMENTS => {}
        _ => {
            return Err(CompileError::model(
                file,
                format!(
                    "batch {batch} of input {:?} has more than {MAX_TENSOR_ELEMENTS} elements",
                    spec.input
                ),
            ))
        }
    }
    let mut g = Graph::new(spec.name.clone(), batch, mode);
    let input = g
        .add(Op::Input, &[], Some(Shape(dims)), MODEL_INPUT)
        .map_err(|e| CompileError::model(file.clone(), format!("model input: {e}")))?;
    let mut cx = Lowering {
        spec,
        g,
        out: HashMap::from([(MODEL_INPUT.to_string(), input)]),
        weights: 0,
    };
    for i in order {
        cx.layer(&spec.layers[i])?;
    }
    let mut g = cx.g;
    let last = spec.layers.last().map(|l| l.name.as_str()).unwrap_or(MODEL_INPUT);
    let prediction = cx.out.get(last).copied().unwrap_or(input);
    g.outputs.insert(
        0,
        GraphOutput {
            role: OutputRole::Prediction,
            node: prediction,
        },
    );
    #[cfg(debug_assertions)]
    check_forward(&g);
    Ok(g)
}

/// Refuses a model whose output per sample is not a vector of class scores (a convolution's
/// feature maps, say) where a classifier is needed: the classification losses, and labelled
/// data. The error names the file, the output layer and its shape. `g` is `spec` lowered in
/// either mode.
pub fn check_classifier_output(spec: &ModelSpec, g: &Graph) -> Result<(), CompileError> {
    let (Some(pred), Some(last)) = (g.output(&OutputRole::Prediction), spec.layers.last()) else {
        return Ok(());
    };
    let dims = &g.shape(pred).dims()[1..];
    if dims.len() == 1 {
        return Ok(());
    }
    Err(CompileError::model(
        spec.loc(last),
        format!(
            "the model's output (layer {}) is {dims:?}; a classifier needs [classes]: add flatten and dense",
            last.name
        ),
    ))
}

/// The verifier, minus the loss a training graph only gets from `autodiff`.
#[cfg(debug_assertions)]
fn check_forward(g: &Graph) {
    match g.mode {
        Mode::Inference => crate::ir::assert_valid(g, "lower"),
        Mode::Training => {
            let errs: Vec<String> = crate::ir::verify(g)
                .into_iter()
                .filter(|e| e != "training graph has no loss output")
                .collect();
            assert!(
                errs.is_empty(),
                "IR verifier failed after lower:\n  {}\n{}",
                errs.join("\n  "),
                crate::ir::dump(g)
            );
        }
    }
}
