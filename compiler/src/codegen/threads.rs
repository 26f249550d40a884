//! Threads in generated code. In a crate generated for `T > 1` threads, a template whose work
//! divides by samples (and is worth waking a thread) becomes a wrapper that runs `T` calls of
//! the same template built for `n / T` samples (`<name>_part`): `T − 1` on the crate's
//! persistent threads (`support/pool.rs`, `run_shares`; a scoped spawn per call cost more than
//! many shares take) and the last on the calling thread, each on a contiguous chunk
//! of the batch-major operands (NHWC maps, GEMM rows). Per-sample outputs are written chunk by
//! chunk. A reduction over the samples (the kernel gradient, a weight gradient `Aᵀ·B`) gives
//! every thread but the last partial outputs of its own, added to the last one's in thread
//! order: results depend on the thread count, never on timing. A conv whose epilogue takes BN
//! statistics gives each share's moments, combined in thread order by Chan et al.'s pairwise
//! update. A share with scratch (a transposed or packed kernel, padded images) fills its own
//! (the pool thread's buffer, kept between calls): each thread repeats that small transpose or
//! pack.
//!
//! Kernels that do not split (BN statistics before a fused max-pool, row-wise templates, a
//! batch that `T` does not divide) run on one thread as before.

use crate::kernel_ir::{ConvGeom, Epilogue, KernelOp, Schedule, Split};

use super::kernels::{operand_names, scratch_of};
use super::threads_bands::band_split;
use super::writer::Code;

/// How a template's work divides among threads.
pub(crate) struct ThreadSplit {
    pub threads: usize,
    /// The template of one thread's share.
    pub part: KernelOp,
    /// Per input: whether it is cut into per-thread chunks (else every thread reads it whole).
    pub chunked_inputs: Vec<bool>,
    /// Whether the outputs are sums over the samples (each thread computes all of them for its
    /// share), else per-sample outputs cut into chunks like the inputs.
    pub reduce: bool,
    /// A conv's BN moments output (`[2, f]`, output 1): each share computes its own, combined in
    /// thread order by Chan et al.'s pairwise update (equal sample counts).
    pub moments: bool,
}

/// Work below which a kernel stays on one thread (about 70 µs on one core): waking a pool
/// thread and waiting for it costs a few µs when it is still spinning, tens once parked.
pub(crate) const SPAWN_FLOPS: usize = 8_000_000;

/// Largest per-thread partial-sum buffer (f32s) a wrapper keeps on the stack.
const STACK_PARTIALS: usize = 4096;

/// The schedule of `op`'s generated function in a crate for `threads` threads: `s` (tiles for
/// one thread) split by samples when the kernel divides so, else a batch-1 conv by bands of
/// output rows (`threads_bands`).
pub(crate) fn schedule_for(op: &KernelOp, s: Schedule, threads: usize) -> Schedule {
    let split = if thread_split(op, threads).is_some() {
        Some(Split::Samples)
    } else {
        band_split(op, threads).map(|_| Split::Bands)
    };
    match split {
        Some(split) => Schedule { threads, split, ..s },
        None => Schedule {
            threads: 1,
            split: Split::None,
            ..s
        },
    }
}

