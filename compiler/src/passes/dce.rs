//! Dead node elimination: keeps the nodes the graph outputs depend on, plus every leaf the
//! caller binds (the input, the target and all parameters — the parameter list is the
//! weights-file order and must not change). Node order is kept; ids are renumbered.

use crate::ir::{Graph, NodeId, Op};

/// The graph without nodes no output depends on.
pub fn run(g: Graph) -> Graph {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for o in &g.outputs {
        live[o.node.index()] = true;
    }
    for (i, node) in g.nodes.iter().enumerate() {
        if matches!(node.op, Op::Input | Op::Target | Op::Param { .. }) {
            live[i] = true;
        }
    }
    for i in (0..n).rev() {
        if live[i] {
            for x in &g.nodes[i].inputs {
                live[x.index()] = true;
            }
        }
    }
    if live.iter().all(|&l| l) {
        return g;
    }
    let mut remap: Vec<Option<NodeId>> = vec![None; n];
    let mut out = Graph::new(g.name.clone(), g.batch, g.mode);
    for (i, mut node) in g.nodes.iter().cloned().enumerate() {
        if !live[i] {
            continue;
        }
        for x in &mut node.inputs {
            *x = remap[x.index()].unwrap_or(*x);
        }
        remap[i] = Some(NodeId(out.nodes.len() as u32));
        out.nodes.push(node);
    }
    // A layer whose output died (its value was folded into a later node) points at its
    // nearest live ancestor along first inputs, else at the graph input.
    let fallback = out.input().unwrap_or(NodeId(0));
    let live_ancestor = |mut id: NodeId| loop {
        if let Some(new) = remap[id.index()] {
            return new;
        }
        match g.node(id).inputs.first() {
            Some(&x) => id = x,
            None => return fallback,
        }
    };
    out.layers = g
        .layers
        .iter()
        .map(|l| {
            let mut l = l.clone();
            l.output = live_ancestor(l.output);
            for p in &mut l.params {
                *p = live_ancestor(*p);
            }
            l
        })
        .collect();
    out.outputs = g.outputs.iter().map(|o| o.remap(live_ancestor)).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Activation, GraphOutput, Mode, OutputRole, Shape};

    #[test]
    fn removes_unused_nodes_and_keeps_params() {
        let mut g = Graph::new("t", 2, Mode::Inference);
        let x = g.add(Op::Input, &[], Some(Shape(vec![2, 3])), "").unwrap();
        let dead = g.add(Op::Act(Activation::Relu), &[x], None, "a").unwrap();
        let _unused_param = g
            .add(
                Op::Param {
                    name: "p.bias".into(),
                    role: crate::ir::ParamRole::Bias,
                    init: cnnc_runtime::init::Init::Zeros,
                },
                &[],
                Some(Shape(vec![3])),
                "p",
            )
            .unwrap();
        let y = g.add(Op::Act(Activation::Tanh), &[x], None, "b").unwrap();
        g.outputs.push(GraphOutput {
            role: OutputRole::Prediction,
            node: y,
        });
        g.layers.push(crate::ir::Layer {
            name: "a".into(),
            class: "Activation".into(),
            output: dead,
            params: vec![],
        });
        let g = run(g);
        assert_eq!(g.nodes.len(), 3);
        assert_eq!(g.params().len(), 1);
        assert_eq!(g.layers[0].output, NodeId(0));
        assert!(crate::ir::verify(&g).is_empty());
    }
}
