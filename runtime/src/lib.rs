//! cnnc's runtime: what compiled models need when they run — tensors, parameter files,
//! initialisers, optimisers, data loaders, the thread pool, kernels and the training loop.

pub mod data;
pub mod exec;
pub mod fpenv;
pub mod init;
pub mod kernels;
pub mod optim;
pub mod pool;
pub mod rng;
pub mod tensor;
pub mod train;
pub mod weights;

pub use exec::{Executor, InferenceSession, ModelIo, ParamSpec, StepResult, TargetLayout};
pub use init::Init;
pub use tensor::Tensor;
