//! `--backend native`: the model's generated Rust crate (`codegen`, with its C ABI), built with
//! cargo for this machine, cached, loaded as a shared library and run behind the runtime's
//! `Executor` contract.
//!
//! - [`cache`]: where builds live, the cache key (generated source, options, compiler and
//!   rustc versions, target features), the build and its atomic installation;
//! - [`abi`]: the loaded library, its ABI version and sizes checked, and safe calls into it;
//! - [`executor`]: [`CrateExecutor`], one library per batch size and purpose, built lazily
//!   (a partial batch runs a program compiled for exactly its samples, never padding).
//!
//! The generated code is plain loops (split by samples across the requested threads, a
//! batch-1 conv by bands of output rows), slower
//! than the kernels backend; its value is that the exact code `cnnc compile` writes is what
//! trains and predicts.

pub mod abi;
pub mod cache;
pub mod executor;

use std::path::PathBuf;

use thiserror::Error;

use crate::codegen::CodegenError;
use crate::error::CompileError;

pub use cache::{default_cache_dir, Cache};
pub use executor::{BuildRecord, CrateExecutor, CrateOptions, Purpose};

/// Why the native backend could not build, load or run a model.
#[derive(Debug, Error)]
pub enum CrateBackendError {
    #[error("model '{model}': {source}")]
    Compile {
        model: String,
        #[source]
        source: Box<CompileError>,
    },
    #[error("model '{model}': generating its crate: {source}")]
    Codegen {
        model: String,
        #[source]
        source: Box<CodegenError>,
    },
    #[error("model '{model}': {what} {}: {source}", path.display())]
    Io {
        model: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "model '{model}': no cache directory for the native backend: set CNNC_CACHE_DIR (or XDG_CACHE_HOME or HOME)"
    )]
    NoCacheDir { model: String },
    #[error("model '{model}': the native backend needs a Rust toolchain (cargo, rustc): {msg}")]
    Toolchain { model: String, msg: String },
    #[error("model '{model}': building its generated crate in {} failed ({status}); the end of cargo's output:\n{tail}", dir.display())]
    Build {
        model: String,
        dir: PathBuf,
        status: String,
        tail: String,
    },
    #[error("model '{model}': the library {}: {msg}", path.display())]
    Load { model: String, path: PathBuf, msg: String },
    #[error("model '{model}': {msg}")]
    Call { model: String, msg: String },
}
