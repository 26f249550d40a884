//! The graph: nodes in topological order (an input always precedes its users), each with one
//! output of a fixed shape, plus the model's layer table and its named outputs.

use std::fmt;

use super::op::{Op, ParamRole};
use super::shape::{infer_shape, ShapeError};

/// Index of a node in [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A fixed tensor shape, batch dimension included. `[]` is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// The last (channel / feature) axis; 1 for a scalar.
    pub fn channels(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// One operation applied to earlier nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    /// The Keras layer this node belongs to (for errors and dumps); "" for graph plumbing.
    pub layer: String,
}

/// Whether a graph computes inference or a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Inference,
    Training,
}

/// What a graph output is for.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputRole {
    /// The model's output, its final activation applied.
    Prediction,
    /// The scalar training loss.
    Loss,
    /// Gradient of the loss with respect to the parameter node.
    Gradient { param: NodeId },
    /// New value of a non-trainable state parameter (BN moving statistics).
    StateUpdate { param: NodeId },
}

#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub role: OutputRole,
    pub node: NodeId,
}

impl GraphOutput {
    /// The same output after a pass moved nodes: `map` gives each old node's new id (the
    /// output's node and the parameter its role names).
    pub fn remap(&self, map: impl Fn(NodeId) -> NodeId) -> GraphOutput {
        let role = match self.role {
            OutputRole::Gradient { param } => OutputRole::Gradient { param: map(param) },
            OutputRole::StateUpdate { param } => OutputRole::StateUpdate { param: map(param) },
            ref r => r.clone(),
        };
        GraphOutput {
            role,
            node: map(self.node),
        }
    }
}

/// A Keras layer as the user declared it: the rows of `cnnc summary`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub name: String,
    /// Keras class name, e.g. `Conv2D`.
    pub class: String,
    pub output: NodeId,
    pub params: Vec<NodeId>,
}

/// A static graph: fixed batch size, fixed shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub name: String,
    pub batch: usize,
    pub mode: Mode,
    pub nodes: Vec<Node>,
    pub layers: Vec<Layer>,
    pub outputs: Vec<GraphOutput>,
}

impl Graph {
    pub fn new(name: impl Into<String>, batch: usize, mode: Mode) -> Self {
        Graph {
            name: name.into(),
            batch,
            mode,
            nodes: Vec::new(),
            layers: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Appends a node, inferring its shape from its inputs. Leaves, `Reshape` and `Target`
    /// take their shape from `shape`; for every other op `shape` must be `None`.
    pub fn add(&mut self, op: Op, inputs: &[NodeId], shape: Option<Shape>, layer: &str) -> Result<NodeId, ShapeError> {
        let in_shapes: Vec<&Shape> = inputs
            .iter()
            .map(|i| {
                self.nodes
                    .get(i.index())
                    .map(|n| &n.shape)
                    .ok_or(ShapeError::DanglingInput(*i))
            })
            .collect::<Result<_, _>>()?;
        let shape = infer_shape(&op, &in_shapes, shape)?;
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            shape,
            layer: layer.to_string(),
        });
        Ok(id)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.nodes[id.index()].shape
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// The single `Input` node.
    pub fn input(&self) -> Option<NodeId> {
        self.ids().find(|&i| matches!(self.node(i).op, Op::Input))
    }

    /// The `Target` node, present in training graphs.
    pub fn target(&self) -> Option<NodeId> {
        self.ids().find(|&i| matches!(self.node(i).op, Op::Target))
    }

    /// Parameter nodes in graph order (the order of weights files and of the runtime's store).
    pub fn params(&self) -> Vec<NodeId> {
        self.ids()
            .filter(|&i| matches!(self.node(i).op, Op::Param { .. }))
            .collect()
    }

    /// The parameters as the runtime's `Executor` contract lists them, in graph order: Keras
    /// name, shape, initialiser, and whether the optimiser updates them.
    pub fn param_specs(&self) -> Vec<cnnc_runtime::ParamSpec> {
        self.params()
            .into_iter()
            .filter_map(|id| match &self.node(id).op {
                Op::Param { name, role, init } => Some(cnnc_runtime::ParamSpec {
                    name: name.clone(),
                    shape: self.shape(id).0.clone(),
                    init: *init,
                    trainable: role.trainable(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Name and role of a parameter node.
    pub fn param_info(&self, id: NodeId) -> Option<(&str, ParamRole)> {
        match &self.node(id).op {
            Op::Param { name, role, .. } => Some((name.as_str(), *role)),
            _ => None,
        }
    }

    /// The first output with the given role.
    pub fn output(&self, role: &OutputRole) -> Option<NodeId> {
        self.outputs.iter().find(|o| &o.role == role).map(|o| o.node)
    }

    /// Number of users of each node (graph outputs count as users).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for i in &n.inputs {
                uses[i.index()] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.node.index()] += 1;
        }
        uses
    }
}
