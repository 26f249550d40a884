//! Parameter initialisers with Keras's names and semantics (fans computed as Keras does: for a
//! conv kernel `[KH, KW, C, F]`, fan_in = KH·KW·C and fan_out = KH·KW·F).

use std::fmt;

/// A Keras initialiser.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    GlorotUniform,
    GlorotNormal,
    HeNormal,
    HeUniform,
    Zeros,
    Ones,
    RandomNormal { mean: f32, stddev: f32 },
    RandomUniform { min: f32, max: f32 },
    Constant(f32),
}

impl Init {
    /// Names accepted in model files (argument-free forms; `random_normal` uses stddev 0.05).
    pub const NAMES: [&'static str; 8] = [
        "glorot_uniform",
        "glorot_normal",
        "he_normal",
        "he_uniform",
        "zeros",
        "ones",
        "random_normal",
        "random_uniform",
    ];

    /// Parses a Keras initialiser name with Keras's default arguments.
    pub fn from_keras_name(name: &str) -> Option<Init> {
        Some(match name {
            "glorot_uniform" => Init::GlorotUniform,
            "glorot_normal" => Init::GlorotNormal,
            "he_normal" => Init::HeNormal,
            "he_uniform" => Init::HeUniform,
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "random_normal" => Init::RandomNormal {
                mean: 0.0,
                stddev: 0.05,
            },
            "random_uniform" => Init::RandomUniform { min: -0.05, max: 0.05 },
            _ => return None,
        })
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::GlorotUniform => write!(f, "glorot_uniform"),
            Init::GlorotNormal => write!(f, "glorot_normal"),
            Init::HeNormal => write!(f, "he_normal"),
            Init::HeUniform => write!(f, "he_uniform"),
            Init::Zeros => write!(f, "zeros"),
            Init::Ones => write!(f, "ones"),
            Init::RandomNormal { mean, stddev } => write!(f, "random_normal({mean},{stddev})"),
            Init::RandomUniform { min, max } => write!(f, "random_uniform({min},{max})"),
            Init::Constant(v) => write!(f, "constant({v})"),
        }
    }
}
