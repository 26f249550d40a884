//! [`NativeExecutor`]: compiled programs behind the runtime's `Executor` contract.
//!
//! One training program (forward, loss, backward; no optimiser update) and one inference
//! program (BN folded into the weights) per batch size `n` that the caller has used, compiled
//! on first use and cached; the full-batch ones are compiled by the constructor so that model
//! errors surface there. Every program runs in the same arena (sized for the largest); when
//! another program ran last, the prepare stage (constants) runs again before the next one.
//! Inference programs run their prepare stage (BN folded into weights) on every `predict`, since
//! the parameters may have changed in between; an `InferenceSession`, which holds them fixed,
//! runs it once per program.

use std::collections::{HashMap, TryReserveError};

use cnnc_runtime::fpenv::FlushDenormals;
use cnnc_runtime::kernels::{reads_kernel_in_place, Ctx, KernelIsa, PackedB};
use cnnc_runtime::pool::Pool;
use cnnc_runtime::{Executor, ModelIo, StepResult, Tensor};

use super::compiled::{Compiled, Loc, Mem, Region};
use super::profile::Profile;
use super::{dispatch, dispatch_gemm, NativeError};
use crate::autodiff::training_graph;
use crate::ir::{rebatch, Graph, LossKind, Mode};
use crate::kernel_ir::{KernelOp, Machine, Program};
use crate::lower::lower;
use crate::model_io::paired_io;
use crate::passes::{compile, PipelineOptions};
use crate::spec::ModelSpec;

/// How the kernels backend compiles and runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NativeOptions {
    /// Threads the kernels use (the calling thread counts as one); 0 is treated as 1.
    pub threads: usize,
    /// Run the kernel fusion passes (off: one kernel per graph node).
    pub fuse: bool,
    /// Inference: fold BN into the preceding conv / dense weights.
    pub fold_bn: bool,
    /// Instruction set of the kernels (`None`: the best this CPU has).
    pub isa: Option<KernelIsa>,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            fuse: true,
            fold_bn: true,
            isa: None,
        }
    }
}

/// 64 bytes of f32s: the arena's unit, so that buffers (64-byte aligned offsets) are aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// The arena every program runs in; grows to the largest program and never shrinks.
#[derive(Default)]
struct Arena(Vec<Line>);

impl Arena {
    /// Grows the arena to at least `len` f32s; an allocation the machine refuses is an error
    /// (naming the size) rather than an abort.
    fn grow(&mut self, len: usize) -> Result<(), TryReserveError> {
        let lines = len.div_ceil(16);
        if self.0.len() < lines {
            self.0.try_reserve_exact(lines - self.0.len())?;
            self.0.resize(lines, Line([0.0; 16]));
        }
        Ok(())
    }

    /// The first `len` f32s; [`Self::grow`] has made room for them.
    fn slice(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        assert!(self.0.len() >= lines, "arena of {} lines, {lines} needed", self.0.len());
        // SAFETY: `Line` is `repr(C)` around `[f32; 16]`, so the vector holds `16 · lines`
        // contiguous initialised f32 values, at least `len`.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<f32>(), len) }
    }
}

/// Base pointers of the parameters and gradients of the running program, rebuilt on every call.
#[derive(Default)]
struct PtrTable(Vec<*mut f32>, Vec<*mut f32>);
// SAFETY: the pointers are only dereferenced during the call that stored them (which borrows
// the parameters); between calls they are stale and unused.
unsafe impl Send for PtrTable {}

/// Compiles and runs a model's training and inference programs with the runtime kernels.
pub struct NativeExecutor {
    train: Graph,
    inference: Graph,
    io: ModelIo,
    opts: NativeOptions,
    machine: Machine,
    pool: Pool,
    isa: KernelIsa,
    train_by_n: HashMap<usize, Compiled>,
    inference_by_n: HashMap<usize, Compiled>,
    arena: Arena,
    workspace: Vec<f32>,
    ptrs: PtrTable,
    /// The program whose prepare stage the arena's persistent buffers hold.
    prepared: Option<(Mode, usize)>,
    profile: Option<Profile>,
}

impl std::fmt::Debug for NativeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeExecutor")
            .field("model", &self.train.name)
            .field("batch", &self.io.batch_size)
            .field("opts", &self.opts)
            .field("machine", &self.machine)
            .finish()
    }
}

