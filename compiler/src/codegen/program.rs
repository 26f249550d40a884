//! A planned program → generated program functions (`<tag>_prepare`, `<tag>_run`) that call
//! one kernel function per kernel, plus where the program leaves its outputs. Kernels with the
//! same template (`KernelOp` value, and in-place-ness for moving averages) share one generated
//! function across both programs, so repeated blocks cost one function.

use std::collections::{BTreeSet, HashMap};

use crate::ir::Mode;
use crate::kernel_ir::{dump, BufKind, Kernel, KernelOp, OutRole, Program, Schedule, Stage};

use super::kernels::{needs_step, scratch_of, takes_slices};
use super::layout::{check_operands, emit_call, Binder, Loc, Region};
use super::threads::schedule_for;
use super::writer::Code;

/// One generated kernel function.
pub(crate) struct Template {
    pub name: String,
    pub op: KernelOp,
    pub schedule: Schedule,
    pub in_place: bool,
    /// The template's constants and schedule, as the IR dump prints them.
    pub describe: String,
    /// `inference k3 (conv2d_1)` per use.
    pub uses: Vec<String>,
}

/// The distinct templates of the crate, in first-use order.
pub(crate) struct Templates {
    pub list: Vec<Template>,
    /// Threads the crate's kernels may split across (`threads::schedule_for`).
    threads: usize,
    index: HashMap<String, usize>,
    per_mnemonic: HashMap<&'static str, usize>,
}

impl Templates {
    pub fn new(threads: usize) -> Self {
        Templates {
            list: Vec::new(),
            threads,
            index: HashMap::new(),
            per_mnemonic: HashMap::new(),
        }
    }

    /// The function computing `k`, created on first use.
    fn name_for(&mut self, k: &Kernel, in_place: bool, use_: String) -> String {
        // The optimiser's function takes slices: one per rule, whatever the parameter's length.
        let key = match &k.op {
            KernelOp::OptimizerUpdate { rule, .. } => format!("update {rule:?}"),
            op => format!("{op:?}/{in_place}"),
        };
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let m = k.op.mnemonic();
                let n = self.per_mnemonic.entry(m).or_default();
                let name = format!("{m}_{n}");
                *n += 1;
                let schedule = if in_place {
                    k.schedule
                } else {
                    schedule_for(&k.op, k.schedule, self.threads)
                };
                self.list.push(Template {
                    name,
                    op: k.op.clone(),
                    schedule,
                    in_place,
                    describe: describe(&k.op, &schedule),
                    uses: Vec::new(),
                });
                self.index.insert(key, self.list.len() - 1);
                self.list.len() - 1
            }
        };
        self.list[i].uses.push(use_);
        self.list[i].name.clone()
    }
}

/// `conv2d n=2 in=.. +bias +relu | mc=.. nr=..`, as the IR dump prints the template.
fn describe(op: &KernelOp, s: &Schedule) -> String {
    if let KernelOp::OptimizerUpdate { rule, .. } = op {
        return format!("{} {rule} (any parameter length)", op.mnemonic());
    }
    dump::op_line(op, s)
}

/// A program's generated functions and where its outputs are after a run.
pub(crate) struct ProgramCode {
    pub prepare_fn: String,
    pub run_fn: String,
    pub run_kernels: usize,
    /// Whether the run function takes `update: bool` (the program has optimiser updates).
    pub updates: bool,
    /// The optimiser's state slots in the arena (persistent buffers, zero before the first step).
    pub opt_state: Vec<Loc>,
    pub prediction: Loc,
    pub loss: Option<Loc>,
    /// (parameter name, gradient) per gradient output.
    pub grads: Vec<(String, Loc)>,
    /// (parameter name, new value) per state update not made in place.
    pub state: Vec<(String, Loc)>,
}

