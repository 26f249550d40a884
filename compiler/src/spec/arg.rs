//! A layer argument that is either a literal or a block parameter reference `$name`.
//!
//! Literals are deserialized straight from the YAML stream (so a wrong type is reported at its
//! exact line and column); `$name` is kept and resolved when a block instance is expanded.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use yaml_serde::Value;

/// Block parameter values of one block instance.
pub type Env = BTreeMap<String, Value>;

#[derive(Clone, Debug, PartialEq)]
pub enum Arg<T> {
    Lit(T),
    Param(String),
}

/// `$name` → `Some(name)` when `s` is a parameter reference.
pub fn param_ref(s: &str) -> Option<&str> {
    s.strip_prefix('$')
}

/// Whether `s` can name a parameter, a layer or a block.
pub fn is_identifier(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

impl<T: DeserializeOwned + Clone> Arg<T> {
    /// The literal, or the value of the referenced parameter in `env`.
    pub fn resolve(&self, env: &Env) -> Result<T, String> {
        match self {
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Param(p) => {
                lookup(p, env).and_then(|v| T::deserialize(v.clone()).map_err(|e| format!("${p} = {}: {e}", show(v))))
            }
        }
    }
}

/// The parameter `p` in `env`, or why it cannot be found.
pub fn lookup<'a>(p: &str, env: &'a Env) -> Result<&'a Value, String> {
    env.get(p).ok_or_else(|| {
        if env.is_empty() {
            format!("`${p}` refers to a block parameter, but it is not inside a block")
        } else {
            let names: Vec<&str> = env.keys().map(|k| k.as_str()).collect();
            format!(
                "unknown block parameter `${p}`; this block's parameters are: {}",
                names.join(", ")
            )
        }
    })
}

/// A short rendering of a YAML value for messages.
pub fn show(v: &Value) -> String {
    match yaml_serde::to_string(v) {
        Ok(s) => s.trim_end().replace('\n', " "),
        Err(_) => format!("{v:?}"),
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Arg<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArgVisitor(PhantomData))
    }
}

struct ArgVisitor<T>(PhantomData<T>);

macro_rules! forward_scalar {
    ($($method:ident($ty:ty)),*) => {
        $(fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            T::deserialize(v.into_deserializer()).map(Arg::Lit)
        })*
    };
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ArgVisitor<T> {
    type Value = Arg<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value or a block parameter `$name`")
    }

    forward_scalar!(visit_bool(bool), visit_i64(i64), visit_u64(u64), visit_f64(f64));

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match param_ref(v) {
            Some(p) if is_identifier(p) => Ok(Arg::Param(p.to_string())),
            Some(_) => Err(E::custom(format!(
                "`{v}` is not a valid block parameter reference `$name`"
            ))),
            None => T::deserialize(v.into_deserializer()).map(Arg::Lit),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        T::deserialize(().into_deserializer()).map(Arg::Lit)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq)).map(Arg::Lit)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Arg::Lit)
    }
}
