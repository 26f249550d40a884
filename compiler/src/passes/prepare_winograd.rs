//! Inference, generated code: takes the kernel transform of every Winograd conv out of the
//! conv and into the prepare stage. A Winograd conv in generated code otherwise computes
//! `u = G g Gᵀ` (16/9 or 4× the kernel's size) from its HWIO kernel on every call; at batch 1
//! that was 10 of the MNIST CNN crate's 74 µs. Here a [`KernelOp::WinogradKernel`] writes `u`
//! into a prepared buffer once per weight load, and the conv reads it (`winograd_u`), keeping
//! its schedule's tile.
//!
//! Only for kernels that do not depend on the batch (parameters, or prepared themselves, e.g.
//! BN-folded), so only in inference programs: training changes the weights every step. The
//! kernels backend keeps its own memo of transformed kernels and does not run this pass
//! (`PipelineOptions::prepare_winograd`).
//!
//! Only where the transformed kernel fits in L2: a bigger one is streamed from L3 or memory on
//! every call, and reading 16/9 or 4× the kernel costs more than transforming the kernel in
//! cache. ResNet18's batch-1 crate, one thread: transforms of up to 576 KiB prepared 8.9–9.7 ms,
//! all of them (up to 4 MiB) 11.5–12.1 ms, none 8.9–10.0 ms.

use std::collections::HashMap;

use crate::ir::{Mode, Shape};
use crate::kernel_ir::{BufKind, Buffer, KernelOp, Machine, Program, Stage};

/// Rewrites every eligible conv whose transformed kernel fits in `machine`'s L2; returns how
/// many.
pub fn run(p: &mut Program, machine: &Machine) -> usize {
    if p.mode != Mode::Inference {
        return 0;
    }
    let first_run = p
        .kernels
        .iter()
        .position(|k| k.stage != Stage::Prepare)
        .unwrap_or(p.kernels.len());
    // One transform per (kernel buffer, tile), however many convs read it.
    let mut made = HashMap::new();
    let mut transforms = Vec::new();
    let mut rewrites = 0;
    for i in first_run..p.kernels.len() {
        let k = &p.kernels[i];
        let KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u: None,
        } = k.op
        else {
            continue;
        };
        let Some(tile) = k.schedule.conv.and_then(|l| l.winograd_tile()) else {
            continue;
        };
        // [points, c, f] f32s
        if tile.points() * geom.c * geom.f * 4 > machine.l2 {
            continue;
        }
        let w = k.inputs[1];
        if !matches!(p.buffer(p.base(w)).kind, BufKind::Param { .. } | BufKind::Prepared) {
            continue;
        }
        let (stage, origin, mut inputs, outputs) = (k.stage, k.origin.clone(), k.inputs.clone(), k.outputs.clone());
        let u = match made.get(&(w, tile)) {
            Some(&u) => u,
            None => {
                let name = format!("{}.winograd_u", p.buffer(w).name);
                // [points, c, f]
                let shape = Shape(vec![tile.points(), geom.c, geom.f]);
                let u = p.add_buffer(Buffer::new(name, BufKind::Prepared, shape));
                let op = KernelOp::WinogradKernel {
                    c: geom.c,
                    f: geom.f,
                    tile,
                };
                transforms.push(p.make_kernel(op, vec![w], vec![u], Stage::Prepare, origin.clone()));
                made.insert((w, tile), u);
                u
            }
        };
        inputs[1] = u;
        let op = KernelOp::Conv2d {
            geom,
            epilogue,
            winograd_u: Some(tile),
        };
        p.kernels[i] = p.make_kernel(op, inputs, outputs, stage, origin);
        rewrites += 1;
    }
    p.kernels.splice(first_run..first_run, transforms);
    rewrites
}
