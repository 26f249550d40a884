//! The kernels backend (`--backend kernels`, the default): runs a planned kernel-IR
//! [`Program`](crate::kernel_ir::Program) by dispatching each kernel to the runtime's CPU
//! kernels (`cnnc_runtime::kernels`) over one preallocated arena.
//!
//! - [`NativeExecutor`] implements the runtime's `Executor` contract: it differentiates the
//!   training graph (`autodiff`), compiles it with the middle end (`passes::compile`, no
//!   optimiser update: the runtime applies the optimiser to the gradients) and compiles the
//!   inference graph with BN folded into the weights. Calls with fewer samples than the batch
//!   use programs compiled for that many samples (lazily, cached), never padding — batch
//!   statistics must only see real samples.
//! - `compiled`: a program bound to memory — every buffer resolved to an arena range or to a
//!   caller-bound region (input, target, parameter), checked once so that no kernel's outputs
//!   overlap its other operands.
//! - `dispatch` / `dispatch_gemm`: one kernel-IR template → runtime kernel calls.
//!
//! Parameters are not copied: the program's parameter buffers point at the caller's tensors
//! (BN moving statistics are updated there in place); gradients and predictions are copied out
//! of the arena after each run. The interpreter (`interp`) is the oracle the tests compare with.

mod compiled;
mod dispatch;
mod dispatch_gemm;
mod executor;
mod profile;

use thiserror::Error;

pub use executor::{NativeExecutor, NativeOptions};

use crate::autodiff::AutodiffError;
use crate::error::CompileError;
use crate::ir::ShapeError;
use crate::passes::PassError;

/// Why a model cannot run on the kernels backend.
#[derive(Debug, Error)]
pub enum NativeError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    #[error(transparent)]
    Pass(#[from] PassError),
    #[error("graph '{graph}' cannot be re-batched to {n} samples: {source}")]
    Rebatch {
        graph: String,
        n: usize,
        #[source]
        source: ShapeError,
    },
    /// The program uses a kernel configuration the runtime kernels do not implement.
    #[error("program '{program}', kernel {kernel} ({op}): {msg}")]
    Unsupported {
        program: String,
        kernel: usize,
        op: &'static str,
        msg: String,
    },
    /// The machine refused the memory a program runs in (a batch too large for it).
    #[error(
        "graph '{graph}' at {n} samples needs {what} of {:.2} GiB that cannot be allocated; use a smaller batch size",
        *bytes as f64 / (1u64 << 30) as f64
    )]
    OutOfMemory {
        graph: String,
        n: usize,
        what: &'static str,
        bytes: usize,
    },
    /// The training and inference graphs (or a program and its graph) do not agree.
    #[error("{0}")]
    Mismatch(String),
}
