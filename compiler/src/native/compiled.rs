//! A planned program bound to memory: every operand of every kernel resolved to a [`Loc`] — a
//! range of the arena (offsets from the planner) or of a caller-bound region (the input, the
//! target, a parameter) — and checked once, when the program is loaded:
//!
//! - every operand has the element count its template expects and lies inside its region;
//! - no output overlaps another operand of its kernel (the only in-place kernel is a moving
//!   average whose input and output are the same parameter, which its dispatch handles);
//! - only moving averages and optimiser updates write parameters, and only when the caller
//!   lends them mutably (training); nothing writes the input or the target.
//!
//! These checks are what make [`Mem`]'s raw-pointer slices sound.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;

use cnnc_runtime::kernels::PackedB;
use cnnc_runtime::ParamSpec;

use super::dispatch;
use super::NativeError;
use crate::kernel_ir::{BufId, BufKind, KernelOp, OutRole, Program, Stage, Storage};

/// Which memory a buffer lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Region {
    Arena,
    Input,
    Target,
    /// A parameter, by its position in the program's bindings (`Program::params()` order).
    Param(usize),
    /// The caller's gradient tensor of a trainable parameter, by its position among them.
    Grad(usize),
}

/// A buffer's memory: `len` f32 values from f32 index `start` of its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Loc {
    pub region: Region,
    pub start: usize,
    pub len: usize,
}

impl Loc {
    fn overlaps(&self, o: &Loc) -> bool {
        self.region == o.region
            && self.len > 0
            && o.len > 0
            && self.start < o.start + o.len
            && o.start < self.start + self.len
    }
}

/// One kernel with its operands resolved.
#[derive(Clone, Debug)]
pub(super) struct Step {
    pub op: KernelOp,
    pub ins: Vec<Loc>,
    pub outs: Vec<Loc>,
    /// Index of the (first) kernel in the program.
    pub kernel: usize,
    /// Within an inference session, the conv kernel packed once, for a conv that would read it
    /// in place on every call (see `NativeExecutor::infer`); `None` otherwise.
    pub session_pack: RefCell<Option<PackedB>>,
}

/// A program ready to run: its steps, what it needs from the caller and where its outputs are.
#[derive(Debug)]
pub(super) struct Compiled {
    pub program: Program,
    /// Kernels of the prepare stage (constants, BN folded into weights), then the others.
    pub prepare: Vec<Step>,
    pub run: Vec<Step>,
    /// Arena and workspace sizes in f32 values.
    pub arena_len: usize,
    pub workspace_len: usize,
    /// Per bound parameter: its index in the executor's parameter list, and its length.
    pub param_index: Vec<usize>,
    pub param_lens: Vec<usize>,
    pub input_len: usize,
    pub target_len: usize,
    pub prediction: Loc,
    pub loss: Option<Loc>,
    /// Per trainable parameter (the caller's `grads` order), its length.
    pub grad_lens: Vec<usize>,
    /// (position among the trainable parameters, gradient) per gradient output the kernels do
    /// not write directly into the caller's tensor (those live in `Region::Grad`).
    pub grads: Vec<(usize, Loc)>,
    /// (bound parameter slot, new value) per state update not done in place.
    pub state: Vec<(usize, Loc)>,
}

fn mismatch(p: &Program, msg: String) -> NativeError {
    NativeError::Mismatch(format!("program '{}': {msg}", p.name))
}

impl Compiled {
    /// Binds `program`'s parameters to `params` (the executor's list) by name. `writable`:
    /// whether the caller lends parameters mutably (training), allowing in-place state updates.
    pub fn new(program: Program, params: &[ParamSpec], writable: bool) -> Result<Compiled, NativeError> {
        let p = &program;
        let bound = p.params();
        let mut slot_of: HashMap<BufId, usize> = HashMap::new();
        let (mut param_index, mut param_lens) = (Vec::new(), Vec::new());
        for (slot, &b) in bound.iter().enumerate() {
            let buf = p.buffer(b);
            let BufKind::Param { name, .. } = &buf.kind else {
                continue;
            };
            let idx = params
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| mismatch(p, format!("parameter '{name}' is unknown")))?;
            if params[idx].shape != buf.shape.0 {
                return Err(mismatch(
                    p,
                    format!(
                        "parameter '{name}' is {:?}, the executor has {:?}",
                        buf.shape.0, params[idx].shape
                    ),
                ));
            }
            slot_of.insert(b, slot);
            param_index.push(idx);
            param_lens.push(buf.numel());
        }
        let size_of = |kind: &BufKind| p.buffers.iter().find(|b| &b.kind == kind).map_or(0, |b| b.numel());
        let (input_len, target_len) = (size_of(&BufKind::Input), size_of(&BufKind::Target));
        let arena_len = p.arena_size.div_ceil(4);
        let trainable: Vec<usize> = (0..params.len()).filter(|&i| params[i].trainable).collect();
        let grad_lens: Vec<usize> = trainable.iter().map(|&i| params[i].shape.iter().product()).collect();
        let direct = if writable {
            direct_grads(p, &slot_of, &param_index, &trainable)
        } else {
            HashMap::new()
        };
        let locate = |b: BufId| -> Result<Loc, NativeError> {
            let base = p.base(b);
            let buf = p.buffer(base);
            let len = p.buffer(b).numel();
            let (region, start, cap) = match (&buf.kind, buf.kind.storage()) {
                _ if direct.contains_key(&base) => {
                    let j = direct[&base];
                    (Region::Grad(j), 0, grad_lens[j])
                }
                (BufKind::Input, _) => (Region::Input, 0, input_len),
                (BufKind::Target, _) => (Region::Target, 0, target_len),
                (BufKind::Param { .. }, _) => {
                    let slot = slot_of[&base];
                    (Region::Param(slot), 0, param_lens[slot])
                }
                (_, Storage::Persistent | Storage::Transient) => {
                    let off = buf
                        .offset
                        .ok_or_else(|| mismatch(p, format!("buffer {base} ({}) has no arena offset", buf.name)))?;
                    if !off.is_multiple_of(4) {
                        return Err(mismatch(p, format!("buffer {base} is not f32-aligned")));
                    }
                    (Region::Arena, off / 4, arena_len)
                }
                _ => return Err(mismatch(p, format!("buffer {base} ({}) has no memory", buf.name))),
            };
            if start + len > cap {
                return Err(mismatch(
                    p,
                    format!("buffer {b} ({}) does not fit its region", p.buffer(b).name),
                ));
            }
            Ok(Loc { region, start, len })
        };

