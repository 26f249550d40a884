//! Optimisers with Keras 3's update rules, defaults and float32 arithmetic. The runtime owns
//! their state (one or two slots per trainable parameter); hyperparameters are f64 like the
//! Python floats Keras is configured with, and are rounded to f32 for the update kernels
//! (`kernels::optim`, the same rules the compiled programs run).

use std::fmt;

use thiserror::Error;

use crate::kernels::optim::{update, Rule};
use crate::kernels::Ctx;
use crate::pool::Pool;
use crate::tensor::Tensor;

/// An optimiser and its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd {
        learning_rate: f64,
        momentum: f64,
        nesterov: bool,
    },
    Adam {
        learning_rate: f64,
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
    },
    RmsProp {
        learning_rate: f64,
        rho: f64,
        momentum: f64,
        epsilon: f64,
    },
}

impl OptimizerKind {
    /// `keras.optimizers.SGD()`: learning rate 0.01, no momentum.
    pub fn sgd_default() -> Self {
        OptimizerKind::Sgd {
            learning_rate: 0.01,
            momentum: 0.0,
            nesterov: false,
        }
    }

    /// `keras.optimizers.Adam()`: 0.001, β₁ 0.9, β₂ 0.999, ε 1e-7.
    pub fn adam_default() -> Self {
        OptimizerKind::Adam {
            learning_rate: 0.001,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }

    /// `keras.optimizers.RMSprop()`: 0.001, ρ 0.9, no momentum, ε 1e-7.
    pub fn rmsprop_default() -> Self {
        OptimizerKind::RmsProp {
            learning_rate: 0.001,
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
        }
    }

    /// Keras's defaults for `adam`, `sgd` or `rmsprop` (case-insensitive).
    pub fn from_keras_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "adam" => Some(Self::adam_default()),
            "sgd" => Some(Self::sgd_default()),
            "rmsprop" => Some(Self::rmsprop_default()),
            _ => None,
        }
    }

    pub fn learning_rate(&self) -> f64 {
        match *self {
            OptimizerKind::Sgd { learning_rate, .. }
            | OptimizerKind::Adam { learning_rate, .. }
            | OptimizerKind::RmsProp { learning_rate, .. } => learning_rate,
        }
    }

    /// The same optimiser with another learning rate.
    pub fn with_learning_rate(mut self, lr: f64) -> Self {
        match &mut self {
            OptimizerKind::Sgd { learning_rate, .. }
            | OptimizerKind::Adam { learning_rate, .. }
            | OptimizerKind::RmsProp { learning_rate, .. } => *learning_rate = lr,
        }
        self
    }

    /// The same optimiser with another momentum (Adam has none: unchanged).
    pub fn with_momentum(mut self, m: f64) -> Self {
        match &mut self {
            OptimizerKind::Sgd { momentum, .. } | OptimizerKind::RmsProp { momentum, .. } => *momentum = m,
            OptimizerKind::Adam { .. } => {}
        }
        self
    }

    /// The update rule the kernels apply (hyperparameters rounded to f32, as Keras casts them).
    pub fn rule(&self) -> Rule {
        match *self {
            OptimizerKind::Sgd {
                learning_rate,
                momentum,
                nesterov,
            } => Rule::Sgd {
                lr: learning_rate as f32,
                momentum: momentum as f32,
                nesterov,
            },
            OptimizerKind::Adam {
                learning_rate,
                beta_1,
                beta_2,
                epsilon,
            } => Rule::Adam {
                lr: learning_rate as f32,
                beta_1: beta_1 as f32,
                beta_2: beta_2 as f32,
                epsilon: epsilon as f32,
            },
            OptimizerKind::RmsProp {
                learning_rate,
                rho,
                momentum,
                epsilon,
            } => Rule::RmsProp {
                lr: learning_rate as f32,
                rho: rho as f32,
                momentum: momentum as f32,
                epsilon: epsilon as f32,
                centered: false,
            },
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OptimizerKind::Sgd {
                learning_rate,
                momentum,
                nesterov,
            } => write!(
                f,
                "SGD(learning_rate={learning_rate}, momentum={momentum}, nesterov={nesterov})"
            ),
            OptimizerKind::Adam {
                learning_rate,
                beta_1,
                beta_2,
                epsilon,
            } => write!(
                f,
                "Adam(learning_rate={learning_rate}, beta_1={beta_1}, beta_2={beta_2}, epsilon={epsilon})"
            ),
            OptimizerKind::RmsProp {
                learning_rate,
                rho,
                momentum,
                epsilon,
            } => write!(
                f,
                "RMSprop(learning_rate={learning_rate}, rho={rho}, momentum={momentum}, epsilon={epsilon})"
            ),
        }
    }
}

