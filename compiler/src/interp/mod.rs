//! The reference interpreter: runs a graph node by node with plain loops, f32 storage and f64
//! accumulation. It is the oracle every backend is checked against, so it aims to be obviously
//! correct (TensorFlow semantics, see each op file) and only fast enough for CI-scale training.
//!
//! [`run`] evaluates every node of any graph (forward, training, backward ops);
//! [`InterpExecutor`] wraps it in the runtime's `Executor` contract; [`gradcheck`] checks a
//! training graph's gradients against finite differences.

mod conv;
mod dense;
mod elementwise;
mod executor;
pub mod gradcheck;
mod loss;
mod norm;
mod pool;
mod window;

pub use executor::InterpExecutor;
pub use gradcheck::{gradcheck, GradCheck};

use cnnc_runtime::Tensor;
use thiserror::Error;

use crate::ir::{self, Graph, Node, NodeId, Op, OutputRole};

/// Why a graph could not be run with the given bindings.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum InterpError {
    #[error("graph '{graph}' is malformed: {details}")]
    InvalidGraph { graph: String, details: String },
    #[error("input: expected shape {expected:?}, got {found:?}")]
    InputShape { expected: Vec<usize>, found: Vec<usize> },
    #[error("target: graph '{graph}' has a target node but no target was given")]
    MissingTarget { graph: String },
    #[error("target: expected shape {expected:?}, got {found:?}")]
    TargetShape { expected: Vec<usize>, found: Vec<usize> },
    #[error("parameters: graph '{graph}' has {expected} parameters, got {found} tensors")]
    ParamCount {
        graph: String,
        expected: usize,
        found: usize,
    },
    #[error("parameter '{name}': expected shape {expected:?}, got {found:?}")]
    ParamShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{what}: shape {shape:?} holds {expected} elements but the data has {found}")]
    DataLength {
        what: String,
        shape: Vec<usize>,
        expected: usize,
        found: usize,
    },
    #[error("{node} ({op}) of layer '{layer}': {msg}")]
    Op {
        node: NodeId,
        op: &'static str,
        layer: String,
        msg: String,
    },
}

/// The value of every node of a graph after [`run`], indexed by node id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Values {
    tensors: Vec<Tensor>,
}

impl Values {
    /// The value of node `id`.
    pub fn get(&self, id: NodeId) -> &Tensor {
        &self.tensors[id.index()]
    }

    /// The value of the graph's first output with `role`.
    pub fn output(&self, g: &Graph, role: &OutputRole) -> Option<&Tensor> {
        g.output(role).map(|id| self.get(id))
    }

    /// The scalar loss of a training graph.
    pub fn loss(&self, g: &Graph) -> Option<f32> {
        self.output(g, &OutputRole::Loss).and_then(|t| t.data.first().copied())
    }

    /// The gradient output for parameter node `param`.
    pub fn gradient(&self, g: &Graph, param: NodeId) -> Option<&Tensor> {
        self.output(g, &OutputRole::Gradient { param })
    }

    /// Moves node `id`'s value out, leaving an empty tensor.
    pub fn take(&mut self, id: NodeId) -> Tensor {
        std::mem::take(&mut self.tensors[id.index()])
    }

    /// Every node's value, in node order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
}

/// Checks a caller-supplied tensor against the shape the graph expects; `mismatch` builds the
/// error from (expected, found) shapes.
fn check_binding(
    t: &Tensor,
    expected: &[usize],
    what: &str,
    mismatch: impl FnOnce(Vec<usize>, Vec<usize>) -> InterpError,
) -> Result<(), InterpError> {
    let numel = t.shape.iter().product::<usize>();
    if t.data.len() != numel {
        return Err(InterpError::DataLength {
            what: what.to_string(),
            shape: t.shape.clone(),
            expected: numel,
            found: t.data.len(),
        });
    }
    if t.shape != expected {
        return Err(mismatch(expected.to_vec(), t.shape.clone()));
    }
    Ok(())
}

