//! [`CrateExecutor`]: the generated crate behind the runtime's `Executor` contract.
//!
//! Each library is compiled for one batch size: the full batch's is built (or found in the
//! cache) by the constructor, and one for any other `n` (the last batch of an epoch, a short
//! prediction) on its first call, so that batch statistics and the loss's mean only ever see
//! real samples. A training library also predicts; for inference alone a lighter inference-only
//! crate is built. The `Executor` methods cannot return errors, so a failure there (a lazy
//! build that fails, a library refusing a call) panics with the model's name and the cause;
//! [`CrateOptions::prebuild`] moves the builds a caller can foresee into the constructor.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use cnnc_runtime::{Executor, ModelIo, ParamSpec, StepResult, TargetLayout, Tensor};

use super::abi::{Library, Sizes};
use super::cache::{default_cache_dir, Cache};
use super::CrateBackendError;
use crate::codegen::{generate, package_name, CodegenOptions};
use crate::ir::{LossKind, Mode};
use crate::kernel_ir::Machine;
use crate::lower::lower;
use crate::model_io::model_io;
use crate::spec::ModelSpec;

/// What a library is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Training and inference programs.
    Training,
    /// The inference program only (quicker to build).
    Inference,
}

/// How the native backend builds and where it caches.
#[derive(Clone, Debug)]
pub struct CrateOptions {
    /// The cache directory (`None`: [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// What the constructor builds the full batch's library for.
    pub purpose: Purpose,
    /// More libraries the constructor builds: (samples per call, purpose).
    pub prebuild: Vec<(usize, Purpose)>,
    /// Print a line to stderr before each cargo run (a first build takes a while).
    pub announce: bool,
    /// Threads the generated kernels split their work across (compiled into each library).
    pub threads: usize,
}

impl Default for CrateOptions {
    fn default() -> Self {
        CrateOptions {
            cache_dir: None,
            purpose: Purpose::Training,
            prebuild: Vec::new(),
            announce: false,
            threads: 1,
        }
    }
}

/// One library the executor obtained.
#[derive(Clone, Debug)]
pub struct BuildRecord {
    pub n: usize,
    pub purpose: Purpose,
    /// Generating, building (or finding) and loading it.
    pub seconds: f64,
    /// Found in the cache: no cargo run.
    pub cached: bool,
    pub library: PathBuf,
}

/// Runs a model through its generated crate, built and cached per batch size.
pub struct CrateExecutor {
    spec: ModelSpec,
    io: ModelIo,
    loss: LossKind,
    from_logits: bool,
    machine: Machine,
    /// Threads the libraries are generated for.
    threads: usize,
    cache: Cache,
    announce: bool,
    libs: HashMap<(usize, Purpose), Library>,
    builds: Vec<BuildRecord>,
    /// The parameters and gradients flat, as the library's training entry takes them
    /// (inference reads the tensors in place).
    flat_params: Vec<f32>,
    flat_grads: Vec<f32>,
    /// Libraries whose arena holds the load-time results (folded weights) of the current
    /// inference session's parameters: their next session call skips those kernels.
    session_libs: HashSet<(usize, Purpose)>,
}

impl std::fmt::Debug for CrateExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrateExecutor")
            .field("model", &self.spec.name)
            .field("batch", &self.io.batch_size)
            .field("cache", &self.cache.root())
            .finish()
    }
}

impl CrateExecutor {
    /// Builds (or finds in the cache) and loads the libraries `opts` asks for, for up to
    /// `batch` samples per call, training with `loss`.
    pub fn new(
        spec: &ModelSpec,
        batch: usize,
        loss: LossKind,
        from_logits: bool,
        opts: CrateOptions,
    ) -> Result<Self, CrateBackendError> {
        let model = spec.name.clone();
        let compile_err = |source| CrateBackendError::Compile {
            model: model.clone(),
            source: Box::new(source),
        };
        if batch == 0 {
            return Err(CrateBackendError::Call {
                model,
                msg: "the batch size must be at least 1".into(),
            });
        }
        let root = match opts.cache_dir.clone().or_else(default_cache_dir) {
            Some(r) => r,
            None => return Err(CrateBackendError::NoCacheDir { model }),
        };
        // The generated crate's parameter layout is the training graph's parameter order.
        let g = lower(spec, batch, Mode::Training).map_err(compile_err)?;
        let Some(io) = model_io(&g, loss) else {
            return Err(CrateBackendError::Call {
                model,
                msg: "the graph has no input or prediction".into(),
            });
        };
        let mut ex = CrateExecutor {
            spec: spec.clone(),
            io,
            loss,
            from_logits,
            // Tiles for one thread: the generated kernels split by samples or bands (`threads`).
            machine: Machine {
                cores: 1,
                ..Machine::detect()
            },
            threads: opts.threads.max(1),
            cache: Cache::new(root),
            announce: opts.announce,
            libs: HashMap::new(),
            builds: Vec::new(),
            flat_params: Vec::new(),
            flat_grads: Vec::new(),
            session_libs: HashSet::new(),
        };
        ex.prepare(batch, opts.purpose)?;
        for &(n, purpose) in &opts.prebuild {
            ex.prepare(n, purpose)?;
        }
        Ok(ex)
    }

