//! The IR verifier: run after every pass in debug and test builds (see `passes::run_pipeline`).
//! It checks what every pass must preserve: topological order, arities, stored shapes equal to
//! re-inferred ones, one input, unique parameter names, and outputs and layers that exist.

use std::collections::HashSet;

use super::graph::{Graph, Mode, OutputRole};
use super::op::Op;
use super::shape::infer_shape;

/// Returns every broken invariant, one message each; empty when the graph is well formed.
pub fn verify(g: &Graph) -> Vec<String> {
    let mut errs = Vec::new();
    let mut inputs = 0;
    let mut names = HashSet::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let here = format!("%{i} ({})", n.op.mnemonic());
        for inp in &n.inputs {
            if inp.index() >= i {
                errs.push(format!("{here}: input {inp} does not precede it"));
            }
        }
        if errs.iter().any(|e| e.starts_with(&here)) {
            continue;
        }
        let ins: Vec<_> = n.inputs.iter().map(|i| &g.nodes[i.index()].shape).collect();
        let given = (n.op.is_leaf() || matches!(n.op, Op::Reshape)).then(|| n.shape.clone());
        match infer_shape(&n.op, &ins, given) {
            Ok(s) if s == n.shape => {}
            Ok(s) => errs.push(format!("{here}: stored shape {} but inferred {s}", n.shape)),
            Err(e) => errs.push(format!("{here}: {e}")),
        }
        match &n.op {
            Op::Input => inputs += 1,
            Op::Param { name, .. } if !names.insert(name.clone()) => {
                errs.push(format!("{here}: parameter name {name:?} used twice"))
            }
            Op::Target if g.mode == Mode::Inference => errs.push(format!("{here}: target in an inference graph")),
            Op::Dropout { .. } if g.mode == Mode::Inference => {
                errs.push(format!("{here}: dropout in an inference graph"))
            }
            _ => {}
        }
        if n.shape.0.contains(&0) {
            errs.push(format!("{here}: empty shape {}", n.shape));
        }
    }
    if inputs != 1 {
        errs.push(format!("graph has {inputs} input nodes, expected 1"));
    }
    let exists = |id: super::graph::NodeId| id.index() < g.nodes.len();
    for o in &g.outputs {
        if !exists(o.node) {
            errs.push(format!("output {:?} refers to missing node {}", o.role, o.node));
            continue;
        }
        if let OutputRole::Gradient { param } | OutputRole::StateUpdate { param } = o.role {
            if !exists(param) || !matches!(g.node(param).op, Op::Param { .. }) {
                errs.push(format!("output {:?} does not refer to a parameter", o.role));
            } else if g.shape(param) != g.shape(o.node) {
                errs.push(format!(
                    "output {:?} has shape {} but its parameter {}",
                    o.role,
                    g.shape(o.node),
                    g.shape(param)
                ));
            }
        }
    }
    if g.output(&OutputRole::Prediction).is_none() {
        errs.push("graph has no prediction output".into());
    }
    if g.mode == Mode::Training && g.output(&OutputRole::Loss).is_none() {
        errs.push("training graph has no loss output".into());
    }
    for l in &g.layers {
        if !exists(l.output) || l.params.iter().any(|p| !exists(*p)) {
            errs.push(format!("layer {} refers to missing nodes", l.name));
        }
    }
    errs
}

/// Panics with every broken invariant; used between passes in debug and test builds, where a
/// broken invariant is a compiler bug, never a user error.
pub fn assert_valid(g: &Graph, after: &str) {
    let errs = verify(g);
    if !errs.is_empty() {
        panic!(
            "IR verifier failed after {after}:\n  {}\n{}",
            errs.join("\n  "),
            super::dump::dump(g)
        );
    }
}
