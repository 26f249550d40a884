//! The model format and its lowering: Keras names and defaults, SAME padding, blocks and
//! repeat scoping, parameters and their initialisers, training vs inference graphs, and
//! specs built without YAML.

use std::path::Path;

use cnnc_compiler::error::CompileError;
use cnnc_compiler::ir::{Graph, Mode, Moment, Op, OutputRole, Pad2d, ParamRole};
use cnnc_compiler::lower::lower;
use cnnc_compiler::spec::{parse_model, Activation, Init, LayerKind, LossKind, ModelSpec, Padding, MODEL_INPUT};

fn parse(text: &str) -> ModelSpec {
    parse_model(text, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    match parse_model(text, Path::new("test.yaml")) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn names(spec: &ModelSpec) -> Vec<&str> {
    spec.layers.iter().map(|l| l.name.as_str()).collect()
}

fn inputs<'a>(spec: &'a ModelSpec, name: &str) -> Vec<&'a str> {
    spec.layer(name)
        .unwrap_or_else(|| panic!("no layer {name}"))
        .inputs
        .iter()
        .map(String::as_str)
        .collect()
}

fn lowered(text: &str, mode: Mode) -> Graph {
    lower(&parse(text), 2, mode).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_brief_example_parses() {
    let spec = parse(
        "name: mnist_cnn\ninput: [28, 28, 1]            # H, W, C\nlayers:\n  \
         - conv2d: {filters: 32, kernel_size: 3, padding: same, activation: relu}\n  \
         - max_pooling2d: {pool_size: 2}\n  - flatten: {}\n  \
         - dense: {name: logits, units: 10, activation: softmax}\n",
    );
    assert_eq!(spec.name, "mnist_cnn");
    assert_eq!(spec.input, vec![28, 28, 1]);
    assert_eq!(names(&spec), ["conv2d", "max_pooling2d", "flatten", "logits"]);
    assert_eq!(inputs(&spec, "conv2d"), [MODEL_INPUT]);
    assert_eq!(inputs(&spec, "logits"), ["flatten"]);
    assert_eq!(
        spec.layers.iter().map(|l| l.line).collect::<Vec<_>>(),
        [Some(4), Some(5), Some(6), Some(7)]
    );
    assert_eq!(
        spec.layers[0].kind,
        LayerKind::Conv2d {
            filters: 32,
            kernel_size: [3, 3],
            strides: [1, 1],
            padding: Padding::Same,
            activation: Activation::Relu,
            use_bias: true,
            kernel_initializer: Init::GlorotUniform,
            bias_initializer: Init::Zeros,
        }
    );
    assert_eq!(spec.layers[1].kind, LayerKind::max_pooling2d([2, 2]));
    assert_eq!(spec.training, Default::default());
}

#[test]
fn keras_automatic_names_per_class() {
    let spec = parse(
        "input: [8, 8, 3]\nlayers:\n  - conv2d: {filters: 4, kernel_size: 3, padding: same}\n  - batch_normalization\n  \
         - activation: relu\n  - conv2d: {filters: 4, kernel_size: [1, 3], strides: [1, 1], padding: SAME}\n  \
         - add: {inputs: [conv2d, conv2d_1]}\n  - concatenate: {inputs: [add, activation], axis: -1}\n  \
         - max_pool2d: {}\n  - avg_pool2d: {pool_size: [2, 1], strides: 1}\n  - average_pooling2d\n  \
         - dropout: {rate: 0.25, seed: 9}\n  - global_average_pooling2d\n  - reshape: {target_shape: [2, 4]}\n  \
         - flatten\n  - dense: {units: 3}\n  - dense: {units: 2}\n",
    );
    assert_eq!(
        names(&spec),
        [
            "conv2d",
            "batch_normalization",
            "activation",
            "conv2d_1",
            "add",
            "concatenate",
            "max_pooling2d",
            "average_pooling2d",
            "average_pooling2d_1",
            "dropout",
            "global_average_pooling2d",
            "reshape",
            "flatten",
            "dense",
            "dense_1"
        ]
    );
    let classes: Vec<&str> = spec.layers.iter().map(|l| l.kind.keras_class()).collect();
    assert_eq!(&classes[..4], ["Conv2D", "BatchNormalization", "Activation", "Conv2D"]);
    assert_eq!(spec.layers[7].kind.keras_class(), "AveragePooling2D");
    assert_eq!(
        spec.layers[7].kind,
        LayerKind::AveragePooling2d {
            pool_size: [2, 1],
            strides: [1, 1],
            padding: Padding::Valid
        }
    );
    assert_eq!(spec.layers[1].kind, LayerKind::batch_normalization());
    let LayerKind::BatchNormalization { momentum, epsilon, .. } = spec.layers[1].kind else {
        panic!("not BN")
    };
    assert_eq!((momentum, epsilon), (0.99, 0.001));
    assert_eq!(
        spec.layers[9].kind,
        LayerKind::Dropout {
            rate: 0.25,
            seed: Some(9)
        }
    );
    let g = lower(&spec, 2, Mode::Inference).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.shape(g.layers[5].output).dims(), [2, 8, 8, 8]);
}

