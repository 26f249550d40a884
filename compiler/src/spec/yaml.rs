//! The model file format: serde structs that mirror the YAML (unknown keys are refused and
//! listed, every value is checked where it stands, so errors carry a line and column).
//!
//! ```yaml
//! name: mnist_cnn                 # optional, defaults to the file name
//! input: [28, 28, 1]              # per sample: [H, W, C], or [F]; the batch is chosen at compile time
//! layers:
//!   - conv2d: {filters: 32, kernel_size: 3, padding: same, activation: relu}
//!   - max_pooling2d: {pool_size: 2}
//!   - flatten                     # a layer without arguments may be written bare
//!   - dense: {name: logits, units: 10, activation: softmax}
//! training: {optimizer: adam, loss: sparse_categorical_crossentropy, batch_size: 128, epochs: 5}
//! ```
//!
//! **Layers.** Each item is a one-key map `type: {arguments}` with Keras's layer and argument
//! names. Layers form a chain: each takes the previous one's output (the first takes the model's
//! input, called `input`). `name:` names a layer (unnamed ones get Keras's automatic names:
//! `conv2d`, `conv2d_1`, ...), and `inputs: [a, b]` takes other layers' outputs instead, which
//! makes a DAG (residual `add`, inception `concatenate`).
//!
//! **Blocks.** A top-level `blocks:` map defines reusable, parameterised groups of layers:
//!
//! ```yaml
//! blocks:
//!   conv_bn_relu:
//!     params: [filters, {kernel_size: 3}, {strides: 1}]   # `name` is required, `{name: default}` optional
//!     layers:
//!       - conv2d: {filters: $filters, kernel_size: $kernel_size, strides: $strides, padding: same}
//!       - batch_normalization
//!       - activation: relu
//! layers:
//!   - conv_bn_relu: {filters: 64, strides: 2}             # an instance, named conv_bn_relu, _1, ...
//! ```
//!
//! Any argument value may be `$param`, and so may a layer's `name:` and each entry of its
//! `inputs:` when the parameter's value is a string (`name: $tag` names each instance's layer
//! after its argument; `inputs: [$from]` lets the caller pick the layer it takes; a whole value
//! only: `conv_$i` is refused). A block instance is a scope: its layers are named
//! `<instance>/<name>` (automatic names restart in each instance), its `inputs:` refer to the
//! instance's own layers, and `input` there means the instance's input. The instance's output
//! is its last layer; other layers may refer to the instance by its name. An instance accepts
//! `name:` and `inputs: [x]` like a layer. Blocks may use other blocks (not themselves).
//!
//! **Repeat.** `- repeat: {times: N, layers: [...]}` inlines its layers N times into the
//! enclosing scope; a name given inside gets `_1`, `_2`, ... in the second, third, ... copy, and
//! references inside the copy follow it.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapDeserializer;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use yaml_serde::Value;

use super::arg::Arg;
use super::keywords::{
    ActName, Count, Fraction, InitName, LearningRate, LossName, OptimizerName, PaddingName, Pair, F32,
};
use super::locate;

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "a model (a mapping with `input:` and `layers:`)")]
pub struct RawModel {
    pub name: Option<String>,
    pub input: Vec<usize>,
    #[serde(default)]
    pub blocks: BTreeMap<String, RawBlock>,
    pub layers: Vec<RawItem>,
    pub training: Option<RawTraining>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "a block (a mapping with `params:` and `layers:`)")]
pub struct RawBlock {
    #[serde(default)]
    pub params: Vec<ParamDecl>,
    pub layers: Vec<RawItem>,
    /// Line and column of the block's name when known (set by `locate`).
    #[serde(skip)]
    pub pos: Option<(usize, usize)>,
}

#[derive(DeriveDeserialize, Debug, Default)]
#[serde(deny_unknown_fields, expecting = "training settings")]
pub struct RawTraining {
    pub optimizer: Option<OptimizerName>,
    pub learning_rate: Option<LearningRate>,
    pub momentum: Option<Fraction>,
    pub loss: Option<LossName>,
    pub from_logits: Option<bool>,
    pub batch_size: Option<Count>,
    pub epochs: Option<Count>,
    pub validation_split: Option<Fraction>,
}

/// A block parameter: `filters` (required) or `{strides: 1}` (with a default).
#[derive(Debug)]
pub struct ParamDecl {
    pub name: String,
    pub default: Option<Value>,
}

