
// ---- 16-lane f32 vectors: the register blocks of the GEMM-shaped kernels ---------------

/// Sixteen f32 lanes, the unit of the kernels' register blocks (`[[V; NB / 16]; MR]`
/// accumulators, fully unrolled so that they live in registers). One AVX-512 register when the
/// crate is built with `avx512f` (e.g. `-C target-cpu=native` on such a CPU); elsewhere an array
/// the compiler maps onto whatever vectors the target has.
#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
#[allow(unsafe_code)]
mod lanes {
    use core::arch::x86_64::*;

    // SAFETY (of every intrinsic call below): this module is compiled only when the crate is
    // built with `avx512f`, so the instructions exist; loads and stores go through slices
    // checked to hold 16 values.

    #[derive(Clone, Copy)]
    pub(crate) struct V(__m512);

    impl Default for V {
        #[inline(always)]
        fn default() -> V {
            V::zero()
        }
    }

    impl V {
        #[inline(always)]
        pub(crate) fn zero() -> V {
            V(unsafe { _mm512_setzero_ps() })
        }

        #[inline(always)]
        pub(crate) fn splat(a: f32) -> V {
            V(unsafe { _mm512_set1_ps(a) })
        }

        /// The first 16 values of `s`.
        #[inline(always)]
        pub(crate) fn load(s: &[f32]) -> V {
            let s = &s[..16];
            V(unsafe { _mm512_loadu_ps(s.as_ptr()) })
        }

        /// Writes the lanes to the first 16 values of `s`.
        #[inline(always)]
        pub(crate) fn store(self, s: &mut [f32]) {
            let s = &mut s[..16];
            unsafe { _mm512_storeu_ps(s.as_mut_ptr(), self.0) }
        }

        /// `self + a·b`, one rounding.
        #[inline(always)]
        pub(crate) fn fma(self, a: V, b: V) -> V {
            V(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }

        /// Per lane `if self > b { self } else { b }` (so `b` where either is NaN).
        #[inline(always)]
        pub(crate) fn max(self, b: V) -> V {
            V(unsafe { _mm512_max_ps(self.0, b.0) })
        }

        /// Per lane `if self > b { x } else { y }`.
        #[inline(always)]
        pub(crate) fn select_gt(self, b: V, x: V, y: V) -> V {
            V(unsafe { _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, b.0), y.0, x.0) })
        }
    }

    impl core::ops::Add for V {
        type Output = V;
        #[inline(always)]
        fn add(self, b: V) -> V {
            V(unsafe { _mm512_add_ps(self.0, b.0) })
        }
    }

    impl core::ops::Sub for V {
        type Output = V;
        #[inline(always)]
        fn sub(self, b: V) -> V {
            V(unsafe { _mm512_sub_ps(self.0, b.0) })
        }
    }

    impl core::ops::Mul for V {
        type Output = V;
        #[inline(always)]
        fn mul(self, b: V) -> V {
            V(unsafe { _mm512_mul_ps(self.0, b.0) })
        }
    }
}

/// Sixteen f32 lanes as an array (targets without AVX-512): the same operations, lane by lane,
/// which the compiler vectorises.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
mod lanes {
    #[derive(Clone, Copy)]
    pub(crate) struct V([f32; 16]);

    impl Default for V {
        #[inline(always)]
        fn default() -> V {
            V::zero()
        }
    }

    impl V {
        #[inline(always)]
        pub(crate) fn zero() -> V {
            V([0.0; 16])
        }

        #[inline(always)]
        pub(crate) fn splat(a: f32) -> V {
            V([a; 16])
        }

        #[inline(always)]
        pub(crate) fn load(s: &[f32]) -> V {
            let mut v = [0.0; 16];
            v.copy_from_slice(&s[..16]);
            V(v)
        }

        #[inline(always)]
        pub(crate) fn store(self, s: &mut [f32]) {
            s[..16].copy_from_slice(&self.0);
        }

        /// `self + a·b`, lane by lane as [`super::madd`] (fused where the target has FMA and
        /// the crate has `std`).
        #[inline(always)]
        pub(crate) fn fma(mut self, a: V, b: V) -> V {
            for ((s, &x), &y) in self.0.iter_mut().zip(&a.0).zip(&b.0) {
                *s = super::madd(x, y, *s);
            }
            self
        }

        /// Per lane `if self > b { self } else { b }`.
        #[inline(always)]
        pub(crate) fn max(self, b: V) -> V {
            self.select_gt(b, self, b)
        }

        /// Per lane `if self > b { x } else { y }`.
        #[inline(always)]
        pub(crate) fn select_gt(self, b: V, x: V, y: V) -> V {
            V(core::array::from_fn(|l| if self.0[l] > b.0[l] { x.0[l] } else { y.0[l] }))
        }
    }

    /// Lane by lane.
    macro_rules! lanewise {
        ($tr:ident, $f:ident, $op:tt) => {
            impl core::ops::$tr for V {
                type Output = V;
                #[inline(always)]
                fn $f(mut self, b: V) -> V {
                    for (s, &y) in self.0.iter_mut().zip(&b.0) {
                        *s $op y;
                    }
                    self
                }
            }
        };
    }
    lanewise!(Add, add, +=);
    lanewise!(Sub, sub, -=);
    lanewise!(Mul, mul, *=);
}

#[allow(unused_imports)] // (models whose blocks are all scalar)
pub(crate) use lanes::V;

/// Asks the CPU to bring the cache line of `s[0]` into L1 ahead of its use (x86-64; a no-op
/// elsewhere): for reads whose pattern the hardware prefetchers do not follow.
#[inline(always)]
#[allow(unsafe_code, dead_code)]
pub(crate) fn prefetch(s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and cannot fault; SSE,
    // which it needs, is part of x86-64.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}