#[test]
fn same_padding_splits_like_tensorflow() {
    let g = lowered(
        "input: [4, 7, 1]\nlayers:\n  - conv2d: {filters: 1, kernel_size: 3, strides: 2, padding: same}\n  \
         - max_pooling2d: {pool_size: 2, padding: same}\n  - flatten\n",
        Mode::Inference,
    );
    let conv = g.nodes.iter().find_map(|n| match n.op {
        Op::Conv2d { pad, strides } => Some((pad, strides)),
        _ => None,
    });
    // H: ceil(4/2)=2 → total (2-1)·2+3-4 = 1 → 0 above, 1 below. W: ceil(7/2)=4 → 2 → 1 and 1.
    let want = Pad2d {
        top: 0,
        bottom: 1,
        left: 1,
        right: 1,
    };
    assert_eq!(conv, Some((want, [2, 2])));
    let pool = g.nodes.iter().find_map(|n| match n.op {
        Op::MaxPool2d(w) => Some(w),
        _ => None,
    });
    // Pool on 2x4: H total (1-1)·2+2-2 = 0; W total (2-1)·2+2-4 = 0.
    assert_eq!(pool.map(|w| w.pad), Some(Pad2d::default()));
    assert_eq!(g.shape(g.layers[0].output).dims(), [2, 2, 4, 1]);
}

