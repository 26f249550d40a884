//! The interpreter's forward pass against the worked numbers printed in the seeds: seed 000
//! §9.1 (a 4x4 input through a 3x3 SAME convolution, then 2x2 max-pooling, and the 3-channel
//! convolution worked by hand, result −2) and seed 003's convolution example (result 1).

// The seeds print more digits than f32 holds; they are kept verbatim.
#![allow(clippy::excessive_precision)]

use cnnc_compiler::interp::run;
use cnnc_compiler::ir::{Graph, GraphOutput, Mode, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape, Window2d};
use cnnc_compiler::tolerance::Tolerance;
use cnnc_runtime::{Init, Tensor};

fn param(g: &mut Graph, name: &str, role: ParamRole, shape: &[usize]) -> NodeId {
    let op = Op::Param {
        name: name.into(),
        role,
        init: Init::Zeros,
    };
    g.add(
        op,
        &[],
        Some(Shape(shape.to_vec())),
        name.split('.').next().unwrap_or(""),
    )
    .unwrap()
}

/// `Conv2D(filters, kernel, padding)` + bias on a single sample, as an inference graph.
/// Returns the graph and the conv output node.
fn conv_graph(x: &[usize], k: &[usize], pad: Pad2d) -> (Graph, NodeId) {
    let mut g = Graph::new("seed", x[0], Mode::Inference);
    let input = g.add(Op::Input, &[], Some(Shape(x.to_vec())), "input").unwrap();
    let kernel = param(&mut g, "conv.kernel", ParamRole::Kernel, k);
    let bias = param(&mut g, "conv.bias", ParamRole::Bias, &[k[3]]);
    let conv = g
        .add(Op::Conv2d { strides: [1, 1], pad }, &[input, kernel], None, "conv")
        .unwrap();
    let y = g.add(Op::BiasAdd, &[conv, bias], None, "conv").unwrap();
    g.outputs.push(GraphOutput {
        role: OutputRole::Prediction,
        node: y,
    });
    (g, y)
}

fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_vec(shape, data.to_vec()).unwrap()
}

