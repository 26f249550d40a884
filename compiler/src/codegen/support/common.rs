//! Support code of a crate written by `cnnc compile`: operand views, the inner loops the kernels
//! share, activations, dropout masks and the safetensors reader, and the threads that run the
//! kernels' shares. Identical in every crate cnnc writes (except the math functions, which
//! depend on `no_std`, and the threads, which need std).
#![allow(dead_code)]

/// The `N` values of `s` from index `i`. Every range was checked against the memory plan by
/// cnnc, so the conversion cannot fail.
#[inline(always)]
pub(crate) fn at<const N: usize>(s: &[f32], i: usize) -> &[f32; N] {
    s[i..i + N].try_into().unwrap()
}

/// The `N` values of `s` from index `i`, to be written.
#[inline(always)]
pub(crate) fn at_mut<const N: usize>(s: &mut [f32], i: usize) -> &mut [f32; N] {
    (&mut s[i..i + N]).try_into().unwrap()
}

/// `[f(0), …, f(N − 1)]`, always inlined: `core::array::from_fn` over the 16 or 36 vectors of
/// a Winograd tile was left a call (its panic guard), which moved every vector through memory.
#[inline(always)]
pub(crate) fn array_with<T: Copy + Default, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut r = [T::default(); N];
    for (i, r) in r.iter_mut().enumerate() {
        *r = f(i);
    }
    r
}

/// Dot product with eight independent partial sums, so that it vectorises without fast-math.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    let mut s = [0f32; 8];
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            s[l] += x[l] * y[l];
        }
    }
    let mut t = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (x, y) in ar.iter().zip(br) {
        t += x * y;
    }
    t
}

#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// `e^x` in f32 to about 2 ulp, branch-free so that loops over it vectorise (no libm call):
/// `x = n·ln2 + r`, `|r| ≤ ln2 / 2`, the degree-7 Taylor polynomial of `e^r`, scaled by `2^n`
/// through the exponent bits; x is clamped to [-87, 88]. The same arithmetic as cnnc's kernels
/// backend, so that both compute the same activations.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    // ln 2 split in a part with few mantissa bits (exact products with small n) and the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUNDER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * core::f32::consts::LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The rounder's low mantissa bits hold n (as a two's-complement offset).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32);
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

#[inline(always)]
pub(crate) fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-v))
}

/// `tanh v`: a Taylor polynomial near 0 (where `1 − 2/(e^2v + 1)` cancels), that formula
/// elsewhere.
#[inline(always)]
pub(crate) fn tanh_act(v: f32) -> f32 {
    let a = f32::from_bits(v.to_bits() & 0x7fff_ffff);
    let z = v * v;
    // v − v³/3 + 2v⁵/15 − 17v⁷/315: error < 2e-10 relative for |v| < 0.125.
    let small = v * (1.0 + z * (-1.0 / 3.0 + z * (2.0 / 15.0 + z * (-17.0 / 315.0))));
    let big = 1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0);
    if a < 0.125 {
        small
    } else {
        f32::from_bits(big.to_bits() | (v.to_bits() & 0x8000_0000))
    }
}

/// Numerically stable softmax of one row (in f64).
pub(crate) fn softmax_row(x: &[f32], y: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m }) as f64;
    let mut sum = 0f64;
    for &v in x {
        sum += exp(v as f64 - max);
    }
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (exp(v as f64 - max) / sum) as f32;
    }
}

