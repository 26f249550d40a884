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

use std::fmt;

use super::Ctx;

/// A Keras optimiser with its hyperparameters (`tf.keras.optimizers.*` defaults via
/// [`Rule::sgd`], [`Rule::adam`], [`Rule::rmsprop`]). `t` below is the
/// 1-based step number every program run receives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    /// `v = momentum·v − lr·g`; `w += v` (nesterov: `w += momentum·v − lr·g`); without momentum
    /// `w −= lr·g` and no state.
    Sgd { lr: f32, momentum: f32, nesterov: bool },
    /// `m += (g − m)(1 − β1)`, `v += (g² − v)(1 − β2)`,
    /// `w −= lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)`.
    Adam {
        lr: f32,
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
    /// `v = ρ·v + (1 − ρ)g²`; centered: `a = ρ·a + (1 − ρ)g`, `d = v − a²` else `d = v`;
    /// `inc = lr·g/√(d + ε)`; with momentum `m = momentum·m + inc`, `w −= m`, else `w −= inc`.
    RmsProp {
        lr: f32,
        rho: f32,
        momentum: f32,
        epsilon: f32,
        centered: bool,
    },
}

impl Rule {
    /// `tf.keras.optimizers.SGD()`: learning rate 0.01, no momentum.
    pub fn sgd() -> Self {
        Rule::Sgd {
            lr: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }

    /// `tf.keras.optimizers.Adam()`: 0.001, β1 0.9, β2 0.999, ε 1e-7.
    pub fn adam() -> Self {
        Rule::Adam {
            lr: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }

    /// `tf.keras.optimizers.RMSprop()`: 0.001, ρ 0.9, no momentum, ε 1e-7, not centered.
    pub fn rmsprop() -> Self {
        Rule::RmsProp {
            lr: 0.001,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
            centered: false,
        }
    }

    /// Names of the per-parameter state tensors (each the parameter's shape), in operand order.
    pub fn slots(&self) -> Vec<&'static str> {
        match *self {
            Rule::Sgd { momentum, .. } if momentum != 0.0 => vec!["velocity"],
            Rule::Sgd { .. } => vec![],
            Rule::Adam { .. } => vec!["m", "v"],
            Rule::RmsProp { momentum, centered, .. } => {
                let mut s = vec!["velocity"];
                if centered {
                    s.push("average_gradient");
                }
                if momentum != 0.0 {
                    s.push("momentum");
                }
                s
            }
        }
    }

    pub fn keras_name(&self) -> &'static str {
        match self {
            Rule::Sgd { .. } => "sgd",
            Rule::Adam { .. } => "adam",
            Rule::RmsProp { .. } => "rmsprop",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Rule::Sgd { lr, momentum, nesterov } => {
                write!(f, "sgd lr={lr} momentum={momentum}")?;
                if nesterov {
                    write!(f, " nesterov")?;
                }
                Ok(())
            }
            Rule::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
            } => write!(f, "adam lr={lr} beta_1={beta_1} beta_2={beta_2} epsilon={epsilon}"),
            Rule::RmsProp {
                lr,
                rho,
                momentum,
                epsilon,
                centered,
            } => {
                write!(f, "rmsprop lr={lr} rho={rho} momentum={momentum} epsilon={epsilon}")?;
                if centered {
                    write!(f, " centered")?;
                }
                Ok(())
            }
        }
    }
}

/// Applies `rule` at step `t` to `param` from `grad`, updating `slots` (each the parameter's
/// length) in place. Every rule is elementwise, so a large parameter is cut into one contiguous
/// run per thread of `ctx`'s pool with the same result as on one thread.
pub fn update(ctx: &Ctx, rule: &Rule, t: u64, param: &mut [f32], grad: &[f32], slots: &mut [&mut [f32]]) {
    let len = param.len();
    assert_eq!(grad.len(), len, "update: gradient length");
    assert_eq!(
        slots.len(),
        rule.slots().len(),
        "update: {} slots for rule {rule:?}",
        slots.len()
    );
    assert!(slots.iter().all(|s| s.len() == len), "update: slot lengths");
    let isa = ctx.isa;
    let ctx = ctx.for_work(len * FLOPS_PER_VALUE);
    let threads = ctx.threads();
    if threads == 1 {
        isa.vectorize(
            #[inline(always)]
            || apply(rule, t, param, grad, slots),
        );
        return;
    }
    // Per thread: its run of the parameter, of the gradient and of every slot.
    let mut parts: Vec<Run> = Vec::with_capacity(threads);
    let (mut p_rest, mut g_rest) = (param, grad);
    let mut s_rest: Vec<&mut [f32]> = slots.iter_mut().map(|s| &mut **s).collect();
    for th in 0..threads {
        let n = (th + 1) * len / threads - th * len / threads;
        let (p, pt) = std::mem::take(&mut p_rest).split_at_mut(n);
        let (g, gt) = g_rest.split_at(n);
        let mut mine = Vec::with_capacity(s_rest.len());
        for s in s_rest.iter_mut() {
            let (a, b) = std::mem::take(s).split_at_mut(n);
            mine.push(a);
            *s = b;
        }
        (p_rest, g_rest) = (pt, gt);
        parts.push((p, g, mine));
    }
    ctx.pool.run_with_state(&mut parts, threads, |(p, g, s), _t, _r| {
        isa.vectorize(
            #[inline(always)]
            || apply(rule, t, p, g, s),
        )
    });
}

/// One thread's run of an update: the parameter's, the gradient's and every slot's.
type Run<'a> = (&'a mut [f32], &'a [f32], Vec<&'a mut [f32]>);

/// Rough FLOPs per parameter of an update (Adam's: two moment updates, a square root and a
/// division), to decide with [`Ctx::for_work`] whether it is worth splitting across threads.
const FLOPS_PER_VALUE: usize = 10;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hyperparameters() {
        assert!(Rule::sgd().slots().is_empty());
        assert_eq!(Rule::adam().slots(), ["m", "v"]);
        let r = Rule::RmsProp {
            lr: 0.001,
            rho: 0.9,
            momentum: 0.5,
            epsilon: 1e-7,
            centered: true,
        };
        assert_eq!(r.slots(), ["velocity", "average_gradient", "momentum"]);
    }
}
