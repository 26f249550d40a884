//! The host side of the generated crate's C ABI (`codegen/support/abi.rs`): opens the library,
//! checks its ABI version and sizes against what the host expects, and wraps its entry points
//! in safe methods that check every length before the call (the library checks them again).

use std::ffi::c_void;
use std::path::Path;
use std::ptr::NonNull;

/// The ABI version the host speaks (the library's `cnnc_abi_version` must return it).
pub const ABI_VERSION: u32 = 3;

/// Values of `cnnc_sizes`.
const SIZES: usize = 9;

type VersionFn = unsafe extern "C" fn() -> u32;
type SizesFn = unsafe extern "C" fn(*mut u64, usize) -> i32;
type NewFn = unsafe extern "C" fn() -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type PredictPartsFn = unsafe extern "C" fn(
    *mut c_void,
    *const *const f32,
    *const usize,
    usize,
    *const f32,
    usize,
    *mut f32,
    usize,
    i32,
) -> i32;
type GradientsFn = unsafe extern "C" fn(
    *mut c_void,
    *mut f32,
    usize,
    *const f32,
    usize,
    *const f32,
    usize,
    u64,
    *mut f32,
    usize,
    *mut f32,
    usize,
    *mut f32,
) -> i32;

/// The f32 counts of one library's buffers (`cnnc_sizes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub batch: usize,
    pub input: usize,
    pub output: usize,
    /// 0 for an inference-only library.
    pub target: usize,
    pub params: usize,
    /// 0 for an inference-only library.
    pub grads: usize,
    pub arena: usize,
    pub training: bool,
    /// Parameter tensors (`cnnc_predict_parts` takes one pointer each).
    pub param_tensors: usize,
}

/// A loaded library and one model instance in it.
pub struct Library {
    /// Freed in `Drop`, before `lib` unloads.
    model: NonNull<c_void>,
    free: FreeFn,
    predict_parts: PredictPartsFn,
    gradients: GradientsFn,
    sizes: Sizes,
    /// Per parameter tensor: where it lies and its length, for `cnnc_predict_parts` (kept to
    /// reuse their memory; they point to nothing between calls).
    part_ptrs: Vec<*const f32>,
    part_lens: Vec<usize>,
    // Last field: the function pointers above point into it.
    _lib: libloading::Library,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("sizes", &self.sizes).finish()
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: `model` came from this library's `cnnc_model_new` and is freed once, while
        // the library is still loaded.
        unsafe { (self.free)(self.model.as_ptr()) }
    }
}

/// What a call returned other than success.
fn call_error(code: i32) -> String {
    match code {
        1 => "the library refused a null or misaligned pointer".into(),
        2 => "the library refused a buffer length".into(),
        3 => "the library has no training program".into(),
        4 => "the generated code panicked".into(),
        c => format!("the library returned error code {c}"),
    }
}

impl Library {
    /// Opens `path`, checks its ABI version and that its sizes (the arena's aside) are
    /// `expected`, and creates a model in it.
    pub fn open(path: &Path, expected: &Sizes) -> Result<Library, String> {
        // SAFETY: the library is one cnnc generated and built into its cache, and found intact
        // there (its SHA-256 matches the marker written after it); its initialisers are Rust's.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot be loaded: {e}"))?;
        // SAFETY (of each `get`): the symbols are the generated crate's `extern "C"` functions
        // with exactly these signatures (`codegen/support/abi.rs`, same ABI version, checked
        // first, before any other symbol is used).
        let symbol = |name: &str| format!("has no symbol {name}");
        let version: VersionFn =
            *unsafe { lib.get::<VersionFn>(b"cnnc_abi_version\0") }.map_err(|_| symbol("cnnc_abi_version"))?;
        // SAFETY: takes no arguments.
        let v = unsafe { version() };
        if v != ABI_VERSION {
            return Err(format!("speaks ABI version {v}, this cnnc speaks {ABI_VERSION}"));
        }
        let sizes_fn: SizesFn = *unsafe { lib.get::<SizesFn>(b"cnnc_sizes\0") }.map_err(|_| symbol("cnnc_sizes"))?;
        let new: NewFn = *unsafe { lib.get::<NewFn>(b"cnnc_model_new\0") }.map_err(|_| symbol("cnnc_model_new"))?;
        let free: FreeFn =
            *unsafe { lib.get::<FreeFn>(b"cnnc_model_free\0") }.map_err(|_| symbol("cnnc_model_free"))?;
        let predict_parts: PredictPartsFn =
            *unsafe { lib.get::<PredictPartsFn>(b"cnnc_predict_parts\0") }.map_err(|_| symbol("cnnc_predict_parts"))?;
        let gradients: GradientsFn =
            *unsafe { lib.get::<GradientsFn>(b"cnnc_gradients\0") }.map_err(|_| symbol("cnnc_gradients"))?;
        let mut raw = [0u64; SIZES];
        // SAFETY: `raw` holds SIZES writable values.
        let code = unsafe { sizes_fn(raw.as_mut_ptr(), SIZES) };
        if code != 0 {
            return Err(format!("cnnc_sizes: {}", call_error(code)));
        }
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let sizes = Sizes {
            batch: size(raw[0]),
            input: size(raw[1]),
            output: size(raw[2]),
            target: size(raw[3]),
            params: size(raw[4]),
            grads: size(raw[5]),
            arena: size(raw[6]),
            training: raw[7] != 0,
            param_tensors: size(raw[8]),
        };
        let comparable = Sizes {
            arena: expected.arena,
            ..sizes
        };
        if comparable != *expected {
            return Err(format!("has sizes {sizes:?}, expected {expected:?}"));
        }
        // SAFETY: takes no arguments; a null result is handled.
        let model = NonNull::new(unsafe { new() }).ok_or_else(|| {
            let gib = sizes.arena as f64 * 4.0 / (1u64 << 30) as f64;
            format!("could not create a model: its arena of {gib:.2} GiB cannot be allocated; use a smaller batch size")
        })?;
        Ok(Library {
            model,
            free,
            predict_parts,
            gradients,
            sizes,
            part_ptrs: Vec::new(),
            part_lens: Vec::new(),
            _lib: lib,
        })
    }

