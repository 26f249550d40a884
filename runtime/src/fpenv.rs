//! The floating-point environment the kernels run in: denormals flushed to zero.
//!
//! Late in training many gradients and Adam moments fall below `f32::MIN_POSITIVE`; on x86 every
//! FMA that reads or produces such a subnormal value takes a microcode assist costing on the
//! order of a hundred cycles, and a training epoch slowed down by a quarter here. TensorFlow runs
//! its kernels with FTZ/DAZ set for the same reason. Values this small are below anything the
//! tolerance of a result can see, so the kernels run with both bits set:
//!
//! * FTZ (flush to zero): a result that would be subnormal is written as ±0;
//! * DAZ (denormals are zero): a subnormal operand is read as ±0.
//!
//! [`FlushDenormals`] sets both for a scope and restores the previous state when dropped, so the
//! caller's own code is unaffected; the thread pool's workers set them once, when they start (they
//! run nothing but kernels). Other architectures keep IEEE behaviour (a no-op guard).

/// Sets FTZ and DAZ on this thread until dropped. Not `Send`: the state is per thread.
#[must_use = "denormals are flushed only while the guard lives"]
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// MXCSR bit 15: flush-to-zero; bit 6: denormals-are-zero.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushDenormals {
    /// Flushes denormals on this thread from now until the guard is dropped.
    pub fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = mxcsr::read();
            mxcsr::write(saved | FTZ_DAZ);
            FlushDenormals {
                saved,
                _not_send: std::marker::PhantomData,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Default for FlushDenormals {
    fn default() -> Self {
        FlushDenormals::new()
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        mxcsr::write(self.saved);
    }
}

/// Sets FTZ and DAZ on this thread for good (thread-pool workers).
pub(crate) fn flush_denormals_forever() {
    std::mem::forget(FlushDenormals::new());
}

#[cfg(target_arch = "x86_64")]
mod mxcsr {
    /// The SSE control/status register of this thread.
    pub fn read() -> u32 {
        let mut v: u32 = 0;
        // SAFETY: `stmxcsr` stores 4 bytes to the given address, a live local; SSE is baseline
        // on x86_64.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
        v
    }

    /// Loads `v` into MXCSR (only mode bits are changed by callers, never exception masks).
    pub fn write(v: u32) {
        // SAFETY: `ldmxcsr` reads 4 bytes from a live local; callers only toggle FTZ/DAZ of a
        // value read from the register, so no floating-point exception gets unmasked.
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, preserves_flags, readonly)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest positive subnormal f32 times one stays subnormal under IEEE rules.
    fn tiny_product() -> f32 {
        std::hint::black_box(f32::from_bits(1)) * std::hint::black_box(1.0f32)
    }

    #[test]
    fn guard_flushes_and_restores() {
        assert_eq!(tiny_product().to_bits(), 1, "IEEE behaviour before the guard");
        {
            let _g = FlushDenormals::new();
            if cfg!(target_arch = "x86_64") {
                assert_eq!(tiny_product(), 0.0, "denormal operand read as zero");
            }
        }
        assert_eq!(tiny_product().to_bits(), 1, "IEEE behaviour restored");
    }
}
