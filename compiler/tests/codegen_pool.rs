//! The generated crates' persistent threads (`codegen/support/pool.rs`, compiled here as the
//! crates include it): shares run and write where they were given, scratch is per thread,
//! callers on two threads at once both get their results, and a share's panic reaches its
//! caller after every share has finished, the pool still usable afterwards.

#![allow(dead_code)]

mod support {
    /// As in `support/common.rs`.
    pub(crate) fn at_mut<const N: usize>(s: &mut [f32], i: usize) -> &mut [f32; N] {
        (&mut s[i..i + N]).try_into().unwrap()
    }

    include!("../src/codegen/support/pool.rs");
}

use support::{run_shares, share_scratch, Share};

/// `out` split in `parts` chunks, chunk `t` filled with `t + round` (through the share's
/// scratch, so that it is exercised) on the pool, the last chunk on the caller.
fn fill(out: &mut [f32], parts: usize, round: usize) {
    let len = out.len() / parts;
    let (head, last) = out.split_at_mut(len * (parts - 1));
    let mut shares: Vec<Share<'_>> = Vec::new();
    for (t, chunk) in head.chunks_exact_mut(len).enumerate() {
        shares.push(Box::new(move |s: &mut Vec<f32>| {
            let scratch = share_scratch::<64>(s);
            scratch.fill((t + round) as f32);
            for (o, v) in chunk.iter_mut().zip(scratch.iter().cycle()) {
                *o = *v;
            }
        }));
    }
    run_shares(shares, || last.fill((parts - 1 + round) as f32));
}

fn check(out: &[f32], parts: usize, round: usize) {
    let len = out.len() / parts;
    for (t, chunk) in out.chunks_exact(len).enumerate() {
        assert!(
            chunk.iter().all(|&v| v == (t + round) as f32),
            "chunk {t} of round {round}"
        );
    }
}

#[test]
fn shares_write_their_chunks_from_callers_on_two_threads_at_once() {
    std::thread::scope(|scope| {
        for caller in 0..2 {
            scope.spawn(move || {
                let mut out = vec![0f32; 3 * 1000];
                for round in 0..500 {
                    fill(&mut out, 3, round + caller);
                    check(&out, 3, round + caller);
                }
            });
        }
    });
}

#[test]
fn a_panicking_share_reaches_its_caller_and_the_pool_goes_on() {
    let hit = std::panic::catch_unwind(|| {
        let shares: Vec<Share<'_>> = vec![
            Box::new(|_: &mut Vec<f32>| panic!("share")),
            Box::new(|_: &mut Vec<f32>| {}),
        ];
        run_shares(shares, || {});
    });
    assert!(hit.is_err());
    let mut out = vec![0f32; 3 * 100];
    fill(&mut out, 3, 7);
    check(&out, 3, 7);
}
