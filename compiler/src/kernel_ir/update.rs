//! Optimiser update rules, compiler side: which Keras optimiser, its hyperparameters, and the
//! state slots each trainable parameter needs. The `OptimizerUpdate` kernel template applies
//! one rule to one parameter in place; the formulas below are the template's semantics.

use std::fmt;

/// A Keras optimiser with its hyperparameters (`tf.keras.optimizers.*` defaults via
/// [`UpdateRule::sgd`], [`UpdateRule::adam`], [`UpdateRule::rmsprop`]). `t` below is the
/// 1-based step number every program run receives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateRule {
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

impl UpdateRule {
    /// `tf.keras.optimizers.SGD()`: learning rate 0.01, no momentum.
    pub fn sgd() -> Self {
        UpdateRule::Sgd {
            lr: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }

    /// `tf.keras.optimizers.Adam()`: 0.001, β1 0.9, β2 0.999, ε 1e-7.
    pub fn adam() -> Self {
        UpdateRule::Adam {
            lr: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }

    /// `tf.keras.optimizers.RMSprop()`: 0.001, ρ 0.9, no momentum, ε 1e-7, not centered.
    pub fn rmsprop() -> Self {
        UpdateRule::RmsProp {
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
            UpdateRule::Sgd { momentum, .. } if momentum != 0.0 => vec!["velocity"],
            UpdateRule::Sgd { .. } => vec![],
            UpdateRule::Adam { .. } => vec!["m", "v"],
            UpdateRule::RmsProp { momentum, centered, .. } => {
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
            UpdateRule::Sgd { .. } => "sgd",
            UpdateRule::Adam { .. } => "adam",
            UpdateRule::RmsProp { .. } => "rmsprop",
        }
    }
}

impl fmt::Display for UpdateRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            UpdateRule::Sgd { lr, momentum, nesterov } => {
                write!(f, "sgd lr={lr} momentum={momentum}")?;
                if nesterov {
                    write!(f, " nesterov")?;
                }
                Ok(())
            }
            UpdateRule::Adam {
                lr,
                beta_1,
                beta_2,
                epsilon,
            } => write!(f, "adam lr={lr} beta_1={beta_1} beta_2={beta_2} epsilon={epsilon}"),
            UpdateRule::RmsProp {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hyperparameters() {
        assert!(UpdateRule::sgd().slots().is_empty());
        assert_eq!(UpdateRule::adam().slots(), ["m", "v"]);
        let r = UpdateRule::RmsProp {
            lr: 0.001,
            rho: 0.9,
            momentum: 0.5,
            epsilon: 1e-7,
            centered: true,
        };
        assert_eq!(r.slots(), ["velocity", "average_gradient", "momentum"]);
    }
}