/// Runs every node of `g`. `input` binds the `Input` node, `target` the `Target` node (needed
/// only when the graph has one), `params` the parameters in `g.params()` order; `step` seeds
/// dropout. Bindings are checked (count, shape, data length) and errors name the tensor.
pub fn run(
    g: &Graph,
    input: &Tensor,
    target: Option<&Tensor>,
    params: &[Tensor],
    step: u64,
) -> Result<Values, InterpError> {
    let problems = ir::verify(g);
    if !problems.is_empty() {
        return Err(InterpError::InvalidGraph {
            graph: g.name.clone(),
            details: problems.join("; "),
        });
    }
    let param_ids = g.params();
    if param_ids.len() != params.len() {
        return Err(InterpError::ParamCount {
            graph: g.name.clone(),
            expected: param_ids.len(),
            found: params.len(),
        });
    }
    let mut param_values = params.iter();
    let mut tensors: Vec<Tensor> = Vec::with_capacity(g.nodes.len());
    for (i, node) in g.nodes.iter().enumerate() {
        let value = match &node.op {
            Op::Input => {
                check_binding(input, node.shape.dims(), "input", |expected, found| {
                    InterpError::InputShape { expected, found }
                })?;
                input.clone()
            }
            Op::Target => {
                let t = target.ok_or_else(|| InterpError::MissingTarget { graph: g.name.clone() })?;
                check_binding(t, node.shape.dims(), "target", |expected, found| {
                    InterpError::TargetShape { expected, found }
                })?;
                t.clone()
            }
            Op::Param { name, .. } => {
                // Counts were checked above, and params() lists Param nodes in node order.
                let t = param_values.next().ok_or_else(|| InterpError::ParamCount {
                    graph: g.name.clone(),
                    expected: param_ids.len(),
                    found: params.len(),
                })?;
                check_binding(
                    t,
                    node.shape.dims(),
                    &format!("parameter '{name}'"),
                    |expected, found| InterpError::ParamShape {
                        name: name.clone(),
                        expected,
                        found,
                    },
                )?;
                t.clone()
            }
            _ => {
                let ins: Vec<&Tensor> = node.inputs.iter().map(|x| &tensors[x.index()]).collect();
                eval(node, &ins, step).map_err(|msg| InterpError::Op {
                    node: NodeId(i as u32),
                    op: node.op.mnemonic(),
                    layer: node.layer.clone(),
                    msg,
                })?
            }
        };
        tensors.push(value);
    }
    Ok(Values { tensors })
}

/// Evaluates one non-leaf-bound node from its input values (shapes already verified).
fn eval(node: &Node, ins: &[&Tensor], step: u64) -> Result<Tensor, String> {
    let out = node.shape.dims();
    Ok(match &node.op {
        Op::Input | Op::Target | Op::Param { .. } => return Err("leaf bound by the caller".into()),
        Op::Constant(v) => Tensor::full(out, *v),
        Op::Conv2d { strides, pad } => conv::conv2d(ins[0], ins[1], *strides, *pad, out),
        Op::Conv2dGradInput { strides, pad, .. } => conv::conv2d_grad_input(ins[0], ins[1], *strides, *pad, out),
        Op::Conv2dGradKernel {
            strides,
            pad,
            kernel_hw,
        } => conv::conv2d_grad_kernel(ins[0], ins[1], *strides, *pad, *kernel_hw, out),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => dense::matmul(ins[0], ins[1], *transpose_a, *transpose_b),
        Op::BiasAdd => dense::bias_add(ins[0], ins[1]),
        Op::ReduceToChannels => dense::reduce_to_channels(ins[0]),
        Op::Act(a) => elementwise::act(ins[0], *a),
        Op::ActGrad(a) => elementwise::act_grad(ins[0], ins[1], *a),
        Op::Add => elementwise::add(ins[0], ins[1]),
        Op::Dropout { rate, seed } => elementwise::dropout(ins[0], *rate, *seed, step),
        Op::Concat => elementwise::concat(ins, out),
        Op::SliceChannels { offset, len } => elementwise::slice_channels(ins[0], *offset, *len, out),
        Op::Reshape => elementwise::reshape(ins[0], out),
        Op::MaxPool2d(w) => pool::max_pool(ins[0], w, out),
        Op::MaxPool2dGrad(w) => pool::max_pool_grad(ins[0], ins[1], w),
        Op::AvgPool2d(w) => pool::avg_pool(ins[0], w, out),
        Op::AvgPool2dGrad { window, .. } => pool::avg_pool_grad(ins[0], window, out),
        Op::GlobalAvgPool => pool::global_avg_pool(ins[0]),
        Op::GlobalAvgPoolGrad { .. } => pool::global_avg_pool_grad(ins[0], out),
        Op::Moments => norm::moments(ins[0]),
        Op::BatchNormTrain { epsilon } => norm::batch_norm_train(ins[0], ins[1], ins[2], ins[3], *epsilon),
        Op::BatchNormInference { epsilon } => {
            norm::batch_norm_inference(ins[0], ins[1], ins[2], ins[3], ins[4], *epsilon)
        }
        Op::MovingAverage { momentum, moment } => norm::moving_average(ins[0], ins[1], *momentum, *moment),
        Op::BatchNormGradInput { epsilon } => norm::batch_norm_grad_input(ins[0], ins[1], ins[2], ins[3], *epsilon),
        Op::BatchNormGradGamma { epsilon } => norm::batch_norm_grad_gamma(ins[0], ins[1], ins[2], *epsilon),
        Op::Loss { kind, from_logits } => loss::loss(ins[0], ins[1], *kind, *from_logits)?,
        Op::LossGrad { kind, from_logits } => loss::loss_grad(ins[0], ins[1], *kind, *from_logits)?,
    })
}