impl NativeExecutor {
    /// Differentiates `train_fwd` (a Training-mode forward graph) for `loss`; `inference` must
    /// have the same batch size, input and prediction shapes, and a subset of its parameters
    /// (as `InterpExecutor::new`). Kernels run on `threads` threads.
    pub fn new(
        train_fwd: Graph,
        inference: Graph,
        loss: LossKind,
        from_logits: bool,
        threads: usize,
    ) -> Result<Self, NativeError> {
        let opts = NativeOptions {
            threads,
            ..NativeOptions::default()
        };
        Self::with_options(train_fwd, inference, loss, from_logits, opts)
    }

    /// Lowers `spec` for `batch` samples in both modes, then [`NativeExecutor::new`].
    pub fn from_spec(
        spec: &ModelSpec,
        batch: usize,
        loss: LossKind,
        from_logits: bool,
        threads: usize,
    ) -> Result<Self, NativeError> {
        let train = lower(spec, batch, Mode::Training)?;
        let inference = lower(spec, batch, Mode::Inference)?;
        Self::new(train, inference, loss, from_logits, threads)
    }

    /// [`NativeExecutor::new`] with every option.
    pub fn with_options(
        train_fwd: Graph,
        inference: Graph,
        loss: LossKind,
        from_logits: bool,
        opts: NativeOptions,
    ) -> Result<Self, NativeError> {
        let train = training_graph(&train_fwd, loss, from_logits)?;
        let (io, _) = paired_io(&train, &inference, loss)?;
        let threads = opts.threads.max(1);
        let machine = Machine {
            cores: threads,
            ..Machine::detect()
        };
        let mut ex = NativeExecutor {
            io,
            train,
            inference,
            opts,
            machine,
            pool: Pool::new(threads),
            isa: opts.isa.unwrap_or_else(KernelIsa::detect).checked(),
            train_by_n: HashMap::new(),
            inference_by_n: HashMap::new(),
            arena: Arena::default(),
            workspace: Vec::new(),
            ptrs: PtrTable::default(),
            prepared: None,
            profile: None,
        };
        ex.ensure(Mode::Training, ex.io.batch_size)?;
        ex.ensure(Mode::Inference, ex.io.batch_size)?;
        Ok(ex)
    }

    /// The compiled program for `mode` and `n` samples (compiling it if needed), e.g. to dump it.
    pub fn program(&mut self, mode: Mode, n: usize) -> Result<&Program, NativeError> {
        self.ensure(mode, n)?;
        let cache = match mode {
            Mode::Training => &self.train_by_n,
            Mode::Inference => &self.inference_by_n,
        };
        Ok(&cache[&n].program)
    }

