//! im2col / col2im over NHWC for the implicit-GEMM convolutions.
//!
//! Row `p` of the virtual matrix is output pixel `p = (n·oh + y)·ow + x`; column `k` is the
//! kernel tap `(ky, kx, c)` with `k = (ky·kw + kx)·c_in + c`. For one pixel and one kernel row
//! `ky`, the in-bounds taps `kx` read one contiguous run of the input row (`kw·c` floats at
//! most), so both directions move whole runs and only zero-fill or skip the padding.

use super::conv::ConvGeom;
use std::ops::Range;

/// Output pixel `p` as `(image, row, column)`, stepped without divisions.
#[derive(Clone, Copy)]
struct Pixel {
    n: usize,
    y: usize,
    x: usize,
}

impl Pixel {
    fn of(g: &ConvGeom, p: usize) -> Pixel {
        let plane = g.oh * g.ow;
        Pixel {
            n: p / plane,
            y: p % plane / g.ow,
            x: p % g.ow,
        }
    }

    #[inline(always)]
    fn step(&mut self, g: &ConvGeom) {
        self.x += 1;
        if self.x == g.ow {
            self.x = 0;
            self.y += 1;
            if self.y == g.oh {
                self.y = 0;
                self.n += 1;
            }
        }
    }
}

/// Visits, for output pixel `px` and columns `k0..k1`, each kernel row's span of columns as
/// `(dst_offset, len, Some(src_offset))` for input data or `(dst_offset, len, None)` for padding.
/// Offsets: `dst` relative to `k0`, `src` into the whole NHWC input.
#[inline(always)]
fn for_runs(g: &ConvGeom, px: Pixel, k0: usize, k1: usize, mut f: impl FnMut(usize, usize, Option<usize>)) {
    let Pixel { n, y, x } = px;
    let row_len = g.kw * g.c;
    let ky_first = k0 / row_len;
    let ky_last = (k1 - 1) / row_len;
    let iw0 = (x * g.stride[1]) as isize - g.pad.left as isize;
    // Valid taps kx: 0 <= iw0 + kx < w.
    let kx_lo = (-iw0).clamp(0, g.kw as isize) as usize;
    let kx_hi = (g.w as isize - iw0).clamp(kx_lo as isize, g.kw as isize) as usize;
    for ky in ky_first..=ky_last {
        let row_k0 = ky * row_len;
        let (lo, hi) = (k0.max(row_k0), k1.min(row_k0 + row_len));
        let ih = (y * g.stride[0]) as isize + ky as isize - g.pad.top as isize;
        if ih < 0 || ih >= g.h as isize {
            f(lo - k0, hi - lo, None);
            continue;
        }
        // Data columns of this kernel row, clipped to [lo, hi).
        let (d_lo, d_hi) = (
            (row_k0 + kx_lo * g.c).clamp(lo, hi),
            (row_k0 + kx_hi * g.c).clamp(lo, hi),
        );
        if d_lo > lo {
            f(lo - k0, d_lo - lo, None);
        }
        if d_hi > d_lo {
            // Column d_lo is tap kx = (d_lo - row_k0) / c, channel (d_lo - row_k0) % c, which sits
            // at input column iw0 + kx: the source offset is linear in d_lo.
            let pix = (n * g.h + ih as usize) * g.w;
            let src = (pix as isize * g.c as isize + iw0 * g.c as isize + (d_lo - row_k0) as isize) as usize;
            f(d_lo - k0, d_hi - d_lo, Some(src));
        }
        if hi > d_hi {
            f(d_hi - k0, hi - d_hi, None);
        }
    }
}

/// `dst[(p − p0)·ld + (k − k0)] = A[p][k]` for pixels `p` in `pixels` and taps `k` in `taps`.
#[inline]
pub(crate) fn im2col(g: &ConvGeom, x: &[f32], pixels: Range<usize>, taps: Range<usize>, dst: &mut [f32], ld: usize) {
    let (rows, k0, k1) = (pixels.len(), taps.start, taps.end);
    let mut px = Pixel::of(g, pixels.start);
    for r in 0..rows {
        let d = &mut dst[r * ld..r * ld + (k1 - k0)];
        for_runs(g, px, k0, k1, |off, len, src| match src {
            Some(s) => d[off..off + len].copy_from_slice(&x[s..s + len]),
            None => d[off..off + len].fill(0.0),
        });
        px.step(g);
    }
}

/// Scatter-adds `cols[r·ld + k] ` (all `k` of the kernel) into the input gradient `dx` of the
/// pixels `row0..row0 + rows`. `dx` is the slice of whole images starting at image `img0`.
#[inline(always)]
pub(crate) fn col2im_add(g: &ConvGeom, cols: &[f32], ld: usize, row0: usize, rows: usize, dx: &mut [f32], img0: usize) {
    let k = g.kh * g.kw * g.c;
    let base = img0 * g.h * g.w * g.c;
    let mut px = Pixel::of(g, row0);
    for r in 0..rows {
        let src = &cols[r * ld..r * ld + k];
        for_runs(g, px, 0, k, |off, len, dst| {
            if let Some(d) = dst {
                let d = d - base;
                for (o, &v) in dx[d..d + len].iter_mut().zip(&src[off..off + len]) {
                    *o += v;
                }
            }
        });
        px.step(g);
    }
}