    /// The cache in use.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Every library obtained so far, in order.
    pub fn builds(&self) -> &[BuildRecord] {
        &self.builds
    }

    /// Builds (or finds) and loads the library for `n` samples per call and `purpose`, unless
    /// one that serves it is loaded. `n` must be in `1..=batch_size()`.
    pub fn prepare(&mut self, n: usize, purpose: Purpose) -> Result<(), CrateBackendError> {
        if self.loaded(n, purpose).is_some() {
            return Ok(());
        }
        let model = self.spec.name.clone();
        if !(1..=self.io.batch_size).contains(&n) {
            return Err(CrateBackendError::Call {
                model,
                msg: format!("a batch of {n} samples, expected 1..={}", self.io.batch_size),
            });
        }
        let started = Instant::now();
        let training = purpose == Purpose::Training;
        let mut opts = CodegenOptions::new(&self.spec, n);
        opts.training = training;
        opts.loss = self.loss;
        opts.from_logits = self.from_logits;
        // Gradients only: the runtime applies the optimiser.
        opts.update = None;
        opts.machine = self.machine;
        opts.threads = self.threads;
        opts.rustfmt = false;
        opts.c_abi = true;
        let base = format!("cnnc_{}", package_name(&model));
        opts.package = Some(base.clone());
        let codegen_err = |source| CrateBackendError::Codegen {
            model: model.clone(),
            source: Box::new(source),
        };
        let mut krate = generate(&self.spec, &opts).map_err(codegen_err)?;
        let key = self.cache.key(&model, &krate, &format!("{opts:?}"))?;
        // Unique per key: every build shares one target directory.
        krate.rename_package(&format!("{base}_{}", &key[..16]));
        let announce = self.announce;
        let dir = self.cache.source_dir(&key);
        let entry = self.cache.get_or_build(&model, &key, &krate, || {
            if announce {
                eprintln!(
                    "{model}: building the generated crate for batches of {n} ({}) in {} (first run only; cached after)",
                    if training { "training" } else { "inference" },
                    dir.display()
                );
            }
        })?;
        let expected = self.sizes(n, training);
        let lib = Library::open(&entry.library, &expected).map_err(|msg| CrateBackendError::Load {
            model: model.clone(),
            path: entry.library.clone(),
            msg,
        })?;
        self.libs.insert((n, purpose), lib);
        self.builds.push(BuildRecord {
            n,
            purpose,
            seconds: started.elapsed().as_secs_f64(),
            cached: entry.hit,
            library: entry.library,
        });
        Ok(())
    }

    /// The loaded library that serves `n` samples for `purpose` (a training library also
    /// predicts).
    fn loaded(&self, n: usize, purpose: Purpose) -> Option<(usize, Purpose)> {
        let candidates: &[Purpose] = match purpose {
            Purpose::Training => &[Purpose::Training],
            Purpose::Inference => &[Purpose::Inference, Purpose::Training],
        };
        candidates.iter().map(|&p| (n, p)).find(|k| self.libs.contains_key(k))
    }

    /// What a library for `n` samples must report.
    fn sizes(&self, n: usize, training: bool) -> Sizes {
        let numel = |s: &ParamSpec| s.shape.iter().product::<usize>();
        let outputs = n * self.io.output_size;
        Sizes {
            batch: n,
            input: n * self.io.input_shape.iter().product::<usize>(),
            output: outputs,
            target: match (training, self.io.target_layout) {
                (false, _) => 0,
                (true, TargetLayout::ClassIds) => n,
                (true, TargetLayout::Dense) => outputs,
            },
            params: self.io.params.iter().map(numel).sum(),
            grads: if training {
                self.io.params.iter().filter(|p| p.trainable).map(numel).sum()
            } else {
                0
            },
            arena: 0,
            training,
            param_tensors: self.io.params.len(),
        }
    }

