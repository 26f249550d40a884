//! Run: `cargo run --release -p cnnc-benches --bin bn_table [filter] [rounds]` (one thread,
//! about a minute per round; `filter` keeps the layers whose name contains it; each cell is the
//! best of `rounds` passes, default 1). Per kernel call instead:
//! `cargo run --release -p cnnc-benches --bin bn_table -- --steps [filter]`.
//!
//! Prints a markdown table of conv → BN (batch statistics) → ReLU on every layer of
//! `CONV_SHAPES`, in GFLOP/s of the conv (see `cnnc_benches::bn`): fused vs unfused forward and
//! backward with the speed-up, the conv (or its two gradients) alone — the floor both sequences
//! share, so `unfused / conv alone` is the most any fusion of the BN and ReLU passes can gain —
//! and the reference interpreter on the small layers.

use cnnc_benches::bn::{ConvBn, InterpConvBn, Steps, BACKWARD_FUSED, BACKWARD_UNFUSED, FORWARD_FUSED, FORWARD_UNFUSED};
use cnnc_benches::{best_cpu_time, CONV_SHAPES};
use cnnc_runtime::kernels::Ctx;
use cnnc_runtime::pool::Pool;
use std::hint::black_box;
use std::time::Duration;

/// Largest forward conv (FLOPs) the interpreter runs on (as in the `conv_bn` bench).
const INTERP_MAX_FLOPS: usize = 120_000_000;

/// Seconds of each measured sequence, best of every round.
#[derive(Clone, Copy)]
struct Times {
    fwd_fused: f64,
    fwd_unfused: f64,
    fwd_conv: f64,
    bwd_fused: f64,
    bwd_unfused: f64,
    bwd_conv: f64,
    /// Interpreter forward and backward (`NaN` when not run).
    interp: [f64; 2],
}

impl Times {
    const NONE: Times = Times {
        fwd_fused: f64::INFINITY,
        fwd_unfused: f64::INFINITY,
        fwd_conv: f64::INFINITY,
        bwd_fused: f64::INFINITY,
        bwd_unfused: f64::INFINITY,
        bwd_conv: f64::INFINITY,
        interp: [f64::NAN; 2],
    };
}

/// One round over one layer: every native sequence, and the interpreter if `interp`.
fn measure(ctx: &Ctx, l: &mut ConvBn, interp: Option<&InterpConvBn>, best: &mut Times) {
    let budget = Duration::from_millis(300);
    let time = |l: &mut ConvBn, f: fn(&mut ConvBn, &Ctx)| best_cpu_time(budget, || f(l, ctx));
    best.fwd_fused = best.fwd_fused.min(time(l, ConvBn::forward_fused));
    best.fwd_unfused = best.fwd_unfused.min(time(l, ConvBn::forward_unfused));
    best.fwd_conv = best.fwd_conv.min(time(l, ConvBn::conv_only_forward));
    // The backward reads the forward's activations: leave the fused forward's behind.
    l.forward_fused(ctx);
    best.bwd_fused = best.bwd_fused.min(time(l, ConvBn::backward_fused));
    best.bwd_unfused = best.bwd_unfused.min(time(l, ConvBn::backward_unfused));
    best.bwd_conv = best.bwd_conv.min(time(l, ConvBn::conv_only_backward));
    if let Some(it) = interp {
        // The interpreter is slow and steady: its minimum of 4 runs is enough.
        let once = Duration::ZERO;
        let f = best_cpu_time(once, || drop(black_box(it.forward())));
        let b = best_cpu_time(once, || drop(black_box(it.backward())));
        best.interp = [best.interp[0].min(f), best.interp[1].min(b)];
    }
}

/// Milliseconds of each kernel call of the four sequences, per layer, with the size of one
/// activation (`[N, OH, OW, F]`) to relate memory-bound passes to bandwidth.
fn steps_table(filter: &str) {
    let pool = Pool::new(1);
    let ctx = Ctx::new(&pool);
    let budget = Duration::from_millis(200);
    println!("ms per kernel call, 1 thread, ISA {:?}\n", ctx.isa);
    for s in CONV_SHAPES.iter().filter(|s| s.name.contains(filter)) {
        let mut l = ConvBn::for_shape(&ctx, s);
        let mb = (l.g.output_len() * 4) as f64 / 1e6;
        println!("{} {} (activation {mb:.1} MB)", s.name, s.id());
        let sequences: [(&str, Steps); 4] = [
            ("fwd fused", FORWARD_FUSED),
            ("fwd unfused", FORWARD_UNFUSED),
            ("bwd fused", BACKWARD_FUSED),
            ("bwd unfused", BACKWARD_UNFUSED),
        ];
        for (name, steps) in sequences {
            let cells: Vec<String> = steps
                .iter()
                .map(|(step, f)| format!("{step} {:.3}", 1e3 * best_cpu_time(budget, || f(&mut l, &ctx))))
                .collect();
            println!("  {name}: {}", cells.join(" | "));
        }
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--steps") {
        return steps_table(&std::env::args().nth(2).unwrap_or_default());
    }
    let filter = std::env::args().nth(1).unwrap_or_default();
    let rounds: usize = std::env::args().nth(2).and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    let pool = Pool::new(1);
    let ctx = Ctx::new(&pool);
    println!(
        "conv + BN + ReLU, 1 thread, ISA {:?}; GFLOP/s of the conv (backward: its gradients; no input gradient for a first layer)\n",
        ctx.isa
    );
    let shapes: Vec<_> = CONV_SHAPES.iter().filter(|s| s.name.contains(&filter)).collect();
    let mut layers: Vec<ConvBn> = shapes.iter().map(|s| ConvBn::for_shape(&ctx, s)).collect();
    let interps: Vec<Option<InterpConvBn>> = layers
        .iter()
        .map(|l| (l.g.flops() <= INTERP_MAX_FLOPS).then(|| InterpConvBn::new(l)))
        .collect();
    let mut best = vec![Times::NONE; shapes.len()];
    for _ in 0..rounds {
        for ((l, it), t) in layers.iter_mut().zip(&interps).zip(best.iter_mut()) {
            measure(&ctx, l, it.as_ref(), t);
        }
    }
    println!("| layer | shape | fwd fused | fwd unfused | fused/unfused | conv alone | max gain | bwd fused | bwd unfused | fused/unfused | conv grads alone | max gain | interp fwd | interp bwd |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((s, l), t) in shapes.iter().zip(&layers).zip(&best) {
        let (f, b) = (l.forward_flops() as f64 / 1e9, l.backward_flops() as f64 / 1e9);
        let interp = |gf: f64, secs: f64| {
            if secs.is_nan() {
                "—".to_string()
            } else {
                format!("{:.2}", gf / secs)
            }
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2}× | {:.1} | {:.2}× | {:.1} | {:.1} | {:.2}× | {:.1} | {:.2}× | {} | {} |",
            s.name,
            s.id(),
            f / t.fwd_fused,
            f / t.fwd_unfused,
            t.fwd_unfused / t.fwd_fused,
            f / t.fwd_conv,
            t.fwd_unfused / t.fwd_conv,
            b / t.bwd_fused,
            b / t.bwd_unfused,
            t.bwd_unfused / t.bwd_fused,
            b / t.bwd_conv,
            t.bwd_unfused / t.bwd_conv,
            interp(f, t.interp[0]),
            interp(b, t.interp[1]),
        );
    }
}