/// The class id a sparse target holds, if it is an integer in `0..classes`.
#[inline]
pub(crate) fn class_id(t: f32, classes: usize) -> Option<usize> {
    let k = t as usize;
    (t >= 0.0 && k as f32 == t && k < classes).then_some(k)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether dropout keeps element `index` at training step `step`: the same stateless hash as
/// cnnc's runtime, so masks agree bit for bit with every cnnc backend.
#[inline]
pub(crate) fn dropout_keep(seed: u64, step: u64, index: u64, rate: f32) -> bool {
    let h = mix(seed ^ mix(step.wrapping_add(0x632B_E59B_D9B4_E019) ^ mix(index)));
    ((h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)) >= rate
}

// ---- safetensors ------------------------------------------------------------------------

/// Why parameters could not be loaded from a safetensors file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The bytes are not a safetensors file: what is wrong, at which byte of the JSON header.
    Format { what: &'static str, at: usize },
    /// The file lacks this parameter.
    Missing(&'static str),
    /// The file holds this parameter twice.
    Duplicate(&'static str),
    /// The parameter's tensor is not F32.
    Dtype(&'static str),
    /// The parameter's tensor has another shape.
    Shape(&'static str),
    /// The file holds a tensor that is not a parameter of this model (its name starts at this
    /// byte of the JSON header).
    Unexpected { at: usize },
    /// A parameter buffer of the wrong length.
    Length { expected: usize, found: usize },
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Format { what, at } => write!(f, "not a safetensors file: {what} (header byte {at})"),
            LoadError::Missing(n) => write!(f, "missing tensor {n}"),
            LoadError::Duplicate(n) => write!(f, "tensor {n} appears twice"),
            LoadError::Dtype(n) => write!(f, "tensor {n} is not F32"),
            LoadError::Shape(n) => write!(f, "tensor {n} does not have the parameter's shape"),
            LoadError::Unexpected { at } => write!(f, "the tensor named at header byte {at} is not a parameter of this model"),
            LoadError::Length { expected, found } => write!(f, "{found} parameter values, expected {expected}"),
        }
    }
}

/// A cursor over the JSON header: just enough JSON for safetensors headers.
struct Json<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Json<'a> {
    fn err(&self, what: &'static str) -> LoadError {
        LoadError::Format { what, at: self.i }
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Result<(), LoadError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err("unexpected character"))
        }
    }

    /// A string's raw bytes between its quotes (escapes not decoded).
    fn string(&mut self) -> Result<&'a [u8], LoadError> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.s.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => self.i += 2,
                Some(_) => self.i += 1,
            }
        }
        let raw = &self.s[start..self.i];
        self.i += 1;
        Ok(raw)
    }

    /// A non-negative integer.
    fn number(&mut self) -> Result<u64, LoadError> {
        self.peek();
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(&d @ b'0'..=b'9') = self.s.get(self.i) {
            v = match v.checked_mul(10).and_then(|v| v.checked_add(u64::from(d - b'0'))) {
                Some(v) => v,
                None => return Err(self.err("number too large")),
            };
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err("expected a number"));
        }
        Ok(v)
    }

    /// Runs `f` on each member of an object; `f` consumes the member's value.
    fn members(&mut self, mut f: impl FnMut(&'a [u8], &mut Self) -> Result<(), LoadError>) -> Result<(), LoadError> {
        self.eat(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            f(key, self)?;
            if self.peek() == Some(b',') {
                self.i += 1;
            } else {
                return self.eat(b'}');
            }
        }
    }

    /// Skips any value.
    fn skip(&mut self, depth: usize) -> Result<(), LoadError> {
        if depth > 64 {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => self.members(|_, j| j.skip(depth + 1)),
            Some(b'[') => {
                self.i += 1;
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1)?;
                    if self.peek() == Some(b',') {
                        self.i += 1;
                    } else {
                        return self.eat(b']');
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while let Some(&c) = self.s.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    Err(self.err("expected a value"))
                } else {
                    Ok(())
                }
            }
            None => Err(self.err("unexpected end of the header")),
        }
    }

    /// Whether the array of integers here equals `want`.
    fn shape_is(&mut self, want: &[usize]) -> Result<bool, LoadError> {
        self.eat(b'[')?;
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(want.is_empty());
        }
        let (mut k, mut same) = (0, true);
        loop {
            let v = self.number()?;
            same &= want.get(k).map(|&w| w as u64) == Some(v);
            k += 1;
            if self.peek() == Some(b',') {
                self.i += 1;
            } else {
                self.eat(b']')?;
                return Ok(same && k == want.len());
            }
        }
    }
}