    /// Starts (or stops and forgets) timing every kernel of every run.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Profile::default);
    }

    /// Per-kernel times since profiling started, per program, slowest first.
    pub fn profile_report(&self) -> String {
        let Some(p) = &self.profile else {
            return "profiling is off\n".into();
        };
        p.report(|mode, n| match mode {
            Mode::Training => self.train_by_n.get(&n),
            Mode::Inference => self.inference_by_n.get(&n),
        })
    }

    /// The kernel threads.
    /// Conv kernels held packed for the current inference session (see `update_session_packs`).
    pub fn session_packed_kernels(&self) -> usize {
        let steps = self.inference_by_n.values().flat_map(|c| &c.run);
        steps.filter(|s| s.session_pack.borrow().is_some()).count()
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Compiles the program for `mode` and `n` samples unless cached.
    fn ensure(&mut self, mode: Mode, n: usize) -> Result<(), NativeError> {
        let cached = match mode {
            Mode::Training => self.train_by_n.contains_key(&n),
            Mode::Inference => self.inference_by_n.contains_key(&n),
        };
        if cached {
            return Ok(());
        }
        let g = match mode {
            Mode::Training => &self.train,
            Mode::Inference => &self.inference,
        };
        let g = if n == g.batch {
            g.clone()
        } else {
            rebatch(g, n).map_err(|source| NativeError::Rebatch {
                graph: g.name.clone(),
                n,
                source,
            })?
        };
        let pipeline = PipelineOptions {
            machine: self.machine,
            fold_bn: self.opts.fold_bn,
            fuse: self.opts.fuse,
            update: None,
            ..PipelineOptions::default()
        };
        let graph = g.name.clone();
        let program = compile(g, &pipeline)?;
        let c = Compiled::new(program, &self.io.params, mode == Mode::Training)?;
        let out_of_memory = |what: &'static str, len: usize| NativeError::OutOfMemory {
            graph: graph.clone(),
            n,
            what,
            bytes: len.saturating_mul(4),
        };
        self.arena
            .grow(c.arena_len)
            .map_err(|_| out_of_memory("an arena", c.arena_len))?;
        if self.workspace.len() < c.workspace_len {
            let more = c.workspace_len - self.workspace.len();
            self.workspace
                .try_reserve_exact(more)
                .map_err(|_| out_of_memory("a kernel workspace", c.workspace_len))?;
            self.workspace.resize(c.workspace_len, 0.0);
        }
        match mode {
            Mode::Training => self.train_by_n.insert(n, c),
            Mode::Inference => self.inference_by_n.insert(n, c),
        };
        Ok(())
    }

    /// [`Self::ensure`] for a call of the `Executor` contract: `n` must be in `1..=batch`, and
    /// the full-batch programs compiled in the constructor make a failure a compiler bug.
    fn ensure_for_call(&mut self, mode: Mode, n: usize) {
        assert!(
            (1..=self.io.batch_size).contains(&n),
            "batch of {n} samples, expected 1..={}",
            self.io.batch_size
        );
        if let Err(e) = self.ensure(mode, n) {
            panic!("kernels backend: no program for {n} samples: {e}");
        }
    }

    /// Inference on `n` samples; the prepare stage is skipped when `same_params` and the arena
    /// holds this program's already (see `Executor::predict_in_session`).
    fn infer(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32], same_params: bool) {
        self.ensure_for_call(Mode::Inference, n);
        let c = &self.inference_by_n[&n];
        self.check_call(c, params, x);
        let ptrs = &mut self.ptrs.0;
        ptrs.clear();
        // Inference programs never write parameters (`Compiled::new` with `writable: false`).
        ptrs.extend(c.param_index.iter().map(|&i| params[i].data.as_ptr().cast_mut()));
        let ctx = Ctx::with_isa(&self.pool, self.isa);
        let _ftz = FlushDenormals::new();
        let ws = &mut self.workspace[..];
        let arena = self.arena.slice(c.arena_len);
        // SAFETY: as in `train_step`; the parameters are only read (no output of an inference
        // program lies in a parameter).
        let mem = unsafe { Mem::new(arena, x, &[], ptrs, &c.param_lens, &[], &[]) };
        if !(same_params && self.prepared == Some((Mode::Inference, n))) {
            for s in &c.prepare {
                dispatch::run(s, &mem, &ctx, ws, 0);
            }
        }
        update_session_packs(c, &mem, &ctx, same_params);
        match &mut self.profile {
            Some(p) => p.run((Mode::Inference, n), c, &mem, &ctx, ws, 0),
            None => c.run.iter().for_each(|s| dispatch::run(s, &mem, &ctx, ws, 0)),
        }
        self.prepared = Some((Mode::Inference, n));
        write_preds(&mem, c.prediction, preds);
        self.ptrs.0.clear();
    }

    /// Panics unless `params` and the input `x` have the sizes program `c` was compiled for.
    fn check_call(&self, c: &Compiled, params: &[Tensor], x: &[f32]) {
        self.check_params(c, params);
        assert_eq!(
            x.len(),
            c.input_len,
            "input holds {} values, expected {}",
            x.len(),
            c.input_len
        );
    }

    fn check_params(&self, c: &Compiled, params: &[Tensor]) {
        assert_eq!(
            params.len(),
            self.io.params.len(),
            "expected {} parameters",
            self.io.params.len()
        );
        for (&idx, &len) in c.param_index.iter().zip(&c.param_lens) {
            assert_eq!(
                params[idx].data.len(),
                len,
                "parameter '{}' holds {} values, expected {len}",
                self.io.params[idx].name,
                params[idx].data.len()
            );
        }
    }
}

/// Within an inference session (`same_params`, the second call on), packs once the kernels of
/// the convs that would read them in place on every call (`reads_kernel_in_place`: batch-1
/// ResNet18's 4×4×512 layers, 9.4 MB 2 KB-strided rows each), so that later calls stream them
/// contiguously; outside a session (a plain `predict`, or a session's first call) drops them,
/// since the parameters may have changed. The packs are a second copy of those weights, kept
/// until the next call outside a session.
fn update_session_packs(c: &Compiled, mem: &Mem, ctx: &Ctx, same_params: bool) {
    for s in &c.run {
        let KernelOp::Conv2d { geom, epilogue, .. } = &s.op else {
            continue;
        };
        let mut pack = s.session_pack.borrow_mut();
        if !same_params {
            *pack = None;
            continue;
        }
        let g = dispatch_gemm::conv_geom(geom);
        // (A conv with a fused max-pool takes another kernel, which reads `w` itself.)
        if pack.is_none() && epilogue.max_pool.is_none() && reads_kernel_in_place(ctx.isa, &g) {
            let mut p = PackedB::new();
            p.pack_on(ctx.pool, ctx.isa, g.k(), g.f, mem.get(s.ins[1]), false);
            *pack = Some(p);
        }
    }
}

