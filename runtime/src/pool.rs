//! A small persistent thread pool for kernels.
//!
//! `Pool::run(n_tasks, f)` calls `f(task)` for every task, splitting the task range statically
//! into `threads()` contiguous chunks (thread `t` gets [`task_range`]`(n_tasks, threads, t)`),
//! so which thread computes what — and therefore every summation order — depends only on the
//! thread count. The calling thread runs chunk 0 itself.
//!
//! Idle workers spin for a short while on the job counter (kernels of a batch-1 inference take
//! microseconds, so parking after each would dominate) and then block on a condition variable,
//! so an idle pool costs no CPU. The caller waits for the workers the same way: spin, then block.
//! `Pool::new(1)` has no worker threads and runs everything inline.
//!
//! A call made while the pool is busy (from inside a task, or from another thread at the same
//! time) runs inline on the calling thread, with the same static split, instead of deadlocking.
//! A panic in a task is caught on its worker and re-raised on the caller once all threads are done.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an idle thread spins before blocking.
const SPIN: Duration = Duration::from_micros(100);

/// Tasks `[t·n/T, (t+1)·n/T)` of `n_tasks` for thread `t` of `threads`.
pub fn task_range(n_tasks: usize, threads: usize, t: usize) -> Range<usize> {
    let threads = threads.max(1);
    (t * n_tasks / threads)..((t + 1) * n_tasks / threads)
}

/// Cuts `data` into one contiguous part per thread following [`task_range`]: thread `t`, with
/// tasks `r`, gets `data[start(r.start)..start(r.end)]`, where `start(i)` is the offset of task
/// `i`'s first element (`start(0) = 0`, `start(n_tasks)` = the end of the last). Returns each
/// thread's tasks and part, in thread order — the per-thread states of a kernel whose threads
/// own disjoint stretches of its output.
pub fn split_by_tasks<T>(
    data: &mut [T],
    n_tasks: usize,
    threads: usize,
    start: impl Fn(usize) -> usize,
) -> Vec<(Range<usize>, &mut [T])> {
    let mut parts = Vec::with_capacity(threads);
    let mut rest = data;
    for t in 0..threads.max(1) {
        let r = task_range(n_tasks, threads, t);
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(start(r.end) - start(r.start));
        rest = tail;
        parts.push((r, mine));
    }
    parts
}

/// The job workers run: called with the worker's thread index (1-based; 0 is the caller).
type Job = dyn Fn(usize) + Sync;

