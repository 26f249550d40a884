//! Deserializers for the model file's keyword and size values: activation, padding,
//! initializer, loss and optimizer names (case-insensitive, as Keras lower-cases them; an unknown
//! one lists the allowed ones), sizes written as `3` or `[3, 5]`, and `f32` hyper-parameters.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::{validate, Activation, Init, LossKind, Padding, TrainingSpec};

/// Finds `s` (case-insensitively) in `table`, or says what was allowed.
fn lookup<T: Copy>(s: &str, table: &[(&'static str, T)], what: &str) -> Result<T, String> {
    let lower = s.to_ascii_lowercase();
    table.iter().find(|(n, _)| *n == lower).map(|(_, v)| *v).ok_or_else(|| {
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        format!("unknown {what} `{s}`, expected one of: {}", names.join(", "))
    })
}

macro_rules! keyword {
    ($(#[$doc:meta])* $name:ident($inner:ty), $what:literal, $table:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name(pub $inner);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(KeywordVisitor(&$table, $what)).map($name)
            }
        }
    };
}

/// Looks a keyword up in `.0` while the YAML scalar is being read, so that an unknown one is
/// reported at its line and column (an error after reading has only the enclosing mapping's).
struct KeywordVisitor<'t, T: 'static>(&'t [(&'static str, T)], &'static str);

impl<T: Copy> Visitor<'_> for KeywordVisitor<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} name", self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        lookup(v, self.0, self.1).map_err(E::custom)
    }
}

keyword!(
    /// `activation: relu`.
    ActName(Activation),
    "activation",
    Activation::ALL
);
keyword!(
    /// `padding: same` (`SAME` accepted too, as Keras).
    PaddingName(Padding),
    "padding",
    Padding::ALL
);
keyword!(
    /// `loss: sparse_categorical_crossentropy`.
    LossName(LossKind),
    "loss",
    LossKind::ALL
);

const INITS: [(&str, Init); 8] = [
    ("glorot_uniform", Init::GlorotUniform),
    ("glorot_normal", Init::GlorotNormal),
    ("he_normal", Init::HeNormal),
    ("he_uniform", Init::HeUniform),
    ("zeros", Init::Zeros),
    ("ones", Init::Ones),
    (
        "random_normal",
        Init::RandomNormal {
            mean: 0.0,
            stddev: 0.05,
        },
    ),
    ("random_uniform", Init::RandomUniform { min: -0.05, max: 0.05 }),
];

keyword!(
    /// `kernel_initializer: he_normal` (Keras's argument-free initializer names).
    InitName(Init),
    "initializer",
    INITS
);

const OPTIMIZERS: [(&str, &str); 3] = [
    (TrainingSpec::OPTIMIZERS[0], TrainingSpec::OPTIMIZERS[0]),
    (TrainingSpec::OPTIMIZERS[1], TrainingSpec::OPTIMIZERS[1]),
    (TrainingSpec::OPTIMIZERS[2], TrainingSpec::OPTIMIZERS[2]),
];

keyword!(
    /// `optimizer: adam`.
    OptimizerName(&'static str),
    "optimizer",
    OPTIMIZERS
);

/// An `f32` hyper-parameter (`learning_rate: 1e-3`). A number that `f32` cannot hold is refused
/// as written rather than rounded: `1e-50` would become 0, `1e50` infinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F32(pub f32);

impl<'de> Deserialize<'de> for F32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(F32Visitor::ANY)
    }
}

/// `v` as an f32, refused when f32 cannot hold it (rounding to 0 or to infinity), with a message
/// that shows `v`: hyper-parameters in the model file and on the command line.
pub fn f32_as_written(v: f64) -> Result<f32, String> {
    let x = v as f32;
    if v.is_finite() && x.is_infinite() {
        return Err(format!("{v:e} is beyond f32's range (±{:e})", f32::MAX));
    }
    if x == 0.0 && v != 0.0 {
        return Err(format!(
            "{v:e} is closer to 0 than f32's smallest positive value ({:e}) and would round to 0",
            f32::from_bits(1)
        ));
    }
    Ok(x)
}

/// Reads an f32 and applies a rule to it: in the visitor, so that an error has the value's
/// line and column.
struct F32Visitor(fn(f32) -> Result<(), String>);

impl F32Visitor {
    const ANY: F32Visitor = F32Visitor(|_| Ok(()));
}

impl Visitor<'_> for F32Visitor {
    type Value = F32;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<F32, E> {
        let x = f32_as_written(v).map_err(E::custom)?;
        (self.0)(x).map_err(E::custom)?;
        Ok(F32(x))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<F32, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<F32, E> {
        self.visit_f64(v as f64)
    }
}

// `training:` values, checked where they stand by `validate`'s rules (which also check
// code-built specs), so that their errors have a line and column like a layer argument's.

/// `learning_rate:` (positive).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearningRate(pub f32);

impl<'de> Deserialize<'de> for LearningRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(F32Visitor(validate::learning_rate))
            .map(|v| LearningRate(v.0))
    }
}

/// `momentum:`, `validation_split:` (in [0, 1)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fraction(pub f32);

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(F32Visitor(validate::fraction)).map(|v| Fraction(v.0))
    }
}

/// `batch_size:`, `epochs:` (at least 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Count(pub usize);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl Visitor<'_> for CountVisitor {
    type Value = Count;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a positive integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
        let n = usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))?;
        validate::count(n).map_err(E::custom)?;
        Ok(Count(n))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
}

/// A size must be at least 1 (an upper bound is checked by `validate`).
fn positive<E: de::Error>(v: u64) -> Result<usize, E> {
    match usize::try_from(v) {
        Ok(0) => Err(E::custom("sizes must be positive, got 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(E::custom(format!("size {v} is too large"))),
    }
}

/// A 2-D size: `3` means `[3, 3]`, or `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair(pub [usize; 2]);

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PairVisitor)
    }
}

struct PairVisitor;

impl<'de> Visitor<'de> for PairVisitor {
    type Value = Pair;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a positive integer or [height, width]")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Pair, E> {
        let n = positive(v)?;
        Ok(Pair([n, n]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
        let h: u64 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let w: u64 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom("expected [height, width], got more than 2 sizes"));
        }
        Ok(Pair([positive(h)?, positive(w)?]))
    }
}
