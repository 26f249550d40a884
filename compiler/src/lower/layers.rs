//! One Keras layer → graph nodes. Every tensor created here is size-checked, and every shape
//! error is reported against the layer with its input shapes.

use std::collections::HashMap;

use crate::error::{CompileError, LayerShapeError};
use crate::ir::{
    Activation, Graph, GraphOutput, Layer, Mode, Moment, NodeId, Op, OutputRole, Pad2d, ParamRole, Shape, Window2d,
};
use crate::spec::{Init, LayerKind, LayerSpec, ModelSpec, Padding, MAX_TENSOR_ELEMENTS, MAX_WEIGHT_ELEMENTS};

/// Product of `dims`, or `None` on overflow.
pub fn numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// TensorFlow's SAME padding along one axis: `(before, after)`, the odd one after.
fn same_pad(len: usize, k: usize, s: usize) -> (usize, usize) {
    let out = len.div_ceil(s);
    let total = ((out.saturating_sub(1)) * s + k).saturating_sub(len);
    (total / 2, total - total / 2)
}

fn pad2d(p: Padding, hw: [usize; 2], k: [usize; 2], s: [usize; 2]) -> Pad2d {
    match p {
        Padding::Valid => Pad2d::default(),
        Padding::Same => {
            let (top, bottom) = same_pad(hw[0], k[0], s[0]);
            let (left, right) = same_pad(hw[1], k[1], s[1]);
            Pad2d {
                top,
                bottom,
                left,
                right,
            }
        }
    }
}

/// Dropout's seed when the layer gives none: FNV-1a of its name, stable across runs.
fn name_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The graph under construction and each lowered layer's output node.
pub(super) struct Lowering<'a> {
    pub spec: &'a ModelSpec,
    pub g: Graph,
    pub out: HashMap<String, NodeId>,
    /// Weight elements so far (against `MAX_WEIGHT_ELEMENTS`).
    pub weights: usize,
}

