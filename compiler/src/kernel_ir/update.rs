//! Optimiser update rules, compiler side. The rule type is the runtime kernels' own
//! ([`cnnc_runtime::kernels::optim::Rule`]: hyperparameters, Keras defaults, state slots, the
//! formulas), so the `OptimizerUpdate` kernel template and the kernel that executes it cannot
//! disagree.

pub use cnnc_runtime::kernels::optim::Rule as UpdateRule;
