//! Max- and average-pooling with TensorFlow's SAME padding against results computed by hand:
//! padded positions never win a max and are not counted in an average. Channel 1 of each input
//! is all negative, so a padding zero that wrongly took part would change the result. Also the
//! max-pool gradient's tie rule (first maximum in row-major window order).

use cnnc_compiler::interp::run;
use cnnc_compiler::ir::{window_hw, Graph, GraphOutput, LossKind, Mode, Op, OutputRole, Pad2d, Shape, Window2d};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::Tensor;

/// Runs `op` on `x` (an inference graph `Input -> op`) and returns the output.
fn apply(op: Op, x: &Tensor) -> Tensor {
    let mut g = Graph::new("pool", x.shape[0], Mode::Inference);
    let input = g.add(Op::Input, &[], Some(Shape(x.shape.clone())), "input").unwrap();
    let y = g.add(op, &[input], None, "pool").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    run(&g, x, None, &[], 0).unwrap().get(y).clone()
}

/// Two 2-D channels interleaved into one `[1, H, W, 2]` NHWC tensor.
fn two_channels(h: usize, w: usize, c0: &[f32], c1: &[f32]) -> Tensor {
    let data = c0.iter().zip(c1).flat_map(|(&a, &b)| [a, b]).collect();
    Tensor::from_vec(&[1, h, w, 2], data).unwrap()
}

fn window(k: usize, s: usize, pad: [usize; 4]) -> Window2d {
    Window2d {
        size: [k, k],
        strides: [s, s],
        pad: Pad2d {
            top: pad[0],
            bottom: pad[1],
            left: pad[2],
            right: pad[3],
        },
    }
}

/// 4x4 input, 3x3 window, stride 1, SAME: padding 1 on every side.
fn same_3x3_input() -> Tensor {
    #[rustfmt::skip]
    let c0 = [
        1.0, -2.0, 3.0, -4.0,
        -5.0, 6.0, -7.0, 8.0,
        9.0, -10.0, 11.0, -12.0,
        -13.0, 14.0, -15.0, 16.0,
    ];
    let c1: Vec<f32> = c0.iter().map(|v: &f32| -v.abs()).collect();
    two_channels(4, 4, &c0, &c1)
}

/// 3x3 input, 2x2 window, stride 2, SAME: output 2x2, padding 0 top/left and 1 bottom/right.
fn same_2x2_stride2_input() -> Tensor {
    let c0 = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0, 2.0];
    let c1 = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0];
    two_channels(3, 3, &c0, &c1)
}

fn interleave(c0: &[f32], c1: &[f32]) -> Vec<f32> {
    c0.iter().zip(c1).flat_map(|(&a, &b)| [a, b]).collect()
}

#[test]
fn max_pool_same_padding_never_wins() {
    let y = apply(Op::MaxPool2d(window(3, 1, [1, 1, 1, 1])), &same_3x3_input());
    assert_eq!(y.shape, vec![1, 4, 4, 2]);
    #[rustfmt::skip]
    let c0 = [6.0, 6.0, 8.0, 8.0, 9.0, 11.0, 11.0, 11.0, 14.0, 14.0, 16.0, 16.0, 14.0, 14.0, 16.0, 16.0];
    #[rustfmt::skip]
    let c1 = [-1.0, -1.0, -2.0, -3.0, -1.0, -1.0, -2.0, -3.0, -5.0, -5.0, -6.0, -7.0, -9.0, -9.0, -10.0, -11.0];
    Tolerance::EXACT.assert_close("max pool 3x3/1 SAME", &y.data, &interleave(&c0, &c1));

    let y = apply(Op::MaxPool2d(window(2, 2, [0, 1, 0, 1])), &same_2x2_stride2_input());
    assert_eq!(y.shape, vec![1, 2, 2, 2]);
    let want = interleave(&[8.0, 8.0, 8.0, 2.0], &[-1.0, -3.0, -7.0, -9.0]);
    Tolerance::EXACT.assert_close("max pool 2x2/2 SAME", &y.data, &want);
}

