//! Runs one conv layer of `CONV_SHAPES` in one direction on one thread for a few seconds and
//! prints its GFLOP/s — a target for profilers (`perf record`).
//! Run: `cargo run --release -p cnnc-benches --bin conv_one -- resnet18/64 fwd|dx|dw|wino|wdw|sfwd|sdw [seconds] [threads]`
//! (one thread: the calling thread's CPU time; more: wall time). `wino` is the forward (bias +
//! ReLU, like `fwd`) by Winograd F(2×2, 3×3), 3×3 stride-1 layers only; its GFLOP/s are the
//! direct conv's FLOPs over its time, so they compare with `fwd`; `wdw` likewise is the kernel
//! gradient by Winograd F(3×3, 2×2), to compare with `dw`. `BATCH=` overrides the batch;
//! `WINOGRAD=0` makes `fwd`, `dx` and `dw` take the direct path where they would pick Winograd;
//! `WINOGRAD_TILE=2|4` makes every Winograd forward (`wino`, and `fwd`/`dx` where they pick
//! Winograd) use F(2×2, 3×3) or F(4×4, 3×3) instead of the kernels' choice.
//! `sfwd` is the small-channel direct forward (bias + ReLU) fused with a 2×2 max-pool and its
//! argmax (conv outputs of even size only), `sdw` the small-channel kernel gradient from that
//! pool's dy (`SmallDy::Pooled`); both report the conv's FLOPs over their time. `pfwd` is the
//! forward fused with a 2×2 max-pool as the executor runs it (`conv2d_forward_pooled`: the
//! small-channel kernel or chunks of images convolved then pooled), any layer of even output.

use cnnc_benches::{best_cpu_time, best_time, data, ConvData, CONV_SHAPES};
use cnnc_runtime::kernels::pool2d::PoolGeom;
use cnnc_runtime::kernels::{
    conv2d_forward, conv2d_forward_pooled, conv2d_forward_small, conv2d_forward_winograd, conv2d_grad_input,
    conv2d_grad_kernel, conv2d_grad_kernel_small, conv2d_grad_kernel_winograd, pooled_conv_workspace, set_winograd,
    set_winograd_tile, small_conv_applies, winograd_applies, Act, Ctx, Epilogue, SmallDy, WinogradTile,
};
use cnnc_runtime::pool::Pool;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: conv_one LAYER fwd|dx|dw|wino|wdw|sfwd|sdw [seconds] [threads]");
        std::process::exit(2);
    };
    let secs: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let Some(s) = CONV_SHAPES.iter().find(|s| s.name == name) else {
        eprintln!(
            "unknown layer {name}; known: {:?}",
            CONV_SHAPES.iter().map(|s| s.name).collect::<Vec<_>>()
        );
        std::process::exit(2);
    };
    let mut g = s.geom();
    if let Some(n) = std::env::var("BATCH").ok().and_then(|s| s.parse().ok()) {
        g.n = n;
    }
    let ConvData {
        x,
        w,
        bias,
        dy,
        mut y,
        mut dx,
        mut dw,
        ..
    } = ConvData::new(&g);
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let pool = Pool::new(threads);
    let best: fn(Duration, &mut dyn FnMut()) -> f64 = if threads > 1 {
        |b, f| best_time(b, f)
    } else {
        |b, f| best_cpu_time(b, f)
    };
    let winograd = std::env::var("WINOGRAD").map_or(true, |v| v != "0");
    set_winograd(winograd);
    match std::env::var("WINOGRAD_TILE").as_deref() {
        Ok("2") => set_winograd_tile(Some(WinogradTile::F2x2)),
        Ok("4") => set_winograd_tile(Some(WinogradTile::F4x4)),
        _ => {}
    }
    let ctx = Ctx::new(&pool);
    let budget = Duration::from_secs_f64(secs);
    let t = match dir.as_str() {
        "fwd" => best(budget, &mut || {
            conv2d_forward(
                &ctx,
                &g,
                &x,
                &w,
                Epilogue::none().with_bias(&bias).with_act(Act::Relu),
                &mut y,
            )
        }),
        "wino" if winograd_applies(&g) => best(budget, &mut || {
            conv2d_forward_winograd(
                &ctx,
                WinogradTile::for_geom(&g),
                &g,
                &x,
                &w,
                Epilogue::none().with_bias(&bias).with_act(Act::Relu),
                &mut y,
            )
        }),
        "wdw" if winograd_applies(&g) => best(budget, &mut || {
            conv2d_grad_kernel_winograd(&ctx, WinogradTile::for_geom(&g), &g, &x, &dy, &mut dw, None)
        }),
        "wino" | "wdw" => {
            eprintln!("{name} is not a 3×3 stride-1 conv: no Winograd");
            std::process::exit(2);
        }
        "pfwd" if g.oh % 2 == 0 && g.ow % 2 == 0 => {
            let pg = PoolGeom::valid(g.n, [g.oh, g.ow], g.f, [2, 2], [2, 2]);
            let mut py = vec![0f32; pg.output_len()];
            let mut ws = vec![0f32; pooled_conv_workspace(&g)];
            best(budget, &mut || {
                let epi = Epilogue::none().with_bias(&bias).with_act(Act::Relu);
                conv2d_forward_pooled(&ctx, &g, &x, &w, epi, &pg, &mut py, None, &mut ws)
            })
        }
        "sfwd" | "sdw" if small_conv_applies(ctx.isa, &g) && g.oh % 2 == 0 && g.ow % 2 == 0 => {
            let pg = PoolGeom::valid(g.n, [g.oh, g.ow], g.f, [2, 2], [2, 2]);
            let mut argmax = vec![0f32; pg.output_len()];
            let mut py = vec![0f32; pg.output_len()];
            let epi = || Epilogue::none().with_bias(&bias).with_act(Act::Relu);
            conv2d_forward_small(&ctx, &g, &x, &w, epi(), Some((&pg, Some(&mut argmax))), &mut py);
            if dir == "sfwd" {
                best(budget, &mut || {
                    conv2d_forward_small(&ctx, &g, &x, &w, epi(), Some((&pg, Some(&mut argmax))), &mut py)
                })
            } else {
                let pdy = data(pg.output_len(), 5);
                best(budget, &mut || {
                    let dy = SmallDy::Pooled {
                        pool: &pg,
                        argmax: &argmax,
                        y: &py,
                        dy: &pdy,
                        act: Act::Relu,
                    };
                    conv2d_grad_kernel_small(&ctx, &g, &x, dy, &mut dw, None)
                })
            }
        }
        "pfwd" | "sfwd" | "sdw" => {
            eprintln!("{name} is not a small-channel conv with an even output: no fused pool");
            std::process::exit(2);
        }
        "dx" => best(budget, &mut || conv2d_grad_input(&ctx, &g, &dy, &w, &mut dx)),
        _ => best(budget, &mut || conv2d_grad_kernel(&ctx, &g, &x, &dy, &mut dw, None)),
    };
    println!(
        "{name} {dir} {} on {threads} thread(s): {:.1} GFLOP/s",
        s.id(),
        g.flops() as f64 / t / 1e9
    );
}