/// Seed 000 §9.1: `Conv2D(1, (3,3), strides=(1,1), padding='same')` on the printed 4x4 input
/// with the printed kernel (bias 0) gives the printed 4x4 output; `MaxPooling2D((2,2))` of that
/// gives the printed 2x2.
#[test]
fn seed000_same_conv_and_max_pool_match_printed_arrays() {
    let same = Pad2d {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    let (mut g, conv) = conv_graph(&[1, 4, 4, 1], &[3, 3, 1, 1], same);
    let window = Window2d {
        size: [2, 2],
        strides: [2, 2],
        pad: Pad2d::default(),
    };
    let pool = g.add(Op::MaxPool2d(window), &[conv], None, "max_pool").unwrap();
    #[rustfmt::skip]
    let images = t(&[1, 4, 4, 1], &[
        0.0, 1.0, -1.0, 2.0,
        -1.0, 2.0, 1.0, 0.1,
        0.0, 0.1, 1.0, -1.0,
        3.0, 1.0, 1.0, 1.0,
    ]);
    #[rustfmt::skip]
    let kernel = t(&[3, 3, 1, 1], &[
        -0.20663663, -0.52216303, -0.18993356,
        0.35366662, -0.25309275, -0.4699023,
        -0.44492979, -0.28197704, 0.03117762,
    ]);
    let bias = t(&[1], &[0.0]);
    let v = run(&g, &images, None, &[kernel, bias], 0).unwrap();
    #[rustfmt::skip]
    let printed_conv = [
        -0.12557002, 0.12896288, -1.50176408, -1.3329796,
        -0.87352764, -1.65900396, -0.01473809, -0.67228483,
        -0.71944782, -3.10842334, -1.39798264, -0.37900039,
        -1.24817389, 0.09585495, -0.72222156, 0.41610027,
    ];
    assert_eq!(v.get(conv).shape, vec![1, 4, 4, 1]);
    Tolerance::EXACT.assert_close("seed 000 conv output", &v.get(conv).data, &printed_conv);
    let printed_pool = [0.12896288, -0.01473809, 0.09585495, 0.41610027];
    assert_eq!(v.get(pool).shape, vec![1, 2, 2, 1]);
    Tolerance::EXACT.assert_close("seed 000 max-pool output", &v.get(pool).data, &printed_pool);
}

/// Seed 000 §9.1's remark: the element at row 3, column 2 of the 3-channel convolution with
/// kernel W0 and bias 1 is −2, from the per-channel sums 2, −2 and −3. The 3x3x3 window and
/// kernel are the ones multiplied out in the text; a VALID 3x3 convolution of the window alone
/// computes exactly that element.
#[test]
fn seed000_three_channel_worked_example_is_minus_two() {
    // Per channel, row-major 3x3: the window of X and the slice of W0 (as printed).
    #[rustfmt::skip]
    let x_channels: [[f32; 9]; 3] = [
        [2.0, 2.0, 1.0, 2.0, 0.0, 2.0, 1.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 0.0, 0.0],
        [2.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 2.0, 1.0],
    ];
    #[rustfmt::skip]
    let w_channels: [[f32; 9]; 3] = [
        [1.0, -1.0, 0.0, 1.0, 1.0, 0.0, -1.0, 0.0, 1.0],
        [-1.0, -1.0, 1.0, -1.0, -1.0, -1.0, 1.0, -1.0, 0.0],
        [0.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.0, -1.0, -1.0],
    ];
    // Interleave into NHWC / HWIO (channel innermost).
    let nhwc: Vec<f32> = (0..9).flat_map(|p| (0..3).map(move |c| x_channels[c][p])).collect();
    let hwio: Vec<f32> = (0..9).flat_map(|p| (0..3).map(move |c| w_channels[c][p])).collect();
    let (g, y) = conv_graph(&[1, 3, 3, 3], &[3, 3, 3, 1], Pad2d::default());
    let v = run(
        &g,
        &t(&[1, 3, 3, 3], &nhwc),
        None,
        &[t(&[3, 3, 3, 1], &hwio), t(&[1], &[1.0])],
        0,
    )
    .unwrap();
    Tolerance::EXACT.assert_close("3-channel conv + bias", &v.get(y).data, &[-2.0]);

    // The per-channel partial results printed in the text: 2, -2, -3 (bias 0).
    let (g1, y1) = conv_graph(&[1, 3, 3, 1], &[3, 3, 1, 1], Pad2d::default());
    for (c, want) in [2.0, -2.0, -3.0].into_iter().enumerate() {
        let x = t(&[1, 3, 3, 1], &x_channels[c]);
        let w = t(&[3, 3, 1, 1], &w_channels[c]);
        let v = run(&g1, &x, None, &[w, t(&[1], &[0.0])], 0).unwrap();
        Tolerance::EXACT.assert_close(&format!("channel {c} partial"), &v.get(y1).data, &[want]);
    }
}

/// Seed 003's worked convolution: `(-1)*1+0*0+1*2 + (-1)*5+0*4+1*2 + (-1)*3+0*4+1*5 + 1 = 1`.
#[test]
fn seed003_worked_convolution_is_one() {
    let x = t(&[1, 3, 3, 1], &[1.0, 0.0, 2.0, 5.0, 4.0, 2.0, 3.0, 4.0, 5.0]);
    let k = t(&[3, 3, 1, 1], &[-1.0, 0.0, 1.0, -1.0, 0.0, 1.0, -1.0, 0.0, 1.0]);
    let (g, y) = conv_graph(&[1, 3, 3, 1], &[3, 3, 1, 1], Pad2d::default());
    let v = run(&g, &x, None, &[k, t(&[1], &[1.0])], 0).unwrap();
    Tolerance::EXACT.assert_close("seed 003 conv", &v.get(y).data, &[1.0]);
}
