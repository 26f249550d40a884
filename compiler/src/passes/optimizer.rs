//! Training: appends one `optimizer_update` kernel per trainable parameter (in parameter
//! order), updating the parameter in place from its gradient, with the rule's state slots as
//! persistent arena buffers (zeroed by the runtime when training starts).

use crate::ir::Shape;
use crate::kernel_ir::{BufKind, Buffer, KernelOp, OutRole, Program, Stage, UpdateRule};

/// Appends the update kernels; returns how many.
pub fn run(p: &mut Program, rule: &UpdateRule) -> usize {
    let grads: Vec<_> = p
        .params()
        .into_iter()
        .filter_map(|param| {
            let trainable = matches!(p.buffer(param).kind, BufKind::Param { trainable: true, .. });
            let grad = p.output(OutRole::Gradient { param })?;
            trainable.then_some((param, grad))
        })
        .collect();
    for &(param, grad) in &grads {
        let (name, len) = (p.buffer(param).name.clone(), p.buffer(param).numel());
        let shape: Shape = p.buffer(param).shape.clone();
        let mut outputs = vec![param];
        for slot in rule.slots() {
            let b = Buffer::new(
                format!("{name}.{slot}"),
                BufKind::OptState { param, slot },
                shape.clone(),
            );
            outputs.push(p.add_buffer(b));
        }
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l).to_string();
        let op = KernelOp::OptimizerUpdate { rule: *rule, len };
        let k = p.make_kernel(op, vec![grad], outputs, Stage::Update, vec![layer]);
        p.kernels.push(k);
    }
    grads.len()
}
