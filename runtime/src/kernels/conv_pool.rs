//! Convolution with a max-pool in its epilogue: `y = max_pool(act(conv(x, w) + bias))`,
//! optionally also the index of each window's maximum (what the training step's pool gradient
//! needs instead of the unpooled map; see [`pool_argmax`](super::pool_argmax)).
//!
//! The unpooled map is never stored whole. Convs with few input channels (the first layers)
//! pool in the small-channel kernel's registers and L1 ([`conv2d_forward_small`]), Winograd
//! convs under a 2×2 pool in their output transform's registers; the others go through in chunks of images whose unpooled output fits in L2 ([`pooled_conv_workspace`]
//! floats of workspace), each chunk convolved by the ordinary kernels and pooled while it is
//! still cached. Rows of a pooling window never cross an image, so chunking by images changes
//! no result.

use super::conv::{conv2d_forward, ConvGeom};
use super::conv_small::{conv2d_forward_small, small_conv_applies};
use super::epilogue::Epilogue;
use super::pool2d::{max_pool, PoolGeom};
use super::pool_argmax::max_pool_argmax;
use super::winograd::{conv2d_forward_winograd_pooled, winograd_pool_applies};
use super::Ctx;

/// Bytes of unpooled output per chunk of images: half of a 2 MiB L2, whichever thread holds it.
const CHUNK_BYTES: usize = 1 << 20;

/// Images per chunk for `g`.
fn chunk_images(g: &ConvGeom) -> usize {
    let per_image = (g.oh * g.ow * g.f * 4).max(1);
    (CHUNK_BYTES / per_image).clamp(1, g.n.max(1))
}

/// Workspace (f32 values) [`conv2d_forward_pooled`] needs for `g`: one chunk's unpooled output.
pub fn pooled_conv_workspace(g: &ConvGeom) -> usize {
    chunk_images(g) * g.oh * g.ow * g.f
}

/// `y [n, ph, pw, f] = max_pool(epilogue(conv(x, w)))` with the pooling window `pool` over the
/// conv's output (`pool.n, h, w, c` = the conv's `n, oh, ow, f`), and with `argmax` the index of
/// each window's first maximum. `epi` has no BN moments (they would be the unpooled map's).
/// `ws` holds at least [`pooled_conv_workspace`] values.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_pooled(
    ctx: &Ctx,
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    epi: Epilogue,
    pool: &PoolGeom,
    y: &mut [f32],
    mut argmax: Option<&mut [f32]>,
    ws: &mut [f32],
) {
    assert!(epi.moments.is_none(), "a pooled conv takes no BN statistics");
    assert!(
        [pool.n, pool.h, pool.w, pool.c] == [g.n, g.oh, g.ow, g.f],
        "pool {pool:?} is not over the output of conv {g:?}"
    );
    assert_eq!(y.len(), pool.output_len(), "pooled conv output has {} values", y.len());
    if small_conv_applies(ctx.isa, g) {
        return conv2d_forward_small(ctx, g, x, w, epi, Some((pool, argmax)), y);
    }
    if winograd_pool_applies(ctx.isa, g, pool, epi.act) {
        return conv2d_forward_winograd_pooled(ctx, g, x, w, (epi.bias, epi.act), pool, y, argmax);
    }
    let chunk = chunk_images(g);
    let (x_img, y_img) = (g.h * g.w * g.c, pool.oh * pool.ow * pool.c);
    let ws = &mut ws[..pooled_conv_workspace(g)];
    let mut n0 = 0;
    while n0 < g.n {
        let n = chunk.min(g.n - n0);
        let cg = ConvGeom { n, ..*g };
        let pg = PoolGeom { n, ..*pool };
        let tmp = &mut ws[..cg.output_len()]; // [n, oh, ow, f]
        let e = Epilogue {
            bias: epi.bias,
            act: epi.act,
            moments: None,
        };
        conv2d_forward(ctx, &cg, &x[n0 * x_img..][..n * x_img], w, e, tmp);
        let out = &mut y[n0 * y_img..][..n * y_img]; // [n, ph, pw, f]
        match argmax.as_deref_mut() {
            Some(a) => max_pool_argmax(ctx, &pg, tmp, out, &mut a[n0 * y_img..][..n * y_img]),
            None => max_pool(ctx, &pg, tmp, out),
        }
        n0 += n;
    }
}
