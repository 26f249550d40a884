//! [`InterpExecutor`]: the reference interpreter behind the runtime's `Executor` contract, so
//! the training loop can drive it exactly as it drives compiled backends.

use std::collections::HashMap;

use cnnc_runtime::{Executor, ModelIo, StepResult, Tensor};

use super::run;
use crate::autodiff::{training_graph, AutodiffError};
use crate::ir::{rebatch, Graph, LossKind, NodeId, OutputRole};
use crate::model_io::paired_io;

/// Runs the training graph (forward + loss + backward) and the inference graph with [`run`].
/// Calls with fewer samples than the compiled batch use re-batched copies, cached by size.
#[derive(Debug)]
pub struct InterpExecutor {
    train: Graph,
    inference: Graph,
    io: ModelIo,
    train_by_n: HashMap<usize, Graph>,
    inference_by_n: HashMap<usize, Graph>,
    /// For each inference-graph parameter, its index in `params` (matched by name).
    inference_params: Vec<usize>,
    /// Indices into `params` of the trainable ones, in order (the order of `grads`).
    trainable: Vec<usize>,
}

impl InterpExecutor {
    /// Differentiates `train_fwd` (a Training-mode forward graph) for `loss`; `inference` must
    /// have the same batch size, input shape and prediction shape, and a subset of its parameters.
    pub fn new(train_fwd: Graph, inference: Graph, loss: LossKind, from_logits: bool) -> Result<Self, AutodiffError> {
        let train = training_graph(&train_fwd, loss, from_logits)?;
        let (io, inference_params) = paired_io(&train, &inference, loss)?;
        let trainable = (0..io.params.len()).filter(|&i| io.params[i].trainable).collect();
        Ok(InterpExecutor {
            io,
            train_by_n: HashMap::new(),
            inference_by_n: HashMap::new(),
            train,
            inference,
            inference_params,
            trainable,
        })
    }

    /// The full training graph (forward, loss, backward) at the compiled batch size.
    pub fn training_graph(&self) -> &Graph {
        &self.train
    }

    /// `g` re-batched to `n` samples (cached). Panics when `n` is outside `1..=batch`: a
    /// violation of the `Executor` contract by the caller, not a user error.
    fn graph_for<'a>(cache: &'a mut HashMap<usize, Graph>, g: &Graph, batch: usize, n: usize) -> &'a Graph {
        assert!((1..=batch).contains(&n), "batch of {n} samples, expected 1..={batch}");
        cache.entry(n).or_insert_with(|| {
            rebatch(g, n).unwrap_or_else(|e| panic!("graph '{}' cannot be re-batched to {n}: {e}", g.name))
        })
    }

    fn input_tensor(&self, x: &[f32], n: usize) -> Tensor {
        let mut shape = vec![n];
        shape.extend_from_slice(&self.io.input_shape);
        Tensor::from_vec(&shape, x.to_vec())
            .unwrap_or_else(|| panic!("input holds {} values, expected shape {shape:?}", x.len()))
    }
}

/// Copies the value of output `node` into `preds[..len]`.
fn write_preds(values: &super::Values, node: NodeId, preds: &mut [f32]) {
    let p = &values.get(node).data;
    preds[..p.len()].copy_from_slice(p);
}

impl Executor for InterpExecutor {
    fn backend_name(&self) -> &str {
        "interp"
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
        let input = self.input_tensor(x, n);
        let g = Self::graph_for(&mut self.train_by_n, &self.train, self.io.batch_size, n);
        let tshape = g.target().map(|t| g.shape(t).0.clone()).unwrap_or_default();
        let target = Tensor::from_vec(&tshape, y.to_vec())
            .unwrap_or_else(|| panic!("targets hold {} values, expected shape {tshape:?}", y.len()));
        let values = run(g, &input, Some(&target), params, step).unwrap_or_else(|e| panic!("interp: {e}"));
        let param_ids = g.params();
        let index_of = |param: NodeId| param_ids.iter().position(|&p| p == param);
        for o in &g.outputs {
            match o.role {
                OutputRole::Prediction => write_preds(&values, o.node, preds),
                OutputRole::Gradient { param } => {
                    let slot = index_of(param).and_then(|i| self.trainable.iter().position(|&t| t == i));
                    if let Some(j) = slot {
                        grads[j].clone_from(values.get(o.node));
                    }
                }
                OutputRole::StateUpdate { param } => {
                    if let Some(i) = index_of(param) {
                        params[i].clone_from(values.get(o.node));
                    }
                }
                OutputRole::Loss => {}
            }
        }
        StepResult {
            loss: values.loss(g).unwrap_or(f32::NAN),
        }
    }

    fn predict(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32]) {
        let input = self.input_tensor(x, n);
        let g = Self::graph_for(&mut self.inference_by_n, &self.inference, self.io.batch_size, n);
        let bound: Vec<Tensor> = self.inference_params.iter().map(|&i| params[i].clone()).collect();
        let values = run(g, &input, None, &bound, 0).unwrap_or_else(|e| panic!("interp: {e}"));
        if let Some(p) = g.output(&OutputRole::Prediction) {
            write_preds(&values, p, preds);
        }
    }
}
