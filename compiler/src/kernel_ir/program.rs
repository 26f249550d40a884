//! A [`Program`]: typed buffers, the ordered kernels that read and write them, the program's
//! outputs, and (after planning) every arena buffer's offset.
//!
//! Storage (see [`Storage`]): the input, the target and the parameters are *bound* — separate
//! regions the caller passes to every run (the runtime owns parameters; their order is
//! [`Program::bindings`]). Everything else lives in ONE arena: *persistent* buffers (graph
//! constants, load-time folded weights, optimiser state) keep their value across runs;
//! *transient* ones (activations, activations saved for backward, gradients, scratch) live
//! from their first to their last use and share memory. Views (a `Reshape`) alias their base.

use std::fmt;

use crate::ir::{Mode, ParamRole, Shape};

use super::kernel::{Kernel, KernelOp, Stage};
use super::machine::Machine;
use super::schedule::{self, ALIGN};

/// Index of a buffer in [`Program::buffers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

impl BufId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BufId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Raw bytes (scratch).
    U8,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::U8 => 1,
        }
    }
}

/// What a buffer holds; decides its [`Storage`].
#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    Input,
    Target,
    /// A parameter (`name` is its Keras name); bound, in graph order.
    Param {
        name: String,
        role: ParamRole,
        trainable: bool,
    },
    /// A graph constant, filled once by a `fill` kernel in the prepare stage.
    Constant(f32),
    /// Computed once from parameters at weight-load time (e.g. BN folded into conv weights).
    Prepared,
    /// Optimiser state of a parameter (zero-initialised by the runtime when training starts).
    OptState {
        param: BufId,
        slot: &'static str,
    },
    /// A forward value no backward kernel reads.
    Temp,
    /// A forward value a backward kernel reads: kept alive across the loss into backward.
    Saved,
    /// A value of the backward pass.
    Grad,
    /// A kernel's workspace, laid out by `schedule::scratch_layout`.
    Scratch,
    /// Another buffer's memory under a different shape (a `Reshape`).
    View {
        of: BufId,
    },
}

/// Where a buffer's memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// Passed in by the caller on every run.
    Bound,
    /// Arena memory that keeps its value across runs; never shared.
    Persistent,
    /// Arena memory live from first to last use within one run; shared when lifetimes allow.
    Transient,
    /// No memory of its own.
    Alias,
}

