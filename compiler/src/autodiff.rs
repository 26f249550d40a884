//! Reverse-mode autodiff as a graph-to-graph pass: [`training_graph`] extends a Training-mode
//! forward graph with a `Target`, the `Loss` and the backward nodes that give the gradient of
//! the loss with respect to every trainable parameter.
//!
//! Gradients flow only through nodes on a path from a trainable parameter to the loss (so the
//! model input never gets a gradient); a node used several times sums its gradients with `Add`.
//! A trainable parameter the loss does not depend on gets a `Constant(0.0)` gradient (Keras
//! would give `None`; a zero keeps the optimiser's contract simple).
//!
//! The loss: with crossentropy, `from_logits: false` and a prediction node `Act(Softmax)`,
//! the softmax's *input* is fed to `Loss`/`LossGrad { from_logits: true }` (stable, as Keras
//! does); otherwise the prediction is fed as is. `mean_squared_error` ignores `from_logits`.
//!
//! Gradient rules (`dy` is the gradient of the node's output):
//! - `Conv2d(x, k)`: `dx = Conv2dGradInput(dy, k)`, `dk = Conv2dGradKernel(x, dy)`.
//! - `MatMul(a, b)`: transposed matmuls of `dy` with the other operand, e.g. for `a·b`
//!   `da = dy·bᵀ`, `db = aᵀ·dy` (all four transpose combinations handled).
//! - `BiasAdd(x, b)`: `dx = dy`, `db = ReduceToChannels(dy)`.
//! - `Act(f)(x) = y`: `dx = ActGrad(f)(y, dy)` (from the output).
//! - `MaxPool2d(x)`: `MaxPool2dGrad(x, dy)`; `AvgPool2d`: `AvgPool2dGrad(dy)`;
//!   `GlobalAvgPool`: `GlobalAvgPoolGrad(dy)`.
//! - `Reshape(x)`: `Reshape(dy)` back to x's shape. `Add(a, b)`: `dy` to both.
//! - `Concat(x0, x1, ...)`: `SliceChannels(dy)` at each input's channel offset.
//! - `Dropout(x)`: `Dropout(dy)` with the same rate and seed, hence the same mask and scale.
//! - `BatchNormTrain(x, moments, γ, β)`: `dx = BatchNormGradInput(x, moments, γ, dy)` (the full
//!   derivative through the batch statistics, so `Moments(x)` gets no gradient of its own),
//!   `dγ = BatchNormGradGamma(x, moments, dy)`, `dβ = ReduceToChannels(dy)`.
//! - `Param`, `Constant`, `Input`: leaves; trainable parameters collect their gradient.
//!
//! Refused with an error naming the op and layer when on a path from a trainable parameter to
//! the loss: `BatchNormInference`, `MovingAverage`, a `Moments` used other than as the statistics
//! of a `BatchNormTrain` of its own input, and every backward op, `Loss` and `Target`.

mod rules;

use thiserror::Error;

use crate::ir::{Activation, Graph, GraphOutput, LossKind, Mode, NodeId, Op, OutputRole, Shape, ShapeError};

/// Why a training graph could not be built.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AutodiffError {
    #[error("graph '{graph}': autodiff needs a training-mode forward graph, got an inference graph")]
    NotTraining { graph: String },
    #[error("graph '{graph}' has no prediction output")]
    NoPrediction { graph: String },
    #[error("graph '{graph}' already has a {what}; autodiff takes a forward graph")]
    NotForward { graph: String, what: &'static str },
    #[error(
        "layer '{layer}': {op} has no gradient rule, but the loss depends on it through trainable \
         parameters{hint}"
    )]
    NoGradientRule {
        op: &'static str,
        layer: String,
        node: NodeId,
        hint: &'static str,
    },
    #[error("layer '{layer}': {op}: {msg}")]
    Unsupported {
        op: &'static str,
        layer: String,
        msg: String,
    },
    #[error("{what}: {source}")]
    Shape { what: String, source: ShapeError },
    #[error("graphs '{train}' and '{inference}' do not match: {msg}")]
    GraphMismatch {
        train: String,
        inference: String,
        msg: String,
    },
}

/// The forward graph being extended, with the gradient contributions gathered so far.
pub(crate) struct Builder {
    pub g: Graph,
    /// Per forward node: whether it lies on a path from a trainable parameter to the loss.
    on_path: Vec<bool>,
    /// Per forward node: gradient nodes from its users, summed when the node is reached.
    contribs: Vec<Vec<NodeId>>,
}

impl Builder {
    /// Adds a backward node attributed to `layer`.
    pub fn add(
        &mut self,
        op: Op,
        inputs: &[NodeId],
        shape: Option<Shape>,
        layer: &str,
    ) -> Result<NodeId, AutodiffError> {
        let what = match layer {
            "" => op.mnemonic().to_string(),
            _ => format!("layer '{layer}': {}", op.mnemonic()),
        };
        self.g
            .add(op, inputs, shape, layer)
            .map_err(|source| AutodiffError::Shape { what, source })
    }

    /// Whether forward node `id` needs a gradient.
    pub fn needs(&self, id: NodeId) -> bool {
        self.on_path.get(id.index()).copied().unwrap_or(false)
    }

