//! The optimiser: the model's update rule as the kernel IR's rule, and one generated function
//! per distinct rule applying it to one parameter in place — plain zipped loops over slices
//! (the parameters differ in length, so the length is the slices', not a constant), with the
//! formulas of the runtime's `kernels::optim` (Keras's).
//!
//! The rule comes from the model's `training:` section the way `cnnc train` builds its
//! optimiser: the runtime's [`OptimizerKind::from_keras_name`] (Keras's defaults; without a
//! name Keras's `compile` default, rmsprop), then `learning_rate` and `momentum`.

use cnnc_runtime::optim::OptimizerKind;

use crate::kernel_ir::UpdateRule;
use crate::spec::ModelSpec;

use super::writer::{f32_lit, Code};

/// The optimiser of `spec`'s `training:` section as `cnnc train` builds it without flags
/// (`None` for an optimiser name the runtime does not know; the spec validator refuses those).
pub fn spec_optimizer(spec: &ModelSpec) -> Option<OptimizerKind> {
    let t = &spec.training;
    let mut kind = match &t.optimizer {
        Some(name) => OptimizerKind::from_keras_name(name)?,
        None => OptimizerKind::rmsprop_default(),
    };
    if let Some(lr) = t.learning_rate {
        kind = kind.with_learning_rate(lr as f64);
    }
    if let Some(m) = t.momentum {
        kind = kind.with_momentum(m as f64);
    }
    Some(kind)
}

/// Whether the rule's function reads the step (Adam's bias correction).
pub(crate) fn needs_step(rule: &UpdateRule) -> bool {
    matches!(rule, UpdateRule::Adam { .. })
}

/// Names of the function's slot operands, in the rule's slot order.
fn slot_names(rule: &UpdateRule) -> Vec<&'static str> {
    rule.slots()
        .into_iter()
        .map(|s| match s {
            "velocity" if matches!(rule, UpdateRule::Sgd { .. }) => "velocity",
            "velocity" => "ms",
            "average_gradient" => "mg",
            "momentum" => "mom",
            other => other,
        })
        .collect()
}

/// `fn name(g: &[f32], w: &mut [f32], slots.., [step: u64])`: one step of `rule` on one
/// parameter `w` from its gradient `g`.
pub(crate) fn emit_function(c: &mut Code, name: &str, rule: &UpdateRule, doc: &str) {
    let slots = slot_names(rule);
    let mut params = vec!["g: &[f32]".to_string(), "w: &mut [f32]".to_string()];
    params.extend(slots.iter().map(|s| format!("{s}: &mut [f32]")));
    if needs_step(rule) {
        params.push("step: u64".into());
    }
    c.doc(doc);
    c.line("#[inline(never)]");
    c.open(format!("fn {name}({})", params.join(", ")));
    // The zipped loops stop at the shortest operand: all must be the parameter's length.
    let lens: Vec<String> = std::iter::once("g")
        .chain(slots.iter().copied())
        .map(|s| format!("{s}.len() == w.len()"))
        .collect();
    c.line(format!("debug_assert!({});", lens.join(" && ")));
    body(c, rule);
    c.close();
}

fn body(c: &mut Code, rule: &UpdateRule) {
    let l = |v: f32| f32_lit(v);
    match *rule {
        UpdateRule::Sgd { lr, momentum: 0.0, .. } => {
            c.line(format!("let lr: f32 = {};", l(lr)));
            c.open("for (w, &g) in w.iter_mut().zip(g)");
            c.line("*w -= lr * g;");
            c.close();
        }
        UpdateRule::Sgd { lr, momentum, nesterov } => {
            c.line(format!(
                "let (lr, momentum): (f32, f32) = ({}, {});",
                l(lr),
                l(momentum)
            ));
            c.open("for ((w, v), &g) in w.iter_mut().zip(velocity.iter_mut()).zip(g)");
            c.line("*v = momentum * *v - lr * g;");
            c.line(if nesterov {
                "*w += momentum * *v - lr * g;"
            } else {
                "*w += *v;"
            });
            c.close();
        }
        UpdateRule::Adam {
            lr,
            beta_1,
            beta_2,
            epsilon,
        } => {
            c.line(format!(
                "let (lr, beta_1, beta_2, epsilon): (f32, f32, f32, f32) = ({}, {}, {}, {});",
                l(lr),
                l(beta_1),
                l(beta_2),
                l(epsilon)
            ));
            c.line("let t = step as f32;");
            c.line("// The bias correction folded into the learning rate.");
            c.line("let alpha = lr * (1.0 - beta_2.powf(t)).sqrt() / (1.0 - beta_1.powf(t));");
            c.line("let (one_minus_b1, one_minus_b2) = (1.0 - beta_1, 1.0 - beta_2);");
            c.open("for (((w, m), v), &g) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g)");
            c.line("*m += (g - *m) * one_minus_b1;");
            c.line("*v += (g * g - *v) * one_minus_b2;");
            c.line("*w -= (*m * alpha) / (v.sqrt() + epsilon);");
            c.close();
        }
        UpdateRule::RmsProp {
            lr,
            rho,
            momentum,
            epsilon,
            centered,
        } => {
            c.line(format!(
                "let (lr, rho, epsilon): (f32, f32, f32) = ({}, {}, {});",
                l(lr),
                l(rho),
                l(epsilon)
            ));
            if momentum != 0.0 {
                c.line(format!("let momentum: f32 = {};", l(momentum)));
            }
            let slots: Vec<&str> = ["ms", "mg", "mom"][..1 + usize::from(centered)]
                .iter()
                .copied()
                .chain((momentum != 0.0).then_some("mom"))
                .collect();
            c.line("let n = w.len();");
            c.line(format!(
                "let (g, {}) = (&g[..n], {});",
                slots.join(", "),
                slots
                    .iter()
                    .map(|s| format!("&mut {s}[..n]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            c.open("for i in 0..n");
            c.line("let g = g[i];");
            c.line("ms[i] = rho * ms[i] + (1.0 - rho) * (g * g);");
            if centered {
                c.line("mg[i] = rho * mg[i] + (1.0 - rho) * g;");
                c.line("let inc = lr * g / (ms[i] - mg[i] * mg[i] + epsilon).sqrt();");
            } else {
                c.line("let inc = lr * g / (ms[i] + epsilon).sqrt();");
            }
            if momentum != 0.0 {
                c.line("mom[i] = momentum * mom[i] + inc;");
                c.line("w[i] -= mom[i];");
            } else {
                c.line("w[i] -= inc;");
            }
            c.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_follow_the_runtime_optimiser() {
        let r = OptimizerKind::adam_default().rule();
        assert_eq!(r, UpdateRule::adam());
        assert_eq!(OptimizerKind::sgd_default().rule(), UpdateRule::sgd());
        assert_eq!(OptimizerKind::rmsprop_default().rule(), UpdateRule::rmsprop());
    }

    #[test]
    fn one_function_per_rule_over_slices() {
        for rule in [UpdateRule::adam(), UpdateRule::sgd(), UpdateRule::rmsprop()] {
            let mut c = Code::new();
            emit_function(&mut c, "optimizer_update_0", &rule, "doc");
            let s = c.finish();
            assert!(s.contains("fn optimizer_update_0(g: &[f32], w: &mut [f32]"), "{s}");
            assert_eq!(s.contains("step: u64"), needs_step(&rule), "{s}");
        }
    }
}