#[test]
fn parameters_have_keras_names_inits_and_order() {
    let g = lowered(
        "input: [6, 6, 2]\nlayers:\n  - conv2d: {name: c, filters: 3, kernel_size: 3, kernel_initializer: he_normal}\n  \
         - batch_normalization: {name: bn}\n  - batch_normalization: {name: frozen, scale: false, center: false}\n  \
         - flatten\n  - dense: {name: d, units: 4, use_bias: false, activation: softmax}\n",
        Mode::Inference,
    );
    let params: Vec<(String, Vec<usize>, Init)> = g
        .params()
        .into_iter()
        .map(|p| match &g.node(p).op {
            Op::Param { name, init, .. } => (name.clone(), g.shape(p).0.clone(), *init),
            _ => unreachable!(),
        })
        .collect();
    let want = [
        ("c.kernel", vec![3, 3, 2, 3], Init::HeNormal),
        ("c.bias", vec![3], Init::Zeros),
        ("bn.gamma", vec![3], Init::Ones),
        ("bn.beta", vec![3], Init::Zeros),
        ("bn.moving_mean", vec![3], Init::Zeros),
        ("bn.moving_variance", vec![3], Init::Ones),
        ("frozen.moving_mean", vec![3], Init::Zeros),
        ("frozen.moving_variance", vec![3], Init::Ones),
        ("d.kernel", vec![48, 4], Init::GlorotUniform),
    ];
    let want: Vec<(String, Vec<usize>, Init)> = want.into_iter().map(|(n, s, i)| (n.to_string(), s, i)).collect();
    assert_eq!(params, want);
    let constants: Vec<f32> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Constant(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(constants, [1.0, 0.0], "frozen BN: gamma 1, beta 0 as constants");
    let layer = |name: &str| {
        g.layers
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(layer("bn").params.len(), 4);
    assert_eq!(layer("frozen").params.len(), 2);
    assert_eq!(layer("c").class, "Conv2D");
    // Dense: MatMul, no bias, then a separate softmax that is the prediction.
    let pred = g
        .output(&OutputRole::Prediction)
        .unwrap_or_else(|| panic!("no prediction"));
    assert_eq!(g.node(pred).op, Op::Act(Activation::Softmax));
    assert!(matches!(g.node(g.node(pred).inputs[0]).op, Op::MatMul { .. }));
    assert!(g
        .nodes
        .iter()
        .any(|n| n.op == Op::BatchNormInference { epsilon: 0.001 }));
    // Flatten is a reshape to [N, H·W·C].
    assert!(g.nodes.iter().any(|n| n.op == Op::Reshape && n.shape.dims() == [2, 48]));
}

#[test]
fn training_graphs_have_batch_statistics_state_updates_and_dropout() {
    let text = "input: [4, 4, 2]\nlayers:\n  - batch_normalization: {name: bn, momentum: 0.9}\n  \
                - dropout: {name: drop, rate: 0.3}\n  - dropout: {name: fixed, rate: 0.1, seed: 77}\n  - flatten\n";
    let g = lowered(text, Mode::Training);
    assert!(g.nodes.iter().any(|n| n.op == Op::Moments));
    assert!(g.nodes.iter().any(|n| n.op == Op::BatchNormTrain { epsilon: 0.001 }));
    let updates: Vec<(Moment, String)> = g
        .outputs
        .iter()
        .filter_map(|o| match o.role {
            OutputRole::StateUpdate { param } => match g.node(o.node).op {
                Op::MovingAverage { momentum, moment } => {
                    assert_eq!(momentum, 0.9);
                    Some((
                        moment,
                        g.param_info(param).map(|(n, _)| n.to_string()).unwrap_or_default(),
                    ))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        updates,
        [
            (Moment::Mean, "bn.moving_mean".into()),
            (Moment::Variance, "bn.moving_variance".into())
        ]
    );
    let seeds: Vec<(f32, u64)> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Dropout { rate, seed } => Some((rate, seed)),
            _ => None,
        })
        .collect();
    assert_eq!(seeds.len(), 2);
    assert_eq!(seeds[1], (0.1, 77));
    assert_ne!(seeds[0].1, 77, "a seed derived from the layer name");
    assert_eq!(
        lowered(text, Mode::Training).nodes,
        g.nodes,
        "lowering is deterministic"
    );

    let inf = lowered(text, Mode::Inference);
    assert!(!inf
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Dropout { .. } | Op::Moments)));
    assert_eq!(inf.layers.len(), 4, "dropout still has a row");
    assert!(inf.outputs.iter().all(|o| o.role == OutputRole::Prediction));
    let roles: Vec<ParamRole> = inf
        .params()
        .iter()
        .filter_map(|&p| inf.param_info(p).map(|(_, r)| r))
        .collect();
    assert_eq!(
        roles,
        [
            ParamRole::Gamma,
            ParamRole::Beta,
            ParamRole::MovingMean,
            ParamRole::MovingVariance
        ]
    );
}

#[test]
fn dag_blocks_are_scoped_per_instance() {
    let spec = parse(
        "input: [8, 8, 4]\nblocks:\n  res:\n    params: [filters, {strides: 1}]\n    layers:\n      \
         - conv2d: {name: c1, filters: $filters, kernel_size: 3, strides: $strides, padding: same}\n      \
         - batch_normalization\n      - conv2d: {name: proj, inputs: [input], filters: $filters, kernel_size: 1, \
         strides: $strides}\n      - add: {inputs: [batch_normalization, proj]}\n      - activation: relu\n\
         layers:\n  - res: {filters: 8, strides: 2}\n  - res: {name: second, filters: 8}\n  \
         - res: {filters: 8, inputs: [res]}\n  - add: {inputs: [second, res_1]}\n  - global_average_pooling2d\n",
    );
    assert_eq!(
        &names(&spec)[..5],
        [
            "res/c1",
            "res/batch_normalization",
            "res/proj",
            "res/add",
            "res/activation"
        ]
    );
    assert_eq!(inputs(&spec, "res/proj"), [MODEL_INPUT]);
    assert_eq!(inputs(&spec, "res/add"), ["res/batch_normalization", "res/proj"]);
    assert_eq!(inputs(&spec, "second/c1"), ["res/activation"]);
    assert_eq!(inputs(&spec, "second/proj"), ["res/activation"]);
    assert_eq!(inputs(&spec, "res_1/c1"), ["res/activation"], "explicit instance input");
    assert_eq!(
        inputs(&spec, "add"),
        ["second/activation", "res_1/activation"],
        "an instance name is its output"
    );
    assert_eq!(
        spec.layer("res/c1").map(|l| &l.kind),
        Some(&LayerKind::Conv2d {
            filters: 8,
            kernel_size: [3, 3],
            strides: [2, 2],
            padding: Padding::Same,
            activation: Activation::Linear,
            use_bias: true,
            kernel_initializer: Init::GlorotUniform,
            bias_initializer: Init::Zeros,
        })
    );
    assert_eq!(
        spec.layer("res/c1").and_then(|l| l.line),
        Some(6),
        "lines point into the block"
    );
    let g = lower(&spec, 1, Mode::Training).unwrap_or_else(|e| panic!("{e}"));
    assert!(g
        .params()
        .iter()
        .any(|&p| g.param_info(p).is_some_and(|(n, _)| n == "second/proj.kernel")));
}

#[test]
fn repeat_copies_layers_and_suffixes_their_names() {
    let spec = parse(
        "input: [16]\nlayers:\n  - repeat:\n      times: 3\n      layers:\n        - dense: {name: h, units: 4}\n        \
         - dense: {name: g, units: 4}\n        - add: {inputs: [h, g]}\n  - repeat: {times: 0, layers: [flatten]}\n",
    );
    assert_eq!(
        names(&spec),
        ["h", "g", "add", "h_1", "g_1", "add_1", "h_2", "g_2", "add_2"]
    );
    assert_eq!(inputs(&spec, "h_1"), ["add"]);
    assert_eq!(inputs(&spec, "add_2"), ["h_2", "g_2"], "references follow the copy");
}

#[test]
fn nested_blocks_and_parameter_passing() {
    let spec = parse(
        "input: [8, 8, 3]\nblocks:\n  unit:\n    params: [f, {k: 3}]\n    layers:\n      \
         - conv2d: {filters: $f, kernel_size: $k, padding: same}\n  pair:\n    params: [f]\n    layers:\n      \
         - unit: {f: $f}\n      - unit: {f: $f, k: [1, 1]}\nlayers:\n  - pair: {f: 5}\n  - flatten\n",
    );
    assert_eq!(names(&spec), ["pair/unit/conv2d", "pair/unit_1/conv2d", "flatten"]);
    let LayerKind::Conv2d {
        filters, kernel_size, ..
    } = spec.layers[1].kind
    else {
        panic!("conv")
    };
    assert_eq!((filters, kernel_size), (5, [1, 1]));
}

/// `$param` in a block's `name:` and `inputs:` stands for a string argument: the caller names
/// a layer of each instance and tells another which one to take; repeats still suffix it.
#[test]
fn block_parameters_name_layers_and_pick_inputs() {
    let spec = parse(
        "input: [8]\nblocks:\n  branch:\n    params: [tag, {from: input}, {step: step}]\n    layers:\n      \
         - dense: {name: $tag, inputs: [$from], units: 4}\n      - dense: {name: side, inputs: [input], units: 4}\n      \
         - add: {inputs: [$tag, side]}\n      - repeat:\n          times: 2\n          layers:\n            \
         - dense: {name: $step, units: 4}\n  pair:\n    params: [tag]\n    layers:\n      \
         - branch: {name: $tag, tag: $tag}\n      - branch: {inputs: [$tag], tag: second, from: side}\n\
         layers:\n  - branch: {tag: first}\n  - pair: {tag: p}\n",
    );
    assert_eq!(
        &names(&spec)[..6],
        [
            "branch/first",
            "branch/side",
            "branch/add",
            "branch/step",
            "branch/step_1",
            "pair/p/p"
        ]
    );
    assert_eq!(inputs(&spec, "branch/first"), [MODEL_INPUT]);
    assert_eq!(inputs(&spec, "branch/add"), ["branch/first", "branch/side"]);
    assert_eq!(
        inputs(&spec, "pair/p/p"),
        ["branch/step_1"],
        "an instance named by its caller"
    );
    assert_eq!(
        inputs(&spec, "pair/branch/second"),
        ["pair/branch/side"],
        "`from: side`"
    );
    assert_eq!(
        inputs(&spec, "pair/branch/side"),
        ["pair/p/step_1"],
        "`inputs: [$tag]` names an instance"
    );
}

#[test]
fn training_section() {
    let spec = parse(
        "input: [4]\nlayers: [dense: {units: 2}]\ntraining:\n  optimizer: SGD\n  learning_rate: 1e-2\n  \
         momentum: 0.9\n  loss: categorical_crossentropy\n  from_logits: true\n  batch_size: 16\n  epochs: 3\n  \
         validation_split: 0.2\n",
    );
    let t = spec.training;
    assert_eq!(t.optimizer.as_deref(), Some("sgd"));
    assert_eq!(t.learning_rate, Some(0.01));
    assert_eq!(t.momentum, Some(0.9));
    assert_eq!(t.loss, Some(LossKind::CategoricalCrossentropy));
    assert_eq!(
        (t.from_logits, t.batch_size, t.epochs, t.validation_split),
        (Some(true), Some(16), Some(3), Some(0.2))
    );
    assert_eq!(spec.name, "test", "the name defaults to the file stem");
    // Values out of range are reported where they stand, like layer arguments.
    for (training, want) in [
        ("{epochs: 0}", "test.yaml:3:20: training.epochs: must be at least 1"),
        (
            "{batch_size: 0}",
            "test.yaml:3:24: training.batch_size: must be at least 1",
        ),
        (
            "{epochs: -2}",
            "test.yaml:3:20: training.epochs: invalid value: integer `-2`, expected a positive integer",
        ),
        (
            "\n  optimizer: sgd\n  learning_rate: -0.1",
            "test.yaml:5:18: training.learning_rate: must be positive, got -0.1",
        ),
        (
            "{momentum: 1}",
            "test.yaml:3:22: training.momentum: must be in [0, 1), got 1",
        ),
        (
            "{validation_split: .nan}",
            "test.yaml:3:30: training.validation_split: must be in [0, 1), got NaN",
        ),
        ("{loss: hinge}", "test.yaml:3:18: training.loss: unknown loss `hinge`"),
    ] {
        let e = parse_err(&format!(
            "input: [4]\nlayers: [dense: {{units: 2}}]\ntraining: {training}\n"
        ));
        assert!(e.starts_with(want), "{e}\nwanted: {want}");
    }
    let e = parse_err("input: [4]\nlayers: [dense: {units: 2}]\ntraining: {lr: 0.1}\n");
    assert!(e.contains("test.yaml:3:") && e.contains("unknown field `lr`"), "{e}");
    // Numbers an f32 cannot hold are refused as written, not rounded to 0 or infinity.
    let e = parse_err("input: [4]\nlayers: [dense: {units: 2}]\ntraining: {momentum: 0.5, learning_rate: 1e50}\n");
    assert_eq!(
        e,
        "test.yaml:3:42: training.learning_rate: 1e50 is beyond f32's range (±3.4028235e38)"
    );
    let e = parse_err("input: [4, 4, 1]\nlayers:\n  - batch_normalization: {epsilon: -1e-60}\n");
    assert!(
        e.ends_with("epsilon: -1e-60 is closer to 0 than f32's smallest positive value (1e-45) and would round to 0"),
        "{e}"
    );
    assert_eq!(
        parse("input: [4]\nlayers: [dropout: {rate: 0}]\ntraining: {learning_rate: 1e-40}\n")
            .training
            .learning_rate,
        Some(1e-40)
    );
}

#[test]
fn specs_build_without_yaml() {
    let mut spec = ModelSpec::sequential(
        "coded",
        vec![28, 28, 1],
        vec![
            LayerKind::conv2d(8, [3, 3]),
            LayerKind::max_pooling2d([2, 2]),
            LayerKind::Flatten,
            LayerKind::dense(10),
        ],
    );
    assert_eq!(names(&spec), ["conv2d", "max_pooling2d", "flatten", "dense"]);
    let g = lower(&spec, 3, Mode::Inference).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.shape(g.layers[3].output).dims(), [3, 10]);
    assert_eq!(g.input().map(|i| g.shape(i).dims().to_vec()), Some(vec![3, 28, 28, 1]));
    // A cycle can only come from code-built specs or forward references; both are refused.
    spec.layers[0].inputs = vec!["dense".into()];
    let e = lower(&spec, 1, Mode::Inference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("cycle: conv2d -> max_pooling2d -> flatten -> dense -> conv2d"),
        "{e}"
    );
    assert!(matches!(
        lower(&spec, 1, Mode::Inference),
        Err(CompileError::Model { .. })
    ));
}

