//! The std crate's `Model`: parameters, one arena, which program's load-time buffers are
//! valid, the step counter; `forward`, and with training `train_step` (with the optimiser),
//! `gradients` (without), `iterations` and `reset_optimizer`.

use std::collections::HashMap;

use super::api::{forward_checks, forward_doc, numel, src, CrateInfo, ParamInfo, TrainInfo};
use super::layout::Loc;
use super::writer::Code;

pub(crate) fn model_std(c: &mut Code, info: &CrateInfo) {
    let train = info.train.as_ref();
    c.doc(
        "The model: its parameters, its memory arena (which also holds the optimiser state) and\n\
         its training step counter.",
    );
    c.line("#[derive(Clone)]");
    c.open("pub struct Model");
    c.line("params: Vec<f32>,");
    c.line("arena: Vec<f32>,");
    c.line("/// Whether the inference program's load-time buffers (folded weights) are valid.");
    c.line("infer_ready: bool,");
    if info.c_abi {
        c.line("/// Whether they hold those of the tensors of the last `cnnc_predict_parts` call instead.");
        c.line("caller_folded: bool,");
    }
    if train.is_some() {
        c.line("/// Whether the training program's load-time buffers (constants) are valid.");
        c.line("train_ready: bool,");
        c.line("/// Optimiser steps applied so far.");
        c.line("iterations: u64,");
    }
    c.close();
    c.line("");
    c.open("impl Model");
    c.doc(
        "A model with `params` ([`PARAMS_F32S`] values in the [`PARAMS`] layout) and, for\n\
         training, a fresh optimiser (zero state, no steps taken).",
    );
    c.open("pub fn from_params(params: Vec<f32>) -> Result<Model, String>");
    c.open("if params.len() != PARAMS_F32S");
    c.line("return Err(LoadError::Length { expected: PARAMS_F32S, found: params.len() }.to_string());");
    c.close();
    let abi_fields = if info.c_abi { ", caller_folded: false" } else { "" };
    let train_fields = if train.is_some() {
        ", train_ready: false, iterations: 0"
    } else {
        ""
    };
    c.line("// A refused allocation is an error, not the allocator's abort (a batch too large here).");
    c.line("let mut arena = Vec::new();");
    c.open("if arena.try_reserve_exact(ARENA_F32S).is_err()");
    c.line("return Err(format!(\"cannot allocate the arena ({ARENA_BYTES} bytes)\"));");
    c.close();
    c.line("arena.resize(ARENA_F32S, 0.0);");
    c.line(format!(
        "Ok(Model {{ params, arena, infer_ready: false{abi_fields}{train_fields} }})"
    ));
    c.close();
    c.line("");
    c.doc("A model with the parameters of a safetensors file's bytes (see [`load_params`]).");
    c.open("pub fn from_safetensors(bytes: &[u8]) -> Result<Model, String>");
    c.line("let mut params = vec![0.0; PARAMS_F32S];");
    c.line("load_params(bytes, &mut params).map_err(|e| e.to_string())?;");
    c.line("Model::from_params(params)");
    c.close();
    if info.embed {
        c.line("");
        c.doc("A model with the embedded [`WEIGHTS`] (checked by cnnc when it wrote the crate).");
        c.open("pub fn new() -> Model");
        c.line("Model::from_safetensors(WEIGHTS).expect(\"the embedded weights fit the model\")");
        c.close();
    }
    c.line("");
    c.doc("The parameters ([`PARAMS`] layout).");
    c.open("pub fn params(&self) -> &[f32]");
    c.line("&self.params");
    c.close();
    c.line("");
    c.doc(if train.is_some() {
        "The parameters, to be changed (e.g. by another optimiser, or to load other weights; the\n\
         optimiser state is kept: see [`Model::reset_optimizer`])."
    } else {
        "The parameters, to be changed."
    });
    c.open("pub fn params_mut(&mut self) -> &mut [f32]");
    c.line("self.infer_ready = false;");
    c.line("&mut self.params");
    c.close();
    c.line("");
    c.doc("The values of the parameter called `name` (a Keras name such as `dense.kernel`).");
    c.open("pub fn param(&self, name: &str) -> Option<&[f32]>");
    c.line("let i = PARAMS.iter().position(|(n, _)| *n == name)?;");
    c.line("let len: usize = PARAMS[i].1.iter().product();");
    c.line("Some(&self.params[PARAM_OFFSETS[i]..PARAM_OFFSETS[i] + len])");
    c.close();
    c.line("");
    forward_doc(c);
    c.open("pub fn forward(&mut self, x: &[f32], out: &mut [f32])");
    forward_checks(c);
    c.line("let p = param_parts(&self.params);");
    c.open("if !self.infer_ready");
    c.line("infer_prepare(&p, &mut self.arena);");
    c.line("self.infer_ready = true;");
    if info.c_abi {
        c.line("self.caller_folded = false;");
    }
    c.close();
    c.line("infer_run(&p, x, &mut self.arena);");
    c.line(format!("out.copy_from_slice({});", src(&info.infer.prediction)));
    c.close();
    if let Some(t) = train {
        train_methods(c, info, t);
    }
    c.close();
    if info.embed {
        c.line("");
        c.open("impl Default for Model");
        c.doc("[`Model::new`]: the embedded weights.");
        c.open("fn default() -> Model");
        c.line("Model::new()");
        c.close();
        c.close();
    }
    c.line("");
}

