//! Raw layer arguments → [`LayerKind`]: resolves `$param` references and fills in Keras's
//! defaults. Range checks live in `validate.rs` so code-built specs get them too.

use serde::de::DeserializeOwned;

use super::arg::{Arg, Env};
use super::kind::{defaults, LayerKind};
use super::yaml::RawLayer;

/// Resolves a required argument, naming it on error.
fn req<T: DeserializeOwned + Clone>(a: &Arg<T>, field: &str, env: &Env) -> Result<T, String> {
    a.resolve(env).map_err(|e| format!("argument `{field}`: {e}"))
}

/// Resolves an optional argument, or `None`.
fn opt<T: DeserializeOwned + Clone>(a: &Option<Arg<T>>, field: &str, env: &Env) -> Result<Option<T>, String> {
    a.as_ref().map(|a| req(a, field, env)).transpose()
}

pub fn layer_kind(raw: &RawLayer, env: &Env) -> Result<LayerKind, String> {
    Ok(match raw {
        RawLayer::Conv2d(a) => LayerKind::Conv2d {
            filters: req(&a.filters, "filters", env)?,
            kernel_size: req(&a.kernel_size, "kernel_size", env)?.0,
            strides: opt(&a.strides, "strides", env)?.map_or(defaults::STRIDES, |p| p.0),
            padding: opt(&a.padding, "padding", env)?.map_or(defaults::PADDING, |p| p.0),
            activation: opt(&a.activation, "activation", env)?.map_or(defaults::ACTIVATION, |p| p.0),
            use_bias: opt(&a.use_bias, "use_bias", env)?.unwrap_or(defaults::USE_BIAS),
            kernel_initializer: opt(&a.kernel_initializer, "kernel_initializer", env)?
                .map_or(defaults::KERNEL_INITIALIZER, |p| p.0),
            bias_initializer: opt(&a.bias_initializer, "bias_initializer", env)?
                .map_or(defaults::BIAS_INITIALIZER, |p| p.0),
        },
        RawLayer::BatchNormalization(a) => LayerKind::BatchNormalization {
            axis: opt(&a.axis, "axis", env)?.unwrap_or(defaults::AXIS),
            momentum: opt(&a.momentum, "momentum", env)?.map_or(defaults::BN_MOMENTUM, |v| v.0),
            epsilon: opt(&a.epsilon, "epsilon", env)?.map_or(defaults::BN_EPSILON, |v| v.0),
            center: opt(&a.center, "center", env)?.unwrap_or(true),
            scale: opt(&a.scale, "scale", env)?.unwrap_or(true),
        },
        RawLayer::Activation(a) => LayerKind::Activation(req(&a.activation, "activation", env)?.0),
        RawLayer::MaxPooling2d(a) | RawLayer::AveragePooling2d(a) => {
            let pool_size = opt(&a.pool_size, "pool_size", env)?.map_or(defaults::POOL_SIZE, |p| p.0);
            let strides = opt(&a.strides, "strides", env)?.map_or(pool_size, |p| p.0);
            let padding = opt(&a.padding, "padding", env)?.map_or(defaults::PADDING, |p| p.0);
            if matches!(raw, RawLayer::MaxPooling2d(_)) {
                LayerKind::MaxPooling2d {
                    pool_size,
                    strides,
                    padding,
                }
            } else {
                LayerKind::AveragePooling2d {
                    pool_size,
                    strides,
                    padding,
                }
            }
        }
        RawLayer::GlobalAveragePooling2d(_) => LayerKind::GlobalAveragePooling2d,
        RawLayer::Dropout(a) => LayerKind::Dropout {
            rate: req(&a.rate, "rate", env)?.0,
            seed: opt(&a.seed, "seed", env)?,
        },
        RawLayer::Flatten(_) => LayerKind::Flatten,
        RawLayer::Dense(a) => LayerKind::Dense {
            units: req(&a.units, "units", env)?,
            activation: opt(&a.activation, "activation", env)?.map_or(defaults::ACTIVATION, |p| p.0),
            use_bias: opt(&a.use_bias, "use_bias", env)?.unwrap_or(defaults::USE_BIAS),
            kernel_initializer: opt(&a.kernel_initializer, "kernel_initializer", env)?
                .map_or(defaults::KERNEL_INITIALIZER, |p| p.0),
            bias_initializer: opt(&a.bias_initializer, "bias_initializer", env)?
                .map_or(defaults::BIAS_INITIALIZER, |p| p.0),
        },
        RawLayer::Reshape(a) => LayerKind::Reshape {
            target_shape: req(&a.target_shape, "target_shape", env)?,
        },
        RawLayer::Add(_) => LayerKind::Add,
        RawLayer::Concatenate(a) => LayerKind::Concatenate {
            axis: opt(&a.axis, "axis", env)?.unwrap_or(defaults::AXIS),
        },
    })
}
