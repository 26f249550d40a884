//! Finite-difference gradient checks of whole training graphs: [`training_graph`] + [`run`]
//! give the analytic gradient of every trainable parameter, which is compared element by element
//! with the central difference `(L(θ+h) - L(θ-h)) / (2h)` of the interpreted f32 loss.
//!
//! Finite differences are wrong across kinks (ReLU at 0, max-pool ties), so callers should feed
//! data whose values are well separated: [`distinct_tensor`] gives such values.

use cnnc_runtime::rng::Rng;
use cnnc_runtime::Tensor;

use super::run;
use crate::autodiff::training_graph;
use crate::ir::{Graph, LossKind, NodeId};
use crate::tolerance::Tolerance;

/// Tighter than `Tolerance::FINITE_DIFF`, for graphs of one op (plus a smooth head) fed with
/// well-separated values: the finite-difference noise of an f32 loss of size ~1 at the default
/// `h` is ~3e-5, far below it, while a wrong rule is far above it.
pub const SINGLE_OP: Tolerance = Tolerance { abs: 3e-4, rel: 3e-3 };

/// Options of a gradient check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradCheck {
    /// Perturbation, relative to `max(1, |θ|)`.
    pub h: f64,
    /// Elementwise tolerance between analytic and numeric gradients.
    pub tol: Tolerance,
    /// Training step passed to the interpreter (seeds dropout; the same for every evaluation).
    pub step: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            h: 2e-3,
            tol: Tolerance::FINITE_DIFF,
            step: 7,
        }
    }
}

/// Checks every trainable parameter's gradient of `fwd`'s training graph with the default
/// options. `params` are in `fwd.params()` order; `Err` lists the mismatching elements.
pub fn gradcheck(
    fwd: &Graph,
    loss: LossKind,
    from_logits: bool,
    params: &[Tensor],
    input: &Tensor,
    target: &Tensor,
) -> Result<(), String> {
    GradCheck::default().check(fwd, loss, from_logits, params, input, target)
}

impl GradCheck {
    /// Runs the check; see [`gradcheck`]. Fails too when every numeric gradient is below the
    /// tolerance, since such a check could not catch a wrong rule.
    pub fn check(
        &self,
        fwd: &Graph,
        loss: LossKind,
        from_logits: bool,
        params: &[Tensor],
        input: &Tensor,
        target: &Tensor,
    ) -> Result<(), String> {
        let tg = training_graph(fwd, loss, from_logits).map_err(|e| e.to_string())?;
        let base = run(&tg, input, Some(target), params, self.step).map_err(|e| e.to_string())?;
        let loss_at = |ps: &[Tensor]| -> Result<f64, String> {
            let v = run(&tg, input, Some(target), ps, self.step).map_err(|e| e.to_string())?;
            v.loss(&tg).map(f64::from).ok_or_else(|| "no loss output".to_string())
        };
        let mut work = params.to_vec();
        let mut failures = Vec::new();
        let mut largest = 0f64;
        for (i, id) in tg.params().into_iter().enumerate() {
            let Some(analytic) = base.gradient(&tg, id) else {
                continue;
            };
            let name = param_name(&tg, id);
            let mut numeric = Vec::with_capacity(analytic.data.len());
            for e in 0..work[i].data.len() {
                let v = params[i].data[e];
                let h = self.h * f64::from(v.abs()).max(1.0);
                let (plus, minus) = ((f64::from(v) + h) as f32, (f64::from(v) - h) as f32);
                work[i].data[e] = plus;
                let lp = loss_at(&work)?;
                work[i].data[e] = minus;
                let lm = loss_at(&work)?;
                work[i].data[e] = v;
                let d = (lp - lm) / (f64::from(plus) - f64::from(minus));
                largest = largest.max(d.abs());
                numeric.push(d as f32);
            }
            if let Err(m) = self.tol.compare(&analytic.data, &numeric) {
                failures.push(format!("gradient of '{name}': {m} (analytic vs numeric)"));
            }
        }
        if largest <= 10.0 * f64::from(self.tol.abs) {
            failures.push(format!(
                "vacuous check: every numeric gradient is at most {largest:e}, too small to test the rules"
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}

fn param_name(g: &Graph, id: NodeId) -> String {
    g.param_info(id)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| id.to_string())
}

/// Uniform values in `[lo, hi)` from a SplitMix64 stream seeded with `seed`.
pub fn random_tensor(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let mut rng = Rng::new(seed);
    let data = (0..shape.iter().product::<usize>())
        .map(|_| lo + (hi - lo) * rng.uniform())
        .collect();
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// A random permutation of evenly spaced values in `(-spread, spread)`, none at zero: every two
/// elements differ, and every element is away from 0, by at least `spread / numel`.
pub fn distinct_tensor(shape: &[usize], seed: u64, spread: f32) -> Tensor {
    let n = shape.iter().product::<usize>();
    let step = 2.0 * spread / n as f32;
    let mut data: Vec<f32> = (0..n).map(|k| -spread + step * (k as f32 + 0.5)).collect();
    Rng::new(seed).shuffle(&mut data);
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}