fn train_methods(c: &mut Code, info: &CrateInfo, t: &TrainInfo) {
    let input_checks = |c: &mut Code, f: &str| {
        c.line(format!(
            "assert_eq!(x.len(), INPUT_F32S, \"{f}: the input must hold INPUT_F32S values\");"
        ));
        c.line(format!(
            "assert_eq!(y.len(), TARGET_F32S, \"{f}: the target must hold TARGET_F32S values\");"
        ));
    };
    c.line("");
    c.doc(
        "One training step on a batch, like Keras's `train_on_batch`: forward, loss, backward, and\n\
         the optimiser ([`OPTIMIZER`]) updating the trainable parameters in place, at step\n\
         [`Model::iterations`]` + 1` (1-based: it seeds the dropout masks and Adam's bias\n\
         correction), which then becomes the step count. Batch-norm moving statistics are\n\
         updated in the parameters, as Keras does during `fit`. Returns the loss before the\n\
         update (the batch mean; NaN when a sparse target is not a class id).\n\n\
         # Panics\n\
         If `x` or `y` has another length than [`INPUT_F32S`], [`TARGET_F32S`].",
    );
    c.open("pub fn train_step(&mut self, x: &[f32], y: &[f32]) -> f32");
    input_checks(c, "train_step");
    c.line("let step = self.iterations + 1;");
    c.line("let loss = self.run_training(x, y, step, true);");
    c.line("self.iterations = step;");
    c.line("loss");
    c.close();
    c.line("");
    c.doc(
        "Forward, loss and backward only: returns the loss and writes the gradient of every\n\
         trainable parameter to `grads` ([`GRADS_F32S`] values, at [`GRAD_OFFSETS`]), for an\n\
         optimiser of the caller's (apply it through [`Model::params_mut`]). Neither the\n\
         trainable parameters, the optimiser state nor the step count change; the batch-norm\n\
         moving statistics are updated, as in a training step. `step` (1-based) seeds the\n\
         dropout masks: `self.iterations() + 1` gives the gradients [`Model::train_step`] would\n\
         apply next.\n\n\
         # Panics\n\
         If `x`, `y` or `grads` has another length than [`INPUT_F32S`], [`TARGET_F32S`], [`GRADS_F32S`].",
    );
    c.open("pub fn gradients(&mut self, x: &[f32], y: &[f32], step: u64, grads: &mut [f32]) -> f32");
    input_checks(c, "gradients");
    c.line("assert_eq!(grads.len(), GRADS_F32S, \"gradients: grads must hold GRADS_F32S values\");");
    c.line("let loss = self.run_training(x, y, step, false);");
    let mut at = 0;
    let grads: HashMap<&str, &Loc> = t.code.grads.iter().map(|(name, l)| (name.as_str(), l)).collect();
    for p in info.params.iter().filter(|p| p.trainable) {
        let n = numel(&p.shape);
        let dst = format!("grads[{at}..{}]", at + n);
        match grads.get(p.name.as_str()) {
            Some(l) => c.line(format!("{dst}.copy_from_slice({}); // {}", src(l), p.name)),
            None => c.line(format!(
                "{dst}.fill(0.0); // {} (the loss does not depend on it)",
                p.name
            )),
        }
        at += n;
    }
    c.line("loss");
    c.close();
    c.line("");
    c.doc("Optimiser steps applied so far (Keras's `optimizer.iterations`).");
    c.open("pub fn iterations(&self) -> u64");
    c.line("self.iterations");
    c.close();
    c.line("");
    c.doc("A fresh optimiser: zero state and no steps taken, as when the model was created.");
    c.open("pub fn reset_optimizer(&mut self)");
    let ranges = merged(&t.code.opt_state);
    if ranges.is_empty() {
        c.line(format!(
            "// {} has no state.",
            t.optimizer.split(' ').next().unwrap_or("")
        ));
    }
    for (s, e) in ranges {
        c.line(format!("self.arena[{s}..{e}].fill(0.0);"));
    }
    c.line("self.iterations = 0;");
    c.line("// (the programs share the arena: the folded weights are recomputed when next needed)");
    c.line("self.infer_ready = false;");
    if info.c_abi {
        c.line("self.caller_folded = false;");
    }
    c.close();
    c.line("");
    c.doc(
        "Runs the training program at `step`, the optimiser's updates only with `update`, and\n\
         returns the loss; the gradients are left in the arena.",
    );
    let update_arg = if t.code.updates { ", update" } else { "" };
    let update_param = if t.code.updates { "update" } else { "_update" };
    c.open(format!(
        "fn run_training(&mut self, x: &[f32], y: &[f32], step: u64, {update_param}: bool) -> f32"
    ));
    c.open("if !self.train_ready");
    c.line("train_prepare(&self.params, &mut self.arena);");
    c.line("self.train_ready = true;");
    c.close();
    c.line(format!(
        "train_run(&mut self.params, x, y, &mut self.arena, step{update_arg});"
    ));
    c.line("// The parameters changed and the training run overwrote the folded weights.");
    c.line("self.infer_ready = false;");
    if info.c_abi {
        c.line("self.caller_folded = false;");
    }
    let params: HashMap<&str, &ParamInfo> = info.params.iter().map(|p| (p.name.as_str(), p)).collect();
    for (name, l) in &t.code.state {
        if let Some(p) = params.get(name.as_str()) {
            c.line(format!(
                "self.params[{}..{}].copy_from_slice({}); // {name}",
                p.offset,
                p.offset + numel(&p.shape),
                src(l)
            ));
        }
    }
    match &t.code.loss {
        Some(l) => c.line(format!("self.arena[{}]", l.start)),
        None => c.line("f32::NAN"),
    }
    c.close();
}

/// The arena ranges of `locs`, in order, merged when adjacent or apart by less than the 64
/// bytes the planner aligns buffers to (such a gap is the padding of a persistent buffer, which
/// nothing else uses).
fn merged(locs: &[Loc]) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = locs.iter().map(|l| (l.start, l.end())).collect();
    v.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s < last.1 + 16 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}