impl Lowering<'_> {
    fn shape_err(&self, l: &LayerSpec, message: impl Into<String>) -> CompileError {
        let inputs = l
            .inputs
            .iter()
            .filter_map(|r| self.out.get(r))
            .map(|&id| self.g.shape(id).clone())
            .collect();
        CompileError::Shape(Box::new(LayerShapeError {
            loc: self.spec.loc(l),
            layer: l.name.clone(),
            class: l.kind.keras_class(),
            inputs,
            message: message.into(),
        }))
    }

    /// Adds a node of layer `l`, turning shape errors and oversized results into errors.
    fn add(&mut self, l: &LayerSpec, op: Op, inputs: &[NodeId], shape: Option<Shape>) -> Result<NodeId, CompileError> {
        let id = self
            .g
            .add(op, inputs, shape, &l.name)
            .map_err(|e| self.shape_err(l, e.to_string()))?;
        let s = self.g.shape(id);
        if numel(s.dims()).is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
            let msg = format!("its output {s} would have more than {MAX_TENSOR_ELEMENTS} elements");
            return Err(self.shape_err(l, msg));
        }
        Ok(id)
    }

    fn param(&mut self, l: &LayerSpec, role: ParamRole, init: Init, dims: Vec<usize>) -> Result<NodeId, CompileError> {
        let n = numel(&dims).filter(|&n| n <= MAX_TENSOR_ELEMENTS);
        let total = n
            .and_then(|n| self.weights.checked_add(n))
            .filter(|&t| t <= MAX_WEIGHT_ELEMENTS);
        let Some(total) = total else {
            let msg = format!(
                "its {} {dims:?} would bring the model over {MAX_TENSOR_ELEMENTS} elements per tensor or \
                 {MAX_WEIGHT_ELEMENTS} weights in all",
                role.keras_suffix()
            );
            return Err(self.shape_err(l, msg));
        };
        self.weights = total;
        let name = format!("{}.{}", l.name, role.keras_suffix());
        self.add(l, Op::Param { name, role, init }, &[], Some(Shape(dims)))
    }

    fn act(&mut self, l: &LayerSpec, x: NodeId, a: Activation) -> Result<NodeId, CompileError> {
        if a == Activation::Linear {
            Ok(x)
        } else {
            self.add(l, Op::Act(a), &[x], None)
        }
    }

    /// `[N, H, W, C]` of the layer's (single) input, or an error saying 4-D is needed.
    fn nhwc(&self, l: &LayerSpec, x: NodeId) -> Result<[usize; 4], CompileError> {
        match *self.g.shape(x).dims() {
            [n, h, w, c] => Ok([n, h, w, c]),
            _ => Err(self.shape_err(
                l,
                "needs a 4-D input [batch, height, width, channels] (a flat input needs a reshape layer first)",
            )),
        }
    }

    /// Refuses an `axis` other than the last (channel) one of `x`, counted as Keras does with
    /// the batch axis as 0: `-1`, or 3 for `[N, H, W, C]` and 1 for `[N, F]`.
    fn channel_axis(&self, l: &LayerSpec, x: NodeId, axis: i64) -> Result<(), CompileError> {
        let rank = self.g.shape(x).dims().len() as i64;
        if axis == -1 || axis == rank - 1 {
            return Ok(());
        }
        let last = rank - 1;
        let message = if (-rank..rank).contains(&axis) {
            format!("axis {axis}: only the last (channel) axis is supported, -1 or {last} for a rank-{rank} input")
        } else {
            format!("axis {axis} is out of range for a rank-{rank} input; its channel axis is -1 or {last}")
        };
        Err(self.shape_err(l, format!("{message} (axes count the batch as 0)")))
    }

    /// Lowers one layer whose inputs are already lowered.
    pub fn layer(&mut self, l: &LayerSpec) -> Result<(), CompileError> {
        let ins: Vec<NodeId> = l.inputs.iter().filter_map(|r| self.out.get(r).copied()).collect();
        let Some(&x) = ins.first() else {
            return Err(self.shape_err(l, "has no lowered input"));
        };
        let mut params = Vec::new();
        let y = match &l.kind {
            LayerKind::Conv2d {
                filters,
                kernel_size,
                strides,
                padding,
                activation,
                use_bias,
                kernel_initializer,
                bias_initializer,
            } => {
                let [_, h, w, c] = self.nhwc(l, x)?;
                let dims = vec![kernel_size[0], kernel_size[1], c, *filters];
                let k = self.param(l, ParamRole::Kernel, *kernel_initializer, dims)?; // [KH, KW, C, F]
                params.push(k);
                let pad = pad2d(*padding, [h, w], *kernel_size, *strides);
                let strides = *strides;
                let mut y = self.add(l, Op::Conv2d { strides, pad }, &[x, k], None)?; // [N, OH, OW, F]
                if *use_bias {
                    let b = self.param(l, ParamRole::Bias, *bias_initializer, vec![*filters])?;
                    params.push(b);
                    y = self.add(l, Op::BiasAdd, &[y, b], None)?;
                }
                self.act(l, y, *activation)?
            }
            LayerKind::BatchNormalization {
                axis,
                momentum,
                epsilon,
                center,
                scale,
            } => {
                self.channel_axis(l, x, *axis)?;
                self.batch_norm(l, x, *momentum, *epsilon, *center, *scale, &mut params)?
            }
            LayerKind::Activation(a) => self.add(l, Op::Act(*a), &[x], None)?,
            LayerKind::MaxPooling2d {
                pool_size,
                strides,
                padding,
            }
            | LayerKind::AveragePooling2d {
                pool_size,
                strides,
                padding,
            } => {
                let [_, h, w, _] = self.nhwc(l, x)?;
                let win = Window2d {
                    size: *pool_size,
                    strides: *strides,
                    pad: pad2d(*padding, [h, w], *pool_size, *strides),
                };
                let op = match l.kind {
                    LayerKind::MaxPooling2d { .. } => Op::MaxPool2d(win),
                    _ => Op::AvgPool2d(win),
                };
                self.add(l, op, &[x], None)? // [N, OH, OW, C]
            }
            LayerKind::GlobalAveragePooling2d => self.add(l, Op::GlobalAvgPool, &[x], None)?, // [N, C]
            LayerKind::Dropout { rate, seed } => match self.g.mode {
                Mode::Training => {
                    let seed = seed.unwrap_or_else(|| name_seed(&l.name));
                    self.add(l, Op::Dropout { rate: *rate, seed }, &[x], None)?
                }
                Mode::Inference => x,
            },
            LayerKind::Flatten => {
                let d = self.g.shape(x).dims();
                let to = vec![d[0], d[1..].iter().product()]; // [N, H·W·C]
                self.add(l, Op::Reshape, &[x], Some(Shape(to)))?
            }
            LayerKind::Dense {
                units,
                activation,
                use_bias,
                kernel_initializer,
                bias_initializer,
            } => {
                let features = match *self.g.shape(x).dims() {
                    [_, f] => f,
                    _ => {
                        return Err(self.shape_err(
                            l,
                            "needs a 2-D input [batch, features]; add a flatten (or global_average_pooling2d) \
                             layer before it",
                        ))
                    }
                };
                let k = self.param(l, ParamRole::Kernel, *kernel_initializer, vec![features, *units])?; // [in, out]
                params.push(k);
                let mm = Op::MatMul {
                    transpose_a: false,
                    transpose_b: false,
                };
                let mut y = self.add(l, mm, &[x, k], None)?; // [N, units]
                if *use_bias {
                    let b = self.param(l, ParamRole::Bias, *bias_initializer, vec![*units])?;
                    params.push(b);
                    y = self.add(l, Op::BiasAdd, &[y, b], None)?;
                }
                self.act(l, y, *activation)?
            }
            LayerKind::Reshape { target_shape } => {
                let mut to = vec![self.g.batch];
                to.extend(target_shape);
                if numel(&to).is_none_or(|n| n > MAX_TENSOR_ELEMENTS) {
                    return Err(self.shape_err(l, format!("target_shape {target_shape:?} is too large")));
                }
                self.add(l, Op::Reshape, &[x], Some(Shape(to)))?
            }
            LayerKind::Add => {
                let mut acc = x;
                for &b in &ins[1..] {
                    acc = self.add(l, Op::Add, &[acc, b], None)?;
                }
                acc
            }
            LayerKind::Concatenate { axis } => {
                self.channel_axis(l, x, *axis)?;
                self.add(l, Op::Concat, &ins, None)?
            }
        };
        self.out.insert(l.name.clone(), y);
        self.g.layers.push(Layer {
            name: l.name.clone(),
            class: l.kind.keras_class().to_string(),
            output: y,
            params,
        });
        Ok(())
    }

    /// BatchNormalization over the last axis. Parameters in Keras's order: gamma, beta,
    /// moving_mean, moving_variance (gamma/beta become constants when `scale`/`center` is off).
    #[allow(clippy::too_many_arguments)]
    fn batch_norm(
        &mut self,
        l: &LayerSpec,
        x: NodeId,
        momentum: f32,
        epsilon: f32,
        center: bool,
        scale: bool,
        params: &mut Vec<NodeId>,
    ) -> Result<NodeId, CompileError> {
        let c = self.g.shape(x).channels();
        let mut channel_param = |cx: &mut Self, on: bool, role, init, constant: f32| -> Result<NodeId, CompileError> {
            if on {
                let p = cx.param(l, role, init, vec![c])?;
                params.push(p);
                Ok(p)
            } else {
                cx.add(l, Op::Constant(constant), &[], Some(Shape(vec![c])))
            }
        };
        let gamma = channel_param(self, scale, ParamRole::Gamma, Init::Ones, 1.0)?; // [C]
        let beta = channel_param(self, center, ParamRole::Beta, Init::Zeros, 0.0)?; // [C]
        let mean = channel_param(self, true, ParamRole::MovingMean, Init::Zeros, 0.0)?; // [C]
        let var = channel_param(self, true, ParamRole::MovingVariance, Init::Ones, 1.0)?; // [C]
        match self.g.mode {
            Mode::Inference => self.add(
                l,
                Op::BatchNormInference { epsilon },
                &[x, gamma, beta, mean, var],
                None,
            ),
            Mode::Training => {
                let m = self.add(l, Op::Moments, &[x], None)?; // [2, C]
                let y = self.add(l, Op::BatchNormTrain { epsilon }, &[x, m, gamma, beta], None)?;
                for (param, moment) in [(mean, Moment::Mean), (var, Moment::Variance)] {
                    let u = self.add(l, Op::MovingAverage { momentum, moment }, &[param, m], None)?; // [C]
                    self.g.outputs.push(GraphOutput {
                        role: OutputRole::StateUpdate { param },
                        node: u,
                    });
                }
                Ok(y)
            }
        }
    }
}