impl BufKind {
    pub fn storage(&self) -> Storage {
        match self {
            BufKind::Input | BufKind::Target | BufKind::Param { .. } => Storage::Bound,
            BufKind::Constant(_) | BufKind::Prepared | BufKind::OptState { .. } => Storage::Persistent,
            BufKind::Temp | BufKind::Saved | BufKind::Grad | BufKind::Scratch => Storage::Transient,
            BufKind::View { .. } => Storage::Alias,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            BufKind::Input => "input",
            BufKind::Target => "target",
            BufKind::Param { .. } => "param",
            BufKind::Constant(_) => "const",
            BufKind::Prepared => "prepared",
            BufKind::OptState { .. } => "opt_state",
            BufKind::Temp => "temp",
            BufKind::Saved => "saved",
            BufKind::Grad => "grad",
            BufKind::Scratch => "scratch",
            BufKind::View { .. } => "view",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// Where the value comes from (the layer, parameter or kernel), for dumps and errors.
    pub name: String,
    pub kind: BufKind,
    pub shape: Shape,
    pub dtype: DType,
    /// Byte offset in the arena; set by `plan` for persistent and transient buffers.
    pub offset: Option<usize>,
}

impl Buffer {
    pub fn new(name: impl Into<String>, kind: BufKind, shape: Shape) -> Self {
        let dtype = if kind == BufKind::Scratch {
            DType::U8
        } else {
            DType::F32
        };
        Buffer {
            name: name.into(),
            kind,
            shape,
            dtype,
            offset: None,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    pub fn bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Bytes the buffer takes in the arena (rounded up to the 64-byte alignment).
    pub fn arena_bytes(&self) -> usize {
        self.bytes().div_ceil(ALIGN) * ALIGN
    }
}

/// What a program output is for (the graph's output roles, on buffers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutRole {
    Prediction,
    Loss,
    Gradient {
        param: BufId,
    },
    /// The new value of a non-trainable parameter (BN moving statistics); when the buffer is
    /// the parameter itself, the program updated it in place.
    StateUpdate {
        param: BufId,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub role: OutRole,
    pub buf: BufId,
}

/// The lowered model. Every run receives the bindings, the arena and the 1-based step number
/// (for dropout masks and Adam's bias correction) and runs its non-prepare kernels in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub name: String,
    pub batch: usize,
    pub mode: Mode,
    pub machine: Machine,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub outputs: Vec<Output>,
    /// Arena size in bytes; 0 until `plan` has run.
    pub arena_size: usize,
}

/// Readers and writers of every buffer, by kernel index; a view's uses count as its base's.
#[derive(Clone, Debug, Default)]
pub struct Uses {
    pub readers: Vec<Vec<usize>>,
    pub writers: Vec<Vec<usize>>,
    /// Whether the buffer (or a view of it) is a program output.
    pub is_output: Vec<bool>,
}

impl Uses {
    /// The single kernel reading `b`, if exactly one does and `b` is not a program output.
    pub fn sole_reader(&self, b: BufId) -> Option<usize> {
        match self.readers[b.index()].as_slice() {
            [k] if !self.is_output[b.index()] => Some(*k),
            _ => None,
        }
    }

    /// The single kernel writing `b`.
    pub fn producer(&self, b: BufId) -> Option<usize> {
        match self.writers[b.index()].as_slice() {
            [k] => Some(*k),
            _ => None,
        }
    }
}

thread_local! {
    static USES_BUILT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many times [`Program::uses`] has run on this thread: a test's handle on the passes'
/// cost, which must not grow with the number of kernels (per thread, so that tests running
/// side by side do not count each other's builds).
pub fn uses_built() -> usize {
    USES_BUILT.with(|c| c.get())
}

impl Program {
    pub fn new(name: impl Into<String>, batch: usize, mode: Mode, machine: Machine) -> Self {
        Program {
            name: name.into(),
            batch,
            mode,
            machine,
            buffers: Vec::new(),
            kernels: Vec::new(),
            outputs: Vec::new(),
            arena_size: 0,
        }
    }

    pub fn buffer(&self, id: BufId) -> &Buffer {
        &self.buffers[id.index()]
    }

    pub fn add_buffer(&mut self, b: Buffer) -> BufId {
        self.buffers.push(b);
        BufId(self.buffers.len() as u32 - 1)
    }

    /// The buffer owning `id`'s memory (itself unless a view).
    pub fn base(&self, id: BufId) -> BufId {
        match self.buffer(id).kind {
            BufKind::View { of } => self.base(of),
            _ => id,
        }
    }

    /// The arena size in bytes (0 before planning).
    pub fn arena_bytes(&self) -> usize {
        self.arena_size
    }

    /// Parameter buffers in graph order.
    pub fn params(&self) -> Vec<BufId> {
        self.ids()
            .filter(|&b| matches!(self.buffer(b).kind, BufKind::Param { .. }))
            .collect()
    }

    /// Bound buffers in the order a caller passes them: input, target (training), parameters.
    pub fn bindings(&self) -> Vec<BufId> {
        let find = |k: BufKind| self.ids().find(|&b| self.buffer(b).kind == k);
        let mut v: Vec<BufId> = [find(BufKind::Input), find(BufKind::Target)]
            .into_iter()
            .flatten()
            .collect();
        v.extend(self.params());
        v
    }

    pub fn ids(&self) -> impl Iterator<Item = BufId> + '_ {
        (0..self.buffers.len() as u32).map(BufId)
    }

    pub fn output(&self, role: OutRole) -> Option<BufId> {
        self.outputs.iter().find(|o| o.role == role).map(|o| o.buf)
    }

    /// Kernels run on every call (all but the prepare stage).
    pub fn run_kernels(&self) -> usize {
        self.kernels.iter().filter(|k| k.stage != Stage::Prepare).count()
    }

    pub fn stage_kernels(&self, stage: Stage) -> usize {
        self.kernels.iter().filter(|k| k.stage == stage).count()
    }

    /// Readers and writers of every buffer, attributed to base buffers. This walks every
    /// kernel: passes build it once and keep it up to date (see `passes::fusion`), rather
    /// than calling it per kernel, which made deep models compile in quadratic time.
    pub fn uses(&self) -> Uses {
        USES_BUILT.with(|c| c.set(c.get() + 1));
        let n = self.buffers.len();
        let mut u = Uses {
            readers: vec![Vec::new(); n],
            writers: vec![Vec::new(); n],
            is_output: vec![false; n],
        };
        for (i, k) in self.kernels.iter().enumerate() {
            for &b in &k.inputs {
                u.readers[self.base(b).index()].push(i);
            }
            for &b in k.outputs.iter().chain(&k.scratch) {
                u.writers[self.base(b).index()].push(i);
            }
        }
        for o in &self.outputs {
            u.is_output[self.base(o.buf).index()] = true;
        }
        u
    }

    /// A kernel for `op` with the machine's schedule for it and a fresh scratch buffer when
    /// the schedule needs workspace.
    pub fn make_kernel(
        &mut self,
        op: KernelOp,
        inputs: Vec<BufId>,
        outputs: Vec<BufId>,
        stage: Stage,
        origin: Vec<String>,
    ) -> Kernel {
        let schedule = schedule::choose(&op, &self.machine);
        let bytes = schedule::scratch_layout(&op, &schedule).total;
        let scratch = (bytes > 0).then(|| {
            let name = format!("{}.scratch", op.mnemonic());
            self.add_buffer(Buffer::new(name, BufKind::Scratch, Shape(vec![bytes])))
        });
        Kernel {
            op,
            inputs,
            outputs,
            scratch,
            schedule,
            stage,
            origin,
        }
    }

    /// Whether every buffer in `bufs` is available before kernel `at` runs: bound, or written
    /// only by earlier kernels.
    pub fn ready_before(&self, uses: &Uses, bufs: &[BufId], at: usize) -> bool {
        bufs.iter().all(|&b| {
            let base = self.base(b);
            self.buffer(base).kind.storage() == Storage::Bound
                || (!uses.writers[base.index()].is_empty() && uses.writers[base.index()].iter().all(|&w| w < at))
        })
    }

    /// Drops buffers nothing refers to (left behind by fusion) and renumbers the rest.
    /// Bound buffers always stay: they are the program's calling convention.
    pub fn compact(&mut self) {
        let n = self.buffers.len();
        let mut used = vec![false; n];
        // Marks a buffer and what it depends on (a view's base, a state slot's parameter).
        fn mark(p: &Program, used: &mut [bool], mut b: BufId) {
            loop {
                used[b.index()] = true;
                match p.buffer(b).kind {
                    BufKind::View { of } => b = of,
                    BufKind::OptState { param, .. } => b = param,
                    _ => break,
                }
            }
        }
        for k in &self.kernels {
            for &b in k.inputs.iter().chain(&k.outputs).chain(&k.scratch) {
                mark(self, &mut used, b);
            }
        }
        for o in &self.outputs {
            mark(self, &mut used, o.buf);
            if let OutRole::Gradient { param } | OutRole::StateUpdate { param } = o.role {
                mark(self, &mut used, param);
            }
        }
        for (i, b) in self.buffers.iter().enumerate() {
            if b.kind.storage() == Storage::Bound {
                used[i] = true;
            }
        }
        let mut remap = vec![None; n];
        let mut kept = Vec::new();
        for (i, b) in std::mem::take(&mut self.buffers).into_iter().enumerate() {
            if used[i] {
                remap[i] = Some(BufId(kept.len() as u32));
                kept.push(b);
            }
        }
        let r = |b: BufId| remap[b.index()].unwrap_or(b);
        for b in &mut kept {
            match &mut b.kind {
                BufKind::View { of } => *of = r(*of),
                BufKind::OptState { param, .. } => *param = r(*param),
                _ => {}
            }
        }
        for k in &mut self.kernels {
            for b in k
                .inputs
                .iter_mut()
                .chain(k.outputs.iter_mut())
                .chain(k.scratch.iter_mut())
            {
                *b = r(*b);
            }
        }
        for o in &mut self.outputs {
            o.buf = r(o.buf);
            if let OutRole::Gradient { param } | OutRole::StateUpdate { param } = &mut o.role {
                *param = r(*param);
            }
        }
        self.buffers = kept;
    }
}
