//! The contract between the training loop and a backend (the reference interpreter, the
//! native kernels, generated code). The runtime owns parameters and optimiser state; a backend
//! computes predictions, the loss and gradients for one batch.

use crate::init::Init;
use crate::pool::Pool;
use crate::tensor::Tensor;

/// A parameter a backend expects, in the backend's order (graph order).
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Keras name, `<layer>.<kernel|bias|gamma|beta|moving_mean|moving_variance>`.
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// False for state that training updates without the optimiser (BN moving statistics).
    pub trainable: bool,
}

/// How targets are laid out for the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetLayout {
    /// One class id per sample, `[n]`.
    ClassIds,
    /// The prediction's shape per sample, `[n, outputs]` (one-hot for categorical losses).
    Dense,
}

/// Result of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    /// The batch's mean loss.
    pub loss: f32,
}

/// What a compiled model takes and gives, the same whichever backend runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelIo {
    /// The batch size the model was compiled for; calls accept any `n` in `1..=batch_size`.
    pub batch_size: usize,
    /// Per-sample input shape, e.g. `[28, 28, 1]`.
    pub input_shape: Vec<usize>,
    /// Per-sample output size (classes).
    pub output_size: usize,
    pub target_layout: TargetLayout,
    /// Every parameter, in the backend's order.
    pub params: Vec<ParamSpec>,
}

/// A compiled (or interpreted) model with a fixed maximum batch size.
pub trait Executor {
    /// Short name shown to the user (`interp`, `native`, ...).
    fn backend_name(&self) -> &str;
    /// The model's inputs, outputs and parameters.
    fn io(&self) -> &ModelIo;
    /// The batch size the model was compiled for; calls accept any `n` in `1..=batch_size()`.
    fn batch_size(&self) -> usize {
        self.io().batch_size
    }
    /// Per-sample input shape, e.g. `[28, 28, 1]`.
    fn input_shape(&self) -> &[usize] {
        &self.io().input_shape
    }
    /// Per-sample output size (classes).
    fn output_size(&self) -> usize {
        self.io().output_size
    }
    fn target_layout(&self) -> TargetLayout {
        self.io().target_layout
    }
    fn params(&self) -> &[ParamSpec] {
        &self.io().params
    }

    /// One training step on `n` samples. `x` is `[n, ..input_shape]`, `y` the targets in
    /// `target_layout()`. Writes the gradient of every trainable parameter into `grads` (same
    /// order as the trainable entries of `params()`), updates non-trainable state in `params`
    /// (moving statistics) and writes the predictions `[n, output_size]` into `preds`.
    /// `step` seeds dropout so that runs are reproducible.
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &mut self,
        params: &mut [Tensor],
        grads: &mut [Tensor],
        x: &[f32],
        y: &[f32],
        n: usize,
        step: u64,
        preds: &mut [f32],
    ) -> StepResult;

    /// Inference on `n` samples: writes `[n, output_size]` predictions (final activation applied).
    fn predict(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32]);

    /// [`Executor::predict`] from an [`InferenceSession`]. With `same_params`, `params` are
    /// bitwise those of this executor's previous call, which was this method's from the same
    /// session (the session borrows them immutably and the executor mutably, so nothing can have
    /// changed either): what the backend derives from the parameters alone (BN folded into the
    /// conv weights) may be reused instead of recomputed. The default just predicts.
    fn predict_in_session(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32], same_params: bool) {
        let _ = same_params;
        self.predict(params, x, n, preds)
    }

    /// The thread pool this executor's kernels run on, if it has one: the training loop runs
    /// the optimiser's update on it too (between steps the pool is idle).
    fn pool(&self) -> Option<&Pool> {
        None
    }

    /// Starts timing every kernel of every later call, where the backend can (`false` where it
    /// cannot; see [`Executor::profile_report`]).
    fn set_profiling(&mut self, _on: bool) -> bool {
        false
    }

    /// Per-kernel times since [`Executor::set_profiling`], per program, slowest first.
    fn profile_report(&self) -> Option<String> {
        None
    }
}

/// Inference with the parameters held fixed, as an ONNX Runtime session holds its weights:
/// borrowing them immutably (and the executor mutably) for its lifetime guarantees that they do
/// not change between calls, so the backend prepares what depends on them only once (the
/// kernels backend folds BN into the conv weights on the first call, not on every call, and
/// packs the kernels its batch-1 convs would read in place).
/// A plain [`Executor::predict`] cannot assume that: the caller may change the parameters
/// between two calls.
pub struct InferenceSession<'a> {
    exec: &'a mut dyn Executor,
    params: &'a [Tensor],
    started: bool,
}

impl<'a> InferenceSession<'a> {
    pub fn new(exec: &'a mut dyn Executor, params: &'a [Tensor]) -> Self {
        InferenceSession {
            exec,
            params,
            started: false,
        }
    }

    /// The executor's [`Executor::predict`] on `n` samples with the session's parameters.
    pub fn predict(&mut self, x: &[f32], n: usize, preds: &mut [f32]) {
        self.exec.predict_in_session(self.params, x, n, preds, self.started);
        self.started = true;
    }
}
