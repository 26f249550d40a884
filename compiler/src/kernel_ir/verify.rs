//! The kernel IR verifier, run after lowering and after every kernel-IR pass in debug and test
//! builds. It checks what emitters rely on: operand counts and sizes match each template's
//! constants, schedules are the machine's and nest, scratch is attached and big enough, every
//! transient buffer is written once before it is read, stages are ordered, and (once planned)
//! that no two simultaneously live buffers share bytes.

use crate::ir::Activation;

use super::kernel::{pool_tiles, EwOp, Kernel, KernelOp, Stage};
use super::plan;
use super::program::{BufKind, DType, OutRole, Program, Storage};
use super::schedule;

fn check_template(op: &KernelOp, errs: &mut Vec<String>, at: &str) {
    match op {
        KernelOp::Elementwise {
            op: EwOp::Act(Activation::Softmax) | EwOp::ActGrad(Activation::Softmax),
            ..
        } => errs.push(format!("{at}: softmax is row-wise, not elementwise")),
        KernelOp::Conv2d {
            geom,
            epilogue: e,
            winograd_u,
        } => {
            if e.act == Activation::Softmax {
                errs.push(format!("{at}: softmax epilogue on a convolution"));
            }
            if let Some(t) = winograd_u {
                let whole = geom.out_hw.iter().all(|s| s.is_multiple_of(t.side()));
                if geom.kernel_hw != [3, 3] || geom.strides != [1, 1] || !whole {
                    errs.push(format!(
                        "{at}: a prepared Winograd kernel ({t}) needs a 3x3, stride-1 conv whose output is whole tiles"
                    ));
                }
            }
            if let Some(w) = e.max_pool {
                if !pool_tiles(geom.out_hw, &w) || e.bn_stats {
                    errs.push(format!(
                        "{at}: a fused max-pool needs a window tiling the output and no BN statistics"
                    ));
                }
            }
        }
        KernelOp::Gemm {
            epilogue: e,
            trans_b,
            bias_grad,
            ..
        } => {
            if e.max_pool.is_some() {
                errs.push(format!("{at}: max-pool epilogue on a gemm"));
            }
            if *bias_grad && *trans_b {
                errs.push(format!("{at}: bias gradient needs B stored [k, n]"));
            }
        }
        _ => {}
    }
}

fn check_kernel(p: &Program, i: usize, k: &Kernel, errs: &mut Vec<String>) {
    let at = format!("k{i} ({})", k.op.mnemonic());
    let n = p.buffers.len();
    let all = k.inputs.iter().chain(&k.outputs).chain(&k.scratch);
    if let Some(b) = all.clone().find(|b| b.index() >= n) {
        errs.push(format!("{at}: operand {b} does not exist"));
        return;
    }
    check_template(&k.op, errs, &at);
    let (ins, outs) = k.op.operand_sizes();
    for (what, want, got) in [("inputs", &ins, &k.inputs), ("outputs", &outs, &k.outputs)] {
        if want.len() != got.len() {
            errs.push(format!("{at}: takes {} {what}, has {}", want.len(), got.len()));
            continue;
        }
        for (&w, &b) in want.iter().zip(got) {
            let buf = p.buffer(b);
            if buf.numel() != w || buf.dtype != DType::F32 {
                errs.push(format!(
                    "{at}: {what} operand {b} ({}) has {} elements, the template expects {w}",
                    buf.name,
                    buf.numel()
                ));
            }
        }
    }
    let want = schedule::choose(&k.op, &p.machine);
    if k.schedule != want {
        errs.push(format!("{at}: schedule {} is not the machine's {want}", k.schedule));
    }
    errs.extend(
        schedule::check(&k.op, &k.schedule)
            .into_iter()
            .map(|e| format!("{at}: {e}")),
    );
    let need = schedule::scratch_layout(&k.op, &k.schedule).total;
    match k.scratch {
        None if need > 0 => errs.push(format!("{at}: needs {need} bytes of scratch, has none")),
        Some(s) if p.buffer(s).kind != BufKind::Scratch || p.buffer(s).bytes() < need || need == 0 => {
            errs.push(format!("{at}: scratch {s} does not fit the {need}-byte layout"))
        }
        _ => {}
    }
    for &b in &k.outputs {
        let kind = &p.buffer(b).kind;
        let ok = match kind.storage() {
            Storage::Bound => {
                matches!(kind, BufKind::Param { .. })
                    && matches!(k.op, KernelOp::MovingAverage { .. } | KernelOp::OptimizerUpdate { .. })
            }
            Storage::Alias => false,
            Storage::Persistent => match kind {
                BufKind::OptState { .. } => matches!(k.op, KernelOp::OptimizerUpdate { .. }),
                _ => k.stage == Stage::Prepare,
            },
            Storage::Transient => k.stage != Stage::Prepare && *kind != BufKind::Scratch,
        };
        if !ok {
            errs.push(format!("{at}: may not write {b} ({})", kind.name()));
        }
    }
}

