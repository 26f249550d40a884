//! Shared pieces of cnnc's kernel benchmarks: the layer shape tables (the conv layers of the
//! MNIST CNN, the CIFAR-10 CNN and ResNet18 on CIFAR-10, and the dense layers of those models),
//! deterministic data, a quick best-of timer, the unfused conv + bias + ReLU baseline, and the
//! single-core FMA peak probe; [`bn`]: conv + BN + ReLU fused, unfused and interpreted.
//!
//! Benchmarks: `cargo bench -p cnnc-benches --bench conv` / `--bench conv_bn` / `--bench gemm`
//! (criterion; elem/s is FLOP/s). Quick tables: `cargo run --release -p cnnc-benches --bin
//! kernel_table` / `--bin bn_table`. Peak: `cargo run --release -p cnnc-benches --bin fma_peak`.

pub mod bn;

use cnnc_runtime::kernels::{conv2d_forward, Act, ConvGeom, Ctx, Epilogue, GemmGeom};
use std::time::{Duration, Instant};

/// One convolution layer of a model, TF SAME (or VALID) padding.
#[derive(Clone, Copy, Debug)]
pub struct ConvShape {
    /// `model/layer`.
    pub name: &'static str,
    pub batch: usize,
    /// Input height = width.
    pub hw: usize,
    pub c: usize,
    /// Kernel height = width.
    pub k: usize,
    pub f: usize,
    pub stride: usize,
    /// VALID padding (LeNet-5) instead of SAME.
    pub valid: bool,
    /// The model's first layer: its input is the data, so training computes no input gradient
    /// (the compiled program has none; the conv + BN benchmarks leave it out too).
    pub input: bool,
}

impl ConvShape {
    pub fn geom(&self) -> ConvGeom {
        let geom = if self.valid { ConvGeom::valid } else { ConvGeom::same };
        geom(
            self.batch,
            [self.hw, self.hw],
            self.c,
            [self.k, self.k],
            self.f,
            [self.stride, self.stride],
        )
    }

    /// Short id for benchmark names: `28x28x1-32k3s1n128`.
    pub fn id(&self) -> String {
        format!(
            "{}x{}x{}-{}k{}s{}{}n{}",
            self.hw,
            self.hw,
            self.c,
            self.f,
            self.k,
            self.stride,
            if self.valid { "v" } else { "" },
            self.batch
        )
    }
}

const fn conv(name: &'static str, batch: usize, hw: usize, c: usize, k: usize, f: usize, stride: usize) -> ConvShape {
    ConvShape {
        name,
        batch,
        hw,
        c,
        k,
        f,
        stride,
        valid: false,
        input: false,
    }
}

/// `s` as its model's first layer.
const fn first(s: ConvShape) -> ConvShape {
    ConvShape { input: true, ..s }
}

const fn conv_valid(name: &'static str, batch: usize, hw: usize, c: usize, k: usize, f: usize) -> ConvShape {
    ConvShape {
        valid: true,
        ..conv(name, batch, hw, c, k, f, 1)
    }
}

