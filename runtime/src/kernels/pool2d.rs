//! 2-D pooling over NHWC maps and its gradients, with TensorFlow's treatment of padding:
//! padded positions never win a max and are not counted in an average (so SAME pooling divides
//! border windows by their real element count).
//!
//! Max-pool gradients go to each window's *first* maximum in row-major window order (later
//! equal values do not take over); overlapping windows add up. A window lying entirely in the
//! padding yields 0 and passes no gradient. Forward kernels split output rows among threads;
//! gradients split whole images (windows of one image may overlap), so no two threads write the
//! same element and results do not depend on the thread count.

use super::activation::Act;
use super::conv::Pad;
use super::elementwise::par_rows;
use super::Ctx;

/// A pooling window over `x [n, h, w, c]` giving `y [n, oh, ow, c]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    /// Window `[height, width]`.
    pub size: [usize; 2],
    pub stride: [usize; 2],
    pub pad: Pad,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    /// A geometry with explicit padding; the output size follows from it (0 when the window
    /// does not fit).
    pub fn new(n: usize, [h, w]: [usize; 2], c: usize, size: [usize; 2], stride: [usize; 2], pad: Pad) -> Self {
        let out = |len: usize, k: usize, s: usize| {
            if len < k || k == 0 || s == 0 {
                0
            } else {
                (len - k) / s + 1
            }
        };
        PoolGeom {
            n,
            h,
            w,
            c,
            size,
            stride,
            pad,
            oh: out(h + pad.top + pad.bottom, size[0], stride[0]),
            ow: out(w + pad.left + pad.right, size[1], stride[1]),
        }
    }

    /// TensorFlow `padding="same"`.
    pub fn same(n: usize, hw: [usize; 2], c: usize, size: [usize; 2], stride: [usize; 2]) -> Self {
        let (top, bottom) = Pad::same_1d(hw[0], size[0], stride[0]);
        let (left, right) = Pad::same_1d(hw[1], size[1], stride[1]);
        Self::new(
            n,
            hw,
            c,
            size,
            stride,
            Pad {
                top,
                bottom,
                left,
                right,
            },
        )
    }

    /// TensorFlow `padding="valid"`.
    pub fn valid(n: usize, hw: [usize; 2], c: usize, size: [usize; 2], stride: [usize; 2]) -> Self {
        Self::new(n, hw, c, size, stride, Pad::default())
    }

    pub fn input_len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }

    pub fn output_len(&self) -> usize {
        self.n * self.oh * self.ow * self.c
    }

    /// Input rows `lo..hi` covered by output row `o` (clipped to the map).
    #[inline]
    fn rows(&self, o: usize) -> (usize, usize) {
        span(o, self.stride[0], self.size[0], self.pad.top, self.h)
    }

    /// Input columns `lo..hi` covered by output column `o`.
    #[inline]
    fn cols(&self, o: usize) -> (usize, usize) {
        span(o, self.stride[1], self.size[1], self.pad.left, self.w)
    }

    fn check(&self, x: usize, y: usize) {
        assert!(self.c > 0, "pooling over zero channels");
        assert_eq!(x, self.input_len(), "pool input has {x} values, geometry {self:?}");
        assert_eq!(y, self.output_len(), "pool output has {y} values, geometry {self:?}");
    }
}

/// Real input positions `lo..hi` of window `o` along one axis.
#[inline]
fn span(o: usize, stride: usize, size: usize, pad: usize, len: usize) -> (usize, usize) {
    let start = o * stride;
    let lo = start.saturating_sub(pad).min(len);
    let hi = (start + size).saturating_sub(pad).min(len);
    (lo, hi.max(lo))
}

/// Calls `reduce(out, n, rows, cols)` for every output pixel of `y` (its `c` channels), with
/// the image and the real input rows and columns of its window (empty when the window lies
/// in the padding); output rows are split over the threads. Forward pooling's driver.
#[inline(always)]
fn for_each_window<F>(ctx: &Ctx, g: &PoolGeom, y: &mut [f32], reduce: F)
where
    F: Fn(&mut [f32], usize, (usize, usize), (usize, usize)) + Sync,
{
    let (c, isa) = (g.c, ctx.isa);
    par_rows(ctx, g.n * g.oh, g.ow * c, y, |rows, out| {
        isa.vectorize(
            #[inline(always)]
            || {
                for (row, orow) in rows.zip(out.chunks_exact_mut(g.ow * c)) {
                    let (n, oh) = (row / g.oh, row % g.oh);
                    for (ow, px) in orow.chunks_exact_mut(c).enumerate() {
                        reduce(px, n, g.rows(oh), g.cols(ow));
                    }
                }
            },
        )
    });
}