/// State shared by the caller and the workers.
struct Shared {
    /// Bumped once per job (and once at shutdown); a worker runs the job when it sees a new value.
    epoch: AtomicUsize,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// The current job: written by the dispatcher before the epoch bump, valid until `pending`
    /// reaches 0.
    job: UnsafeCell<Option<*const Job>>,
    /// Workers blocked (or about to block) on `wake`.
    sleepers: AtomicUsize,
    wake_lock: Mutex<()>,
    wake: Condvar,
    /// The dispatcher is blocked (or about to block) on `done`.
    caller_waiting: AtomicBool,
    done_lock: Mutex<()>,
    done: Condvar,
    panicked: AtomicBool,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the dispatching thread while it holds `Pool::busy` and no
// worker is running (`pending == 0`), and read by workers only between the SeqCst epoch bump
// they observed and their SeqCst decrement of `pending`; the pointee is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread.
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Set while a job is being dispatched; failing to set it means "run inline".
    busy: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads).finish()
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pool of `threads` threads in total (the caller counts as one); 0 is treated as 1.
    /// If the OS refuses to start a worker, the pool runs with the threads it got.
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleepers: AtomicUsize::new(0),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            caller_waiting: AtomicBool::new(false),
            done_lock: Mutex::new(()),
            done: Condvar::new(),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for index in 1..threads.max(1) {
            let sh = Arc::clone(&shared);
            // Epoch 0 is the state before any job: a worker that starts late still runs job 1.
            match thread::Builder::new()
                .name(format!("cnnc-pool-{index}"))
                .spawn(move || worker_loop(&sh, index, 0))
            {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        Pool {
            threads: workers.len() + 1,
            shared,
            workers,
            busy: AtomicBool::new(false),
        }
    }

    /// A shared single-thread pool: runs everything inline on the caller (for work too small to
    /// be worth waking other threads).
    pub fn inline() -> &'static Pool {
        static INLINE: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();
        INLINE.get_or_init(|| Pool::new(1))
    }

    /// A pool with one thread per available core.
    pub fn with_available_parallelism() -> Pool {
        Pool::new(thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Threads that share the work (including the caller).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(task)` for every task in `0..n_tasks`; thread `t` runs `task_range(n_tasks, threads, t)`
    /// in increasing order. Returns when all tasks are done; a panic in a task is re-raised here.
    pub fn run<F: Fn(usize) + Sync>(&self, n_tasks: usize, f: F) {
        self.run_ranges(n_tasks, |_, range| range.for_each(&f));
    }

    /// Calls `f(thread, range)` once per thread `0..threads()` with that thread's contiguous range
    /// of tasks (possibly empty). Use this when a thread keeps per-thread state across its tasks.
    pub fn run_ranges<F: Fn(usize, Range<usize>) + Sync>(&self, n_tasks: usize, f: F) {
        let all = self.threads;
        if all == 1 || n_tasks <= 1 {
            // Inline: the same split (every range but one is empty when n_tasks <= 1).
            for t in 0..all {
                f(t, task_range(n_tasks, all, t));
            }
            return;
        }
        if self.busy.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
            // Nested or concurrent use: same split, run sequentially here.
            for t in 0..all {
                f(t, task_range(n_tasks, all, t));
            }
            return;
        }
        let _busy = BusyGuard(&self.busy);
        let job = move |t: usize| f(t, task_range(n_tasks, all, t));
        self.dispatch(&job);
    }

    /// Like [`Pool::run_ranges`], with exclusive access to `states[thread]` (one per thread;
    /// `states.len()` must be at least `threads()`).
    pub fn run_with_state<S: Send, F>(&self, states: &mut [S], n_tasks: usize, f: F)
    where
        F: Fn(&mut S, usize, Range<usize>) + Sync,
    {
        assert!(states.len() >= self.threads, "one state per pool thread is needed");
        let base = StatePtr(states.as_mut_ptr());
        self.run_ranges(n_tasks, move |t, range| {
            // SAFETY: `run_ranges` calls this closure exactly once per thread index `t` per call,
            // `t < threads() <= states.len()`, so each `&mut` is unique, and `states` stays
            // mutably borrowed until `run_ranges` returns (after every call has ended).
            let s = unsafe { &mut *base.get().add(t) };
            f(s, t, range)
        });
    }

    /// Runs `job` on every worker and on the caller (thread 0), then waits for all of them.
    fn dispatch<'a>(&self, job: &'a (dyn Fn(usize) + Sync + 'a)) {
        let sh = &*self.shared;
        // SAFETY: no worker runs a job now (we hold `busy`, and the previous dispatch waited for
        // `pending == 0`). The lifetime is erased only for the duration of this call: `WaitGuard`
        // waits for every worker before `job` can go out of scope, even when our part panics.
        unsafe {
            let erased: *const Job = std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(job);
            *sh.job.get() = Some(erased);
        }
        sh.pending.store(self.workers.len(), SeqCst);
        sh.epoch.fetch_add(1, SeqCst);
        if sh.sleepers.load(SeqCst) > 0 {
            let _g = lock(&sh.wake_lock);
            sh.wake.notify_all();
        }
        let wait = WaitGuard(sh);
        job(0);
        drop(wait);
        if sh.panicked.swap(false, SeqCst) {
            panic!("a thread-pool task panicked");
        }
    }
}

/// Clears `Pool::busy` (also when unwinding).
struct BusyGuard<'a>(&'a AtomicBool);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

/// Waits until every worker has finished the current job (also when unwinding).
struct WaitGuard<'a>(&'a Shared);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let sh = self.0;
        let start = Instant::now();
        let mut spins = 0u32;
        while sh.pending.load(SeqCst) != 0 {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = lock(&sh.done_lock);
            sh.caller_waiting.store(true, SeqCst);
            while sh.pending.load(SeqCst) != 0 {
                g = sh.done.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            sh.caller_waiting.store(false, SeqCst);
        }
        // SAFETY: every worker is done with the job; nobody reads it until the next dispatch.
        unsafe { *sh.job.get() = None };
    }
}

struct StatePtr<S>(*mut S);
impl<S> Clone for StatePtr<S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for StatePtr<S> {}
// SAFETY: each thread dereferences a distinct element (see `run_with_state`), and `S: Send`.
unsafe impl<S: Send> Send for StatePtr<S> {}
unsafe impl<S: Send> Sync for StatePtr<S> {}
impl<S> StatePtr<S> {
    fn get(self) -> *mut S {
        self.0
    }
}

fn worker_loop(sh: &Shared, index: usize, mut seen: usize) {
    // Workers run nothing but kernels (see `crate::fpenv`).
    crate::fpenv::flush_denormals_forever();
    loop {
        // Wait for a new epoch: spin, then block.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let now = sh.epoch.load(SeqCst);
            if now != seen {
                seen = now;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut g = lock(&sh.wake_lock);
            sh.sleepers.fetch_add(1, SeqCst);
            // The dispatcher bumps the epoch, then reads `sleepers`: either it sees us and
            // notifies under the lock (which we hold until `wait` releases it), or we see its epoch.
            while sh.epoch.load(SeqCst) == seen {
                g = sh.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, SeqCst);
        }
        if sh.shutdown.load(SeqCst) {
            return;
        }
        // SAFETY: the dispatcher wrote `job` before the epoch bump we just observed, and keeps it
        // alive until we decrement `pending`.
        let job = unsafe { (*sh.job.get()).map(|p| &*p) };
        if let Some(job) = job {
            if panic::catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                sh.panicked.store(true, SeqCst);
            }
        }
        // The job must not be touched after this decrement.
        if sh.pending.fetch_sub(1, SeqCst) == 1 && sh.caller_waiting.load(SeqCst) {
            let _g = lock(&sh.done_lock);
            sh.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, SeqCst);
        sh.epoch.fetch_add(1, SeqCst);
        {
            let _g = lock(&sh.wake_lock);
            sh.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn task_ranges_cover_every_task_once() {
        for n in 0..40 {
            for threads in 1..6 {
                let all: Vec<usize> = (0..threads).flat_map(|t| task_range(n, threads, t)).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn many_small_jobs_run_every_task_once_on_the_static_split() {
        for threads in [1, 2, 4] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for round in 0..2000usize {
                let n = round % 13;
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(usize::MAX)).collect();
                pool.run_ranges(n, |t, range| {
                    assert_eq!(range, task_range(n, threads, t));
                    for i in range {
                        assert_eq!(hits[i].swap(t, SeqCst), usize::MAX, "task {i} ran twice");
                    }
                });
                for (i, h) in hits.iter().enumerate() {
                    let t = h.load(SeqCst);
                    assert!(task_range(n, threads, t).contains(&i), "task {i} ran on thread {t}");
                }
            }
        }
    }

    #[test]
    fn nested_calls_run_inline_without_deadlock() {
        for threads in [1, 2, 4] {
            let pool = Pool::new(threads);
            let sum = AtomicU64::new(0);
            for _ in 0..200 {
                pool.run(8, |i| {
                    pool.run(5, |j| {
                        pool.run(3, |k| {
                            sum.fetch_add((i * 100 + j * 10 + k) as u64, SeqCst);
                        });
                    });
                });
            }
            let once: u64 = (0..8u64)
                .flat_map(|i| (0..5u64).flat_map(move |j| (0..3u64).map(move |k| i * 100 + j * 10 + k)))
                .sum();
            assert_eq!(sum.load(SeqCst), 200 * once);
        }
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = Pool::new(2);
        let sum = AtomicU64::new(0);
        thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..500 {
                        pool.run(7, |i| {
                            sum.fetch_add(i as u64, SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(sum.load(SeqCst), 3 * 500 * 21);
    }

    #[test]
    fn workers_wake_after_parking_and_states_are_per_thread() {
        let pool = Pool::new(2);
        let mut states = vec![0usize; 2];
        for round in 0..3 {
            // Long enough for the worker to stop spinning and block.
            thread::sleep(Duration::from_millis(5));
            pool.run_with_state(&mut states, 10, |s, t, range| {
                assert_eq!(range, task_range(10, 2, t));
                *s += range.len();
            });
            assert_eq!(states, vec![5 * (round + 1); 2]);
        }
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_keeps_working() {
        let pool = Pool::new(2);
        for bad in [0, 9] {
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(10, |i| {
                    if i == bad {
                        panic!("task {i} fails");
                    }
                })
            }));
            assert!(r.is_err());
        }
        let sum = AtomicU64::new(0);
        pool.run(10, |i| {
            sum.fetch_add(i as u64, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 45);
    }
}