/// Whether a JSON string's raw bytes (escapes undecoded) spell `name`.
fn key_is(raw: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        let (c, used) = match (raw[i], raw.get(i + 1)) {
            (b'\\', Some(&e @ (b'"' | b'\\' | b'/'))) => (e, 2),
            (b'\\', Some(b'u')) => {
                let hex = match raw.get(i + 2..i + 6) {
                    Some(h) => h,
                    None => return false,
                };
                let mut v = 0u32;
                for &h in hex {
                    v = v * 16
                        + match h {
                            b'0'..=b'9' => u32::from(h - b'0'),
                            b'a'..=b'f' => u32::from(h - b'a') + 10,
                            b'A'..=b'F' => u32::from(h - b'A') + 10,
                            _ => return false,
                        };
                }
                if v >= 0x80 {
                    return false;
                }
                (v as u8, 6)
            }
            (b'\\', _) => return false,
            (c, _) => (c, 1),
        };
        if name.get(j) != Some(&c) {
            return false;
        }
        i += used;
        j += 1;
    }
    j == name.len()
}

/// Reads every parameter of `params` (name, shape) from safetensors `bytes` into `out` at
/// `offsets`. Every tensor of the file must be a parameter, every parameter must be there once,
/// as F32 of its shape. Allocates nothing.
pub(crate) fn load_safetensors(
    bytes: &[u8],
    params: &[(&'static str, &'static [usize])],
    offsets: &[usize],
    total: usize,
    out: &mut [f32],
) -> Result<(), LoadError> {
    if out.len() != total {
        return Err(LoadError::Length { expected: total, found: out.len() });
    }
    let format = |what| LoadError::Format { what, at: 0 };
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format("shorter than 8 bytes"));
    };
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| format("header too long"))?;
    if len > rest.len() {
        return Err(format("header longer than the file"));
    }
    let (header, data) = rest.split_at(len);
    let mut j = Json { s: header, i: 0 };
    j.members(|key, j| {
        let at = j.i;
        if key == b"__metadata__" || params.iter().any(|(name, _)| key_is(key, name)) {
            j.skip(0)
        } else {
            Err(LoadError::Unexpected { at })
        }
    })?;
    if j.peek().is_some() {
        return Err(j.err("trailing characters after the header"));
    }
    for (&(name, shape), &offset) in params.iter().zip(offsets) {
        let numel: usize = shape.iter().product();
        let dst = &mut out[offset..offset + numel];
        let mut seen = false;
        let mut j = Json { s: header, i: 0 };
        j.members(|key, j| {
            if !key_is(key, name) {
                return j.skip(0);
            }
            if seen {
                return Err(LoadError::Duplicate(name));
            }
            seen = true;
            let at = j.i;
            let (mut dtype, mut same_shape, mut range) = (None, false, None);
            j.members(|field, j| match field {
                b"dtype" => {
                    dtype = Some(j.string()? == b"F32");
                    Ok(())
                }
                b"shape" => {
                    same_shape = j.shape_is(shape)?;
                    Ok(())
                }
                b"data_offsets" => {
                    j.eat(b'[')?;
                    let a = j.number()?;
                    j.eat(b',')?;
                    let b = j.number()?;
                    range = Some((a, b));
                    j.eat(b']')
                }
                _ => j.skip(1),
            })?;
            if dtype != Some(true) {
                return Err(LoadError::Dtype(name));
            }
            if !same_shape {
                return Err(LoadError::Shape(name));
            }
            let bad = LoadError::Format { what: "data_offsets outside the data", at };
            let (a, b) = range.ok_or(bad)?;
            let (a, b) = (usize::try_from(a).map_err(|_| bad)?, usize::try_from(b).map_err(|_| bad)?);
            if a > b || b > data.len() || b - a != 4 * numel {
                return Err(bad);
            }
            for (o, c) in dst.iter_mut().zip(data[a..b].chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            Ok(())
        })?;
        if !seen {
            return Err(LoadError::Missing(name));
        }
    }
    Ok(())
}

// ---- target-dependent code: the axpy and the f64 math functions ----------------------