/// `y` = the maximum of each window's real elements.
pub fn max_pool(ctx: &Ctx, g: &PoolGeom, x: &[f32], y: &mut [f32]) {
    g.check(x.len(), y.len());
    let c = g.c;
    for_each_window(
        ctx,
        g,
        y,
        #[inline(always)]
        |best, n, (r0, r1), (c0, c1)| {
            let best = &mut best[..c];
            if r0 == r1 || c0 == c1 {
                best.fill(0.0);
                return;
            }
            // The first real element seeds the maximum; indexed loops vectorise.
            best.copy_from_slice(&x[((n * g.h + r0) * g.w + c0) * c..][..c]);
            for ih in r0..r1 {
                let base = ((n * g.h + ih) * g.w) * c;
                for iw in c0..c1 {
                    let xs = &x[base + iw * c..][..c];
                    for k in 0..c {
                        best[k] = if xs[k] > best[k] { xs[k] } else { best[k] };
                    }
                }
            }
        },
    );
}

/// `dx` from `x` and `dy`: each window's gradient to its first maximum (`dx` is overwritten).
pub fn max_pool_grad(ctx: &Ctx, g: &PoolGeom, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    max_pool_grad_act(ctx, g, x, dy, Act::Linear, dx);
}

/// [`max_pool_grad`] fused with the gradient of the activation that produced `x` (the pool's
/// input is the activation's output): `dx = act'(x)·(max-pool gradient)`.
pub fn max_pool_grad_act(ctx: &Ctx, g: &PoolGeom, x: &[f32], dy: &[f32], act: Act, dx: &mut [f32]) {
    g.check(x.len(), dy.len());
    assert_eq!(dx.len(), x.len(), "max_pool_grad: dx has {} values", dx.len());
    let isa = ctx.isa;
    let img = g.h * g.w * g.c;
    // Windows that do not overlap write each element at most once; when they also cover the
    // whole map, no element needs zeroing first.
    let disjoint = g.stride[0] >= g.size[0] && g.stride[1] >= g.size[1];
    let covers = |len: usize, k: usize, s: usize, before: usize, out: usize| s == k && before == 0 && out * s >= len;
    let covered = disjoint
        && covers(g.h, g.size[0], g.stride[0], g.pad.top, g.oh)
        && covers(g.w, g.size[1], g.stride[1], g.pad.left, g.ow);
    // A ReLU's gradient is the window's (its maximum's) mask, applied once per window.
    let relu = act == Act::Relu;
    par_rows(ctx, g.n, img, dx, |images, out| {
        let mut scratch = vec![0f32; 2 * g.c];
        for (n, dimg) in images.zip(out.chunks_exact_mut(img)) {
            if !covered {
                dimg.fill(0.0);
            }
            let ximg = &x[n * img..(n + 1) * img];
            let dyimg = &dy[n * g.oh * g.ow * g.c..(n + 1) * g.oh * g.ow * g.c];
            // One monomorphised loop nest per activation (no branch inside the vector loops).
            match act {
                Act::Linear | Act::Relu => {
                    grad_image(g, ximg, dyimg, dimg, &mut scratch, disjoint, relu, isa, |_, v| v)
                }
                Act::Sigmoid => grad_image(g, ximg, dyimg, dimg, &mut scratch, disjoint, false, isa, |y, v| {
                    v * y * (1.0 - y)
                }),
                Act::Tanh => grad_image(g, ximg, dyimg, dimg, &mut scratch, disjoint, false, isa, |y, v| {
                    v * (1.0 - y * y)
                }),
            }
        }
    });
}

/// One image of [`max_pool_grad_act`], with `post(x, v)` the activation's gradient.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn grad_image(
    g: &PoolGeom,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut [f32],
    disjoint: bool,
    relu: bool,
    isa: super::KernelIsa,
    post: impl Fn(f32, f32) -> f32 + Copy,
) {
    isa.vectorize(
        #[inline(always)]
        || match (disjoint, g.c.is_multiple_of(LANES)) {
            (true, true) => image_lanes::<true>(g, x, dy, dx, relu, post),
            (false, true) => image_lanes::<false>(g, x, dy, dx, relu, post),
            (true, false) => image::<true>(g, x, dy, dx, scratch, relu, post),
            (false, false) => image::<false>(g, x, dy, dx, scratch, relu, post),
        },
    );
}