/// One entry of a `layers:` list, with the line and column of its type key when known.
#[derive(Debug)]
pub struct RawItem {
    pub key: String,
    pub pos: Option<(usize, usize)>,
    pub kind: RawKind,
}

#[derive(Debug)]
pub enum RawKind {
    Layer(RawLayer),
    Repeat(RawRepeat),
    /// An unknown key: a block instance if `blocks:` defines it, else an unknown layer type.
    Call(BTreeMap<String, Value>),
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "repeat arguments")]
pub struct RawRepeat {
    pub times: Arg<usize>,
    pub layers: Vec<RawItem>,
}

/// Layer types accepted as item keys (besides `repeat` and block names).
pub const LAYER_TYPES: [&str; 14] = [
    "conv2d",
    "batch_normalization",
    "activation",
    "max_pooling2d",
    "max_pool2d",
    "average_pooling2d",
    "avg_pool2d",
    "global_average_pooling2d",
    "dropout",
    "flatten",
    "dense",
    "reshape",
    "add",
    "concatenate",
];

#[derive(Debug)]
pub enum RawLayer {
    Conv2d(Conv2dArgs),
    BatchNormalization(BatchNormArgs),
    Activation(ActivationArgs),
    MaxPooling2d(PoolArgs),
    AveragePooling2d(PoolArgs),
    GlobalAveragePooling2d(PlainArgs),
    Dropout(DropoutArgs),
    Flatten(PlainArgs),
    Dense(DenseArgs),
    Reshape(ReshapeArgs),
    Add(PlainArgs),
    Concatenate(ConcatArgs),
}

impl RawLayer {
    /// The `name:` and `inputs:` every layer accepts.
    pub fn common(&self) -> (&Option<String>, &Option<Vec<String>>) {
        match self {
            RawLayer::Conv2d(a) => (&a.name, &a.inputs),
            RawLayer::BatchNormalization(a) => (&a.name, &a.inputs),
            RawLayer::Activation(a) => (&a.name, &a.inputs),
            RawLayer::MaxPooling2d(a) | RawLayer::AveragePooling2d(a) => (&a.name, &a.inputs),
            RawLayer::GlobalAveragePooling2d(a) | RawLayer::Flatten(a) | RawLayer::Add(a) => (&a.name, &a.inputs),
            RawLayer::Dropout(a) => (&a.name, &a.inputs),
            RawLayer::Dense(a) => (&a.name, &a.inputs),
            RawLayer::Reshape(a) => (&a.name, &a.inputs),
            RawLayer::Concatenate(a) => (&a.name, &a.inputs),
        }
    }
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "conv2d arguments")]
pub struct Conv2dArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub filters: Arg<usize>,
    pub kernel_size: Arg<Pair>,
    pub strides: Option<Arg<Pair>>,
    pub padding: Option<Arg<PaddingName>>,
    pub activation: Option<Arg<ActName>>,
    pub use_bias: Option<Arg<bool>>,
    pub kernel_initializer: Option<Arg<InitName>>,
    pub bias_initializer: Option<Arg<InitName>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "batch_normalization arguments")]
pub struct BatchNormArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub axis: Option<Arg<i64>>,
    pub momentum: Option<Arg<F32>>,
    pub epsilon: Option<Arg<F32>>,
    pub center: Option<Arg<bool>>,
    pub scale: Option<Arg<bool>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "activation arguments")]
pub struct ActivationArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub activation: Arg<ActName>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "pooling arguments")]
pub struct PoolArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub pool_size: Option<Arg<Pair>>,
    pub strides: Option<Arg<Pair>>,
    pub padding: Option<Arg<PaddingName>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "layer arguments")]
pub struct PlainArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "dropout arguments")]
pub struct DropoutArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub rate: Arg<F32>,
    pub seed: Option<Arg<u64>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "dense arguments")]
pub struct DenseArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub units: Arg<usize>,
    pub activation: Option<Arg<ActName>>,
    pub use_bias: Option<Arg<bool>>,
    pub kernel_initializer: Option<Arg<InitName>>,
    pub bias_initializer: Option<Arg<InitName>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "reshape arguments")]
pub struct ReshapeArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub target_shape: Arg<Vec<usize>>,
}

#[derive(DeriveDeserialize, Debug)]
#[serde(deny_unknown_fields, expecting = "concatenate arguments")]
pub struct ConcatArgs {
    pub name: Option<String>,
    pub inputs: Option<Vec<String>>,
    pub axis: Option<Arg<i64>>,
}