    pub fn sizes(&self) -> &Sizes {
        &self.sizes
    }

    /// Inference on one batch of exactly `sizes().batch` samples, on the parameter tensors
    /// `params` in the library's order, read where they lie (no copy).
    pub fn predict<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a [f32]>,
        x: &[f32],
        preds: &mut [f32],
        reuse: bool,
    ) -> Result<(), String> {
        self.part_ptrs.clear();
        self.part_lens.clear();
        for p in params {
            self.part_ptrs.push(p.as_ptr());
            self.part_lens.push(p.len());
        }
        let s = &self.sizes;
        check("parameter tensors", self.part_ptrs.len(), s.param_tensors)?;
        check("parameters", self.part_lens.iter().sum(), s.params)?;
        check("input", x.len(), s.input)?;
        check("predictions", preds.len(), s.output)?;
        // SAFETY: the model is live; `part_ptrs` and `part_lens` hold `param_tensors` values
        // each; every tensor pointer comes from a slice of its length borrowed for the call (the
        // library checks each length against its tensor's size), `x` and `preds` have the
        // lengths the library expects (checked above, and again by the library) and `preds` is
        // an exclusive borrow, so it overlaps nothing else.
        let code = unsafe {
            (self.predict_parts)(
                self.model.as_ptr(),
                self.part_ptrs.as_ptr(),
                self.part_lens.as_ptr(),
                self.part_ptrs.len(),
                x.as_ptr(),
                x.len(),
                preds.as_mut_ptr(),
                preds.len(),
                i32::from(reuse),
            )
        };
        if code == 0 {
            Ok(())
        } else {
            Err(format!("predict: {}", call_error(code)))
        }
    }

    /// Forward, loss and backward on one batch: writes the gradients and the predictions,
    /// updates the non-trainable parameters (moving statistics) and returns the loss.
    pub fn gradients(
        &mut self,
        params: &mut [f32],
        x: &[f32],
        y: &[f32],
        step: u64,
        grads: &mut [f32],
        preds: &mut [f32],
    ) -> Result<f32, String> {
        let s = &self.sizes;
        if !s.training {
            return Err("the library has no training program".into());
        }
        check("parameters", params.len(), s.params)?;
        check("input", x.len(), s.input)?;
        check("targets", y.len(), s.target)?;
        check("gradients", grads.len(), s.grads)?;
        check("predictions", preds.len(), s.output)?;
        let mut loss = f32::NAN;
        // SAFETY: the model is live, every buffer has the length the library expects (checked
        // above, and again by the library) and they are distinct borrows; `loss` is one
        // writable f32.
        let code = unsafe {
            (self.gradients)(
                self.model.as_ptr(),
                params.as_mut_ptr(),
                params.len(),
                x.as_ptr(),
                x.len(),
                y.as_ptr(),
                y.len(),
                step,
                grads.as_mut_ptr(),
                grads.len(),
                preds.as_mut_ptr(),
                preds.len(),
                &mut loss,
            )
        };
        if code == 0 {
            Ok(loss)
        } else {
            Err(format!("gradients: {}", call_error(code)))
        }
    }
}

fn check(what: &str, len: usize, want: usize) -> Result<(), String> {
    if len == want {
        Ok(())
    } else {
        Err(format!("{what}: {len} values, the library expects {want}"))
    }
}
