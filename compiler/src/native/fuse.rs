//! Fusions the runtime kernels offer beyond the kernel IR's templates, applied to a planned
//! program before it is bound (the arena is then planned again, so lifetimes stay exact).
//!
//! - A max-pool gradient whose result only an activation gradient reads, that activation being
//!   the one whose output the pool read (`act_grad(x, max_pool_grad(x, dy))`: conv → relu → pool
//!   in training), computes `act'(x)·pool_grad` directly into the activation gradient's output.
//!   This saves a write and two reads of the unpooled map. The fused kernel keeps the
//!   `PoolGrad` template (same operand sizes); the activation is returned beside it.

use crate::ir::Activation;
use crate::kernel_ir::{plan, EwOp, KernelOp, PoolKind, Program};
use crate::passes::compact;

/// The activation gradient kernel `i` (a max-pool gradient) can absorb, and its index.
fn candidate(p: &Program, i: usize) -> Option<(usize, Activation)> {
    let k = &p.kernels[i];
    if !matches!(
        k.op,
        KernelOp::PoolGrad {
            kind: PoolKind::Max,
            ..
        }
    ) {
        return None;
    }
    let uses = p.uses();
    let j = uses.sole_reader(k.outputs[0])?;
    let next = &p.kernels[j];
    let KernelOp::Elementwise {
        op: EwOp::ActGrad(a), ..
    } = next.op
    else {
        return None;
    };
    let reads_pool_input = p.base(next.inputs[0]) == p.base(k.inputs[0]);
    let ok = j > i && next.stage == k.stage && reads_pool_input && next.inputs[1] == k.outputs[0];
    (ok && a != Activation::Softmax).then_some((j, a))
}

/// Applies the fusions; returns, per kernel of the rewritten program, the activation whose
/// gradient a max-pool gradient computes as well.
pub(super) fn run(p: &mut Program) -> Vec<Option<Activation>> {
    let mut acts = vec![None; p.kernels.len()];
    let mut changed = false;
    let mut i = 0;
    while i < p.kernels.len() {
        if let Some((j, a)) = candidate(p, i) {
            let out = p.kernels[j].outputs[0];
            p.kernels[i].outputs = vec![out];
            p.kernels.remove(j);
            acts.remove(j);
            acts[i] = Some(a);
            changed = true;
        }
        i += 1;
    }
    if changed {
        compact::run(p);
        plan(p);
        if cfg!(debug_assertions) {
            crate::kernel_ir::assert_valid(p, "native fuse");
        }
    }
    acts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autodiff::training_graph;
    use crate::ir::{LossKind, Mode};
    use crate::kernel_ir::Machine;
    use crate::passes::{compile, PipelineOptions};

    /// The MNIST CNN's training program has two conv → relu → max-pool stages: both pool
    /// gradients absorb their ReLU gradient, so two kernels go and two fused ones carry ReLU.
    #[test]
    fn mnist_cnn_pool_gradients_absorb_relu_gradients() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mnist_cnn.yaml");
        let spec = crate::spec::load_model(&path).unwrap();
        let fwd = crate::lower::lower(&spec, 2, Mode::Training).unwrap();
        let train = training_graph(&fwd, LossKind::SparseCategoricalCrossentropy, false).unwrap();
        let opts = PipelineOptions {
            machine: Machine::reference(),
            verify: true,
            ..PipelineOptions::default()
        };
        let mut p = compile(train, &opts).unwrap();
        let before = p.run_kernels();
        let acts = run(&mut p);
        assert_eq!(
            p.run_kernels(),
            before - 2,
            "two activation-gradient kernels fused away"
        );
        assert_eq!(acts.iter().filter(|a| **a == Some(Activation::Relu)).count(), 2);
        assert!(plan::check(&p).is_empty(), "the re-planned arena is valid");
    }
}