    /// Records `grad` as one contribution to the gradient of `to` (ignored when `to` needs none).
    pub fn contribute(&mut self, to: NodeId, grad: NodeId) {
        if self.needs(to) {
            self.contribs[to.index()].push(grad);
        }
    }
}

/// Marks nodes reachable from a trainable parameter that also lead to `loss_input`.
fn path_to_loss(g: &Graph, loss_input: NodeId) -> Vec<bool> {
    let n = g.nodes.len();
    let mut from_param = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        from_param[i] = match &node.op {
            Op::Param { role, .. } => role.trainable(),
            _ => node.inputs.iter().any(|x| from_param[x.index()]),
        };
    }
    let mut to_loss = vec![false; n];
    to_loss[loss_input.index()] = true;
    for i in (0..n).rev() {
        if to_loss[i] {
            for x in &g.nodes[i].inputs {
                to_loss[x.index()] = true;
            }
        }
    }
    (0..n).map(|i| from_param[i] && to_loss[i]).collect()
}

/// The node whose value the loss reads, and whether it holds logits.
fn loss_input(fwd: &Graph, pred: NodeId, kind: LossKind, from_logits: bool) -> (NodeId, bool) {
    let node = fwd.node(pred);
    match (kind, from_logits, &node.op) {
        (LossKind::MeanSquaredError, _, _) => (pred, false),
        (_, false, Op::Act(Activation::Softmax)) => (node.inputs[0], true),
        _ => (pred, from_logits),
    }
}

/// Builds the training graph of `fwd` for `loss`: forward outputs (prediction, state updates)
/// kept, plus the `Loss` output and a `Gradient` output for every trainable parameter, in
/// parameter order. See the module documentation for the rules.
pub fn training_graph(fwd: &Graph, loss: LossKind, from_logits: bool) -> Result<Graph, AutodiffError> {
    let graph = fwd.name.clone();
    if fwd.mode != Mode::Training {
        return Err(AutodiffError::NotTraining { graph });
    }
    if let Some(what) = fwd.nodes.iter().find_map(|n| match n.op {
        Op::Target => Some("target node"),
        Op::Loss { .. } => Some("loss node"),
        _ => None,
    }) {
        return Err(AutodiffError::NotForward { graph, what });
    }
    if fwd
        .outputs
        .iter()
        .any(|o| matches!(o.role, OutputRole::Loss | OutputRole::Gradient { .. }))
    {
        return Err(AutodiffError::NotForward {
            graph,
            what: "loss or gradient output",
        });
    }
    let pred = fwd
        .output(&OutputRole::Prediction)
        .ok_or(AutodiffError::NoPrediction { graph })?;
    let (x, logits) = loss_input(fwd, pred, loss, from_logits);

    let n = fwd.nodes.len();
    let mut b = Builder {
        g: fwd.clone(),
        on_path: path_to_loss(fwd, x),
        contribs: vec![Vec::new(); n],
    };
    let pshape = fwd.shape(x).clone();
    let tshape = match loss {
        LossKind::SparseCategoricalCrossentropy => Shape(vec![pshape.dims().first().copied().unwrap_or(1)]),
        _ => pshape.clone(),
    };
    let target = b.add(Op::Target, &[], Some(tshape), "")?;
    let (kind, from_logits) = (loss, logits);
    let loss_node = b.add(Op::Loss { kind, from_logits }, &[x, target], None, "")?;
    let dx = b.add(Op::LossGrad { kind, from_logits }, &[x, target], None, "")?;
    b.contribute(x, dx);

    let mut grads: Vec<Option<NodeId>> = vec![None; n];
    for i in (0..n).rev() {
        let id = NodeId(i as u32);
        if !b.needs(id) {
            continue;
        }
        let cs = std::mem::take(&mut b.contribs[i]);
        let Some((&first, rest)) = cs.split_first() else {
            continue; // only BatchNormTrain's statistics input gets no contribution
        };
        let layer = fwd.node(id).layer.clone();
        let mut dy = first;
        for &c in rest {
            dy = b.add(Op::Add, &[dy, c], None, &layer)?;
        }
        if matches!(fwd.node(id).op, Op::Param { .. }) {
            grads[i] = Some(dy);
        } else {
            rules::backprop(&mut b, fwd, id, dy)?;
        }
    }

    b.g.outputs.push(GraphOutput {
        role: OutputRole::Loss,
        node: loss_node,
    });
    for p in fwd.params() {
        let trainable = fwd.param_info(p).is_some_and(|(_, role)| role.trainable());
        if !trainable {
            continue;
        }
        let node = match grads[p.index()] {
            Some(gid) => gid,
            None => {
                let layer = fwd.node(p).layer.clone();
                b.add(Op::Constant(0.0), &[], Some(fwd.shape(p).clone()), &layer)?
            }
        };
        b.g.outputs.push(GraphOutput {
            role: OutputRole::Gradient { param: p },
            node,
        });
    }
    #[cfg(debug_assertions)]
    crate::ir::assert_valid(&b.g, "autodiff");
    Ok(b.g)
}
