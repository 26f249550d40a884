//! The kernel IR: what the native emitters compile.
//!
//! A [`Program`] is a sequence of *parameterised loop-nest templates*. Each [`Kernel`] names a
//! template ([`KernelOp`]: a fixed loop nest such as an implicit-GEMM convolution with an
//! epilogue, a row-wise softmax + cross-entropy, a fused BN + activation backward) whose bounds
//! are all constants, the buffers it reads and writes, and a [`Schedule`] (cache tiles mc/kc/nc,
//! register tile mr×nr, vector width, unroll, thread split) chosen by [`schedule::choose`] from
//! the shapes and the [`Machine`] alone. The input, the target and the parameters are bound
//! by the caller as separate regions (the runtime owns parameters); every other buffer —
//! activations, activations saved for backward, gradients, optimiser state, folded weights,
//! scratch — lives in one arena laid out by [`plan()`] (see `program` for the storage classes).
//!
//! Why templates and not a general loop IR: two emitters (Rust source, and later a Cranelift
//! JIT) lower this IR. Every decision that affects speed or memory — what is fused into what,
//! tile sizes, thread splits, where each buffer lives — is made here, once, so the emitters
//! only translate each template's fixed loop nest with the given constants and cannot drift
//! apart. A template is small enough to emit by hand for each backend and general enough that
//! the fusions worth doing on CPUs (epilogues of GEMM-shaped loops, one-pass row kernels) are
//! flags and extra operands of a template rather than new loop structures.
//!
//! Pipeline: [`lower()`] makes one kernel per graph node; `passes` fuse kernels, append
//! optimiser updates, drop dead buffers and plan the arena; [`verify()`] checks the result
//! between passes; [`dump()`] prints it.

pub mod dump;
pub mod kernel;
pub mod lower;
pub mod machine;
pub mod plan;
pub mod program;
pub mod schedule;
pub mod update;
pub mod verify;

pub use dump::dump;
pub use kernel::{BnSource, ConvGeom, Epilogue, EwOp, GemmDims, Kernel, KernelOp, PoolGeom, PoolKind, PooledDy, Stage};
pub use lower::{lower, LowerError};
pub use machine::Machine;
pub use plan::{plan, PlanStats};
pub use program::{BufId, BufKind, Buffer, DType, OutRole, Output, Program, Storage, Uses};
pub use schedule::{GemmTiles, Schedule, ScratchLayout, Split, Tiling};
pub use update::UpdateRule;
pub use verify::{assert_valid, verify};
