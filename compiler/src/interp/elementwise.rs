//! Elementwise and data-movement ops: activations and their gradients, addition, dropout,
//! channel concatenation and slicing, reshape.

use cnnc_runtime::rng::dropout_keep;
use cnnc_runtime::Tensor;

use crate::ir::Activation;

fn with_data(shape: &[usize], data: Vec<f32>) -> Tensor {
    Tensor {
        shape: shape.to_vec(),
        data,
    }
}

/// Numerically stable softmax of one row, computed in f64.
fn softmax_row(row: &[f32], out: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    for (o, e) in out.iter_mut().zip(&exps) {
        *o = (e / sum) as f32;
    }
}

/// Applies `act` elementwise (softmax: over the last axis).
pub fn act(x: &Tensor, act: Activation) -> Tensor {
    let map = |f: fn(f64) -> f64| x.data.iter().map(|&v| f(v as f64) as f32).collect::<Vec<f32>>();
    let data = match act {
        Activation::Linear => x.data.clone(),
        Activation::Relu => x.data.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect(),
        Activation::Sigmoid => map(|v| 1.0 / (1.0 + (-v).exp())),
        Activation::Tanh => map(f64::tanh),
        Activation::Softmax => {
            let c = x.shape.last().copied().unwrap_or(1);
            let mut out = vec![0f32; x.data.len()];
            for (row, o) in x.data.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
                softmax_row(row, o);
            }
            out
        }
    };
    with_data(&x.shape, data)
}

/// (y = act(x), dy) -> dx, from the activation's output: relu `dy·[y>0]`, sigmoid
/// `dy·y(1-y)`, tanh `dy(1-y²)`, softmax `y(dy - Σ dy·y)` per row.
pub fn act_grad(y: &Tensor, dy: &Tensor, act: Activation) -> Tensor {
    let zip = |f: fn(f64, f64) -> f64| {
        y.data
            .iter()
            .zip(&dy.data)
            .map(|(&y, &d)| f(y as f64, d as f64) as f32)
            .collect::<Vec<f32>>()
    };
    let data = match act {
        Activation::Linear => dy.data.clone(),
        Activation::Relu => zip(|y, d| if y > 0.0 { d } else { 0.0 }),
        Activation::Sigmoid => zip(|y, d| d * y * (1.0 - y)),
        Activation::Tanh => zip(|y, d| d * (1.0 - y * y)),
        Activation::Softmax => {
            let c = y.shape.last().copied().unwrap_or(1);
            let mut out = Vec::with_capacity(y.data.len());
            for (yr, dr) in y.data.chunks_exact(c).zip(dy.data.chunks_exact(c)) {
                let dot: f64 = yr.iter().zip(dr).map(|(&a, &b)| a as f64 * b as f64).sum();
                out.extend(yr.iter().zip(dr).map(|(&a, &b)| (a as f64 * (b as f64 - dot)) as f32));
            }
            out
        }
    };
    with_data(&y.shape, data)
}

pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    with_data(&a.shape, a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect())
}

/// Keeps element `i` when `dropout_keep(seed, step, i, rate)` and scales it by `1/(1-rate)`;
/// the backward pass applies the same op to `dy`, which reproduces the mask.
pub fn dropout(x: &Tensor, rate: f32, seed: u64, step: u64) -> Tensor {
    let scale = 1.0 / (1.0 - rate);
    let data = x
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if dropout_keep(seed, step, i as u64, rate) {
                v * scale
            } else {
                0.0
            }
        })
        .collect();
    with_data(&x.shape, data)
}

/// Concatenation along the last axis.
pub fn concat(xs: &[&Tensor], out: &[usize]) -> Tensor {
    let c_out = out.last().copied().unwrap_or(1);
    let rows = out.iter().product::<usize>() / c_out;
    let mut data = Vec::with_capacity(rows * c_out);
    for r in 0..rows {
        for x in xs {
            let c = x.shape.last().copied().unwrap_or(1);
            data.extend_from_slice(&x.data[r * c..(r + 1) * c]);
        }
    }
    with_data(out, data)
}

/// Channels `[offset, offset + len)` of the last axis.
pub fn slice_channels(x: &Tensor, offset: usize, len: usize, out: &[usize]) -> Tensor {
    let c = x.shape.last().copied().unwrap_or(1);
    let data = x
        .data
        .chunks_exact(c)
        .flat_map(|row| &row[offset..offset + len])
        .copied()
        .collect();
    with_data(out, data)
}

/// Same elements, new shape (row-major order unchanged).
pub fn reshape(x: &Tensor, out: &[usize]) -> Tensor {
    with_data(out, x.data.clone())
}