/// Channels per block of [`image_lanes`]: one AVX-512 vector, a cache line.
const LANES: usize = 16;

/// The max-pool gradient of one window for one block of channels (`best` its maximum, `rem`
/// the gradient not yet given out): each tap in row-major order takes the remaining gradient
/// where it equals the maximum, so the first maximum takes it all. Arithmetic masks rather than
/// selects keep the loops vectorised. `DISJOINT`: windows do not overlap, so taps are stored
/// rather than accumulated.
#[inline(always)]
fn give<const DISJOINT: bool>(
    x: &[f32],
    best: &[f32],
    rem: &mut [f32],
    dx: &mut [f32],
    post: impl Fn(f32, f32) -> f32,
) {
    let n = x.len();
    let (best, rem, dx) = (&best[..n], &mut rem[..n], &mut dx[..n]);
    for i in 0..n {
        let take = rem[i] * ((x[i] == best[i]) as u32 as f32);
        rem[i] -= take;
        let v = post(x[i], take);
        if DISJOINT {
            dx[i] = v;
        } else {
            dx[i] += v;
        }
    }
}

/// The max-pool gradient of one image whose channel count is a multiple of [`LANES`]: each
/// window one block of 16 channels at a time, in fixed-size arrays (one vector op a step).
/// `relu`: multiply the window's gradient by `[max > 0]` (the ReLU before the pool).
#[inline(always)]
fn image_lanes<const DISJOINT: bool>(
    g: &PoolGeom,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    relu: bool,
    post: impl Fn(f32, f32) -> f32 + Copy,
) {
    let c = g.c;
    for oh in 0..g.oh {
        let (r0, r1) = g.rows(oh);
        for ow in 0..g.ow {
            let (c0, c1) = g.cols(ow);
            if r0 == r1 || c0 == c1 {
                continue;
            }
            for j in (0..c).step_by(LANES) {
                let mut best = [0f32; LANES];
                best.copy_from_slice(&x[(r0 * g.w + c0) * c + j..][..LANES]);
                for ih in r0..r1 {
                    for iw in c0..c1 {
                        let xs = &x[(ih * g.w + iw) * c + j..][..LANES];
                        for l in 0..LANES {
                            best[l] = best[l].max(xs[l]);
                        }
                    }
                }
                let mut rem = [0f32; LANES];
                rem.copy_from_slice(&dy[(oh * g.ow + ow) * c + j..][..LANES]);
                if relu {
                    for l in 0..LANES {
                        rem[l] *= (best[l] > 0.0) as u32 as f32;
                    }
                }
                for ih in r0..r1 {
                    for iw in c0..c1 {
                        let at = (ih * g.w + iw) * c + j;
                        give::<DISJOINT>(&x[at..at + LANES], &best, &mut rem, &mut dx[at..at + LANES], post);
                    }
                }
            }
        }
    }
}

/// [`image_lanes`] for any channel count (`scratch` holds `2·c` values).
#[inline(always)]
fn image<const DISJOINT: bool>(
    g: &PoolGeom,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut [f32],
    relu: bool,
    post: impl Fn(f32, f32) -> f32 + Copy,
) {
    let c = g.c;
    let (best, rem) = scratch.split_at_mut(c);
    for oh in 0..g.oh {
        let (r0, r1) = g.rows(oh);
        for ow in 0..g.ow {
            let (c0, c1) = g.cols(ow);
            if r0 == r1 || c0 == c1 {
                continue;
            }
            best.copy_from_slice(&x[(r0 * g.w + c0) * c..][..c]);
            for ih in r0..r1 {
                for iw in c0..c1 {
                    for (b, &v) in best.iter_mut().zip(&x[(ih * g.w + iw) * c..][..c]) {
                        *b = b.max(v);
                    }
                }
            }
            rem.copy_from_slice(&dy[(oh * g.ow + ow) * c..][..c]);
            if relu {
                for (r, &b) in rem.iter_mut().zip(best.iter()) {
                    *r *= (b > 0.0) as u32 as f32;
                }
            }
            for ih in r0..r1 {
                for iw in c0..c1 {
                    let at = (ih * g.w + iw) * c;
                    give::<DISJOINT>(&x[at..at + c], best, rem, &mut dx[at..at + c], post);
                }
            }
        }
    }
}

