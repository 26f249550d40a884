//! A small persistent thread pool for kernels.
//!
//! `Pool::run(n_tasks, f)` calls `f(task)` for every task, splitting the task range statically
//! into `threads()` contiguous chunks (thread `t` gets [`task_range`]`(n_tasks, threads, t)`),
//! so which thread computes what — and therefore every summation order — depends only on the
//! thread count. The calling thread runs chunk 0. Workers spin briefly between jobs (kernels of
//! a batch-1 inference take microseconds, so parking after each would dominate) and then park.
//! `Pool::new(1)` has no worker threads and runs everything inline.
//!
//! A call made while the pool is busy (from inside a task, or from another thread at the same
//! time) runs inline on the calling thread instead of deadlocking.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an idle worker spins on the job counter before parking.
const SPIN: Duration = Duration::from_micros(200);

/// Tasks `[t·n/T, (t+1)·n/T)` of `n_tasks` for thread `t` of `threads`.
pub fn task_range(n_tasks: usize, threads: usize, t: usize) -> Range<usize> {
    let threads = threads.max(1);
    (t * n_tasks / threads)..((t + 1) * n_tasks / threads)
}

/// The job workers run: called with the worker's thread index (1-based; 0 is the caller).
type Job = dyn Fn(usize) + Sync;

/// State shared by the caller and the workers.
struct Shared {
    /// Bumped once per job; workers run the job when they see a new value.
    epoch: AtomicUsize,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    /// The current job, valid from the epoch bump until `remaining` reaches 0.
    job: UnsafeCell<Option<*const Job>>,
    /// Per worker: parked (or about to park) and needs an unpark.
    sleeping: Vec<AtomicBool>,
    panicked: AtomicBool,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the dispatching thread while it holds `Pool::busy` and no
// worker is running (remaining == 0), and read by workers only between the Release epoch bump
// and their Release decrement of `remaining`; the pointee is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// A fixed set of worker threads plus the calling thread.
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job is being dispatched; `try_lock` failing means "run inline".
    busy: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("threads", &self.threads).finish()
    }
}

impl Pool {
    /// A pool of `threads` threads in total (the caller counts as one); 0 is treated as 1.
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            remaining: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleeping: (1..threads).map(|_| AtomicBool::new(false)).collect(),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("cnnc-pool-{index}"))
                    .spawn(move || worker_loop(&shared, index))
                    .expect("cannot spawn a thread-pool worker")
            })
            .collect();
        Pool {
            threads,
            shared,
            workers,
            busy: Mutex::new(()),
        }
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

    /// Calls `f(thread, range)` once per thread with that thread's contiguous range of tasks
    /// (possibly empty). Use this when a thread keeps per-thread state across its tasks.
    pub fn run_ranges<F: Fn(usize, Range<usize>) + Sync>(&self, n_tasks: usize, f: F) {
        let threads = self.threads.min(n_tasks.max(1));
        if threads <= 1 {
            f(0, 0..n_tasks);
            return;
        }
        let guard = match self.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::WouldBlock) | Err(TryLockError::Poisoned(_)) => {
                // Nested or concurrent use: same split, run sequentially here.
                for t in 0..self.threads {
                    f(t, task_range(n_tasks, self.threads, t));
                }
                return;
            }
        };
        let all = self.threads;
        let job = move |t: usize| f(t, task_range(n_tasks, all, t));
        self.dispatch(&job);
        drop(guard);
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
            // SAFETY: `run_ranges` calls this closure at most once per thread index `t` per
            // call, `t < threads() <= states.len()`, so each `&mut` is unique, and `states`
            // stays mutably borrowed until `run_ranges` returns (after every call ends).
            let s = unsafe { &mut *base.get().add(t) };
            f(s, t, range)
        });
    }

    /// Runs `job` on every worker and on the caller (thread 0), then waits for all of them.
    fn dispatch<'a>(&self, job: &'a (dyn Fn(usize) + Sync + 'a)) {
        let sh = &*self.shared;
        // SAFETY: no worker runs a job now (we hold `busy` and the last dispatch waited for
        // `remaining == 0`); the lifetime is erased only for the duration of this call, and
        // `WaitGuard` below waits for every worker before `job` can go out of scope, even when
        // the caller's own part panics.
        unsafe {
            let erased: *const Job = std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(job);
            *sh.job.get() = Some(erased);
        }
        sh.remaining.store(self.threads - 1, Ordering::Relaxed);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        for (i, sleeping) in sh.sleeping.iter().enumerate() {
            if sleeping.swap(false, Ordering::SeqCst) {
                self.workers[i].thread().unpark();
            }
        }
        let wait = WaitGuard(sh);
        job(0);
        drop(wait);
        if sh.panicked.swap(false, Ordering::SeqCst) {
            panic!("a thread-pool task panicked");
        }
    }
}

/// Waits until every worker has finished the current job (also when unwinding).
struct WaitGuard<'a>(&'a Shared);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let start = Instant::now();
        let mut spins = 0u32;
        while self.0.remaining.load(Ordering::Acquire) != 0 {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && start.elapsed() > SPIN {
                thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        // SAFETY: every worker is done with the job; nobody reads it until the next dispatch.
        unsafe { *self.0.job.get() = None };
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

fn worker_loop(sh: &Shared, index: usize) {
    let mut seen = sh.epoch.load(Ordering::Acquire);
    loop {
        // Wait for a new epoch: spin, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let now = sh.epoch.load(Ordering::Acquire);
            if now != seen {
                seen = now;
                break;
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            sh.sleeping[index - 1].store(true, Ordering::SeqCst);
            if sh.epoch.load(Ordering::SeqCst) == seen {
                thread::park();
            }
            sh.sleeping[index - 1].store(false, Ordering::SeqCst);
        }
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the dispatcher wrote `job` before the Release epoch bump we just acquired,
        // and keeps it alive until we decrement `remaining`.
        let job = unsafe { (*sh.job.get()).map(|p| &*p) };
        if let Some(job) = job {
            if panic::catch_unwind(AssertUnwindSafe(|| job(index))).is_err() {
                sh.panicked.store(true, Ordering::SeqCst);
            }
        }
        sh.remaining.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        sh.epoch.fetch_add(1, Ordering::SeqCst);
        for w in &self.workers {
            w.thread().unpark();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