/// Copies the `n` predictions at `loc` into `preds`.
fn write_preds(mem: &Mem, loc: Loc, preds: &mut [f32]) {
    let p = mem.get(loc);
    assert!(
        preds.len() >= p.len(),
        "predictions need {} values, got {}",
        p.len(),
        preds.len()
    );
    preds[..p.len()].copy_from_slice(p);
}

impl Executor for NativeExecutor {
    fn backend_name(&self) -> &str {
        "kernels"
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
        self.ensure_for_call(Mode::Training, n);
        let c = &self.train_by_n[&n];
        self.check_call(c, params, x);
        assert_eq!(
            y.len(),
            c.target_len,
            "targets hold {} values, expected {}",
            y.len(),
            c.target_len
        );
        let trainable = self.io.params.iter().filter(|p| p.trainable);
        assert_eq!(
            grads.len(),
            trainable.clone().count(),
            "one gradient per trainable parameter"
        );
        for (g, spec) in grads.iter_mut().zip(trainable) {
            if g.shape != spec.shape || g.data.len() != spec.shape.iter().product::<usize>() {
                *g = Tensor::zeros(&spec.shape);
            }
        }
        let PtrTable(ptrs, gptrs) = &mut self.ptrs;
        ptrs.clear();
        ptrs.extend(c.param_index.iter().map(|&i| params[i].data.as_mut_ptr()));
        gptrs.clear();
        gptrs.extend(grads.iter_mut().map(|g| g.data.as_mut_ptr()));
        let ctx = Ctx::with_isa(&self.pool, self.isa);
        let _ftz = FlushDenormals::new();
        let ws = &mut self.workspace[..];
        let arena = self.arena.slice(c.arena_len);
        // SAFETY: the arena, input, target, every parameter and every gradient are distinct
        // allocations valid for this call; parameters and gradients are borrowed mutably
        // (`writable` training programs) and have the lengths checked above.
        let mem = unsafe { Mem::new(arena, x, y, ptrs, &c.param_lens, gptrs, &c.grad_lens) };
        if self.prepared != Some((Mode::Training, n)) {
            for s in &c.prepare {
                dispatch::run(s, &mem, &ctx, ws, step);
            }
            self.prepared = Some((Mode::Training, n));
        }
        match &mut self.profile {
            Some(p) => p.run((Mode::Training, n), c, &mem, &ctx, ws, step),
            None => c.run.iter().for_each(|s| dispatch::run(s, &mem, &ctx, ws, step)),
        }
        write_preds(&mem, c.prediction, preds);
        let loss = c.loss.map_or(f32::NAN, |l| mem.get(l)[0]);
        for &(j, loc) in &c.grads {
            let dst = Loc {
                region: Region::Grad(j),
                start: 0,
                len: c.grad_lens[j],
            };
            mem.get_mut(dst).copy_from_slice(mem.get(loc));
        }
        for &(slot, loc) in &c.state {
            let dst = Loc {
                region: Region::Param(slot),
                start: 0,
                len: c.param_lens[slot],
            };
            mem.get_mut(dst).copy_from_slice(mem.get(loc));
        }
        self.ptrs.0.clear();
        self.ptrs.1.clear();
        StepResult { loss }
    }

    fn predict(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32]) {
        self.infer(params, x, n, preds, false)
    }

    /// With `same_params`, the prepare stage (BN folded into the weights) is skipped when the
    /// arena still holds this program's: nothing but this session ran since it was computed
    /// from these very parameters.
    fn predict_in_session(&mut self, params: &[Tensor], x: &[f32], n: usize, preds: &mut [f32], same_params: bool) {
        self.infer(params, x, n, preds, same_params)
    }

    fn pool(&self) -> Option<&Pool> {
        Some(&self.pool)
    }

    fn set_profiling(&mut self, on: bool) -> bool {
        NativeExecutor::set_profiling(self, on);
        true
    }

    fn profile_report(&self) -> Option<String> {
        self.profile.is_some().then(|| NativeExecutor::profile_report(self))
    }
}