/// The split of `op` across `threads`, when it has one.
pub(crate) fn thread_split(op: &KernelOp, threads: usize) -> Option<ThreadSplit> {
    let t = threads;
    if t < 2 || op.flops() < SPAWN_FLOPS {
        return None;
    }
    let (part, chunked_inputs, reduce) = match op {
        KernelOp::Conv2d {
            geom,
            epilogue: e,
            winograd_u,
        } if geom.n.is_multiple_of(t) && !(e.bn_stats && e.max_pool.is_some()) => {
            let part = KernelOp::Conv2d {
                geom: ConvGeom { n: geom.n / t, ..*geom },
                epilogue: *e,
                winograd_u: *winograd_u,
            };
            (part, product_inputs(e), false)
        }
        KernelOp::ConvGradInput { geom } if geom.n.is_multiple_of(t) => {
            let part = KernelOp::ConvGradInput {
                geom: ConvGeom { n: geom.n / t, ..*geom },
            };
            (part, vec![true, false], false)
        }
        KernelOp::ConvGradKernel {
            geom,
            bias_grad,
            pooled,
        } if geom.n.is_multiple_of(t) => {
            let part = KernelOp::ConvGradKernel {
                geom: ConvGeom { n: geom.n / t, ..*geom },
                bias_grad: *bias_grad,
                pooled: *pooled,
            };
            // Every input (x, dy, or x, argmax, [y], dy) is per sample.
            let inputs = op.operand_sizes().0.len();
            (part, vec![true; inputs], true)
        }
        // Rows of C from rows of A: (a, b, [bias], [res]).
        KernelOp::Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b,
            epilogue: e,
            bias_grad: false,
        } if !e.bn_stats && m.is_multiple_of(t) => {
            let part = KernelOp::Gemm {
                m: m / t,
                n: *n,
                k: *k,
                trans_a: false,
                trans_b: *trans_b,
                epilogue: *e,
                bias_grad: false,
            };
            (part, product_inputs(e), false)
        }
        // C = Aᵀ·B summed over K (a weight gradient): A [k, m] and B [k, n] cut along K; no
        // epilogue, so that the partial products add up.
        KernelOp::Gemm {
            m,
            n,
            k,
            trans_a: true,
            trans_b: false,
            epilogue: e,
            bias_grad,
        } if e.is_none() && k.is_multiple_of(t) => {
            let part = KernelOp::Gemm {
                m: *m,
                n: *n,
                k: k / t,
                trans_a: true,
                trans_b: false,
                epilogue: *e,
                bias_grad: *bias_grad,
            };
            (part, vec![true, true], true)
        }
        _ => return None,
    };
    let moments = matches!(op, KernelOp::Conv2d { epilogue, .. } if epilogue.bn_stats);
    let split = ThreadSplit {
        threads: t,
        part,
        chunked_inputs,
        reduce,
        moments,
    };
    split.consistent(op).then_some(split)
}

/// Which inputs of a product with epilogue `e` are per sample: `(x or A, the weights, [bias],
/// [residual])`.
fn product_inputs(e: &Epilogue) -> Vec<bool> {
    let mut ins = vec![true, false];
    if e.bias {
        ins.push(false);
    }
    if e.residual {
        ins.push(true);
    }
    ins
}

impl ThreadSplit {
    /// Chunked operands are `threads` parts' worth of the whole, the others the same size; the
    /// scratch of a share is the whole's kind and no larger.
    fn consistent(&self, whole: &KernelOp) -> bool {
        let (wi, wo) = whole.operand_sizes();
        let (pi, po) = self.part.operand_sizes();
        let t = self.threads;
        let ins_ok = wi.len() == pi.len()
            && wi.len() == self.chunked_inputs.len()
            && wi
                .iter()
                .zip(&pi)
                .zip(&self.chunked_inputs)
                .all(|((&w, &p), &c)| if c { w == p * t } else { w == p });
        let whole_output = |i: usize| self.reduce || (self.moments && i == 1);
        let outs_ok = wo.len() == po.len()
            && wo
                .iter()
                .zip(&po)
                .enumerate()
                .all(|(i, (&w, &p))| if whole_output(i) { w == p } else { w == p * t });
        // A share's scratch fits in the whole's (a kernel gradient groups fewer images of a
        // smaller batch): the last share runs on the whole's, the others allocate their own.
        let scratch_ok = match (scratch_of(whole), scratch_of(&self.part)) {
            (Some(w), Some(p)) => w.0 == p.0 && p.1 <= w.1,
            (None, None) => true,
            _ => false,
        };
        ins_ok && outs_ok && scratch_ok
    }
}

