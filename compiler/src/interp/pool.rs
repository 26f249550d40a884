//! Max, average and global average pooling and their gradients, with TensorFlow's treatment of
//! padding: padded positions never win a max and are not counted in an average.
//!
//! A window lying entirely in the padding (impossible for TF's SAME/VALID, whose padding is
//! always smaller than the window) yields 0 and passes no gradient.

use cnnc_runtime::Tensor;

use super::window::{to_f32, WindowGeom};
use crate::ir::Window2d;

fn geom(x: &[usize], y: &[usize], w: &Window2d) -> WindowGeom {
    WindowGeom::new(x, y, w.size, w.strides, w.pad)
}

/// Flat input offsets `[n, ih, iw, 0]` of the real elements of window `(oh, ow)`, in row-major
/// order within the window (the scan order that decides the "first" maximum).
fn taps(g: &WindowGeom, n: usize, oh: usize, ow: usize) -> impl Iterator<Item = usize> + '_ {
    (0..g.kh).filter_map(move |kh| g.in_row(oh, kh)).flat_map(move |ih| {
        (0..g.kw)
            .filter_map(move |kw| g.in_col(ow, kw))
            .map(move |iw| g.x_at(n, ih, iw))
    })
}

/// `[N,H,W,C]` -> `[N,OH,OW,C]`: the maximum of each window's real elements.
pub fn max_pool(x: &Tensor, w: &Window2d, out: &[usize]) -> Tensor {
    let g = geom(&x.shape, out, w);
    let mut y = vec![0f32; out.iter().product()];
    let mut best = vec![0f32; g.c];
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                // The first real element seeds the maximum (as in `max_pool_grad`).
                let mut any = false;
                for xo in taps(&g, n, oh, ow) {
                    let xs = &x.data[xo..xo + g.c];
                    if !any {
                        best.copy_from_slice(xs);
                        any = true;
                    }
                    for (b, &v) in best.iter_mut().zip(xs) {
                        if v > *b {
                            *b = v;
                        }
                    }
                }
                if any {
                    y[g.y_at(n, oh, ow, g.c)..][..g.c].copy_from_slice(&best);
                }
            }
        }
    }
    Tensor {
        shape: out.to_vec(),
        data: y,
    }
}

/// (x `[N,H,W,C]`, dy `[N,OH,OW,C]`) -> dx: each window's gradient goes to the first maximum
/// of its real elements in row-major window order; overlapping windows add up.
pub fn max_pool_grad(x: &Tensor, dy: &Tensor, w: &Window2d) -> Tensor {
    let g = geom(&x.shape, &dy.shape, w);
    let mut dx = vec![0f64; x.data.len()]; // [N, H, W, C]
    let mut best = vec![f32::NEG_INFINITY; g.c];
    let mut arg = vec![usize::MAX; g.c];
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                best.fill(f32::NEG_INFINITY);
                arg.fill(usize::MAX);
                for xo in taps(&g, n, oh, ow) {
                    let xs = &x.data[xo..xo + g.c];
                    for (c, &v) in xs.iter().enumerate() {
                        // Strictly greater: a later equal value does not take over (first maximum).
                        if v > best[c] || arg[c] == usize::MAX {
                            best[c] = v;
                            arg[c] = xo + c;
                        }
                    }
                }
                let dys = &dy.data[g.y_at(n, oh, ow, g.c)..][..g.c]; // [C]
                for (&a, &d) in arg.iter().zip(dys) {
                    if a != usize::MAX {
                        dx[a] += d as f64;
                    }
                }
            }
        }
    }
    Tensor {
        shape: x.shape.clone(),
        data: to_f32(&dx),
    }
}

/// `[N,H,W,C]` -> `[N,OH,OW,C]`: the mean of each window's real (unpadded) elements.
pub fn avg_pool(x: &Tensor, w: &Window2d, out: &[usize]) -> Tensor {
    let g = geom(&x.shape, out, w);
    let mut y = vec![0f32; out.iter().product()];
    let mut acc = vec![0f64; g.c];
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let count = g.real_count(oh, ow);
                if count == 0 {
                    continue;
                }
                acc.fill(0.0);
                for xo in taps(&g, n, oh, ow) {
                    for (a, &v) in acc.iter_mut().zip(&x.data[xo..xo + g.c]) {
                        *a += v as f64;
                    }
                }
                let ys = &mut y[g.y_at(n, oh, ow, g.c)..][..g.c];
                for (o, &a) in ys.iter_mut().zip(&acc) {
                    *o = (a / count as f64) as f32;
                }
            }
        }
    }
    Tensor {
        shape: out.to_vec(),
        data: y,
    }
}

/// dy `[N,OH,OW,C]` -> dx `[N,H,W,C]`: each window's gradient shared equally by its real elements.
pub fn avg_pool_grad(dy: &Tensor, w: &Window2d, out: &[usize]) -> Tensor {
    let g = geom(out, &dy.shape, w);
    let mut dx = vec![0f64; out.iter().product()]; // [N, H, W, C]
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let count = g.real_count(oh, ow);
                if count == 0 {
                    continue;
                }
                let dys = &dy.data[g.y_at(n, oh, ow, g.c)..][..g.c]; // [C]
                for xo in taps(&g, n, oh, ow) {
                    for (a, &d) in dx[xo..xo + g.c].iter_mut().zip(dys) {
                        *a += d as f64 / count as f64;
                    }
                }
            }
        }
    }
    Tensor {
        shape: out.to_vec(),
        data: to_f32(&dx),
    }
}

/// `[N,H,W,C]` -> `[N,C]`: the mean over every spatial position.
pub fn global_avg_pool(x: &Tensor) -> Tensor {
    let (n, hw, c) = (x.shape[0], x.shape[1] * x.shape[2], x.shape[3]);
    let mut y = Vec::with_capacity(n * c);
    let mut acc = vec![0f64; c];
    for sample in x.data.chunks_exact(hw * c) {
        acc.fill(0.0);
        for px in sample.chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += v as f64;
            }
        }
        y.extend(acc.iter().map(|&a| (a / hw as f64) as f32));
    }
    Tensor {
        shape: vec![n, c],
        data: y,
    }
}

/// dy `[N,C]` -> dx `[N,H,W,C]`: `dy / (H*W)` at every spatial position.
pub fn global_avg_pool_grad(dy: &Tensor, out: &[usize]) -> Tensor {
    let (hw, c) = (out[1] * out[2], out[3]);
    let mut dx = Vec::with_capacity(out.iter().product());
    for row in dy.data.chunks_exact(c) {
        let scaled: Vec<f32> = row.iter().map(|&d| (d as f64 / hw as f64) as f32).collect();
        for _ in 0..hw {
            dx.extend_from_slice(&scaled);
        }
    }
    Tensor {
        shape: out.to_vec(),
        data: dx,
    }
}
