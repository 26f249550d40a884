//! Parameter initialisers with Keras's names and semantics (fans computed as Keras does: for a
//! conv kernel `[KH, KW, C, F]`, fan_in = KH·KW·C and fan_out = KH·KW·F).

use std::fmt;

use crate::exec::ParamSpec;
use crate::rng::Rng;
use crate::tensor::Tensor;

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

/// Keras's `stddev` correction for a normal truncated at two standard deviations: the
/// standard deviation of a unit normal truncated to (-2, 2), so that the truncated draws have
/// the requested variance.
const TRUNCATED_STDDEV: f64 = 0.879_625_661_034_239_8;

/// (fan_in, fan_out) as Keras's `compute_fans`: a dense kernel `[in, out]` gives (in, out); a
/// conv kernel `[KH, KW, C, F]` gives (KH·KW·C, KH·KW·F); a vector `[n]` gives (n, n).
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [fan_in, fan_out] => (*fan_in, *fan_out),
        [spatial @ .., c, f] => {
            let receptive: usize = spatial.iter().product();
            (receptive * c, receptive * f)
        }
    }
}

impl Init {
    /// Draws a tensor of `shape` (row-major) with Keras's semantics for this initialiser.
    pub fn fill(&self, shape: &[usize], rng: &mut Rng) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let (fan_in, fan_out) = fans(shape);
        let fan_avg = (fan_in + fan_out) as f64 / 2.0;
        match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Constant(v) => vec![v; n],
            // VarianceScaling(scale=1, mode="fan_avg", distribution="uniform").
            Init::GlorotUniform => uniform(n, (3.0 / fan_avg.max(1.0)).sqrt(), rng),
            // VarianceScaling(scale=2, mode="fan_in", distribution="uniform").
            Init::HeUniform => uniform(n, (6.0 / (fan_in as f64).max(1.0)).sqrt(), rng),
            // VarianceScaling(scale=1, mode="fan_avg", distribution="truncated_normal").
            Init::GlorotNormal => truncated_normal(n, (1.0 / fan_avg.max(1.0)).sqrt() / TRUNCATED_STDDEV, rng),
            // VarianceScaling(scale=2, mode="fan_in", distribution="truncated_normal").
            Init::HeNormal => truncated_normal(n, (2.0 / (fan_in as f64).max(1.0)).sqrt() / TRUNCATED_STDDEV, rng),
            Init::RandomNormal { mean, stddev } => (0..n).map(|_| mean + stddev * rng.normal()).collect(),
            Init::RandomUniform { min, max } => (0..n).map(|_| min + (max - min) * rng.uniform()).collect(),
        }
    }
}

/// Uniform in `[-limit, limit)`.
fn uniform(n: usize, limit: f64, rng: &mut Rng) -> Vec<f32> {
    let limit = limit as f32;
    (0..n).map(|_| limit * (2.0 * rng.uniform() - 1.0)).collect()
}

/// Normal with the given stddev, redrawing values beyond two standard deviations (as
/// `truncated_normal` does).
fn truncated_normal(n: usize, stddev: f64, rng: &mut Rng) -> Vec<f32> {
    let stddev = stddev as f32;
    (0..n)
        .map(|_| loop {
            let z = rng.normal();
            if z.abs() <= 2.0 {
                break z * stddev;
            }
        })
        .collect()
}

/// Initial values of every parameter. Each parameter draws from its own stream (seeded from
/// `seed` and its position), so changing one layer's size does not change the others' values.
pub fn init_params(specs: &[ParamSpec], seed: u64) -> Vec<Tensor> {
    let mut seeds = Rng::new(seed);
    specs
        .iter()
        .map(|spec| {
            let mut rng = Rng::new(seeds.next_u64());
            Tensor {
                shape: spec.shape.clone(),
                data: spec.init.fill(&spec.shape, &mut rng),
            }
        })
        .collect()
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