#[test]
fn errors_name_file_line_and_column() {
    let e = parse_err("input: [4]\nlayers:\n  - dense: {units: 2, activation: swish}\n");
    assert!(e.starts_with("test.yaml:3:"), "{e}");
    assert!(
        e.contains("unknown activation `swish`, expected one of: linear, relu"),
        "{e}"
    );
    let e = parse_err("input: [4]\nlayers:\n  - dense: {units: -3}\n");
    assert!(
        e.starts_with("test.yaml:3:20: layers[0].dense.units: invalid value: integer `-3`"),
        "{e}"
    );
    let e = parse_err("input: [28, 28]\nlayers:\n  - conv2d: {filters: 1, kernel_size: 0}\n");
    assert!(e.contains("sizes must be positive, got 0"), "{e}");
    let e = parse_err("layers: [flatten]\n");
    assert!(e.contains("missing field `input`"), "{e}");
    let e = parse_err("input: [4]\nlayers: []\n");
    assert!(e.contains("the model has no layers"), "{e}");
    let e = parse_err("- 1\n- 2\n");
    assert!(
        e.contains("expected a model (a mapping with `input:` and `layers:`)"),
        "{e}"
    );
    let err = lower(
        &parse("input: [2, 2, 1]\nlayers:\n  - max_pooling2d: {pool_size: 3}\n"),
        1,
        Mode::Inference,
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert_eq!(
        err,
        "test.yaml:3: layer max_pooling2d (MaxPooling2D): input [1, 2, 2, 1]: a 3x3 window with strides 3x3 on a \
         2x2 map would produce 0x0"
    );
    let batch0 = lower(&parse("input: [4]\nlayers: [flatten]\n"), 0, Mode::Inference);
    assert!(batch0.is_err_and(|e| e.to_string().contains("batch size must be at least 1")));
}

#[test]
fn batch_norm_and_concatenate_take_the_channel_axis_of_their_input_rank() {
    let ok = "input: [4, 4, 2]\nlayers:\n  - batch_normalization: {axis: 3}\n  - reshape: {target_shape: [16, 2]}\n  \
              - batch_normalization: {axis: 2}\n  - concatenate: {inputs: [batch_normalization_1, reshape], axis: 2}\n  \
              - flatten\n  - dense: {units: 3}\n  - batch_normalization: {axis: 1}\n  - batch_normalization: {axis: -1}\n";
    for mode in [Mode::Inference, Mode::Training] {
        lowered(ok, mode);
    }
    let err = |text: &str| {
        lower(&parse(text), 1, Mode::Inference)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err("input: [4]\nlayers:\n  - dense: {units: 2}\n  - batch_normalization: {axis: 3}\n");
    assert_eq!(
        e,
        "test.yaml:4: layer batch_normalization (BatchNormalization): input [1, 2]: axis 3 is out of range for a \
         rank-2 input; its channel axis is -1 or 1 (axes count the batch as 0)"
    );
    let e = err("input: [4, 4, 2]\nlayers:\n  - batch_normalization: {axis: 1}\n  - flatten\n");
    assert!(
        e.ends_with(
            "axis 1: only the last (channel) axis is supported, -1 or 3 for a rank-4 input (axes count the batch as 0)"
        ),
        "{e}"
    );
    let e =
        err("input: [4]\nlayers:\n  - dense: {name: a, units: 2}\n  - concatenate: {inputs: [a, input], axis: 0}\n");
    assert!(
        e.starts_with("test.yaml:4: layer concatenate (Concatenate): inputs [1, 2] and [1, 4]: axis 0: only"),
        "{e}"
    );
}

#[test]
fn load_model_names_unreadable_files() {
    let e = cnnc_compiler::spec::load_model(Path::new("/nonexistent/model.yaml")).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.starts_with("/nonexistent/model.yaml: cannot read the model file"),
        "{msg}"
    );
}

#[test]
fn a_byte_order_mark_is_ignored_and_lines_stay_right() {
    let spec = parse("\u{feff}input: [4]\nlayers:\n  - dense: {units: 2}\n");
    assert_eq!(names(&spec), ["dense"]);
    let e = parse_err("\u{feff}input: [4]\nlayers:\n  - dense: {units: 2}\n  - dense: {units: 2, activation: swish}\n");
    assert!(e.starts_with("test.yaml:4:"), "{e}");
    // From a file too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bom.yaml");
    std::fs::write(&path, "\u{feff}input: [4]\nlayers: [flatten]\n").unwrap();
    assert!(cnnc_compiler::spec::load_model(&path).is_ok());
}

/// A lone CR ends a line (old Mac files), for libyaml's errors and for the scan that locates
/// layers alike; CRLF and LF still do.
#[test]
fn cr_only_line_endings_keep_lines_right() {
    let e = parse_err("input: [4]\rlayers:\r  - dense: {units: 2}\r  - dense: {units: 2, activation: swish}\r");
    assert!(e.starts_with("test.yaml:4:"), "{e}");
    let spec = parse("input: [4]\rlayers:\r  - dense: {units: 2}\r\r  - flatten\r");
    let lines: Vec<_> = spec.layers.iter().map(|l| l.line).collect();
    assert_eq!(lines, [Some(3), Some(5)]);
    let e = parse_err("input: [4]\r\nlayers:\r  - dense: {name: a, units: 2}\n  - dense: {name: a, units: 2}\r");
    assert!(
        e.starts_with("test.yaml:4:5: duplicate layer name `a` (first declared at line 3)"),
        "{e}"
    );
    let e = parse_err("input: [4]\rlayers: [dense: {units: 2}]\rtraining: {epochs: 0}\r");
    assert!(e.starts_with("test.yaml:3:20: training.epochs"), "{e}");
    // The not-UTF-8 error of a file is located the same way.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mac.yaml");
    std::fs::write(&path, b"input: [4]\rlayers:\r  - dense: {name: \xff}\r").unwrap();
    let e = cnnc_compiler::spec::load_model(&path).unwrap_err().to_string();
    assert!(e.contains("mac.yaml:3:19: the model file is not UTF-8"), "{e}");
}

#[test]
fn invalid_characters_are_located_by_line_and_column() {
    let e = parse_err("input: [4]\nlayers:\n  - dense: {name: \"\u{e9}\u{1}\", units: 2}\n");
    assert_eq!(
        e,
        "test.yaml:3:21: control characters are not allowed: U+0001 (byte offset 40)"
    );
    // After a byte-order mark, the column is as an editor shows it, the offset is in the file.
    let e = parse_err("\u{feff}input: [4]\0\nlayers: [flatten]\n");
    assert_eq!(
        e,
        "test.yaml:1:11: control characters are not allowed: U+0000 (byte offset 13)"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(&path, b"input: [4]\nlayers:\n  - dense: {name: caf\xe9, units: 2}\n").unwrap();
    let e = cnnc_compiler::spec::load_model(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        e,
        format!(
            "{}:3:22: the model file is not UTF-8 text: invalid byte 0xE9 (byte offset 40)",
            path.display()
        )
    );
}

#[cfg(unix)]
#[test]
fn load_model_reads_a_device_no_further_than_the_size_limit() {
    let e = cnnc_compiler::spec::load_model(Path::new("/dev/zero")).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        msg,
        "/dev/zero: the model file is larger than 16777216 bytes; a model file is a few kilobytes"
    );
}

#[test]
fn code_built_specs_have_bounded_names() {
    let mut spec = ModelSpec::sequential("coded", vec![4], vec![LayerKind::dense(2)]);
    spec.layers[0].name = "d".repeat(2000);
    let e = lower(&spec, 1, Mode::Inference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("(Dense): its name is 2000 characters long, more than the 1024 allowed"),
        "{e}"
    );
    let mut spec = ModelSpec::sequential("coded", vec![4], vec![LayerKind::dense(2)]);
    spec.name = "m".repeat(256);
    let e = lower(&spec, 1, Mode::Inference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("is 256 characters long, more than the 255 allowed"), "{e}");
}
