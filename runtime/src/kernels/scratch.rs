//! Per-thread scratch buffers (im2col blocks, packed panels). Pool threads are persistent, so
//! after the first call of a kernel its buffers are reused and no allocation happens on the hot
//! path. Each buffer kind has its own thread-local so a kernel can hold two at once.

use std::cell::RefCell;

/// Which thread-local buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Slot {
    /// The A block (im2col) of a GEMM-shaped kernel.
    A,
    /// A packed B operand or a temporary output block.
    B,
    /// Per-row partial statistics a kernel gathers before combining them.
    Stats,
}

thread_local! {
    static SLOT_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SLOT_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SLOT_STATS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats per 64-byte cache line.
const LINE: usize = 16;

/// Calls `f` with this thread's buffer `slot`, at least `len` floats long and 64-byte aligned.
/// Contents are unspecified. If the slot is already in use on this thread (a kernel called
/// from inside another's task), `f` gets a fresh buffer instead.
pub(crate) fn with<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let key = match slot {
        Slot::A => &SLOT_A,
        Slot::B => &SLOT_B,
        Slot::Stats => &SLOT_STATS,
    };
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => aligned(&mut v, len, f),
        Err(_) => aligned(&mut Vec::new(), len, f),
    })
}

fn aligned<R>(v: &mut Vec<f32>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if v.len() < len + LINE {
        v.resize(len + LINE, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(LINE);
    f(&mut v[off..off + len])
}
