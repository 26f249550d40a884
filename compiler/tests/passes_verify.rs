//! The kernel IR verifier catches broken programs (each case corrupts a valid one).

mod passes_support;

use cnnc_compiler::ir::Mode;
use cnnc_compiler::kernel_ir::{verify, BufId, KernelOp, Machine, Program, Stage};
use cnnc_compiler::passes::{self, PipelineOptions};
use passes_support::mnist_cnn;

fn program() -> Program {
    let opts = PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        ..PipelineOptions::default()
    };
    passes::compile(mnist_cnn(4, Mode::Training), &opts).expect("compile")
}

fn assert_reports(p: &Program, needle: &str) {
    let errs = verify(p);
    assert!(errs.iter().any(|e| e.contains(needle)), "no {needle:?} in {errs:#?}");
}

#[test]
fn valid_programs_pass() {
    assert!(verify(&program()).is_empty());
}

#[test]
fn wrong_operand_size() {
    let mut p = program();
    let k = p
        .kernels
        .iter_mut()
        .find(|k| matches!(k.op, KernelOp::Conv2d { .. }))
        .expect("conv");
    k.inputs[1] = k.inputs[0];
    assert_reports(&p, "the template expects");
}

#[test]
fn read_before_write() {
    let mut p = program();
    let first = p.kernels.remove(0);
    p.kernels.insert(1, first);
    assert_reports(&p, "before");
}

#[test]
fn overlapping_plan() {
    let mut p = program();
    // Kernel 0's output and its scratch are live at the same time.
    let (out, scratch): (BufId, BufId) = (p.kernels[0].outputs[0], p.kernels[0].scratch.expect("scratch"));
    let off = p.buffer(out).offset.expect("planned");
    p.buffers[scratch.index()].offset = Some(off);
    assert_reports(&p, "overlap");
}

#[test]
fn schedule_not_from_the_machine() {
    let mut p = program();
    p.kernels[0].schedule.threads += 1;
    assert_reports(&p, "schedule");
}

#[test]
fn stage_order() {
    let mut p = program();
    let last = p.kernels.len() - 1;
    p.kernels[last].stage = Stage::Prepare;
    assert_reports(&p, "prepare kernel after");
}
