
// ---- persistent threads for the kernels' shares (std crates) -------------------------------

/// One thread's share of a kernel, run with that thread's scratch buffer (grown as needed, its
/// contents left from earlier shares: the kernels overwrite what they read).
pub(crate) type Share<'a> = Box<dyn FnOnce(&mut Vec<f32>) + Send + 'a>;

/// `N` values of a share's scratch buffer, grown to hold them.
#[inline(always)]
pub(crate) fn share_scratch<const N: usize>(s: &mut Vec<f32>) -> &mut [f32; N] {
    if s.len() < N {
        s.resize(N, 0.0);
    }
    at_mut(s, 0)
}

/// Runs `shares` on the pool's threads and `own` on the calling thread, returning when all
/// are done. The threads start on the first call and then wait, spinning briefly and then
/// parked, for the next kernel: a scoped spawn and join per kernel cost 150–200 µs on a 2-vCPU
/// VM, more than many kernels' shares take. If another thread is using the pool (two models
/// stepping at once), the shares run here, one after the other: the same results.
pub(crate) fn run_shares<'a>(shares: Vec<Share<'a>>, own: impl FnOnce()) {
    pool::run(shares, own)
}

#[allow(unsafe_code)]
mod pool {
    use super::Share;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Mutex, OnceLock, TryLockError};
    use std::thread::{self, Thread};
    use std::time::{Duration, Instant};

    const IDLE: u8 = 0;
    const POSTED: u8 = 1;
    const DONE: u8 = 2;
    const FAILED: u8 = 3;
    /// How long a waiting thread polls before parking: about the gap between two split kernels,
    /// and short, since the runtime that loads a crate has spinning threads of its own.
    const SPIN: Duration = Duration::from_micros(50);

    struct Slot {
        state: AtomicU8,
        job: Mutex<Option<(Share<'static>, Thread)>>,
        worker: OnceLock<Thread>,
    }

    struct Pool {
        slots: Vec<&'static Slot>,
        /// Held by the caller of `run` for its duration.
        busy: Mutex<()>,
    }

    static POOL: OnceLock<Pool> = OnceLock::new();

    /// Waits until `done(state)` (spinning, then parked until unparked), returning the state.
    fn wait_until(state: &AtomicU8, done: impl Fn(u8) -> bool) -> u8 {
        let start = Instant::now();
        let mut polls = 0u32;
        loop {
            let s = state.load(Ordering::Acquire);
            if done(s) {
                return s;
            }
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(64) || start.elapsed() < SPIN {
                core::hint::spin_loop();
            } else {
                thread::park();
            }
        }
    }

    fn worker(slot: &'static Slot) {
        let mut scratch = Vec::new();
        loop {
            wait_until(&slot.state, |s| s == POSTED);
            let taken = slot.job.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some((job, caller)) = taken else { continue };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut scratch))).is_ok();
            slot.state.store(if ok { DONE } else { FAILED }, Ordering::Release);
            caller.unpark();
        }
    }

    fn pool(workers: usize) -> &'static Pool {
        POOL.get_or_init(|| {
            let slots: Vec<&'static Slot> = (0..workers)
                .map(|_| {
                    &*Box::leak(Box::new(Slot {
                        state: AtomicU8::new(IDLE),
                        job: Mutex::new(None),
                        worker: OnceLock::new(),
                    }))
                })
                .collect();
            for (i, &slot) in slots.iter().enumerate() {
                let started = thread::Builder::new()
                    .name(format!("kernel-share-{i}"))
                    .spawn(move || worker(slot));
                if let Ok(h) = started {
                    let _ = slot.worker.set(h.thread().clone());
                }
            }
            Pool {
                slots,
                busy: Mutex::new(()),
            }
        })
    }

    /// The posted slots, waited for by [`Join::wait`] or, at the latest, when dropped (also
    /// while unwinding): no share may outlive the borrows `run` was given.
    struct Join<'p> {
        posted: Vec<&'p Slot>,
    }

    impl Join<'_> {
        /// Waits for every posted share; whether one panicked.
        fn wait(&mut self) -> bool {
            let mut failed = false;
            for slot in self.posted.drain(..) {
                failed |= wait_until(&slot.state, |s| s != POSTED) == FAILED;
                slot.state.store(IDLE, Ordering::Release);
            }
            failed
        }
    }

    impl Drop for Join<'_> {
        fn drop(&mut self) {
            self.wait();
        }
    }

    pub(super) fn run<'a>(shares: Vec<Share<'a>>, own: impl FnOnce()) {
        let p = pool(shares.len());
        let _busy = match p.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let mut scratch = Vec::new();
                for s in shares {
                    s(&mut scratch);
                }
                return own();
            }
        };
        let mut join = Join { posted: Vec::new() };
        let mut inline = Vec::new();
        for (i, share) in shares.into_iter().enumerate() {
            match p.slots.get(i).and_then(|s| s.worker.get().map(|w| (*s, w))) {
                Some((slot, w)) => {
                    // SAFETY: the share borrows for 'a, and it runs before `run` returns or
                    // unwinds: `join` waits for every posted share when dropped, which happens
                    // on either path before the borrows end.
                    let share: Share<'static> = unsafe { std::mem::transmute::<Share<'a>, Share<'static>>(share) };
                    *slot.job.lock().unwrap_or_else(|e| e.into_inner()) = Some((share, thread::current()));
                    slot.state.store(POSTED, Ordering::Release);
                    w.unpark();
                    join.posted.push(slot);
                }
                None => inline.push(share),
            }
        }
        let mut scratch = Vec::new();
        for s in inline {
            s(&mut scratch);
        }
        own();
        if join.wait() {
            panic!("a kernel's share panicked on a pool thread");
        }
    }
}