/// A parameter or gradient that does not match the optimiser's slots.
#[derive(Debug, Error, PartialEq)]
pub enum OptimError {
    #[error("optimiser holds state for {expected} parameters, got {params} parameters and {grads} gradients")]
    Count {
        expected: usize,
        params: usize,
        grads: usize,
    },
    #[error("trainable parameter #{index}: optimiser state has shape {expected:?}, got parameter {param:?} and gradient {grad:?}")]
    Shape {
        index: usize,
        expected: Vec<usize>,
        param: Vec<usize>,
        grad: Vec<usize>,
    },
}

/// An optimiser with its per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    shapes: Vec<Vec<usize>>,
    /// Per trainable parameter: Adam `[m, v]`, RMSprop `[v]` or `[v, momentum]`, SGD `[]` or
    /// `[momentum]`; each slot has the parameter's size.
    state: Vec<Vec<Vec<f32>>>,
    /// Steps applied so far (Keras's `optimizer.iterations`).
    iterations: u64,
}

impl Optimizer {
    /// Zeroed state for trainable parameters of the given shapes (in the executor's order).
    pub fn new(kind: OptimizerKind, shapes: &[Vec<usize>]) -> Self {
        let state = shapes
            .iter()
            .map(|s| vec![vec![0.0; s.iter().product()]; kind.rule().slots().len()])
            .collect();
        Optimizer {
            kind,
            shapes: shapes.to_vec(),
            state,
            iterations: 0,
        }
    }

    pub fn kind(&self) -> &OptimizerKind {
        &self.kind
    }

    /// Shapes of the parameters this optimiser updates.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// Steps applied so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Changes the learning rate for the following steps (state is kept).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.kind = self.kind.with_learning_rate(lr);
    }

    /// Applies one update to every trainable parameter: `params[i] -= f(grads[i], state)`.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[Tensor]) -> Result<(), OptimError> {
        self.step_on(Pool::inline(), params, grads)
    }

    /// [`Optimizer::step`] with large parameters split across `pool`'s threads (the same result:
    /// every update is elementwise). The training loop passes the executor's pool.
    pub fn step_on(&mut self, pool: &Pool, params: &mut [&mut Tensor], grads: &[Tensor]) -> Result<(), OptimError> {
        if params.len() != self.shapes.len() || grads.len() != self.shapes.len() {
            return Err(OptimError::Count {
                expected: self.shapes.len(),
                params: params.len(),
                grads: grads.len(),
            });
        }
        for (index, ((p, g), shape)) in params.iter().zip(grads).zip(&self.shapes).enumerate() {
            let n: usize = shape.iter().product();
            if p.data.len() != n || g.data.len() != n || &p.shape != shape || &g.shape != shape {
                return Err(OptimError::Shape {
                    index,
                    expected: shape.clone(),
                    param: p.shape.clone(),
                    grad: g.shape.clone(),
                });
            }
        }
        let t = self.iterations + 1;
        let rule = self.kind.rule();
        let ctx = Ctx::new(pool);
        for ((p, g), slots) in params.iter_mut().zip(grads).zip(&mut self.state) {
            let mut slots: Vec<&mut [f32]> = slots.iter_mut().map(|s| s.as_mut_slice()).collect();
            update(&ctx, &rule, t, &mut p.data, &g.data, &mut slots);
        }
        self.iterations = t;
        Ok(())
    }
}
