//! Drops the buffers fusion left unreferenced, renumbers the rest, and re-derives which forward
//! values backward kernels read (the `saved` buffers the memory plan keeps alive).

use crate::kernel_ir::{lower::mark_saved, Program};

/// Compacts the buffer table; returns how many buffers were dropped.
pub fn run(p: &mut Program) -> usize {
    let before = p.buffers.len();
    p.compact();
    mark_saved(p);
    before - p.buffers.len()
}