#[test]
fn avg_pool_same_divides_by_real_elements() {
    let y = apply(Op::AvgPool2d(window(3, 1, [1, 1, 1, 1])), &same_3x3_input());
    // Corners average 4 real elements, edges 6, the interior 9.
    #[rustfmt::skip]
    let c0 = [
        0.0, -2.0 / 3.0, 2.0 / 3.0, 0.0,
        -1.0 / 6.0, 6.0 / 9.0, -7.0 / 9.0, -1.0 / 6.0,
        1.0 / 6.0, -10.0 / 9.0, 11.0 / 9.0, 1.0 / 6.0,
        0.0, -2.0 / 3.0, 2.0 / 3.0, 0.0,
    ];
    #[rustfmt::skip]
    let c1 = [
        -3.5, -4.0, -5.0, -5.5,
        -5.5, -6.0, -7.0, -7.5,
        -9.5, -10.0, -11.0, -11.5,
        -11.5, -12.0, -13.0, -13.5,
    ];
    Tolerance::EXACT.assert_close("avg pool 3x3/1 SAME", &y.data, &interleave(&c0, &c1));

    let y = apply(Op::AvgPool2d(window(2, 2, [0, 1, 0, 1])), &same_2x2_stride2_input());
    let want = interleave(&[4.75, 4.5, 4.5, 2.0], &[-3.0, -4.5, -7.5, -9.0]);
    Tolerance::EXACT.assert_close("avg pool 2x2/2 SAME", &y.data, &want);
}

/// `MaxPool2dGrad` sends each window's gradient to its first maximum (row-major scan), and
/// overlapping windows add up; padding receives nothing.
#[test]
fn max_pool_grad_goes_to_first_maximum() {
    // 1x3x3x1 all equal: 2x2 windows with stride 1 (VALID) tie everywhere.
    let mut g = Graph::new("pool_grad", 1, Mode::Inference);
    let x = g.add(Op::Input, &[], Some(Shape(vec![1, 3, 3, 1])), "input").unwrap();
    let w = window(2, 1, [0, 0, 0, 0]);
    let pooled = g.add(Op::MaxPool2d(w), &[x], None, "pool").unwrap();
    let dx = g.add(Op::MaxPool2dGrad(w), &[x, pooled], None, "pool").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: dx,
    });
    let ones = Tensor::full(&[1, 3, 3, 1], 1.0);
    let v = run(&g, &ones, None, &[], 0).unwrap();
    // dy = pooled = 1 everywhere; each window's first element is its top-left.
    #[rustfmt::skip]
    let want = [
        1.0, 1.0, 0.0,
        1.0, 1.0, 0.0,
        0.0, 0.0, 0.0,
    ];
    Tolerance::EXACT.assert_close("max pool grad with ties", &v.get(dx).data, &want);

    // SAME 2x2/2 on 3x3 with a tie between (0,2) and (1,2) in the right-edge window.
    let x_val = Tensor::from_vec(&[1, 3, 3, 1], vec![1.0, 2.0, 5.0, 3.0, 4.0, 5.0, 0.5, -1.0, -2.0]).unwrap();
    let grads = pool_grad(&x_val, window(2, 2, [0, 1, 0, 1]), &[10.0, 20.0, 30.0, 40.0]);
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 20.0,
        0.0, 10.0, 0.0,
        30.0, 0.0, 40.0,
    ];
    Tolerance::EXACT.assert_close("max pool grad SAME", &grads, &want);
}

/// `MaxPool2dGrad(x, dy)` for a given `dy`, binding `dy` as the target of a training graph.
fn pool_grad(x: &Tensor, w: Window2d, dy: &[f32]) -> Vec<f32> {
    let mut g = Graph::new("pool_grad", 1, Mode::Training);
    let xi = g.add(Op::Input, &[], Some(Shape(x.shape.clone())), "input").unwrap();
    let [oh, ow] = window_hw([x.shape[1], x.shape[2]], w.size, w.strides, w.pad).unwrap();
    let dy_shape = vec![x.shape[0], oh, ow, x.shape[3]];
    let dyi = g.add(Op::Target, &[], Some(Shape(dy_shape.clone())), "").unwrap();
    let dx = g.add(Op::MaxPool2dGrad(w), &[xi, dyi], None, "pool").unwrap();
    // A training graph needs a loss output; this one is unused.
    let mse = Op::Loss {
        kind: LossKind::MeanSquaredError,
        from_logits: false,
    };
    let loss = g.add(mse, &[dyi, dyi], None, "").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: dx,
    });
    g.outputs.push(GraphOutput {
        role: OutputRole::Loss,
        node: loss,
    });
    let dy_t = Tensor::from_vec(&dy_shape, dy.to_vec()).unwrap();
    run(&g, x, Some(&dy_t), &[], 0).unwrap().get(dx).data.clone()
}