        let (mut prepare, mut run) = (Vec::new(), Vec::new());
        let mut workspace_len = 0;
        for (i, k) in p.kernels.iter().enumerate() {
            let unsupported = |msg: String| NativeError::Unsupported {
                program: p.name.clone(),
                kernel: i,
                op: k.op.mnemonic(),
                msg,
            };
            let ins = k.inputs.iter().map(|&b| locate(b)).collect::<Result<Vec<_>, _>>()?;
            let outs = k.outputs.iter().map(|&b| locate(b)).collect::<Result<Vec<_>, _>>()?;
            let (want_in, want_out) = k.op.operand_sizes();
            let lens = |v: &[Loc]| v.iter().map(|l| l.len).collect::<Vec<_>>();
            if lens(&ins) != want_in || lens(&outs) != want_out {
                return Err(unsupported(format!(
                    "operands hold {:?} -> {:?} values, the template needs {want_in:?} -> {want_out:?}",
                    lens(&ins),
                    lens(&outs)
                )));
            }
            workspace_len = workspace_len.max(dispatch::check(&k.op).map_err(unsupported)?);
            check_outputs(&k.op, &ins, &outs, writable).map_err(unsupported)?;
            let step = Step {
                op: k.op.clone(),
                ins,
                outs,
                kernel: i,
                session_pack: RefCell::new(None),
            };
            if k.stage == Stage::Prepare {
                prepare.push(step);
            } else {
                run.push(step);
            }
        }

        let prediction = p
            .output(OutRole::Prediction)
            .ok_or_else(|| mismatch(p, "no prediction output".into()))
            .and_then(locate)?;
        let loss = p.output(OutRole::Loss).map(locate).transpose()?;
        let (mut grads, mut state) = (Vec::new(), Vec::new());
        for o in &p.outputs {
            match o.role {
                OutRole::Gradient { param } => {
                    let slot = *slot_of
                        .get(&param)
                        .ok_or_else(|| mismatch(p, format!("gradient of {param}, not a parameter")))?;
                    let loc = locate(o.buf)?;
                    let j = trainable.iter().position(|&i| i == param_index[slot]);
                    match (j, loc.region) {
                        (Some(_), Region::Grad(_)) | (None, _) => {}
                        (Some(j), _) => grads.push((j, loc)),
                    }
                }
                OutRole::StateUpdate { param } => {
                    let slot = *slot_of
                        .get(&param)
                        .ok_or_else(|| mismatch(p, format!("state update of {param}, not a parameter")))?;
                    if p.base(o.buf) != param {
                        state.push((slot, locate(o.buf)?));
                    }
                }
                OutRole::Prediction | OutRole::Loss => {}
            }
        }
        if !writable && !state.is_empty() {
            return Err(mismatch(p, "an inference program updates state".into()));
        }
        Ok(Compiled {
            prepare,
            run,
            arena_len,
            workspace_len,
            param_index,
            param_lens,
            grad_lens,
            input_len,
            target_len,
            prediction,
            loss,
            grads,
            state,
            program,
        })
    }
}

