//! Optimiser update kernels: one rule applied in place to one parameter from its gradient, at
//! the 1-based step `t`. The formulas are the kernel IR's `UpdateRule` semantics (Keras's):
//!
//! - SGD: `v = momentum·v − lr·g`; `w += v` (Nesterov: `w += momentum·v − lr·g`); without
//!   momentum `w −= lr·g` and no state.
//! - Adam: `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`,
//!   `w −= lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m/(√v + ε)`.
//! - RMSprop: `v = ρ·v + (1 − ρ)g²`; centered: `a = ρ·a + (1 − ρ)g`, `d = v − a²`, else `d = v`;
//!   `inc = lr·g/√(d + ε)`; with momentum `m = momentum·m + inc`, `w −= m`, else `w −= inc`.
//!
//! Slots are passed in the rule's order (SGD `[velocity]` with momentum; Adam `[m, v]`;
//! RMSprop `[velocity, (average_gradient if centered), (momentum if momentum ≠ 0)]`).

use super::Ctx;

/// An update rule with its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    Sgd {
        lr: f32,
        momentum: f32,
        nesterov: bool,
    },
    Adam {
        lr: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
    RmsProp {
        lr: f32,
        rho: f32,
        momentum: f32,
        epsilon: f32,
        centered: bool,
    },
}

impl Rule {
    /// State slots the rule needs.
    pub fn slots(&self) -> usize {
        match *self {
            Rule::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            Rule::Adam { .. } => 2,
            Rule::RmsProp { momentum, centered, .. } => 1 + usize::from(centered) + usize::from(momentum != 0.0),
        }
    }
}

/// Applies `rule` at step `t` to `param` from `grad`, updating `slots` (each the parameter's
/// length) in place.
pub fn update(ctx: &Ctx, rule: &Rule, t: u64, param: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]) {
    let len = param.len();
    assert_eq!(grad.len(), len, "update: gradient length");
    assert_eq!(
        slots.len(),
        rule.slots(),
        "update: {} slots for rule {rule:?}",
        slots.len()
    );
    assert!(slots.iter().all(|s| s.len() == len), "update: slot lengths");
    let isa = ctx.isa;
    isa.vectorize(
        #[inline(always)]
        || apply(rule, t, param, grad, slots),
    );
}

#[inline(always)]
fn apply(rule: &Rule, t: u64, p: &mut [f32], g: &[f32], slots: &mut [&mut [f32]]) {
    match (*rule, slots) {
        (Rule::Sgd { lr, .. }, []) => {
            for (p, &g) in p.iter_mut().zip(g) {
                *p -= lr * g;
            }
        }
        (Rule::Sgd { lr, momentum, nesterov }, [v]) => {
            for ((p, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                *v = momentum * *v - lr * g;
                *p += if nesterov { momentum * *v - lr * g } else { *v };
            }
        }
        (
            Rule::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
            },
            [m, v],
        ) => {
            let step = t as f32;
            let alpha = lr * (1.0 - beta_2.powf(step)).sqrt() / (1.0 - beta_1.powf(step));
            let (one_minus_b1, one_minus_b2) = (1.0 - beta_1, 1.0 - beta_2);
            for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                *m += (g - *m) * one_minus_b1;
                *v += (g * g - *v) * one_minus_b2;
                *p -= (*m * alpha) / (v.sqrt() + epsilon);
            }
        }
        (
            Rule::RmsProp {
                lr,
                rho,
                momentum,
                epsilon,
                centered,
            },
            slots,
        ) => {
            let (v, rest) = match slots.split_first_mut() {
                Some(s) => s,
                None => return,
            };
            let (mut avg, rest) = if centered {
                match rest.split_first_mut() {
                    Some((a, r)) => (Some(a), r),
                    None => return,
                }
            } else {
                (None, rest)
            };
            let mut mom = if momentum != 0.0 { rest.first_mut() } else { None };
            for (i, (p, &g)) in p.iter_mut().zip(g).enumerate() {
                let vi = rho * v[i] + (1.0 - rho) * (g * g);
                v[i] = vi;
                let d = match avg.as_deref_mut() {
                    Some(a) => {
                        let ai = rho * a[i] + (1.0 - rho) * g;
                        a[i] = ai;
                        vi - ai * ai
                    }
                    None => vi,
                };
                let inc = lr * g / (d + epsilon).sqrt();
                match mom.as_deref_mut() {
                    Some(m) => {
                        m[i] = momentum * m[i] + inc;
                        *p -= m[i];
                    }
                    None => *p -= inc,
                }
            }
        }
        _ => panic!("update: slots do not match the rule"),
    }
}