    /// The start of an `Executor` call (which has no error channel: panics on failure): the
    /// library for `n` samples, loaded, and `params` checked against the model's. Returns the
    /// library's key and the number of predictions, checked against `preds`.
    fn begin_call(&mut self, n: usize, purpose: Purpose, params: &[Tensor], preds: usize) -> ((usize, Purpose), usize) {
        if let Err(e) = self.prepare(n, purpose) {
            panic!("native backend: {e}");
        }
        let key = self.loaded(n, purpose).expect("prepared above");
        self.check_params(params);
        let out = n * self.io.output_size;
        assert!(
            preds >= out,
            "native backend: predictions need {out} values, got {preds}"
        );
        (key, out)
    }

    fn check_params(&self, params: &[Tensor]) {
        assert_eq!(
            params.len(),
            self.io.params.len(),
            "native backend, model '{}': expected {} parameters",
            self.spec.name,
            self.io.params.len()
        );
        for (p, s) in params.iter().zip(&self.io.params) {
            assert_eq!(
                p.data.len(),
                s.shape.iter().product::<usize>(),
                "native backend, model '{}': parameter '{}' has the wrong size",
                self.spec.name,
                s.name
            );
        }
    }
}

impl Executor for CrateExecutor {
    fn backend_name(&self) -> &str {
        "native"
    }

    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn train_step(
        &mut self,
        params: &mut [Tensor],
        grads: &mut [Tensor],
        x: &[f32],
        y: &[f32],
        n: usize,
        step: u64,
        preds: &mut [f32],
    ) -> StepResult {
        let (key, out) = self.begin_call(n, Purpose::Training, params, preds.len());
        self.session_libs.clear();
        self.flat_params.clear();
        for p in params.iter() {
            self.flat_params.extend_from_slice(&p.data);
        }
        let lib = self.libs.get_mut(&key).expect("loaded");
        self.flat_grads.resize(lib.sizes().grads, 0.0);
        let loss = lib
            .gradients(
                &mut self.flat_params,
                x,
                y,
                step,
                &mut self.flat_grads,
                &mut preds[..out],
            )
            .unwrap_or_else(|e| panic!("native backend, model '{}': {e}", self.spec.name));
        // Non-trainable parameters (moving statistics) come back updated.
        let mut at = 0;
        let trainable = self.io.params.iter().filter(|s| s.trainable);
        assert_eq!(
            grads.len(),
            trainable.clone().count(),
            "one gradient per trainable parameter"
        );
        for (p, s) in params.iter_mut().zip(&self.io.params) {
            let len = p.data.len();
            if !s.trainable {
                p.data.copy_from_slice(&self.flat_params[at..at + len]);
            }
            at += len;
        }
        let mut at = 0;
        for (g, s) in grads.iter_mut().zip(trainable) {
            let len = s.shape.iter().product::<usize>();
            if g.shape != s.shape || g.data.len() != len {
                *g = Tensor::zeros(&s.shape);
            }
            g.data.copy_from_slice(&self.flat_grads[at..at + len]);
            at += len;
        }
        StepResult { loss }
    }

    fn predict(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32]) {
        self.session_libs.clear();
        self.run_predict(params, x, n, preds, false);
    }

    fn predict_in_session(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32], same_params: bool) {
        if !same_params {
            self.session_libs.clear();
        }
        self.run_predict(params, x, n, preds, true);
    }
}

impl CrateExecutor {
    /// Inference through the library for `n` samples; in a session (`session`), its load-time
    /// kernels are skipped when it already ran them on this session's parameters.
    fn run_predict(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32], session: bool) {
        let (key, out) = self.begin_call(n, Purpose::Inference, params, preds.len());
        let reuse = session && self.session_libs.contains(&key);
        let lib = self.libs.get_mut(&key).expect("loaded");
        lib.predict(params.iter().map(|p| &p.data[..]), x, &mut preds[..out], reuse)
            .unwrap_or_else(|e| panic!("native backend, model '{}': {e}", self.spec.name));
        if session {
            self.session_libs.insert(key);
        }
    }
}
