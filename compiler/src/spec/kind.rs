//! The layer vocabulary (`tf.keras.layers`), with Keras's default arguments and automatic names.

use std::collections::HashMap;

use super::{Activation, Init};

/// `padding` of convolutions and poolings. `Same` follows TensorFlow: the total padding
/// `max((ceil(H/s) - 1)·s + k - H, 0)` is split with the extra row/column at the bottom/right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Padding {
    #[default]
    Valid,
    Same,
}

impl Padding {
    pub const ALL: [(&'static str, Padding); 2] = [("valid", Padding::Valid), ("same", Padding::Same)];
}

/// Keras's defaults for arguments a model file may leave out.
pub mod defaults {
    use super::{Activation, Init, Padding};

    pub const STRIDES: [usize; 2] = [1, 1];
    pub const PADDING: Padding = Padding::Valid;
    pub const ACTIVATION: Activation = Activation::Linear;
    pub const USE_BIAS: bool = true;
    pub const KERNEL_INITIALIZER: Init = Init::GlorotUniform;
    pub const BIAS_INITIALIZER: Init = Init::Zeros;
    pub const BN_MOMENTUM: f32 = 0.99;
    pub const BN_EPSILON: f32 = 0.001;
    /// `axis` of batch_normalization and concatenate: the last (channel) axis.
    pub const AXIS: i64 = -1;
    pub const POOL_SIZE: [usize; 2] = [2, 2];
}

/// A layer and its arguments (sizes are `[height, width]`).
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Conv2d {
        filters: usize,
        kernel_size: [usize; 2],
        strides: [usize; 2],
        padding: Padding,
        activation: Activation,
        use_bias: bool,
        kernel_initializer: Init,
        bias_initializer: Init,
    },
    BatchNormalization {
        /// As written, batch axis included; lowering accepts only the last axis.
        axis: i64,
        momentum: f32,
        epsilon: f32,
        /// Learn `beta`; otherwise beta is a constant 0.
        center: bool,
        /// Learn `gamma`; otherwise gamma is a constant 1.
        scale: bool,
    },
    Activation(Activation),
    MaxPooling2d {
        pool_size: [usize; 2],
        strides: [usize; 2],
        padding: Padding,
    },
    AveragePooling2d {
        pool_size: [usize; 2],
        strides: [usize; 2],
        padding: Padding,
    },
    GlobalAveragePooling2d,
    Dropout {
        /// Fraction of elements dropped, in `[0, 1)`.
        rate: f32,
        /// Mask seed; `None` derives one from the layer name.
        seed: Option<u64>,
    },
    Flatten,
    Dense {
        units: usize,
        activation: Activation,
        use_bias: bool,
        kernel_initializer: Init,
        bias_initializer: Init,
    },
    Reshape {
        /// Per-sample shape (batch excluded).
        target_shape: Vec<usize>,
    },
    Add,
    /// Concatenation along `axis` (as written, batch axis included); lowering accepts only the
    /// last (channel) axis.
    Concatenate {
        axis: i64,
    },
}

impl LayerKind {
    /// `Conv2D(filters, kernel_size)` with Keras's defaults for everything else.
    pub fn conv2d(filters: usize, kernel_size: [usize; 2]) -> LayerKind {
        LayerKind::Conv2d {
            filters,
            kernel_size,
            strides: defaults::STRIDES,
            padding: defaults::PADDING,
            activation: defaults::ACTIVATION,
            use_bias: defaults::USE_BIAS,
            kernel_initializer: defaults::KERNEL_INITIALIZER,
            bias_initializer: defaults::BIAS_INITIALIZER,
        }
    }

    /// `Dense(units)` with Keras's defaults.
    pub fn dense(units: usize) -> LayerKind {
        LayerKind::Dense {
            units,
            activation: defaults::ACTIVATION,
            use_bias: defaults::USE_BIAS,
            kernel_initializer: defaults::KERNEL_INITIALIZER,
            bias_initializer: defaults::BIAS_INITIALIZER,
        }
    }

    /// `BatchNormalization()` with Keras's defaults (momentum 0.99, epsilon 0.001).
    pub fn batch_normalization() -> LayerKind {
        LayerKind::BatchNormalization {
            axis: defaults::AXIS,
            momentum: defaults::BN_MOMENTUM,
            epsilon: defaults::BN_EPSILON,
            center: true,
            scale: true,
        }
    }

    /// `MaxPooling2D(pool_size)`: strides default to the pool size, padding `valid`.
    pub fn max_pooling2d(pool_size: [usize; 2]) -> LayerKind {
        LayerKind::MaxPooling2d {
            pool_size,
            strides: pool_size,
            padding: defaults::PADDING,
        }
    }

    /// `AveragePooling2D(pool_size)`: strides default to the pool size, padding `valid`.
    pub fn average_pooling2d(pool_size: [usize; 2]) -> LayerKind {
        LayerKind::AveragePooling2d {
            pool_size,
            strides: pool_size,
            padding: defaults::PADDING,
        }
    }

    /// The Keras class name shown by `summary`.
    pub fn keras_class(&self) -> &'static str {
        match self {
            LayerKind::Conv2d { .. } => "Conv2D",
            LayerKind::BatchNormalization { .. } => "BatchNormalization",
            LayerKind::Activation(_) => "Activation",
            LayerKind::MaxPooling2d { .. } => "MaxPooling2D",
            LayerKind::AveragePooling2d { .. } => "AveragePooling2D",
            LayerKind::GlobalAveragePooling2d => "GlobalAveragePooling2D",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dense { .. } => "Dense",
            LayerKind::Reshape { .. } => "Reshape",
            LayerKind::Add => "Add",
            LayerKind::Concatenate { .. } => "Concatenate",
        }
    }

    /// The stem of Keras's automatic layer names (`conv2d`, `conv2d_1`, ...).
    pub fn auto_name_base(&self) -> &'static str {
        match self {
            LayerKind::Conv2d { .. } => "conv2d",
            LayerKind::BatchNormalization { .. } => "batch_normalization",
            LayerKind::Activation(_) => "activation",
            LayerKind::MaxPooling2d { .. } => "max_pooling2d",
            LayerKind::AveragePooling2d { .. } => "average_pooling2d",
            LayerKind::GlobalAveragePooling2d => "global_average_pooling2d",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::Flatten => "flatten",
            LayerKind::Dense { .. } => "dense",
            LayerKind::Reshape { .. } => "reshape",
            LayerKind::Add => "add",
            LayerKind::Concatenate { .. } => "concatenate",
        }
    }

    /// Layers that merge several inputs (all others take exactly one).
    pub fn is_merge(&self) -> bool {
        matches!(self, LayerKind::Add | LayerKind::Concatenate { .. })
    }
}

/// Keras's automatic names: per stem, the first is `stem`, then `stem_1`, `stem_2`, ...
#[derive(Clone, Debug, Default)]
pub(crate) struct AutoNamer {
    next: HashMap<String, usize>,
}

impl AutoNamer {
    /// The next free name for `base`; `taken` reports names already in use (explicit ones).
    pub fn next(&mut self, base: &str, taken: impl Fn(&str) -> bool) -> String {
        let n = self.next.entry(base.to_string()).or_insert(0);
        loop {
            let name = if *n == 0 {
                base.to_string()
            } else {
                format!("{base}_{n}")
            };
            *n += 1;
            if !taken(&name) {
                return name;
            }
        }
    }
}
