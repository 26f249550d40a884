//! 2-D convolution (TF's cross-correlation over explicit zero padding) and its two gradients.
//! Dot products accumulate in f64; the innermost loop always runs over a contiguous channel axis.

use cnnc_runtime::Tensor;

use super::window::{to_f32, WindowGeom};
use crate::ir::Pad2d;

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// `y[n,oh,ow,f] = sum_{kh,kw,c} x[n, oh*sh+kh-top, ow*sw+kw-left, c] * k[kh,kw,c,f]`, padding
/// contributing zero. `x` `[N,H,W,C]`, `k` `[KH,KW,C,F]` -> `[N,OH,OW,F]`.
pub fn conv2d(x: &Tensor, k: &Tensor, strides: [usize; 2], pad: Pad2d, out: &[usize]) -> Tensor {
    let g = WindowGeom::new(&x.shape, out, [k.shape[0], k.shape[1]], strides, pad);
    let f = k.shape[3];
    let k64 = to_f64(&k.data); // [KH, KW, C, F]
    let mut y = vec![0f64; out.iter().product()]; // [N, OH, OW, F]
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let yo = g.y_at(n, oh, ow, f);
                let acc = &mut y[yo..yo + f];
                for kh in 0..g.kh {
                    let Some(ih) = g.in_row(oh, kh) else { continue };
                    for kw in 0..g.kw {
                        let Some(iw) = g.in_col(ow, kw) else { continue };
                        let xs = &x.data[g.x_at(n, ih, iw)..][..g.c]; // [C]
                        let ks = &k64[(kh * g.kw + kw) * g.c * f..][..g.c * f]; // [C, F]
                        for (&xv, krow) in xs.iter().zip(ks.chunks_exact(f)) {
                            let xv = xv as f64;
                            for (a, &kv) in acc.iter_mut().zip(krow) {
                                *a += xv * kv;
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor {
        shape: out.to_vec(),
        data: to_f32(&y),
    }
}

/// Gradient with respect to the input: `dx[n,i,j,c] = sum dy[n,oh,ow,f] * k[kh,kw,c,f]` over
/// every `(oh, ow, kh, kw)` whose tap reads `(i, j)`. `dy` `[N,OH,OW,F]` -> `[N,H,W,C]`.
pub fn conv2d_grad_input(dy: &Tensor, k: &Tensor, strides: [usize; 2], pad: Pad2d, out: &[usize]) -> Tensor {
    let (khs, kws, c, f) = (k.shape[0], k.shape[1], k.shape[2], k.shape[3]);
    let g = WindowGeom::new(out, &dy.shape, [khs, kws], strides, pad);
    // The kernel transposed to [KH, KW, F, C] so that the inner loop runs over contiguous C.
    let mut kt = vec![0f64; k.data.len()];
    for tap in 0..khs * kws {
        for ci in 0..c {
            for fi in 0..f {
                kt[(tap * f + fi) * c + ci] = k.data[(tap * c + ci) * f + fi] as f64;
            }
        }
    }
    let mut dx = vec![0f64; out.iter().product()]; // [N, H, W, C]
    for n in 0..g.n {
        for i in 0..g.h {
            for j in 0..g.w {
                let xo = g.x_at(n, i, j);
                let acc = &mut dx[xo..xo + c];
                for kh in 0..khs {
                    let Some(oh) = g.out_row(i, kh) else { continue };
                    for kw in 0..kws {
                        let Some(ow) = g.out_col(j, kw) else { continue };
                        let dys = &dy.data[g.y_at(n, oh, ow, f)..][..f]; // [F]
                        let ks = &kt[(kh * kws + kw) * f * c..][..f * c]; // [F, C]
                        for (&d, krow) in dys.iter().zip(ks.chunks_exact(c)) {
                            let d = d as f64;
                            for (a, &kv) in acc.iter_mut().zip(krow) {
                                *a += d * kv;
                            }
                        }
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

/// Gradient with respect to the kernel: `dk[kh,kw,c,f] = sum_{n,oh,ow} x[n,ih,iw,c] * dy[n,oh,ow,f]`
/// over real (unpadded) input positions. `x` `[N,H,W,C]`, `dy` `[N,OH,OW,F]` -> `[KH,KW,C,F]`.
pub fn conv2d_grad_kernel(
    x: &Tensor,
    dy: &Tensor,
    strides: [usize; 2],
    pad: Pad2d,
    kernel_hw: [usize; 2],
    out: &[usize],
) -> Tensor {
    let g = WindowGeom::new(&x.shape, &dy.shape, kernel_hw, strides, pad);
    let f = dy.shape[3];
    let mut dk = vec![0f64; out.iter().product()]; // [KH, KW, C, F]
    let mut dyrow = vec![0f64; f];
    for n in 0..g.n {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let src = &dy.data[g.y_at(n, oh, ow, f)..][..f]; // [F]
                for (d, &s) in dyrow.iter_mut().zip(src) {
                    *d = s as f64;
                }
                for kh in 0..g.kh {
                    let Some(ih) = g.in_row(oh, kh) else { continue };
                    for kw in 0..g.kw {
                        let Some(iw) = g.in_col(ow, kw) else { continue };
                        let xs = &x.data[g.x_at(n, ih, iw)..][..g.c]; // [C]
                        let ks = &mut dk[(kh * g.kw + kw) * g.c * f..][..g.c * f]; // [C, F]
                        for (&xv, krow) in xs.iter().zip(ks.chunks_exact_mut(f)) {
                            let xv = xv as f64;
                            for (a, &d) in krow.iter_mut().zip(&dyrow) {
                                *a += xv * d;
                            }
                        }
                    }
                }
            }
        }
    }
    Tensor {
        shape: out.to_vec(),
        data: to_f32(&dk),
    }
}