/// `y` = the mean of each window's real elements.
pub fn avg_pool(ctx: &Ctx, g: &PoolGeom, x: &[f32], y: &mut [f32]) {
    g.check(x.len(), y.len());
    let c = g.c;
    for_each_window(
        ctx,
        g,
        y,
        #[inline(always)]
        |acc, n, (r0, r1), (c0, c1)| {
            acc.fill(0.0);
            let count = (r1 - r0) * (c1 - c0);
            if count == 0 {
                return;
            }
            for ih in r0..r1 {
                let base = ((n * g.h + ih) * g.w) * c;
                for iw in c0..c1 {
                    for (a, &v) in acc.iter_mut().zip(&x[base + iw * c..base + (iw + 1) * c]) {
                        *a += v;
                    }
                }
            }
            let inv = 1.0 / count as f32;
            acc.iter_mut().for_each(|a| *a *= inv);
        },
    );
}

/// `dx` from `dy`: each window's gradient shared equally by its real elements (`dx` is
/// overwritten).
pub fn avg_pool_grad(ctx: &Ctx, g: &PoolGeom, dy: &[f32], dx: &mut [f32]) {
    g.check(dx.len(), dy.len());
    let (c, isa) = (g.c, ctx.isa);
    let img = g.h * g.w * c;
    par_rows(ctx, g.n, img, dx, |images, out| {
        let mut share = vec![0f32; c];
        isa.vectorize(
            #[inline(always)]
            || {
                for (n, dimg) in images.zip(out.chunks_exact_mut(img)) {
                    dimg.fill(0.0);
                    for oh in 0..g.oh {
                        let (r0, r1) = g.rows(oh);
                        for ow in 0..g.ow {
                            let (c0, c1) = g.cols(ow);
                            let count = (r1 - r0) * (c1 - c0);
                            if count == 0 {
                                continue;
                            }
                            let inv = 1.0 / count as f32;
                            let d = &dy[((n * g.oh + oh) * g.ow + ow) * c..][..c];
                            share.iter_mut().zip(d).for_each(|(s, &d)| *s = d * inv);
                            for ih in r0..r1 {
                                for iw in c0..c1 {
                                    let at = (ih * g.w + iw) * c;
                                    for (o, &s) in dimg[at..at + c].iter_mut().zip(&share) {
                                        *o += s;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
    });
}

/// `y [n, c]` = the mean of `x [n, hw, c]` over its `hw` positions.
pub fn global_avg_pool(ctx: &Ctx, n: usize, hw: usize, c: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() == n * hw * c && y.len() == n * c,
        "global_avg_pool: operand lengths"
    );
    if c == 0 || hw == 0 {
        y.fill(0.0);
        return;
    }
    let isa = ctx.isa;
    let inv = 1.0 / hw.max(1) as f64;
    let mut acc = vec![0f64; c];
    let mut block = vec![0f32; c];
    for (img, out) in x.chunks_exact(hw * c).zip(y.chunks_exact_mut(c)) {
        acc.fill(0.0);
        isa.vectorize(
            #[inline(always)]
            || {
                for chunk in img.chunks(16 * c) {
                    block.fill(0.0);
                    for px in chunk.chunks_exact(c) {
                        block.iter_mut().zip(px).for_each(|(b, &v)| *b += v);
                    }
                    acc.iter_mut().zip(&block).for_each(|(a, &b)| *a += b as f64);
                }
            },
        );
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = (a * inv) as f32;
        }
    }
}

/// `dx [n, hw, c]` = `dy [n, c] / hw` at every position.
pub fn global_avg_pool_grad(ctx: &Ctx, n: usize, hw: usize, c: usize, dy: &[f32], dx: &mut [f32]) {
    assert!(
        dx.len() == n * hw * c && dy.len() == n * c,
        "global_avg_pool_grad: operand lengths"
    );
    if c == 0 || hw == 0 {
        return;
    }
    let inv = 1.0 / hw.max(1) as f64;
    par_rows(ctx, n, hw * c, dx, |images, out| {
        let mut scaled = vec![0f32; c];
        for (i, dimg) in images.zip(out.chunks_exact_mut(hw * c)) {
            for (s, &d) in scaled.iter_mut().zip(&dy[i * c..(i + 1) * c]) {
                *s = (d as f64 * inv) as f32;
            }
            for px in dimg.chunks_exact_mut(c) {
                px.copy_from_slice(&scaled);
            }
        }
    });
}
