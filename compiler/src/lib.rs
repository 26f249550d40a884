//! cnnc's compiler: the YAML model spec, the graph IR, autodiff, the passes, the reference
//! interpreter and the backends.
//!
//! Data flow: `spec` (YAML → `ModelSpec`) → `lower` (`ModelSpec` → `ir::Graph`) →
//! `autodiff` (training graph) → `passes` (fusion, planning) → `kernel_ir` → backends.
//! `interp` runs the unoptimised graph and is the oracle for every backend.

pub mod autodiff;
pub mod codegen;
pub mod crate_backend;
pub mod error;
pub mod interp;
pub mod ir;
pub mod kernel_ir;
pub mod lower;
pub mod model_io;
pub mod native;
pub mod passes;
pub mod spec;
pub mod summary;
pub mod tolerance;