/// The wrapper's body: `part` (the name of the share's function) on `threads` threads.
pub(crate) fn emit_wrapper(c: &mut Code, whole: &KernelOp, sp: &ThreadSplit, part: &str) -> Result<(), String> {
    let (in_names, out_names) = operand_names(whole)?;
    let (pin, pout) = sp.part.operand_sizes();
    let t = sp.threads;
    let last = t - 1;
    c.line(format!(
        "// {t} threads, each {part} on 1/{t} of the samples{}",
        if sp.reduce {
            "; partial sums added in thread order"
        } else if sp.moments {
            "; BN moments combined in thread order"
        } else {
            ""
        }
    ));
    // Per output: the chunks (or partial buffers) of threads 0..t-1, and the last thread's.
    let mut heads = Vec::new();
    let mut lasts = Vec::new();
    for (i, (name, &len)) in out_names.iter().zip(&pout).enumerate() {
        if sp.reduce || (sp.moments && i == 1) {
            // Small partials on the stack (clippy flags a `vec!` of a few values); large ones
            // (a kernel gradient's) on the heap.
            let n = len * last;
            let buf = if n <= STACK_PARTIALS {
                format!("[0f32; {n}]")
            } else {
                format!("vec![0f32; {n}]")
            };
            c.line(format!("let mut {name}_p = {buf};"));
            heads.push(format!("{name}_p.chunks_exact_mut({len})"));
            lasts.push(name.clone());
        } else {
            c.line(format!(
                "let ({name}_h, {name}_l) = {name}.split_at_mut({});",
                len * last
            ));
            heads.push(format!("{name}_h.chunks_exact_mut({len})"));
            lasts.push(format!("at_mut({name}_l, 0)"));
        }
    }
    let scratch = scratch_of(&sp.part);
    // Thread `share`'s inputs (None: the loop's `t`).
    let ins_at = |share: Option<usize>| -> Vec<String> {
        in_names
            .iter()
            .zip(&pin)
            .zip(&sp.chunked_inputs)
            .map(|((n, &len), &chunked)| match (chunked, share) {
                (false, _) => n.clone(),
                (true, None) => format!("at({n}, t * {len})"),
                (true, Some(i)) => format!("at({n}, {})", i * len),
            })
            .collect()
    };
    let pattern = nest(&out_names.iter().map(|n| format!("{n}_t")).collect::<Vec<_>>());
    let iter = heads
        .iter()
        .skip(1)
        .fold(heads[0].clone(), |acc, h| format!("{acc}.zip({h})"));
    c.line(format!("let mut shares: Vec<Share<'_>> = Vec::with_capacity({last});"));
    c.open(format!("for (t, {pattern}) in {iter}.enumerate()"));
    let mut args = ins_at(None);
    args.extend(out_names.iter().map(|n| format!("at_mut({n}_t, 0)")));
    let s = match scratch {
        Some((_, len)) => {
            args.push(format!("share_scratch::<{len}>(s)"));
            "s"
        }
        None => "_",
    };
    c.line(format!(
        "shares.push(Box::new(move |{s}: &mut Vec<f32>| {part}({})));",
        args.join(", ")
    ));
    c.close();
    let mut args = ins_at(Some(last));
    args.extend(lasts);
    if let Some((name, _)) = scratch {
        args.push(format!("at_mut({name}, 0)"));
    }
    c.line(format!("run_shares(shares, || {part}({}));", args.join(", ")));
    if sp.reduce {
        for (name, &len) in out_names.iter().zip(&pout) {
            c.open(format!("for p in {name}_p.chunks_exact({len})"));
            c.line(format!("for (o, &v) in {name}.iter_mut().zip(p) {{ *o += v; }}"));
            c.close();
        }
    }
    if sp.moments {
        combine_moments(c, &sp.part);
    }
    Ok(())
}

/// `moments` (`[mean; variance]` per channel) of the whole batch from the shares': those of
/// threads `0..t-1` in `moments_p`, the last thread's in `moments`, combined in thread order by
/// Chan et al.'s pairwise update of mean and M2 (no E[y²] − mean² cancellation).
fn combine_moments(c: &mut Code, part: &KernelOp) {
    let KernelOp::Conv2d { geom, .. } = part else {
        return;
    };
    let f = geom.f;
    let rows = geom.n * geom.out_hw[0] * geom.out_hw[1];
    c.line(format!(
        "// the batch's moments from the shares' ({rows} rows each), in thread order"
    ));
    c.line(format!("let last: [f32; {}] = *moments;", 2 * f));
    c.line(format!(
        "let (mut mean, mut m2, mut count) = ([0f64; {f}], [0f64; {f}], 0f64);"
    ));
    c.open(format!(
        "for p in moments_p.chunks_exact({}).chain(core::iter::once(&last[..]))",
        2 * f
    ));
    c.line(format!("let (nb, total) = ({rows}.0, count + {rows}.0);"));
    c.open(format!("for j in 0..{f}"));
    c.line("let delta = p[j] as f64 - mean[j];");
    c.line("mean[j] += delta * nb / total;");
    c.line(format!(
        "m2[j] += p[{f} + j] as f64 * nb + delta * delta * count * nb / total;"
    ));
    c.close();
    c.line("count = total;");
    c.close();
    c.open(format!("for j in 0..{f}"));
    c.line("moments[j] = mean[j] as f32;");
    c.line(format!("moments[{f} + j] = (m2[j] / count) as f32;"));
    c.close();
}

