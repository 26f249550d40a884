//! A per-thread memo of transformed weights (Winograd's packed `U = G g Gᵀ`), reused while the
//! weights are bitwise equal to the copy the entry keeps.
//!
//! Inference calls a conv with the same weights every time, and at batch 1 the transform is a
//! large share of the call (a quarter of the MNIST CNN's conv2). An engine with an inference
//! session (ONNX Runtime) transforms once at load; here parameters are plain tensors the caller
//! may change between calls, so instead of trusting a pointer the memo compares the values:
//! a hit gives exactly what a fresh transform would, so results never depend on the memo. In
//! training the weights change every step: the comparison stops at the first value and the
//! entry is refilled (one copy of the weights more than before). Only small transforms are
//! kept ([`MAX_VALUES`]); larger ones are amortised over enough work anyway.

use super::pack::PackedB;
use std::cell::RefCell;

/// Entries per thread, replaced round-robin.
const ENTRIES: usize = 4;
/// Largest transform kept, in values (1 MiB).
pub(super) const MAX_VALUES: usize = 256 * 1024;

/// What identifies a transform besides the weights' values: where they live, and every
/// parameter of the transform (tile, ISA, shape) folded into `kind`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Key {
    pub addr: usize,
    pub kind: [usize; 4],
}

struct Entry {
    key: Key,
    weights: Vec<f32>,
    packed: PackedB,
}

#[derive(Default)]
struct Memo {
    entries: Vec<Entry>,
    next: usize,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Calls `f` with `transform`'s result for `weights`: the memo's copy when an entry with `key`
/// holds bitwise the same weights, else a fresh transform (which then replaces an entry).
/// `transform` must depend only on `weights` and on what `key.kind` encodes.
pub(super) fn with_transformed<R>(
    key: Key,
    weights: &[f32],
    transform: impl FnOnce(&mut PackedB),
    f: impl FnOnce(&PackedB) -> R,
) -> R {
    MEMO.with(|cell| {
        let Ok(mut memo) = cell.try_borrow_mut() else {
            // Called from inside `f` of an outer call: no memo for this one.
            let mut packed = PackedB::new();
            transform(&mut packed);
            return f(&packed);
        };
        let found = memo.entries.iter().position(|e| e.key == key);
        let at = match found {
            Some(i) if same_bits(&memo.entries[i].weights, weights) => i,
            _ => {
                let i = found.unwrap_or_else(|| {
                    if memo.entries.len() < ENTRIES {
                        memo.entries.push(Entry {
                            key,
                            weights: Vec::new(),
                            packed: PackedB::new(),
                        });
                        memo.entries.len() - 1
                    } else {
                        let i = memo.next;
                        memo.next = (i + 1) % ENTRIES;
                        i
                    }
                });
                let e = &mut memo.entries[i];
                e.key = key;
                e.weights.clear();
                e.weights.extend_from_slice(weights);
                transform(&mut e.packed);
                i
            }
        };
        f(&memo.entries[at].packed)
    })
}

/// Bitwise equality (`-0.0 ≠ 0.0`, a NaN equals itself): what the transform's output depends on.
/// Chunks of 256 values are compared without an early exit, so the compiler vectorises them
/// (an element-by-element `all` cost 7% of a batch-1 MNIST CNN inference); changed weights
/// still stop the comparison at the first chunk.
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.chunks(256)
            .zip(b.chunks(256))
            .all(|(x, y)| x.iter().zip(y).fold(0u32, |d, (p, q)| d | (p.to_bits() ^ q.to_bits())) == 0)
}

#[cfg(test)]
mod tests {
    use super::same_bits;

    #[test]
    fn same_bits_is_bitwise_equality() {
        let a: Vec<f32> = (0..600).map(|i| i as f32 * 0.5).collect();
        assert!(same_bits(&a, &a.clone()));
        // A difference past the first chunk, the sign of a zero, a length.
        let mut b = a.clone();
        b[517] = 1e-30;
        assert!(!same_bits(&a, &b));
        assert!(!same_bits(&[0.0], &[-0.0]));
        assert!(!same_bits(&a, &a[..599]));
        // A NaN equals itself bit for bit (so NaN weights still hit the memo).
        assert!(same_bits(&[f32::NAN], &[f32::NAN]));
    }
}
