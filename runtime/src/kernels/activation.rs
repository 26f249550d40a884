//! Activation functions and the scalar math behind them (`exp`, `sigmoid`, `tanh`), written as
//! branch-light `#[inline(always)]` arithmetic so loops over them vectorise (no libm calls).
//!
//! `exp` reduces `x = n·ln2 + r` (|r| ≤ ln2/2) and evaluates the degree-7 Taylor polynomial of
//! `e^r` (truncation error < 1e-8 relative), then scales by `2^n` through the exponent bits.
//! Inputs are clamped to [-87, 88] so the result stays a normal, finite f32.

use super::simd::Simd;

/// An activation applied by a kernel epilogue or an elementwise kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Act {
    #[default]
    Linear,
    Relu,
    Sigmoid,
    Tanh,
}

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part with few mantissa bits (exact products with small n) and the rest.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2^23: adding and subtracting it rounds to the nearest integer.
const ROUNDER: f32 = 12_582_912.0;

/// `e^x` to about 2 ulp; x is clamped to [-87, 88].
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUNDER;
    let n = t - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Horner form of sum r^i / i!, i = 0..=7.
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The rounder's low mantissa bits hold n (as a two's-complement offset).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh x`: a Taylor polynomial near 0 (where `1 − 2/(e^2x + 1)` cancels), that formula
/// elsewhere.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    // x − x³/3 + 2x⁵/15 − 17x⁷/315: error < 2e-10 relative for |x| < 0.125.
    let small = x * (1.0 + z * (-1.0 / 3.0 + z * (2.0 / 15.0 + z * (-17.0 / 315.0))));
    let big = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    if a < 0.125 {
        small
    } else {
        big.copysign(x)
    }
}

impl Act {
    /// The activation of one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::Linear => x,
            Act::Relu => x.max(0.0),
            Act::Sigmoid => sigmoid(x),
            Act::Tanh => tanh(x),
        }
    }

    /// `dL/dx` from the activation's output `y` and `dL/dy`.
    #[inline(always)]
    pub fn grad_from_output(self, y: f32, dy: f32) -> f32 {
        match self {
            Act::Linear => dy,
            Act::Relu => {
                if y > 0.0 {
                    dy
                } else {
                    0.0
                }
            }
            Act::Sigmoid => dy * y * (1.0 - y),
            Act::Tanh => dy * (1.0 - y * y),
        }
    }

    /// [`Act::grad_from_output`] on a vector, with the same operations in the same order.
    ///
    /// # Safety
    /// `S`'s instructions must be available (see [`Simd`]).
    #[inline(always)]
    pub(crate) unsafe fn grad_from_output_v<S: Simd>(self, y: S::V, dy: S::V) -> S::V {
        match self {
            Act::Linear => dy,
            Act::Relu => S::select_gt(y, S::zero(), dy, S::zero()),
            Act::Sigmoid => S::mul(S::mul(dy, y), S::sub(S::splat(1.0), y)),
            Act::Tanh => S::mul(dy, S::sub(S::splat(1.0), S::mul(y, y))),
        }
    }

    /// Applies the activation in place (the loop is specialised per variant).
    #[inline(always)]
    pub fn apply_slice(self, v: &mut [f32]) {
        match self {
            Act::Linear => {}
            Act::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
            Act::Sigmoid => v.iter_mut().for_each(|x| *x = sigmoid(*x)),
            Act::Tanh => v.iter_mut().for_each(|x| *x = tanh(*x)),
        }
    }
}