/// `a`, `(a, b)`, `((a, b), c)`: the pattern of iterators zipped left to right.
fn nest(names: &[String]) -> String {
    names
        .iter()
        .skip(1)
        .fold(names[0].clone(), |acc, n| format!("({acc}, {n})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Activation, Pad2d, Window2d};

    fn conv(n: usize, e: Epilogue) -> KernelOp {
        KernelOp::Conv2d {
            geom: ConvGeom {
                n,
                in_hw: [14, 14],
                c: 32,
                kernel_hw: [3, 3],
                f: 64,
                strides: [1, 1],
                pad: Pad2d {
                    top: 1,
                    bottom: 1,
                    left: 1,
                    right: 1,
                },
                out_hw: [14, 14],
            },
            epilogue: e,
            winograd_u: None,
        }
    }

    fn gemm(m: usize, k: usize, trans_a: bool, e: Epilogue) -> KernelOp {
        KernelOp::Gemm {
            m,
            n: 128,
            k,
            trans_a,
            trans_b: false,
            epilogue: e,
            bias_grad: false,
        }
    }

    #[test]
    fn convolutions_split_by_samples_their_moments_combined() {
        let relu = Epilogue {
            bias: true,
            residual: true,
            act: Activation::Relu,
            ..Epilogue::NONE
        };
        let sp = thread_split(&conv(128, relu), 2).expect("a split");
        assert_eq!((sp.threads, sp.reduce), (2, false));
        assert_eq!(sp.chunked_inputs, [true, false, false, true]); // x, w, bias, res
        assert!(matches!(sp.part, KernelOp::Conv2d { geom, .. } if geom.n == 64));
        assert!(!sp.moments);
        let stats = Epilogue {
            bn_stats: true,
            ..Epilogue::NONE
        };
        let sp = thread_split(&conv(128, stats), 2).expect("a split with moments");
        assert_eq!((sp.reduce, sp.moments), (false, true));
        let pooled = Epilogue {
            max_pool: Some(Window2d {
                size: [2, 2],
                strides: [2, 2],
                pad: Pad2d::default(),
            }),
            ..stats
        };
        assert!(
            thread_split(&conv(128, pooled), 2).is_none(),
            "statistics before a pool"
        );
        assert!(thread_split(&conv(127, relu), 2).is_none(), "2 does not divide 127");
        assert!(thread_split(&conv(1, relu), 2).is_none(), "too little work");
        assert!(thread_split(&conv(128, relu), 1).is_none());
    }

    #[test]
    fn gemms_split_rows_or_reduce_over_k() {
        let rows = thread_split(&gemm(128, 3136, false, Epilogue::NONE), 2).expect("rows");
        assert!(!rows.reduce && matches!(rows.part, KernelOp::Gemm { m: 64, k: 3136, .. }));
        let red = thread_split(&gemm(3136, 128, true, Epilogue::NONE), 2).expect("a reduction");
        assert!(red.reduce && matches!(red.part, KernelOp::Gemm { m: 3136, k: 64, .. }));
        assert_eq!(red.chunked_inputs, [true, true]);
        // A bias or an activation on partial sums would be wrong.
        let biased = Epilogue {
            bias: true,
            ..Epilogue::NONE
        };
        assert!(thread_split(&gemm(3136, 128, true, biased), 2).is_none());
    }

    #[test]
    fn the_schedule_says_samples_when_the_kernel_splits() {
        let op = conv(128, Epilogue::NONE);
        let s = crate::kernel_ir::schedule::choose(&op, &crate::kernel_ir::Machine::detect());
        let split = schedule_for(&op, s, 4);
        assert_eq!((split.threads, split.split), (4, Split::Samples));
        let one = schedule_for(&op, s, 1);
        assert_eq!((one.threads, one.split), (1, Split::None));
    }
}
