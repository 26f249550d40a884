//! Batch normalisation: batch moments, the training and inference forms, the moving-average
//! update, and the gradients of the training form. Statistics are computed in f64 (two passes).
//!
//! With `m` = number of rows (N·H·W), `x̂ = (x - μ) / sqrt(σ² + ε)`:
//! `dx = γ / sqrt(σ² + ε) · (dy - mean(dy) - x̂ · mean(dy · x̂))` — the full derivative through μ
//! and σ², which is why `Moments` needs no gradient of its own — and `dγ = Σ dy · x̂`.

use cnnc_runtime::Tensor;

use crate::ir::Moment;

fn channels(x: &Tensor) -> usize {
    x.shape.last().copied().unwrap_or(1)
}

/// (x `[..., C]`) -> `[2, C]`: row 0 the per-channel mean, row 1 the biased variance.
pub fn moments(x: &Tensor) -> Tensor {
    let c = channels(x);
    let rows = (x.data.len() / c) as f64;
    let mut mean = vec![0f64; c];
    for row in x.data.chunks_exact(c) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows);
    let mut var = vec![0f64; c];
    for row in x.data.chunks_exact(c) {
        for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
            let d = v as f64 - m;
            *s += d * d;
        }
    }
    var.iter_mut().for_each(|v| *v /= rows);
    Tensor {
        shape: vec![2, c],
        data: mean.iter().chain(&var).map(|&v| v as f32).collect(),
    }
}

/// Per-channel `(mean, 1 / sqrt(var + eps))` in f64.
fn stats(mean: &[f32], var: &[f32], eps: f32) -> (Vec<f64>, Vec<f64>) {
    let m = mean.iter().map(|&v| v as f64).collect();
    let inv = var.iter().map(|&v| 1.0 / (v as f64 + eps as f64).sqrt()).collect();
    (m, inv)
}

/// `γ (x - mean) / sqrt(var + eps) + β` per channel.
fn normalise(x: &Tensor, mean: &[f32], var: &[f32], gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
    let c = channels(x);
    let (m, inv) = stats(mean, var, eps);
    let mut y = Vec::with_capacity(x.data.len());
    for row in x.data.chunks_exact(c) {
        for ch in 0..c {
            let xhat = (row[ch] as f64 - m[ch]) * inv[ch];
            y.push((gamma.data[ch] as f64 * xhat + beta.data[ch] as f64) as f32);
        }
    }
    Tensor {
        shape: x.shape.clone(),
        data: y,
    }
}

/// (x, moments `[2,C]`, γ, β): normalised with the batch statistics.
pub fn batch_norm_train(x: &Tensor, moments: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Tensor {
    let c = channels(x);
    normalise(x, &moments.data[..c], &moments.data[c..], gamma, beta, eps)
}

/// (x, γ, β, moving mean, moving variance): normalised with the moving statistics.
pub fn batch_norm_inference(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f32,
) -> Tensor {
    normalise(x, &mean.data, &var.data, gamma, beta, eps)
}

/// (moving `[C]`, moments `[2,C]`) -> `momentum · moving + (1 - momentum) · statistic`.
pub fn moving_average(moving: &Tensor, moments: &Tensor, momentum: f32, moment: Moment) -> Tensor {
    let c = moving.data.len();
    let stat = match moment {
        Moment::Mean => &moments.data[..c],
        Moment::Variance => &moments.data[c..],
    };
    let mom = momentum as f64;
    let data = moving
        .data
        .iter()
        .zip(stat)
        .map(|(&v, &s)| (mom * v as f64 + (1.0 - mom) * s as f64) as f32)
        .collect();
    Tensor {
        shape: moving.shape.clone(),
        data,
    }
}

/// Per-channel `(Σ dy, Σ dy · x̂)` in f64, with the f64 statistics used to get them.
fn dy_sums(x: &Tensor, moments: &Tensor, dy: &Tensor, eps: f32) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let c = channels(x);
    let (m, inv) = stats(&moments.data[..c], &moments.data[c..], eps);
    let mut sum_dy = vec![0f64; c];
    let mut sum_dy_xhat = vec![0f64; c];
    for (xr, dr) in x.data.chunks_exact(c).zip(dy.data.chunks_exact(c)) {
        for ch in 0..c {
            let d = dr[ch] as f64;
            sum_dy[ch] += d;
            sum_dy_xhat[ch] += d * (xr[ch] as f64 - m[ch]) * inv[ch];
        }
    }
    (m, inv, sum_dy, sum_dy_xhat)
}

/// (x, moments, γ, dy) -> dx of [`batch_norm_train`], through the batch statistics.
pub fn batch_norm_grad_input(x: &Tensor, moments: &Tensor, gamma: &Tensor, dy: &Tensor, eps: f32) -> Tensor {
    let c = channels(x);
    let rows = (x.data.len() / c) as f64;
    let (m, inv, sum_dy, sum_dy_xhat) = dy_sums(x, moments, dy, eps);
    let mut dx = Vec::with_capacity(x.data.len());
    for (xr, dr) in x.data.chunks_exact(c).zip(dy.data.chunks_exact(c)) {
        for ch in 0..c {
            let xhat = (xr[ch] as f64 - m[ch]) * inv[ch];
            let g = dr[ch] as f64 - sum_dy[ch] / rows - xhat * sum_dy_xhat[ch] / rows;
            dx.push((gamma.data[ch] as f64 * inv[ch] * g) as f32);
        }
    }
    Tensor {
        shape: x.shape.clone(),
        data: dx,
    }
}

/// (x, moments, dy) -> dγ `[C]` = Σ dy · x̂.
pub fn batch_norm_grad_gamma(x: &Tensor, moments: &Tensor, dy: &Tensor, eps: f32) -> Tensor {
    let (_, _, _, sum_dy_xhat) = dy_sums(x, moments, dy, eps);
    Tensor {
        shape: vec![channels(x)],
        data: sum_dy_xhat.iter().map(|&v| v as f32).collect(),
    }
}
