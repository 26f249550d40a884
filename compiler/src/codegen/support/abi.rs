//! The C ABI through which `cnnc --backend native` runs this library (`crate-type = ["cdylib"]`).
//!
//! A host creates a model with `cnnc_model_new`, checks `cnnc_abi_version` and `cnnc_sizes`
//! against what it expects, and calls `cnnc_predict_parts` / `cnnc_gradients` with raw pointers
//! and lengths. Every length must equal this model's size exactly and every pointer must be
//! non-null and aligned, else the call returns an error code and touches nothing; a panic is
//! caught and reported as `ERR_PANIC` (it cannot unwind into the host). The host owns the
//! parameters. `cnnc_predict_parts` reads them where the host keeps them, one pointer per
//! tensor, and runs the load-time kernels (batch norm folded into the weights) on every call,
//! as the host may have changed them. `cnnc_gradients` takes them flat (copied in, a step's
//! small cost beside its batch) and writes them back with the batch-norm moving statistics
//! updated. No optimiser runs here: the host applies its own to the gradients.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::*;

/// Version of this ABI; a host refuses a library of another version.
pub const ABI_VERSION: u32 = 3;
/// Success.
pub const OK: i32 = 0;
/// A pointer argument was null or misaligned.
pub const ERR_POINTER: i32 = 1;
/// A length argument differs from this model's size.
pub const ERR_LENGTH: i32 = 2;
/// `cnnc_gradients` on a crate without a training program.
pub const ERR_NO_TRAINING: i32 = 3;
/// The model panicked (a bug): free the model, do not use it again.
pub const ERR_PANIC: i32 = 4;
/// Values `cnnc_sizes` writes: batch, input, output, target, parameter, gradient and arena
/// f32 counts, 1 when the crate can train (else 0), and the number of parameter tensors.
pub const SIZES: usize = 9;

/// [`ABI_VERSION`].
#[no_mangle]
pub extern "C" fn cnnc_abi_version() -> u32 {
    ABI_VERSION
}

/// Writes the [`SIZES`] values to `out`, which must hold `len == SIZES` values.
///
/// # Safety
/// `out` must be valid for writing `len` u64 values.
#[no_mangle]
pub unsafe extern "C" fn cnnc_sizes(out: *mut u64, len: usize) -> i32 {
    let v: [u64; SIZES] = [
        BATCH as u64,
        INPUT_F32S as u64,
        OUTPUT_F32S as u64,
        TARGET_LEN as u64,
        PARAMS_F32S as u64,
        GRADS_LEN as u64,
        ARENA_F32S as u64,
        TRAINING as u64,
        N_PARAMS as u64,
    ];
    if len != SIZES {
        return ERR_LENGTH;
    }
    if out.is_null() || !out.is_aligned() {
        return ERR_POINTER;
    }
    // SAFETY: the caller passes `len == SIZES` writable values at `out`, checked non-null and
    // aligned.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out, SIZES) };
    OK
}

/// A new model (zero parameters, fresh arena), or null if it could not be created. Free it
/// with `cnnc_model_free`.
#[no_mangle]
pub extern "C" fn cnnc_model_new() -> *mut Model {
    match catch_unwind(|| Model::from_params(vec![0.0; PARAMS_F32S])) {
        Ok(Ok(m)) => Box::into_raw(Box::new(m)),
        _ => std::ptr::null_mut(),
    }
}

/// Frees a model from `cnnc_model_new` (null is ignored).
///
/// # Safety
/// `m` is null or a model from `cnnc_model_new` not freed before.
#[no_mangle]
pub unsafe extern "C" fn cnnc_model_free(m: *mut Model) {
    if !m.is_null() {
        // SAFETY: `m` came from `Box::into_raw` in `cnnc_model_new` and is freed once.
        drop(unsafe { Box::from_raw(m) });
    }
}

