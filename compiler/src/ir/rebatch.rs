//! Re-specialises a graph to another batch size: the batch dimension enters a graph only
//! through `Input`, `Target` and `Reshape` (whose given shapes lead with it), so rewriting
//! those and re-inferring the rest gives the same computation for `n` samples.

use super::graph::{Graph, Shape};
use super::op::Op;
use super::shape::{infer_shape, ShapeError};

/// The same graph for batch size `n`.
pub fn rebatch(g: &Graph, n: usize) -> Result<Graph, ShapeError> {
    let mut out = g.clone();
    out.batch = n;
    for i in 0..out.nodes.len() {
        let node = &out.nodes[i];
        let given = match node.op {
            Op::Input | Op::Target | Op::Reshape => {
                let mut d = node.shape.0.clone();
                if let Some(b) = d.first_mut() {
                    *b = n;
                }
                Some(Shape(d))
            }
            _ if node.op.is_leaf() => Some(node.shape.clone()),
            _ => None,
        };
        let ins: Vec<&Shape> = node.inputs.iter().map(|x| &out.nodes[x.index()].shape).collect();
        let s = infer_shape(&node.op, &ins, given)?;
        out.nodes[i].shape = s;
    }
    Ok(out)
}