/// Gradient outputs the kernels can write straight into the caller's gradient tensors: a
/// buffer of its own (no view, not shared by two outputs) written by exactly one kernel of the
/// run stage. Maps the buffer to the parameter's position among the trainable ones.
fn direct_grads(
    p: &Program,
    slot_of: &HashMap<BufId, usize>,
    param_index: &[usize],
    trainable: &[usize],
) -> HashMap<BufId, usize> {
    let uses = p.uses();
    let mut count: HashMap<BufId, usize> = HashMap::new();
    for o in &p.outputs {
        *count.entry(p.base(o.buf)).or_default() += 1;
    }
    let mut direct = HashMap::new();
    for o in &p.outputs {
        let OutRole::Gradient { param } = o.role else { continue };
        let b = o.buf;
        let single_writer = match uses.writers[b.index()].as_slice() {
            [w] => p.kernels[*w].stage != Stage::Prepare,
            _ => false,
        };
        let own = p.base(b) == b && p.buffer(b).kind.storage() == Storage::Transient && count[&b] == 1;
        let j = slot_of
            .get(&param)
            .and_then(|&s| trainable.iter().position(|&i| i == param_index[s]));
        if let (true, true, Some(j)) = (single_writer, own, j) {
            direct.insert(b, j);
        }
    }
    direct
}

/// Outputs live in the arena (or, for state updates in training, in a parameter) and overlap
/// no other operand of their kernel.
fn check_outputs(op: &KernelOp, ins: &[Loc], outs: &[Loc], writable: bool) -> Result<(), String> {
    let writes_params = matches!(op, KernelOp::MovingAverage { .. } | KernelOp::OptimizerUpdate { .. });
    for (j, o) in outs.iter().enumerate() {
        match o.region {
            Region::Arena | Region::Grad(_) => {}
            Region::Param(_) if writes_params && writable => {}
            r => return Err(format!("output {j} would write {r:?}")),
        }
        let in_place = matches!(op, KernelOp::MovingAverage { .. }) && j == 0 && ins.first() == Some(o);
        for (i, x) in ins.iter().enumerate() {
            if o.overlaps(x) && !(in_place && i == 0) {
                return Err(format!("output {j} overlaps input {i}"));
            }
        }
        for (i, x) in outs.iter().enumerate() {
            if i != j && o.overlaps(x) {
                return Err(format!("outputs {j} and {i} overlap"));
            }
        }
    }
    Ok(())
}

/// The memory of one run: raw base pointers of every region, valid for `'a`.
pub(super) struct Mem<'a> {
    arena: *mut f32,
    arena_len: usize,
    input: *const f32,
    input_len: usize,
    target: *const f32,
    target_len: usize,
    params: &'a [*mut f32],
    param_lens: &'a [usize],
    grads: &'a [*mut f32],
    grad_lens: &'a [usize],
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> Mem<'a> {
    /// # Safety
    /// Each pointer must be valid for reads (and, except `input` and `target`, writes) of its
    /// length for `'a`, and the regions must not overlap. Parameters may be written only when
    /// the program was loaded with `writable`; `grads` must be given (`grad_lens` long each)
    /// when the program has gradients in `Region::Grad`. Callers may hold slices of several [`Loc`]s at
    /// once only as `Compiled::new` checked them: outputs of a kernel overlap none of its
    /// other operands.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn new(
        arena: &'a mut [f32],
        input: &'a [f32],
        target: &'a [f32],
        params: &'a [*mut f32],
        param_lens: &'a [usize],
        grads: &'a [*mut f32],
        grad_lens: &'a [usize],
    ) -> Mem<'a> {
        Mem {
            arena: arena.as_mut_ptr(),
            arena_len: arena.len(),
            input: input.as_ptr(),
            input_len: input.len(),
            target: target.as_ptr(),
            target_len: target.len(),
            params,
            param_lens,
            grads,
            grad_lens,
            _borrow: PhantomData,
        }
    }

    fn base(&self, loc: Loc) -> *mut f32 {
        let (ptr, cap) = match loc.region {
            Region::Arena => (self.arena, self.arena_len),
            Region::Input => (self.input as *mut f32, self.input_len),
            Region::Target => (self.target as *mut f32, self.target_len),
            Region::Param(s) => (self.params[s], self.param_lens[s]),
            Region::Grad(j) => (self.grads[j], self.grad_lens[j]),
        };
        assert!(
            loc.start + loc.len <= cap,
            "{loc:?} lies outside its region ({cap} values)"
        );
        ptr
    }

    /// The values at `loc`.
    pub fn get(&self, loc: Loc) -> &[f32] {
        let base = self.base(loc);
        // SAFETY: `base` checked that the range lies in its region, valid for reads for 'a
        // (`Mem::new`); no output of the running kernel overlaps it (`check_outputs`).
        unsafe { std::slice::from_raw_parts(base.add(loc.start), loc.len) }
    }

    /// The values at `loc`, to be written (an output of the running kernel).
    #[allow(clippy::mut_from_ref)]
    pub fn get_mut(&self, loc: Loc) -> &mut [f32] {
        assert!(
            !matches!(loc.region, Region::Input | Region::Target),
            "the input and the target are read-only"
        );
        let base = self.base(loc);
        // SAFETY: as in `get`, and `check_outputs` guarantees that this output overlaps no
        // other operand of its kernel, so this is the only live reference to these values.
        unsafe { std::slice::from_raw_parts_mut(base.add(loc.start), loc.len) }
    }
}
