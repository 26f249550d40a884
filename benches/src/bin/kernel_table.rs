//! Prints a markdown table of GFLOP/s for every conv shape of `CONV_SHAPES` (forward with the
//! fused bias + ReLU epilogue, input gradient, kernel gradient with bias gradient) on 1 and 2
//! threads, the fused vs unfused conv + bias + ReLU comparison, and the GEMM shapes.
//! Run: `cargo run --release -p cnnc-benches --bin kernel_table [filter] [rounds]` (quick best-of
//! timing, about a minute per round; `filter` keeps the shapes whose name contains it; each cell
//! is the best of `rounds` passes over the whole table, default 1, which filters out transient
//! contention on a shared machine).

use cnnc_benches::{
    best_cpu_time, best_time, conv_bias_relu_fused, conv_bias_relu_unfused, data, fma_peak_gflops, ConvData,
    CONV_SHAPES, GEMM_SHAPES,
};
use cnnc_runtime::kernels::{conv2d_grad_input, conv2d_grad_kernel, gemm, Ctx, Epilogue};
use cnnc_runtime::pool::Pool;
use std::time::Duration;

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let rounds: usize = std::env::args().nth(2).and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    let peak = fma_peak_gflops();
    if let Some((isa, p)) = peak {
        println!("single-core {isa} FMA peak: {p:.1} GFLOP/s\n");
    }
    let peak = peak.map_or(f64::NAN, |p| p.1);
    let pools = [Pool::new(1), Pool::new(2)];
    let budget = Duration::from_millis(300);
    println!("| layer | shape (HxWxC-F k s n) | GFLOP | fwd 1T | %peak | dx 1T | %peak | dw 1T | %peak | fwd 2T | dx 2T | dw 2T | unfused fwd 1T |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let shapes: Vec<_> = CONV_SHAPES.iter().filter(|s| s.name.contains(&filter)).collect();
    // Per shape: [fwd, dx, dw] on 1 and 2 threads, then unfused fwd on 1 thread (GFLOP/s).
    let mut best = vec![[0f64; 7]; shapes.len()];
    for _ in 0..rounds {
        for (s, cells) in shapes.iter().zip(best.iter_mut()) {
            let g = s.geom();
            let ConvData {
                x,
                w,
                bias,
                dy,
                mut y,
                mut dx,
                mut dw,
                mut db,
            } = ConvData::new(&g);
            let gf = g.flops() as f64 / 1e9;
            for (p, pool) in pools.iter().enumerate() {
                let ctx = Ctx::new(pool);
                // One thread: CPU time of this thread (robust on a busy machine); two: wall time.
                let time = |f: &mut dyn FnMut()| {
                    if pool.threads() == 1 {
                        best_cpu_time(budget, f)
                    } else {
                        best_time(budget, f)
                    }
                };
                let fwd = time(&mut || conv_bias_relu_fused(&ctx, &g, &x, &w, &bias, &mut y));
                let gi = time(&mut || conv2d_grad_input(&ctx, &g, &dy, &w, &mut dx));
                let gk = time(&mut || conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw, Some(&mut db)));
                for (i, t) in [fwd, gi, gk].into_iter().enumerate() {
                    cells[3 * p + i] = cells[3 * p + i].max(gf / t);
                }
            }
            let ctx = Ctx::new(&pools[0]);
            let unfused = best_cpu_time(budget, || conv_bias_relu_unfused(&ctx, &g, &x, &w, &bias, &mut y));
            cells[6] = cells[6].max(gf / unfused);
        }
    }
    for (s, cells) in shapes.iter().zip(&best) {
        let gf = s.geom().flops() as f64 / 1e9;
        let pct = |v: f64| format!("{:.0}%", 100.0 * v / peak);
        let [f1, i1, k1, f2, i2, k2, unfused] = *cells;
        println!(
            "| {} | {} | {gf:.3} | {f1:.1} | {} | {i1:.1} | {} | {k1:.1} | {} | {f2:.1} | {i2:.1} | {k2:.1} | {unfused:.1} |",
            s.name,
            s.id(),
            pct(f1),
            pct(i1),
            pct(k1),
        );
    }
    println!("\n| gemm | m x n x k (ta, tb) | GFLOP/s 1T | GFLOP/s 2T |");
    println!("|---|---|---|---|");
    for s in GEMM_SHAPES.iter().filter(|s| s.name.contains(&filter)) {
        let g = s.geom;
        let (a, b) = (data(g.m * g.k, 5), data(g.k * g.n, 6));
        let mut c = vec![0f32; g.m * g.n];
        let gf = g.flops() as f64 / 1e9;
        let r: Vec<f64> = pools
            .iter()
            .map(|pool| {
                let ctx = Ctx::new(pool);
                (0..rounds)
                    .map(|_| {
                        let mut run = || gemm(&ctx, &g, &a, &b, &mut c, false, Epilogue::none());
                        gf / if pool.threads() == 1 {
                            best_cpu_time(budget, &mut run)
                        } else {
                            best_time(budget, &mut run)
                        }
                    })
                    .fold(0.0, f64::max)
            })
            .collect();
        println!(
            "| {} | {}x{}x{} ({}, {}) | {:.1} | {:.1} |",
            s.name, g.m, g.n, g.k, g.trans_a, g.trans_b, r[0], r[1]
        );
    }
}