/// Every broken invariant, one message each; empty when the program is well formed.
pub fn verify(p: &Program) -> Vec<String> {
    let mut errs = Vec::new();
    for b in p.ids() {
        if let BufKind::View { of } = p.buffer(b).kind {
            let base_ok = of.index() < p.buffers.len()
                && !matches!(p.buffer(of).kind, BufKind::View { .. } | BufKind::Scratch)
                && p.buffer(of).numel() == p.buffer(b).numel();
            if !base_ok {
                errs.push(format!("{b}: view of {of}, which is not a buffer of equal size"));
                return errs;
            }
        }
    }
    let mut last_stage = Stage::Prepare;
    for (i, k) in p.kernels.iter().enumerate() {
        check_kernel(p, i, k, &mut errs);
        let order_ok = match k.stage {
            Stage::Prepare => last_stage == Stage::Prepare,
            Stage::Forward | Stage::Backward => last_stage != Stage::Update,
            Stage::Update => true,
        };
        if !order_ok {
            errs.push(format!(
                "k{i}: {} kernel after a {} kernel",
                k.stage.name(),
                last_stage.name()
            ));
        }
        last_stage = last_stage.max(k.stage);
    }
    if !errs.is_empty() {
        return errs;
    }
    let uses = p.uses();
    for b in p.ids() {
        let (i, buf) = (b.index(), p.buffer(b));
        let writers = &uses.writers[i];
        let single = matches!(buf.kind.storage(), Storage::Transient)
            || matches!(buf.kind, BufKind::Constant(_) | BufKind::Prepared);
        if single && writers.len() > 1 {
            errs.push(format!("{b} ({}) is written by kernels {writers:?}", buf.name));
        }
        let needs_writer = single && buf.kind != BufKind::Scratch;
        if needs_writer && (!uses.readers[i].is_empty() || uses.is_output[i]) {
            match writers.first() {
                None => errs.push(format!("{b} ({}) is read but never written", buf.name)),
                Some(&w) => {
                    if let Some(r) = uses.readers[i].iter().find(|&&r| r <= w) {
                        errs.push(format!("k{r} reads {b} ({}) before k{w} writes it", buf.name));
                    }
                }
            }
        }
    }
    for o in &p.outputs {
        if o.buf.index() >= p.buffers.len() {
            errs.push(format!("output {:?} refers to a missing buffer", o.role));
            continue;
        }
        if let OutRole::Gradient { param } | OutRole::StateUpdate { param } = o.role {
            let is_param = param.index() < p.buffers.len() && matches!(p.buffer(param).kind, BufKind::Param { .. });
            if !is_param || p.buffer(param).numel() != p.buffer(o.buf).numel() {
                errs.push(format!("output {:?} does not match a parameter", o.role));
            }
        }
    }
    if p.output(OutRole::Prediction).is_none() {
        errs.push("program has no prediction output".into());
    }
    if p.arena_size > 0 {
        errs.extend(plan::check(p));
    }
    errs
}

/// Panics with every broken invariant and the program's dump; a broken invariant between
/// passes is a compiler bug, never a user error.
pub fn assert_valid(p: &Program, after: &str) {
    let errs = verify(p);
    if !errs.is_empty() {
        panic!(
            "kernel IR verifier failed after {after}:\n  {}\n{}",
            errs.join("\n  "),
            super::dump::dump(p)
        );
    }
}