/// Every distinct conv layer of the four models, at the model's training batch size
/// (MNIST CNN and LeNet-5 128, CIFAR-10 CNN 64, ResNet18 32; see `models/*.yaml`).
pub const CONV_SHAPES: &[ConvShape] = &[
    first(conv("mnist_cnn/conv1", 128, 28, 1, 3, 32, 1)),
    conv("mnist_cnn/conv2", 128, 14, 32, 3, 64, 1),
    first(conv_valid("lenet5/conv1", 128, 28, 1, 5, 6)),
    conv_valid("lenet5/conv2", 128, 12, 6, 5, 16),
    first(conv("cifar10_cnn/conv1", 64, 32, 3, 3, 32, 1)),
    conv("cifar10_cnn/conv2", 64, 32, 32, 3, 32, 1),
    conv("cifar10_cnn/conv3", 64, 16, 32, 3, 64, 1),
    conv("cifar10_cnn/conv4", 64, 16, 64, 3, 64, 1),
    conv("cifar10_cnn/conv5", 64, 8, 64, 3, 128, 1),
    conv("cifar10_cnn/conv6", 64, 8, 128, 3, 128, 1),
    first(conv("resnet18/stem", 32, 32, 3, 3, 64, 1)),
    conv("resnet18/64", 32, 32, 64, 3, 64, 1),
    conv("resnet18/down128", 32, 32, 64, 3, 128, 2),
    conv("resnet18/short128", 32, 32, 64, 1, 128, 2),
    conv("resnet18/128", 32, 16, 128, 3, 128, 1),
    conv("resnet18/down256", 32, 16, 128, 3, 256, 2),
    conv("resnet18/short256", 32, 16, 128, 1, 256, 2),
    conv("resnet18/256", 32, 8, 256, 3, 256, 1),
    conv("resnet18/down512", 32, 8, 256, 3, 512, 2),
    conv("resnet18/short512", 32, 8, 256, 1, 512, 2),
    conv("resnet18/512", 32, 4, 512, 3, 512, 1),
];

/// One GEMM of a model layer (or a reference square).
#[derive(Clone, Copy, Debug)]
pub struct GemmShape {
    pub name: &'static str,
    pub geom: GemmGeom,
}

const fn gemm(name: &'static str, m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool) -> GemmShape {
    GemmShape {
        name,
        geom: GemmGeom {
            m,
            n,
            k,
            trans_a,
            trans_b,
        },
    }
}

/// Dense layers (forward `x·W`, input gradient `dy·Wᵀ`, weight gradient `xᵀ·dy`) and a few
/// conv-sized and square products.
pub const GEMM_SHAPES: &[GemmShape] = &[
    gemm("mnist_cnn/dense1 fwd", 128, 128, 3136, false, false),
    gemm("mnist_cnn/dense1 dx", 128, 3136, 128, false, true),
    gemm("mnist_cnn/dense1 dW", 3136, 128, 128, true, false),
    gemm("mnist_cnn/dense2 fwd", 128, 10, 128, false, false),
    gemm("cifar10_cnn/dense1 fwd", 64, 128, 8192, false, false),
    gemm("cifar10_cnn/dense1 dx", 64, 8192, 128, false, true),
    gemm("cifar10_cnn/dense1 dW", 8192, 128, 64, true, false),
    gemm("resnet18/f1 fwd", 32, 10, 512, false, false),
    gemm("batch1 dense 3136x128", 1, 128, 3136, false, false),
    gemm("conv-like 25088x64x288", 25088, 64, 288, false, false),
    gemm("square 512", 512, 512, 512, false, false),
    gemm("square 1024", 1024, 1024, 1024, false, false),
];

/// `len` values in [-1, 1) from a 64-bit LCG (deterministic, no dependencies).
pub fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A conv layer's inputs, filled by [`data`] with fixed seeds, and its output buffers: what every
/// conv benchmark runs on.
pub struct ConvData {
    pub x: Vec<f32>,    // [N, H, W, C]
    pub w: Vec<f32>,    // [KH, KW, C, F]
    pub bias: Vec<f32>, // [F]
    pub dy: Vec<f32>,   // [N, OH, OW, F]
    pub y: Vec<f32>,    // [N, OH, OW, F]
    pub dx: Vec<f32>,   // [N, H, W, C]
    pub dw: Vec<f32>,   // [KH, KW, C, F]
    pub db: Vec<f32>,   // [F]
}

impl ConvData {
    pub fn new(g: &ConvGeom) -> Self {
        ConvData {
            x: data(g.input_len(), 1),
            w: data(g.kernel_len(), 2),
            bias: data(g.f, 3),
            dy: data(g.output_len(), 4),
            y: vec![0.0; g.output_len()],
            dx: vec![0.0; g.input_len()],
            dw: vec![0.0; g.kernel_len()],
            db: vec![0.0; g.f],
        }
    }
}

