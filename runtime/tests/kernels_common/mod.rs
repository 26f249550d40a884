//! Helpers shared by the kernel tests: deterministic data, naive reference implementations
//! (plain loops, f64 accumulation) and the pools/ISAs every kernel is checked on.
#![allow(dead_code)]

use cnnc_runtime::kernels::{ConvGeom, KernelIsa};
use cnnc_runtime::pool::Pool;
use cnnc_runtime::rng::Rng;

/// Tolerance for f32 kernels against f64 references: sums of up to a few thousand products.
pub const KERNEL_TOL: crate::support::Tol = crate::support::Tol { abs: 1e-4, rel: 1e-4 };

/// Tolerance for convolutions computed by Winograd against f64 references. F(4×4, 3×3)'s
/// transforms round at up to 8× and 15× the inputs' magnitudes, so its error follows the sum
/// of magnitudes Σ|x||w| (bounded relative to it in `kernels_winograd.rs`), not the output,
/// which may be near zero: about 1.5e-4 at worst on these tests' shapes, where Σ|x||w| is
/// about 150 (K = 576 values in [-1, 1)). Absolute 5e-4 (3× that) and relative 1e-3, the
/// compiler's `Tolerance::KERNEL`, which whole models are held to against the interpreter.
pub const WINOGRAD_TOL: crate::support::Tol = crate::support::Tol { abs: 5e-4, rel: 1e-3 };

/// [`WINOGRAD_TOL`] for the convs the kernels compute by Winograd on `isa`, else [`KERNEL_TOL`].
pub fn conv_tol(isa: cnnc_runtime::kernels::KernelIsa, g: &cnnc_runtime::kernels::ConvGeom) -> crate::support::Tol {
    if cnnc_runtime::kernels::use_winograd(isa, g) {
        WINOGRAD_TOL
    } else {
        KERNEL_TOL
    }
}

/// `len` values uniform in [-1, 1) from `seed`.
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.uniform() * 2.0 - 1.0).collect()
}

/// Every ISA this CPU runs (the portable one always included).
pub fn isas() -> Vec<KernelIsa> {
    KernelIsa::all_supported()
}

/// Pools with 1 and 2 threads. Also makes every kernel split its work however small (the test
/// shapes are), so the 2-thread pool really exercises the parallel split.
pub fn pools() -> Vec<Pool> {
    cnnc_runtime::kernels::set_parallel_min_flops(0);
    vec![Pool::new(1), Pool::new(2)]
}

/// `C[m, n] = op(A)·op(B)` with f64 accumulation.
pub fn gemm_ref(m: usize, n: usize, k: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                let av = if ta { a[p * m + i] } else { a[i * k + p] };
                let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

/// Input pixel `(iy, ix)` read by output `(oy, ox)` through tap `(ky, kx)`, if not padding.
pub fn tap(g: &ConvGeom, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let iy = (oy * g.stride[0] + ky) as isize - g.pad.top as isize;
    let ix = (ox * g.stride[1] + kx) as isize - g.pad.left as isize;
    (iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w).then_some((iy as usize, ix as usize))
}

/// Naive conv forward: six nested loops.
pub fn conv_ref(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; g.output_len()];
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for f in 0..g.f {
                    let mut s = 0f64;
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                                for c in 0..g.c {
                                    let xv = x[((n * g.h + iy) * g.w + ix) * g.c + c];
                                    let wv = w[((ky * g.kw + kx) * g.c + c) * g.f + f];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                    }
                    y[((n * g.oh + oy) * g.ow + ox) * g.f + f] = s as f32;
                }
            }
        }
    }
    y
}

/// Naive input gradient: scatter every `dy` through every tap.
pub fn conv_grad_input_ref(g: &ConvGeom, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f64; g.input_len()];
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                            for c in 0..g.c {
                                let mut s = 0f64;
                                for f in 0..g.f {
                                    s += dy[((n * g.oh + oy) * g.ow + ox) * g.f + f] as f64
                                        * w[((ky * g.kw + kx) * g.c + c) * g.f + f] as f64;
                                }
                                dx[((n * g.h + iy) * g.w + ix) * g.c + c] += s;
                            }
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}

/// Naive kernel gradient.
pub fn conv_grad_kernel_ref(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dw = vec![0f64; g.kernel_len()];
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        if let Some((iy, ix)) = tap(g, oy, ox, ky, kx) {
                            for c in 0..g.c {
                                let xv = x[((n * g.h + iy) * g.w + ix) * g.c + c] as f64;
                                for f in 0..g.f {
                                    dw[((ky * g.kw + kx) * g.c + c) * g.f + f] +=
                                        xv * dy[((n * g.oh + oy) * g.ow + ox) * g.f + f] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    dw.into_iter().map(|v| v as f32).collect()
}
