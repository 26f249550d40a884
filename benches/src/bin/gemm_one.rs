//! Times every GEMM shape of `GEMM_SHAPES` whose name contains a filter, best of a few seconds
//! each, and prints its GFLOP/s — quick A/B comparisons of GEMM changes on a noisy machine
//! (the fastest call is far steadier than criterion's mean here), and a target for `perf`.
//! Run: `cargo run --release -p cnnc-benches --bin gemm_one -- [filter] [seconds] [threads]`
//! (one thread: the calling thread's CPU time; more: wall time).

use cnnc_benches::{best_cpu_time, best_time, data, GEMM_SHAPES};
use cnnc_runtime::kernels::{gemm, Ctx, Epilogue};
use cnnc_runtime::pool::Pool;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = args.get(1).cloned().unwrap_or_default();
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let pool = Pool::new(threads);
    let ctx = Ctx::new(&pool);
    let budget = Duration::from_secs_f64(secs);
    for s in GEMM_SHAPES.iter().filter(|s| s.name.contains(&filter)) {
        let g = s.geom;
        let (a, b) = (data(g.m * g.k, 1), data(g.k * g.n, 2));
        let mut c = vec![0f32; g.m * g.n];
        let mut call = || gemm(&ctx, &g, &a, &b, &mut c, false, Epilogue::none());
        let t = if threads > 1 {
            best_time(budget, &mut call)
        } else {
            best_cpu_time(budget, &mut call)
        };
        println!(
            "{:<28} {:>5}x{:<5}x{:<5} {:>9.1} us {:>7.1} GFLOP/s",
            s.name,
            g.m,
            g.n,
            g.k,
            t * 1e6,
            g.flops() as f64 / t / 1e9
        );
    }
}