/// Best-of timing: runs `f` repeatedly for about `budget` (at least 3 times) and returns the
/// fastest run's wall-clock seconds.
pub fn best_time(budget: Duration, f: impl FnMut()) -> f64 {
    best_of(budget, f, Instant::now, |t| t.elapsed().as_secs_f64())
}

/// Like [`best_time`] but in CPU seconds of the calling thread (Linux; wall time elsewhere):
/// for single-threaded runs on a busy machine, time spent descheduled does not count.
pub fn best_cpu_time(budget: Duration, f: impl FnMut()) -> f64 {
    best_of(budget, f, thread_cpu_seconds, |t0| thread_cpu_seconds() - t0)
}

fn best_of<T>(budget: Duration, mut f: impl FnMut(), start: impl Fn() -> T, secs: impl Fn(T) -> f64) -> f64 {
    f(); // warm-up: scratch buffers, packs, page faults
    let wall = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || wall.elapsed() < budget {
        let t = start();
        f();
        best = best.min(secs(t));
        runs += 1;
    }
    best
}

/// CPU time of the calling thread in seconds.
#[cfg(target_os = "linux")]
pub fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (two i64 on 64-bit Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Wall-clock seconds since the first call (no per-thread clock on this OS).
#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_seconds() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// The unfused baseline of conv + bias + ReLU: the conv with no epilogue, then a separate pass
/// adding the bias, then a separate ReLU pass (what a compiler without epilogue fusion emits).
pub fn conv_bias_relu_unfused(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    conv2d_forward(ctx, g, x, w, Epilogue::none(), y);
    for row in y.chunks_exact_mut(g.f) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    for v in y.iter_mut() {
        *v = v.max(0.0);
    }
}

/// The fused version: bias and ReLU applied by the conv's epilogue while each tile is hot.
pub fn conv_bias_relu_fused(ctx: &Ctx, g: &ConvGeom, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32]) {
    conv2d_forward(ctx, g, x, w, Epilogue::none().with_bias(bias).with_act(Act::Relu), y);
}

/// Measured single-core FMA peak in GFLOP/s of the best vector ISA this CPU has (AVX-512 or
/// AVX2), with its name; `None` without FMA.
pub fn fma_peak_gflops() -> Option<(&'static str, f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return Some(("avx512", measure(|iters| unsafe { fma_avx512(iters) }, 32 * 24)));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            return Some(("avx2", measure(|iters| unsafe { fma_avx2(iters) }, 16 * 12)));
        }
    }
    None
}

/// GFLOP/s of `run(iters)`, which performs `flops_per_iter` FLOPs per iteration.
#[cfg(target_arch = "x86_64")]
fn measure(run: impl Fn(u64) -> f32, flops_per_iter: u64) -> f64 {
    let iters = 20_000_000u64;
    let secs = best_cpu_time(Duration::from_millis(600), || {
        std::hint::black_box(run(std::hint::black_box(iters)));
    });
    (iters * flops_per_iter) as f64 / secs / 1e9
}

/// 24 independent FMA chains of 16 lanes (enough to cover 4-cycle latency on two FMA ports).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 24];
    let a = _mm512_set1_ps(std::hint::black_box(0.999_99));
    let b = _mm512_set1_ps(std::hint::black_box(1e-7));
    for (i, x) in acc.iter_mut().enumerate() {
        *x = _mm512_set1_ps(i as f32);
    }
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for x in acc {
        s = _mm512_add_ps(s, x);
    }
    _mm512_reduce_add_ps(s)
}

/// 12 independent FMA chains of 8 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 12];
    let a = _mm256_set1_ps(std::hint::black_box(0.999_99));
    let b = _mm256_set1_ps(std::hint::black_box(1e-7));
    for (i, x) in acc.iter_mut().enumerate() {
        *x = _mm256_set1_ps(i as f32);
    }
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}
