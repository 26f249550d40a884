//! The static memory plan: checked against lifetimes recomputed here, independently of
//! `plan.rs`, over every pair of buffers.

mod passes_support;

use cnnc_compiler::ir::{Graph, Mode};
use cnnc_compiler::kernel_ir::{plan, BufKind, Machine, Program, Stage, Storage, UpdateRule};
use cnnc_compiler::passes::{self, PipelineOptions};
use passes_support::{bn_baseline, mnist_cnn};

fn compile(g: Graph, update: Option<UpdateRule>) -> Program {
    let opts = PipelineOptions {
        machine: Machine::reference(),
        verify: true,
        update,
        ..PipelineOptions::default()
    };
    passes::compile(g, &opts).expect("compile")
}

fn base(p: &Program, mut b: usize) -> usize {
    while let BufKind::View { of } = p.buffers[b].kind {
        b = of.index();
    }
    b
}

/// `(first, last)` kernel index during which each arena buffer must keep its bytes.
fn lifetimes(p: &Program) -> Vec<Option<(usize, usize)>> {
    let end = p.kernels.len() - 1;
    let mut life: Vec<Option<(usize, usize)>> = vec![None; p.buffers.len()];
    for (i, k) in p.kernels.iter().enumerate() {
        for b in k.inputs.iter().chain(&k.outputs).chain(&k.scratch) {
            let l = &mut life[base(p, b.index())];
            *l = Some(l.map_or((i, i), |(f, t)| (f.min(i), t.max(i))));
        }
    }
    for o in &p.outputs {
        if let Some(l) = &mut life[base(p, o.buf.index())] {
            l.1 = end;
        }
    }
    for (i, b) in p.buffers.iter().enumerate() {
        match b.kind.storage() {
            Storage::Persistent => life[i] = Some((0, end)),
            Storage::Bound | Storage::Alias => life[i] = None,
            Storage::Transient => {}
        }
    }
    life
}

/// Checks every pair of arena buffers; returns the bytes of all arena buffers side by side.
fn assert_no_live_overlap(p: &Program) -> usize {
    let life = lifetimes(p);
    let arena: Vec<(usize, (usize, usize), usize, usize)> = life
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = (*l)?;
            let off = p.buffers[i].offset.unwrap_or_else(|| panic!("b{i} has no offset"));
            Some((i, l, off, off + p.buffers[i].bytes()))
        })
        .collect();
    for (x, &(i, li, si, ei)) in arena.iter().enumerate() {
        assert_eq!(si % 64, 0, "b{i} misaligned");
        assert!(ei <= p.arena_bytes(), "b{i} ends past the arena");
        for &(j, lj, sj, ej) in &arena[x + 1..] {
            let live_together = li.0 <= lj.1 && lj.0 <= li.1;
            assert!(
                !(live_together && si < ej && sj < ei),
                "b{i} {li:?} [{si}, {ei}) and b{j} {lj:?} [{sj}, {ej}) overlap"
            );
        }
    }
    arena.iter().map(|&(_, _, s, e)| e - s).sum()
}

#[test]
fn mnist_cnn_training_plan_shares_memory_without_overlap() {
    let p = compile(mnist_cnn(128, Mode::Training), Some(UpdateRule::adam()));
    let unshared = assert_no_live_overlap(&p);
    let stats = plan::stats(&p);
    assert!(p.arena_bytes() < unshared, "arena {} vs {unshared}", p.arena_bytes());
    assert!(
        p.arena_bytes() * 10 < unshared * 7,
        "arena {} vs {unshared}",
        p.arena_bytes()
    );
    assert_eq!(stats.arena_bytes, p.arena_bytes());
    // Adam keeps m and v for each of the 421,642 parameters (each slot 64-byte aligned).
    let params: Vec<usize> = p.params().iter().map(|&b| p.buffer(b).numel()).collect();
    assert_eq!(params.iter().sum::<usize>(), 421_642);
    let slots: usize = params.iter().map(|n| 2 * (n * 4).div_ceil(64) * 64).sum();
    assert_eq!(stats.persistent_bytes, slots);
}

#[test]
fn saved_activations_stay_live_into_backward() {
    let p = compile(mnist_cnn(32, Mode::Training), None);
    let life = lifetimes(&p);
    let saved: Vec<usize> = (0..p.buffers.len())
        .filter(|&i| p.buffers[i].kind == BufKind::Saved)
        .collect();
    // Both conv outputs (read by pool and activation grads), both pool outputs (kernel grad of
    // the next conv; the second, flattened, is dense's input) and dense's output (act grad).
    assert_eq!(saved.len(), 5, "{saved:?}");
    for i in saved {
        let (_, last) = life[i].expect("saved buffers live in the arena");
        assert_eq!(p.kernels[last].stage, Stage::Backward, "b{i} last read in forward");
    }
}

#[test]
fn every_model_plans_without_overlap() {
    for (g, update) in [
        (mnist_cnn(64, Mode::Inference), None),
        (mnist_cnn(8, Mode::Training), Some(UpdateRule::sgd())),
        (bn_baseline(16, Mode::Inference), None),
        (bn_baseline(16, Mode::Training), Some(UpdateRule::rmsprop())),
    ] {
        let p = compile(g, update);
        let unshared = assert_no_live_overlap(&p);
        assert!(p.arena_bytes() <= unshared);
        assert!(plan::check(&p).is_empty());
    }
}

#[test]
fn persistent_buffers_are_never_shared() {
    let p = compile(bn_baseline(4, Mode::Training), Some(UpdateRule::adam()));
    let stats = plan::stats(&p);
    let persistent: Vec<_> = p
        .buffers
        .iter()
        .filter(|b| b.kind.storage() == Storage::Persistent)
        .collect();
    assert!(!persistent.is_empty());
    for b in &persistent {
        let off = b.offset.expect("placed");
        assert!(
            off + b.bytes() <= stats.persistent_bytes,
            "{} outside the persistent region",
            b.name
        );
    }
    for b in p.buffers.iter().filter(|b| b.kind.storage() == Storage::Transient) {
        assert!(
            b.offset.expect("placed") >= stats.persistent_bytes,
            "{} inside the persistent region",
            b.name
        );
    }
}
