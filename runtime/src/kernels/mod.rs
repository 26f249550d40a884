//! CPU kernels over plain `f32` slices: GEMM, convolution (forward and both gradients),
//! pooling, batch normalisation, softmax cross-entropy, elementwise ops and optimiser updates.
//!
//! Layouts follow the rest of cnnc: NHWC activations, HWIO conv kernels, row-major matrices,
//! BN moments as `[2, C]` (mean row, then biased-variance row). Every shape is a parameter, so
//! generated code calls these with constants and LLVM specialises the `#[inline]` drivers.
//!
//! Every parallel kernel takes a [`Ctx`] (thread pool + ISA). Work is split statically by
//! [`crate::pool::task_range`], and no reduction is ever split by thread: the convolution and
//! GEMM kernels (BN statistics epilogue included) give bit-identical results for any thread
//! count. Kernels with little work run on the calling thread only.
//!
//! `unsafe` lives in `simd.rs` / `microkernel.rs` / `winograd*.rs` / `conv_small.rs` (intrinsics behind run-time
//! feature checks; Winograd's transforms load and store through bounds-checked slices)
//! and in the `#[target_feature]` trampolines of [`KernelIsa::vectorize`].

pub mod activation;
mod channel_period;
pub mod conv;
mod conv_backward;
mod conv_pool;
mod conv_small;
pub mod elementwise;
mod epilogue;
pub mod gemm;
mod gemv;
mod im2col;
mod microkernel;
pub mod norm;
mod norm_apply;
mod norm_grad;
pub mod optim;
mod pack;
pub mod pool2d;
mod pool_argmax;
mod scratch;
mod simd;
pub mod softmax;
mod weight_memo;
mod winograd;
mod winograd_f4;
mod winograd_grad;

pub use activation::Act;
pub use conv::{
    conv2d_forward, conv2d_forward_packed, reads_kernel_in_place, set_winograd, use_winograd, ConvGeom, Pad,
};
pub use conv_backward::{conv2d_grad_input, conv2d_grad_kernel};
pub use conv_pool::{conv2d_forward_pooled, pooled_conv_workspace};
pub use conv_small::{conv2d_forward_small, conv2d_grad_kernel_small, small_conv_applies, SmallDy};
pub use epilogue::Epilogue;
pub use gemm::{gemm, GemmGeom};
pub use pack::PackedB;
pub use pool_argmax::{bn_act_max_pool_argmax, max_pool_argmax, max_pool_grad_argmax, BnAffine};
pub use winograd::{conv2d_forward_winograd, set_winograd_tile, winograd_applies, WinogradTile};
pub use winograd_grad::conv2d_grad_kernel_winograd;

use crate::pool::Pool;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The instruction set a kernel runs with. `detect()` picks the best the CPU has; forcing a
/// lower one (tests, benchmarks) is always allowed, asking for a higher one than the CPU has
/// silently falls back (see [`KernelIsa::supported`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelIsa {
    /// AVX-512F + FMA: 14 × 32 register tile.
    Avx512,
    /// AVX2 + FMA: 6 × 16 register tile.
    Avx2,
    /// Plain Rust that LLVM vectorises for the baseline target: runs anywhere.
    Portable,
}

impl KernelIsa {
    /// The best ISA this CPU supports.
    pub fn detect() -> KernelIsa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                return KernelIsa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return KernelIsa::Avx2;
            }
        }
        KernelIsa::Portable
    }

    /// Whether this CPU can run `self`.
    pub fn supported(self) -> bool {
        match self {
            KernelIsa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            KernelIsa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            KernelIsa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `self` if supported, else the best supported ISA below it.
    pub fn checked(self) -> KernelIsa {
        match self {
            KernelIsa::Avx512 if !self.supported() => KernelIsa::Avx2.checked(),
            KernelIsa::Avx2 if !self.supported() => KernelIsa::Portable,
            isa => isa,
        }
    }

    /// Every ISA this CPU supports, best first (for tests and benchmarks).
    pub fn all_supported() -> Vec<KernelIsa> {
        [KernelIsa::Avx512, KernelIsa::Avx2, KernelIsa::Portable]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            KernelIsa::Avx512 => "avx512",
            KernelIsa::Avx2 => "avx2",
            KernelIsa::Portable => "portable",
        }
    }

    /// Runs `f` compiled with this ISA's target features, so that plain loops inside it (which
    /// must be `#[inline(always)]` closures or functions) are auto-vectorised for it.
    #[inline(always)]
    pub fn vectorize<R>(self, f: impl FnOnce() -> R) -> R {
        match self.checked() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `checked()` returned Avx512 only because the CPU has avx512f and fma.
            KernelIsa::Avx512 => unsafe { with_avx512(f) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `checked()` returned Avx2 only because the CPU has avx2 and fma.
            KernelIsa::Avx2 => unsafe { with_avx2(f) },
            _ => f(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Where a kernel runs: the thread pool that shares its tiles and the ISA of its inner loops.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'p> {
    pub pool: &'p Pool,
    pub isa: KernelIsa,
}

impl<'p> Ctx<'p> {
    /// The pool with the best ISA of this CPU.
    pub fn new(pool: &'p Pool) -> Ctx<'p> {
        Ctx {
            pool,
            isa: KernelIsa::detect(),
        }
    }

    /// The pool with a chosen ISA (falls back if unsupported).
    pub fn with_isa(pool: &'p Pool, isa: KernelIsa) -> Ctx<'p> {
        Ctx {
            pool,
            isa: isa.checked(),
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// This context, or a single-threaded one when `flops` of work is too little to be worth
    /// waking other threads (results do not depend on the thread count either way).
    pub(crate) fn for_work(&self, flops: usize) -> Ctx<'p> {
        if flops < PARALLEL_MIN_FLOPS.load(Ordering::Relaxed) {
            Ctx {
                pool: Pool::inline(),
                isa: self.isa,
            }
        } else {
            *self
        }
    }
}

/// Least work (FLOPs) a kernel splits across threads; see [`set_parallel_min_flops`].
static PARALLEL_MIN_FLOPS: AtomicUsize = AtomicUsize::new(DEFAULT_PARALLEL_MIN_FLOPS);

/// Default of [`set_parallel_min_flops`]: about 10–20 µs on one core, the order of waking a
/// parked worker.
pub const DEFAULT_PARALLEL_MIN_FLOPS: usize = 2_000_000;

/// Sets (process-wide) the least work in FLOPs for which GEMM and convolution kernels split
/// across the pool's threads; smaller calls run on the calling thread. Results do not depend on
/// it. Tests set 0 to exercise the parallel split on small shapes.
pub fn set_parallel_min_flops(flops: usize) {
    PARALLEL_MIN_FLOPS.store(flops, Ordering::Relaxed);
}
