//! Matrix multiply (with optional transposes), bias addition and the channel reduction that is
//! the bias gradient. Dot products accumulate in f64.

use cnnc_runtime::Tensor;

/// A 2-D operand copied to f64 in `[rows, cols]` order after the optional transpose.
fn oriented(t: &Tensor, transpose: bool) -> (usize, usize, Vec<f64>) {
    let (r, c) = (t.shape[0], t.shape[1]);
    if !transpose {
        return (r, c, t.data.iter().map(|&v| v as f64).collect());
    }
    let mut out = vec![0f64; r * c]; // [c, r]
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data[i * c + j] as f64;
        }
    }
    (c, r, out)
}

/// `op(a) · op(b)` where `op` transposes when asked: `[M, K] · [K, N]` -> `[M, N]`.
pub fn matmul(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Tensor {
    let (m, k, a64) = oriented(a, transpose_a); // [M, K]
    let (_, n, b64) = oriented(b, transpose_b); // [K, N]
    let mut out = Vec::with_capacity(m * n);
    let mut acc = vec![0f64; n];
    for arow in a64.chunks_exact(k.max(1)).take(m) {
        acc.fill(0.0);
        for (&av, brow) in arow.iter().zip(b64.chunks_exact(n)) {
            for (s, &bv) in acc.iter_mut().zip(brow) {
                *s += av * bv;
            }
        }
        out.extend(acc.iter().map(|&s| s as f32));
    }
    Tensor {
        shape: vec![m, n],
        data: out,
    }
}

/// (x `[..., C]`, bias `[C]`) -> x + bias on every row.
pub fn bias_add(x: &Tensor, bias: &Tensor) -> Tensor {
    let c = bias.data.len();
    let mut y = x.data.clone();
    for row in y.chunks_exact_mut(c) {
        for (v, &b) in row.iter_mut().zip(&bias.data) {
            *v += b;
        }
    }
    Tensor {
        shape: x.shape.clone(),
        data: y,
    }
}

/// (dy `[..., C]`) -> `[C]`: the sum over every axis but the last.
pub fn reduce_to_channels(dy: &Tensor) -> Tensor {
    let c = dy.shape.last().copied().unwrap_or(1);
    let mut acc = vec![0f64; c];
    for row in dy.data.chunks_exact(c) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    Tensor {
        shape: vec![c],
        data: acc.iter().map(|&a| a as f32).collect(),
    }
}