/// Arguments of a layer written without any (`- flatten`, `flatten:`, `flatten: {}`).
fn args<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    match Option::<T>::deserialize(d)? {
        Some(a) => Ok(a),
        None => {
            let empty = MapDeserializer::<_, de::value::Error>::new(std::iter::empty::<(&str, &str)>());
            T::deserialize(empty).map_err(de::Error::custom)
        }
    }
}

/// Deserializes an item's value according to its key.
struct KindSeed<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KindSeed<'_> {
    type Value = RawKind;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        use RawLayer as L;
        let layer = match self.0 {
            "conv2d" => L::Conv2d(args(d)?),
            "batch_normalization" => L::BatchNormalization(args(d)?),
            "activation" => L::Activation(activation_args(d)?),
            "max_pooling2d" | "max_pool2d" => L::MaxPooling2d(args(d)?),
            "average_pooling2d" | "avg_pool2d" => L::AveragePooling2d(args(d)?),
            "global_average_pooling2d" => L::GlobalAveragePooling2d(args(d)?),
            "dropout" => L::Dropout(args(d)?),
            "flatten" => L::Flatten(args(d)?),
            "dense" => L::Dense(args(d)?),
            "reshape" => L::Reshape(args(d)?),
            "add" => L::Add(args(d)?),
            "concatenate" => L::Concatenate(args(d)?),
            "repeat" => return Ok(RawKind::Repeat(args(d)?)),
            _ => return Ok(RawKind::Call(Option::deserialize(d)?.unwrap_or_default())),
        };
        Ok(RawKind::Layer(layer))
    }
}

/// Runs the inner seed unless the value is null.
struct OptionSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("layer arguments")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(d).map(Some)
    }
}

/// `activation: relu` is shorthand for `activation: {activation: relu}`.
fn activation_args<'de, D: Deserializer<'de>>(d: D) -> Result<ActivationArgs, D::Error> {
    d.deserialize_any(ActivationVisitor)
}

struct ActivationVisitor;

impl<'de> Visitor<'de> for ActivationVisitor {
    type Value = ActivationArgs;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an activation name or {activation: name}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ActivationArgs, E> {
        Ok(ActivationArgs {
            name: None,
            inputs: None,
            activation: Arg::deserialize(de::value::StrDeserializer::new(v))?,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<ActivationArgs, E> {
        Err(E::missing_field("activation"))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ActivationArgs, A::Error> {
        ActivationArgs::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

impl<'de> Deserialize<'de> for RawItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = RawItem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a layer `type: {arguments}` (e.g. `conv2d: {filters: 32, kernel_size: 3}`)")
    }

    /// A bare `- flatten`.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawItem, E> {
        let pos = locate::take_pos(v);
        let kind = KindSeed(v).deserialize(de::value::UnitDeserializer::new())?;
        Ok(RawItem {
            key: v.to_string(),
            pos,
            kind,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawItem, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom("empty layer: a layer is written `type: {arguments}`"));
        };
        let pos = locate::take_pos(&key);
        // A null value is read after the check for a second key, which explains it better.
        let kind = map.next_value_seed(OptionSeed(KindSeed(&key)))?;
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a layer is a one-key map `type: {{arguments}}`, but `{key}` is followed by a second key \
                 `{extra}` (are the arguments indented under `{key}:`?)"
            )));
        }
        let kind = match kind {
            Some(k) => k,
            None => KindSeed(&key).deserialize(de::value::UnitDeserializer::new())?,
        };
        Ok(RawItem { key, pos, kind })
    }
}

impl<'de> Deserialize<'de> for ParamDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = ParamDecl;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter name, or {name: default}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamDecl, E> {
        Ok(ParamDecl {
            name: v.to_string(),
            default: None,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParamDecl, A::Error> {
        let Some((name, default)) = map.next_entry::<String, Value>()? else {
            return Err(de::Error::custom("empty parameter: write `name` or `{name: default}`"));
        };
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom(
                "a parameter with a default is a one-key map `{name: default}`",
            ));
        }
        Ok(ParamDecl {
            name,
            default: Some(default),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_layer_type_is_a_layer_key() {
        for key in LAYER_TYPES {
            let kind = KindSeed(key).deserialize(de::value::UnitDeserializer::<de::value::Error>::new());
            assert!(!matches!(kind, Ok(RawKind::Call(_))), "{key} is not handled as a layer");
        }
    }
}