/// Inference on one batch, on the parameters where the host keeps them: `params[i]` points to
/// the `param_lens[i]` values of tensor `i` of [`PARAMS`] (`n_params` entries, [`N_PARAMS`];
/// each length that tensor's size), `x` ([`INPUT_F32S`] values) → `preds` ([`OUTPUT_F32S`]).
/// Nothing is copied in: the load-time kernels (batch norm folded into the weights) and the
/// inference program read the tensors in place. With `reuse` nonzero (an inference session:
/// the host promises these are the tensors of this model's previous call, unchanged), the
/// load-time kernels are skipped when nothing has used the arena since that call.
///
/// # Safety
/// `m` is a live model; `params` and `param_lens` are valid for reading `n_params` values;
/// each pointer is valid for its length (reads for the parameters and `x`, writes for
/// `preds`), nothing writes the parameters or `x` during the call and `preds` overlaps no
/// other buffer.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cnnc_predict_parts(
    m: *mut Model,
    params: *const *const f32,
    param_lens: *const usize,
    n_params: usize,
    x: *const f32,
    x_len: usize,
    preds: *mut f32,
    preds_len: usize,
    reuse: i32,
) -> i32 {
    // SAFETY (of every `unsafe` block below): the caller's contract above.
    let run = || -> Result<(), i32> {
        let m = unsafe { model(m) }?;
        let ptrs = unsafe { input(params, n_params, N_PARAMS) }?;
        let lens = unsafe { input(param_lens, n_params, N_PARAMS) }?;
        let mut p: [&[f32]; N_PARAMS] = [&[]; N_PARAMS];
        for (i, slot) in p.iter_mut().enumerate() {
            let want: usize = PARAMS[i].1.iter().product();
            *slot = unsafe { input(ptrs[i], lens[i], want) }?;
        }
        let x = unsafe { input(x, x_len, INPUT_F32S) }?;
        let preds = unsafe { output(preds, preds_len, OUTPUT_F32S) }?;
        predict(m, &p, x, preds, reuse != 0);
        Ok(())
    };
    status(catch_unwind(AssertUnwindSafe(run)))
}

/// Forward, loss and backward on one batch at `step` (1-based, seeds dropout), without any
/// optimiser update: reads `params` and writes them back with the batch-norm moving statistics
/// updated, writes the gradients (`GRADS_F32S` values, one tensor per trainable parameter in
/// [`PARAMS`] order), the training run's predictions and the batch's mean loss to `*loss`.
///
/// # Safety
/// `m` is a live model; each pointer is valid for its length (reads for `x` and `y`, reads
/// and writes for `params`, writes for `grads` and `preds`, and `loss` for one f32) and no
/// buffer overlaps another.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cnnc_gradients(
    m: *mut Model,
    params: *mut f32,
    params_len: usize,
    x: *const f32,
    x_len: usize,
    y: *const f32,
    y_len: usize,
    step: u64,
    grads: *mut f32,
    grads_len: usize,
    preds: *mut f32,
    preds_len: usize,
    loss: *mut f32,
) -> i32 {
    if !TRAINING {
        return ERR_NO_TRAINING;
    }
    // SAFETY (of every `unsafe` block below): the caller's contract above.
    let run = || -> Result<(), i32> {
        let m = unsafe { model(m) }?;
        let params = unsafe { output(params, params_len, PARAMS_F32S) }?;
        let x = unsafe { input(x, x_len, INPUT_F32S) }?;
        let y = unsafe { input(y, y_len, TARGET_LEN) }?;
        let grads = unsafe { output(grads, grads_len, GRADS_LEN) }?;
        let preds = unsafe { output(preds, preds_len, OUTPUT_F32S) }?;
        let loss = unsafe { output(loss, 1, 1) }?;
        m.params_mut().copy_from_slice(params);
        loss[0] = train(m, x, y, step, grads, preds);
        params.copy_from_slice(m.params());
        Ok(())
    };
    status(catch_unwind(AssertUnwindSafe(run)))
}

fn status(r: std::thread::Result<Result<(), i32>>) -> i32 {
    match r {
        Ok(Ok(())) => OK,
        Ok(Err(code)) => code,
        Err(_) => ERR_PANIC,
    }
}

/// The model behind `m`.
///
/// # Safety
/// `m` is null or a live model not otherwise borrowed during the call.
unsafe fn model<'a>(m: *mut Model) -> Result<&'a mut Model, i32> {
    if m.is_null() || !m.is_aligned() {
        return Err(ERR_POINTER);
    }
    // SAFETY: the caller's contract.
    Ok(unsafe { &mut *m })
}

/// The `len` values at `p`, which must be exactly `want`.
///
/// # Safety
/// `p` is valid for reading `len` values that nothing writes during the call.
unsafe fn input<'a, T>(p: *const T, len: usize, want: usize) -> Result<&'a [T], i32> {
    if len != want {
        return Err(ERR_LENGTH);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(ERR_POINTER);
    }
    // SAFETY: the caller's contract; `p` is non-null and aligned.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// The `len` values at `p` to be written, which must be exactly `want`.
///
/// # Safety
/// `p` is valid for reading and writing `len` values that nothing else accesses during the call.
unsafe fn output<'a>(p: *mut f32, len: usize, want: usize) -> Result<&'a mut [f32], i32> {
    if len != want {
        return Err(ERR_LENGTH);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(ERR_POINTER);
    }
    // SAFETY: the caller's contract; `p` is non-null and aligned.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}