/// Emits `tag`_prepare and `tag`_run for program `p`.
pub(crate) fn emit_program(
    p: &Program,
    tag: &str,
    binder: &Binder,
    templates: &mut Templates,
) -> Result<ProgramCode, (usize, String)> {
    let training = p.mode == Mode::Training;
    let mode = if training { "training" } else { "inference" };
    // Per stage (prepare, run, optimiser update): the calls, the regions they use, the count.
    let mut bodies = [Code::new(), Code::new(), Code::new()];
    let mut used: [BTreeSet<&str>; 3] = Default::default();
    let mut counts = [0usize; 3];
    let mut opt_state = Vec::new();
    for (i, k) in p.kernels.iter().enumerate() {
        let fail = |msg: String| (i, msg);
        let ins = k
            .inputs
            .iter()
            .map(|&b| binder.locate(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let outs = k
            .outputs
            .iter()
            .map(|&b| binder.locate(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let (want_in, want_out) = k.op.operand_sizes();
        let lens = |v: &[Loc]| v.iter().map(|l| l.len).collect::<Vec<_>>();
        if lens(&ins) != want_in || lens(&outs) != want_out {
            return Err(fail(format!(
                "operands hold {:?} -> {:?} values, the template needs {want_in:?} -> {want_out:?}",
                lens(&ins),
                lens(&outs)
            )));
        }
        // The generated template's own scratch comes after the outputs (`kernels::scratch_of`).
        let mut outs = outs;
        match (k.scratch, scratch_of(&k.op)) {
            (Some(b), Some((_, len))) => {
                let l = binder.locate(b).map_err(fail)?;
                if l.len != len {
                    return Err(fail(format!("scratch of {} values, the template needs {len}", l.len)));
                }
                outs.push(l);
            }
            (None, None) => {}
            _ => {
                return Err(fail(
                    "the kernel's scratch does not match its generated template".into(),
                ))
            }
        }
        let moving = matches!(k.op, KernelOp::MovingAverage { .. });
        let in_place = moving && ins.first() == outs.first();
        let writes_params = (moving && training) || takes_slices(&k.op);
        check_operands(&ins, &outs, in_place, writes_params).map_err(fail)?;
        if let KernelOp::OptimizerUpdate { .. } = k.op {
            opt_state.extend_from_slice(&outs[1..]);
        }
        let layers = if k.origin.is_empty() {
            String::new()
        } else {
            format!(" ({})", k.origin.join(", "))
        };
        let name = templates.name_for(k, in_place, format!("{mode} k{i}{layers}"));
        let stage = match k.stage {
            Stage::Prepare => 0,
            Stage::Update => 2,
            _ => 1,
        };
        // The updates run after the other kernels, behind `if update`: they must come last.
        if stage == 1 && counts[2] > 0 {
            return Err(fail("a kernel follows the optimiser updates".into()));
        }
        let code = &mut bodies[stage];
        code.line(format!("// k{i} {}{layers}", k.op.mnemonic()));
        let args: Vec<Loc> = ins.iter().skip(usize::from(in_place)).copied().collect();
        emit_call(code, &name, &args, &outs, needs_step(&k.op), takes_slices(&k.op)).map_err(fail)?;
        for l in ins.iter().chain(&outs) {
            used[stage].insert(l.region.var());
        }
        if needs_step(&k.op) {
            used[stage].insert("step");
        }
        counts[stage] += 1;
    }
    let [prepare_body, run_body, update_body] = bodies;
    let updates = counts[2] > 0;
    let arg = |stage: usize, var: &'static str, ty: &str| {
        let used = used[stage].contains(var) || (stage == 1 && used[2].contains(var));
        let unused = if used { "" } else { "_" };
        format!("{unused}{var}: {ty}")
    };
    // The inference program reads each parameter tensor where its caller keeps it (`Binder::parts`).
    let p_read = if binder.parts { "&[&[f32]; N_PARAMS]" } else { "&[f32]" };
    let p_ty = if training { "&mut [f32]" } else { p_read };
    let mut prepare = Code::new();
    prepare.doc(&format!(
        "Load-time kernels of the {mode} program ({}: {}); they fill\nthe arena's persistent buffers and run again after the parameters change.",
        if counts[0] == 0 { "none".to_string() } else { counts[0].to_string() },
        if training { "constants" } else { "constants, batch norm folded into weights, Winograd kernel transforms" }
    ));
    prepare.open(format!(
        "fn {tag}_prepare({}, {})",
        arg(0, "p", p_read),
        arg(0, "a", "&mut [f32]")
    ));
    let prepare_body = prepare_body.finish();
    if !prepare_body.is_empty() {
        prepare.raw(&indent(&prepare_body));
    }
    prepare.close();
    let mut run = Code::new();
    run.doc(&if updates {
        format!(
            "The {mode} program: its {} kernels in plan order, then, if `update`, the optimiser's\n{} (one per trainable parameter).",
            counts[1], counts[2]
        )
    } else {
        format!("The {mode} program: its {} kernels in plan order.", counts[1])
    });
    let mut args = vec![arg(1, "p", p_ty), arg(1, "x", "&[f32]")];
    if training {
        args.push(arg(1, "y", "&[f32]"));
    }
    args.push(arg(1, "a", "&mut [f32]"));
    if training {
        args.push(arg(1, "step", "u64"));
    }
    if updates {
        args.push("update: bool".into());
    }
    run.open(format!("fn {tag}_run({})", args.join(", ")));
    let run_body = run_body.finish();
    if !run_body.is_empty() {
        run.raw(&indent(&run_body));
    }
    if updates {
        run.open("if update");
        run.raw(&indent(&indent(&update_body.finish())));
        run.close();
    }
    run.close();

    let outputs_err = |msg: String| (p.kernels.len(), msg);
    let name_of = |b| match &p.buffer(b).kind {
        BufKind::Param { name, .. } => Ok(name.clone()),
        _ => Err(outputs_err(format!("output refers to {b}, not a parameter"))),
    };
    let prediction = p
        .output(OutRole::Prediction)
        .ok_or_else(|| outputs_err("no prediction output".into()))
        .and_then(|b| binder.locate(b).map_err(outputs_err))?;
    let loss = match p.output(OutRole::Loss) {
        Some(b) => Some(binder.locate(b).map_err(outputs_err)?),
        None => None,
    };
    let (mut grads, mut state) = (Vec::new(), Vec::new());
    for o in &p.outputs {
        match o.role {
            OutRole::Gradient { param } => grads.push((name_of(param)?, binder.locate(o.buf).map_err(outputs_err)?)),
            OutRole::StateUpdate { param } if p.base(o.buf) != param => {
                state.push((name_of(param)?, binder.locate(o.buf).map_err(outputs_err)?))
            }
            _ => {}
        }
    }
    for l in grads
        .iter()
        .chain(&state)
        .map(|(_, l)| l)
        .chain([&prediction])
        .chain(&loss)
    {
        match l.region {
            Region::Target => return Err(outputs_err("an output lies in the target".into())),
            // `Model` reads outputs from its flat parameters, never from a caller's tensor.
            Region::Param(_) => return Err(outputs_err("an output is a parameter tensor".into())),
            _ => {}
        }
    }
    Ok(ProgramCode {
        prepare_fn: prepare.finish(),
        run_fn: run.finish(),
        run_kernels: counts[1] + counts[2],
        updates,
        opt_state,
        prediction,
        loss,
        grads,
        state,
    })
}

/// Every non-empty line one level deeper.
fn indent(s: &str) -> String {
    s.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}\n")
            }
        })
        .map(|l| if l.is_empty() { "\n".to_string() } else { l })
        .collect()
}
