//! Inference: folds `BatchNormInference` into the conv or dense layer before it.
//!
//! `bn(conv(x, k) + b)` becomes `conv(x, k') + b'` with
//! `k' = k·γ/√(var+ε)` and `b' = β + (b − mean)·γ/√(var+ε)` per output channel. Weight values
//! are only known at run time, so the fold is expressed with existing ops on the parameter
//! nodes — `k' = BatchNormInference(k, γ, 0, 0, var)` and
//! `b' = BatchNormInference(b, γ, β, mean, var)` (BN normalises the last axis, which is the
//! output-channel axis of HWIO conv kernels and `[in, out]` dense kernels). These nodes depend
//! on parameters only, so lowering puts them in the prepare stage: they run once at weight-load
//! time. The old conv/bias nodes become dead (run `dce` afterwards).
//!
//! Folded only when the conv/dense output (and its bias add) feed nothing but the BN.

use std::collections::HashMap;

use crate::ir::{Graph, Mode, NodeId, Op, Shape};

use super::PassError;

/// A BN node and what it folds into (old node ids).
struct Fold {
    linear: NodeId,
    bias: Option<NodeId>,
    bias_add: Option<NodeId>,
}

fn foldable(g: &Graph, bn: NodeId, uses: &[usize]) -> Option<Fold> {
    let node = g.node(bn);
    if !matches!(node.op, Op::BatchNormInference { .. }) {
        return None;
    }
    let x = node.inputs[0];
    let (linear, bias, bias_add) = match g.node(x).op {
        Op::BiasAdd if uses[x.index()] == 1 => (g.node(x).inputs[0], Some(g.node(x).inputs[1]), Some(x)),
        _ => (x, None, None),
    };
    let ok = uses[linear.index()] == 1
        && match g.node(linear).op {
            Op::Conv2d { .. } => true,
            Op::MatMul { transpose_b, .. } => !transpose_b,
            _ => false,
        };
    ok.then_some(Fold { linear, bias, bias_add })
}

fn given(g: &Graph, id: NodeId) -> Option<Shape> {
    let n = g.node(id);
    (n.op.is_leaf() || matches!(n.op, Op::Reshape)).then(|| n.shape.clone())
}

/// The graph with every foldable inference BN folded into load-time weights.
pub fn run(g: Graph) -> Result<Graph, PassError> {
    if g.mode != Mode::Inference {
        return Ok(g);
    }
    let uses = g.use_counts();
    let mut out = Graph::new(g.name.clone(), g.batch, g.mode);
    let mut map: Vec<NodeId> = Vec::with_capacity(g.nodes.len());
    // Layer outputs that pointed at a folded conv or bias add now point at the folded result.
    let mut redirect: HashMap<NodeId, NodeId> = HashMap::new();
    for id in g.ids() {
        let node = g.node(id);
        let err = |source| PassError::Shape {
            pass: "fold_bn",
            layer: node.layer.clone(),
            source,
        };
        let m = |x: NodeId| map[x.index()];
        if let (Some(f), Op::BatchNormInference { epsilon }) = (foldable(&g, id, &uses), &node.op) {
            let bn = node.layer.as_str();
            let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| m(node.inputs[i]));
            let lin = g.node(f.linear);
            let channels = node.shape.channels();
            let zero = out
                .add(Op::Constant(0.0), &[], Some(Shape(vec![channels])), bn)
                .map_err(err)?;
            let bn_op = Op::BatchNormInference { epsilon: *epsilon };
            let k = out
                .add(bn_op.clone(), &[m(lin.inputs[1]), gamma, zero, zero, var], None, bn)
                .map_err(err)?;
            let b = f.bias.map_or(zero, m);
            let b = out.add(bn_op, &[b, gamma, beta, mean, var], None, bn).map_err(err)?;
            let y = out
                .add(lin.op.clone(), &[m(lin.inputs[0]), k], None, &lin.layer)
                .map_err(err)?;
            let y = out.add(Op::BiasAdd, &[y, b], None, bn).map_err(err)?;
            redirect.insert(f.linear, y);
            if let Some(a) = f.bias_add {
                redirect.insert(a, y);
            }
            map.push(y);
            continue;
        }
        let inputs: Vec<NodeId> = node.inputs.iter().map(|&x| m(x)).collect();
        let new = out
            .add(node.op.clone(), &inputs, given(&g, id), &node.layer)
            .map_err(err)?;
        map.push(new);
    }
    let m = |x: NodeId| map[x.index()];
    out.layers = g
        .layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.output = redirect.get(&l.output).copied().unwrap_or_else(|| m(l.output));
            l.params = l.params.iter().map(|&p| m(p)).collect();
            l
        })
        .collect();
    out.outputs = g.outputs.iter().map(|o| o.remap(m)).collect();
    Ok(out)
}
