//! Optional per-kernel timing of native runs (`NativeExecutor::set_profiling`): wall time of
//! every run-stage kernel, summed over calls, per program, and a report sorted by time.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use cnnc_runtime::kernels::Ctx;

use super::compiled::{Compiled, Mem};
use super::dispatch;
use crate::ir::Mode;
use crate::kernel_ir::KernelOp;

/// Per kernel: total and fastest time over the calls.
#[derive(Clone, Copy, Debug)]
struct Times {
    total: Duration,
    min: Duration,
}

/// Times per program (mode, batch size): one entry per run-stage kernel, and the call count.
#[derive(Debug, Default)]
pub(super) struct Profile {
    times: HashMap<(Mode, usize), (Vec<Times>, u64)>,
}

impl Profile {
    /// Runs `c`'s run-stage kernels, timing each.
    pub fn run(&mut self, key: (Mode, usize), c: &Compiled, m: &Mem, ctx: &Ctx, ws: &mut [f32], t: u64) {
        let (times, calls) = self.times.entry(key).or_insert_with(|| {
            let zero = Times {
                total: Duration::ZERO,
                min: Duration::MAX,
            };
            (vec![zero; c.run.len()], 0)
        });
        for (s, d) in c.run.iter().zip(times.iter_mut()) {
            let t0 = Instant::now();
            dispatch::run(s, m, ctx, ws, t);
            let e = t0.elapsed();
            d.total += e;
            d.min = d.min.min(e);
        }
        *calls += 1;
    }

    /// One table per profiled program: kernels by decreasing time, with ms per call, share and
    /// fastest call. The sum of the fastest calls estimates a step on an otherwise idle machine.
    pub fn report<'c>(&self, lookup: impl Fn(Mode, usize) -> Option<&'c Compiled>) -> String {
        let mut out = String::new();
        let mut keys: Vec<_> = self.times.keys().copied().collect();
        keys.sort_by_key(|&(m, n)| (m == Mode::Inference, n));
        for key in keys {
            let (times, calls) = &self.times[&key];
            let Some(c) = lookup(key.0, key.1) else { continue };
            let total: Duration = times.iter().map(|t| t.total).sum();
            let fastest: Duration = times.iter().map(|t| t.min).sum();
            let per_call = |d: Duration| d.as_secs_f64() * 1e3 / (*calls).max(1) as f64;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let _ = writeln!(
                out,
                "{:?} n={} ({} calls): {:.3} ms per call; sum of per-kernel fastest calls {:.3} ms; \
                 {} gradients copied out of the arena, the others written in place",
                key.0,
                key.1,
                calls,
                per_call(total),
                ms(fastest),
                c.grads.len()
            );
            let mut order: Vec<usize> = (0..times.len()).collect();
            order.sort_by_key(|&i| std::cmp::Reverse(times[i].total));
            for i in order {
                let ki = c.run[i].kernel;
                let k = &c.program.kernels[ki];
                let share = 100.0 * times[i].total.as_secs_f64() / total.as_secs_f64().max(1e-12);
                let _ = writeln!(
                    out,
                    "  k{ki:<3} {:8.3} ms {share:5.1}% (fastest {:7.3})  {:<18} {} {}",
                    per_call(times[i].total),
                    ms(times[i].min),
                    k.op.mnemonic(),
                    describe(&k.op),
                    k.origin.join(","),
                );
            }
        }
        out
    }
}

/// A short description of a kernel's size.
fn describe(op: &KernelOp) -> String {
    match op {
        KernelOp::Conv2d {
            geom: g, epilogue: e, ..
        } => format!(
            "n={} {}x{}x{} -> {}x{}x{} k={}x{}{}{}",
            g.n,
            g.in_hw[0],
            g.in_hw[1],
            g.c,
            g.out_hw[0],
            g.out_hw[1],
            g.f,
            g.kernel_hw[0],
            g.kernel_hw[1],
            if e.bn_stats { " +stats" } else { "" },
            if e.max_pool.is_some() { " +pool" } else { "" }
        ),
        KernelOp::ConvGradInput { geom: g } | KernelOp::ConvGradKernel { geom: g, .. } => format!(
            "n={} {}x{}x{} -> {}x{}x{} k={}x{}",
            g.n, g.in_hw[0], g.in_hw[1], g.c, g.out_hw[0], g.out_hw[1], g.f, g.kernel_hw[0], g.kernel_hw[1]
        ),
        _ => match op.gemm_dims() {
            Some(d) => format!("m={} n={} k={}", d.m, d.n, d.k),
            None => {
                let (ins, _) = op.operand_sizes();
                format!("{} values", ins.first().copied().unwrap_or(0))
            }
        },
    }
}
