//! Geometry of a 2-D sliding window over an NHWC tensor, shared by the convolution and pooling
//! kernels: which input row/column a window tap reads, and flat NHWC indices.

use crate::ir::Pad2d;

/// Sizes of one window op: input `[N, H, W, C]`, window `KH x KW`, output `[N, OH, OW, _]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub sh: usize,
    pub sw: usize,
    pub top: usize,
    pub left: usize,
}

impl WindowGeom {
    /// `x` is the input shape `[N, H, W, C]`, `y` the output shape `[N, OH, OW, _]`.
    pub fn new(x: &[usize], y: &[usize], size: [usize; 2], strides: [usize; 2], pad: Pad2d) -> Self {
        WindowGeom {
            n: x[0],
            h: x[1],
            w: x[2],
            c: x[3],
            kh: size[0],
            kw: size[1],
            oh: y[1],
            ow: y[2],
            sh: strides[0],
            sw: strides[1],
            top: pad.top,
            left: pad.left,
        }
    }

    /// Input row read by output row `o` at tap `t`, or `None` when it lies in the padding.
    #[inline]
    pub fn in_row(&self, o: usize, t: usize) -> Option<usize> {
        (o * self.sh + t).checked_sub(self.top).filter(|&i| i < self.h)
    }

    /// Input column read by output column `o` at tap `t`, or `None` in the padding.
    #[inline]
    pub fn in_col(&self, o: usize, t: usize) -> Option<usize> {
        (o * self.sw + t).checked_sub(self.left).filter(|&i| i < self.w)
    }

    /// The output row whose tap `t` reads input row `i`, if any (inverse of [`Self::in_row`]).
    #[inline]
    pub fn out_row(&self, i: usize, t: usize) -> Option<usize> {
        let p = (i + self.top).checked_sub(t)?;
        (p % self.sh == 0 && p / self.sh < self.oh).then_some(p / self.sh)
    }

    /// The output column whose tap `t` reads input column `i`, if any.
    #[inline]
    pub fn out_col(&self, i: usize, t: usize) -> Option<usize> {
        let p = (i + self.left).checked_sub(t)?;
        (p % self.sw == 0 && p / self.sw < self.ow).then_some(p / self.sw)
    }

    /// Number of real (unpadded) input elements in the window of output `(oh, ow)`.
    pub fn real_count(&self, oh: usize, ow: usize) -> usize {
        let rows = (0..self.kh).filter(|&t| self.in_row(oh, t).is_some()).count();
        let cols = (0..self.kw).filter(|&t| self.in_col(ow, t).is_some()).count();
        rows * cols
    }

    /// Flat index of input element `[n, i, j, 0]`.
    #[inline]
    pub fn x_at(&self, n: usize, i: usize, j: usize) -> usize {
        ((n * self.h + i) * self.w + j) * self.c
    }

    /// Flat index of output element `[n, o, p, 0]` when the output has `ch` channels.
    #[inline]
    pub fn y_at(&self, n: usize, o: usize, p: usize, ch: usize) -> usize {
        ((n * self.oh + o) * self.ow + p) * ch
    }
}

/// Rounds an f64 accumulator buffer to f32 storage.
pub(crate) fn to_f32(acc: &[f64]) -> Vec<f32> {
    acc.iter().map(|&v| v as f32).collect()
}
