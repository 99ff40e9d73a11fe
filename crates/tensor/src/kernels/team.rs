//! Splitting a kernel's work across threads: [`par_tasks`] hands tasks to
//! rayon's pool, or, from outside it, shares them with helper threads so
//! that a helper whose core is busy with another process costs as little
//! as possible.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::threads;

/// Runs `f(i)` for `i in 0..tasks` across the pool. Inside the pool: as
/// rayon tasks. From outside it (a user's training loop): the calling
/// thread and the pool's workers claim tasks one at a time from a shared
/// counter, so a worker that is slow to start (its core busy with another
/// process) leaves its share to the others; the call returns once every
/// task is done and no worker holds `f`, without waiting for workers that
/// never started (see [`Team`]).
///
/// With another process busy on a helper's core, a helper is now and then
/// descheduled in the middle of its task, and the caller, which cannot
/// return while a helper may still touch `f`'s borrows, waits for it. After
/// such a wait the calls run on the calling thread alone for a while (see
/// [`Backoff`]): the step then runs at one thread's speed instead of
/// waiting on a core it does not get.
///
/// Why not plain rayon from outside the pool: rayon parks the calling
/// thread until every spawned job has run, and a job queued behind a
/// descheduled worker holds the caller for a whole scheduler slice
/// (measured with one core busy: 25–93 steps/s on two threads against
/// 106–251 on one), and waking the parked caller costs tens of
/// microseconds on its own.
pub(crate) fn par_tasks(tasks: usize, f: impl Fn(usize) + Sync) {
    if tasks <= 1 || threads() <= 1 {
        (0..tasks).for_each(&f);
        return;
    }
    if rayon::current_thread_index().is_some() {
        (0..tasks).into_par_iter().for_each(&f);
        return;
    }
    if BACKOFF.serial(Instant::now()) {
        // the helpers recently kept the caller waiting: the same tasks, in
        // order, on this thread (same results: the split does not change)
        (0..tasks).for_each(&f);
        return;
    }
    Team::run(tasks, &f);
}

/// Hands `job` to the pool that helps callers from outside any rayon pool:
/// `threads() - 1` workers, since the caller works too. Handing it to the
/// global pool (`threads()` workers) ran three threads on two cores: the
/// worker without a task spun in `sched_yield` against the two with one
/// (`perf record`: 3 threads on 2 cores, ~10% of a two-thread batch-128 MLP
/// step in `sched_yield` and task switches; with the helpers' pool, 2
/// threads and about half the system time). Falls
/// back to the global pool if the helpers' threads cannot be started.
fn helpers(job: impl FnOnce() + Send + 'static) {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads().saturating_sub(1).max(1))
            .thread_name(|i| format!("rime-kernels-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.spawn(job),
        None => rayon::spawn(job),
    }
}

/// The state a caller shares with the workers it invites to a
/// [`par_tasks`] call.
struct Team {
    /// The next unclaimed task.
    next: AtomicUsize,
    tasks: usize,
    /// Workers between [`Team::enter`] and [`Team::leave`]: they may call `f`.
    active: AtomicUsize,
    /// Set by the caller once it waits: no worker enters after this.
    closed: AtomicBool,
    /// A task panicked on a worker (re-raised on the caller).
    panicked: AtomicBool,
    /// The longest a worker took over one task, in nanoseconds.
    longest_helper_task: AtomicU64,
    /// The caller, unparked by the last worker to leave after `closed`.
    caller: std::thread::Thread,
    /// The caller's closure, its lifetime erased: only called between
    /// `enter` and `leave`, which the caller outlives (see [`Team::run`]).
    f: *const (dyn Fn(usize) + Sync),
}

// SAFETY: `f` points to a `Sync` closure and is only called between
// `enter` and `leave`, while the caller (which owns it) waits in
// `TeamGuard::drop`; the other fields are atomics or `Send + Sync`.
unsafe impl Send for Team {}
// SAFETY: as for `Send`.
unsafe impl Sync for Team {}

impl Team {
    fn run(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let f: *const (dyn Fn(usize) + Sync + '_) = f;
        // SAFETY: erases the borrow's lifetime only (same layout); the guard
        // below keeps this function from returning (or unwinding) while a
        // worker may call `f`.
        let f: *const (dyn Fn(usize) + Sync + 'static) = unsafe { std::mem::transmute(f) };
        let team = Arc::new(Team {
            next: AtomicUsize::new(0),
            tasks,
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            longest_helper_task: AtomicU64::new(0),
            caller: std::thread::current(),
            f,
        });
        let guard = TeamGuard(&team);
        for _ in 1..threads().min(tasks) {
            let team = Arc::clone(&team);
            helpers(move || {
                if team.enter() {
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let (_, longest) = team.work(true);
                        let longest = u64::try_from(longest.as_nanos()).unwrap_or(u64::MAX);
                        team.longest_helper_task
                            .fetch_max(longest, Ordering::Relaxed);
                    }));
                    if ran.is_err() {
                        team.panicked.store(true, Ordering::Relaxed);
                    }
                    team.leave();
                }
            });
        }
        let start = Instant::now();
        let (own, _) = team.work(false);
        let done = Instant::now();
        drop(guard);
        let end = Instant::now();
        let longest = team.longest_helper_task.load(Ordering::Relaxed);
        BACKOFF.observe(
            Call {
                own_tasks: own,
                helped: own < tasks,
                work: done - start,
                wait: end - done,
                longest_helper_task: Duration::from_nanos(longest),
            },
            end,
        );
        if team.panicked.load(Ordering::Relaxed) {
            panic!("a parallel kernel task panicked");
        }
    }

    /// Claims and runs tasks until none is left. Returns how many it ran
    /// and, if `timed`, the longest any of them took.
    fn work(&self, timed: bool) -> (usize, Duration) {
        let (mut ran, mut longest) = (0, Duration::ZERO);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return (ran, longest);
            }
            let start = timed.then(Instant::now);
            // SAFETY: called by the caller itself, or by a worker between
            // `enter` and `leave`, while the caller still waits.
            unsafe { (*self.f)(i) };
            ran += 1;
            if let Some(start) = start {
                longest = longest.max(start.elapsed());
            }
        }
    }

    /// Registers a worker; `false` if the caller has stopped waiting (then
    /// the worker must not touch `f`).
    fn enter(&self) -> bool {
        // SeqCst pairs with the guard's store of `closed` and load of
        // `active`: either the caller sees this worker active and waits,
        // or the worker sees the team closed and leaves
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.leave();
            return false;
        }
        true
    }

    fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 && self.closed.load(Ordering::SeqCst) {
            self.caller.unpark();
        }
    }
}

/// Closes a [`Team`] and waits for its active workers when dropped (also
/// while the caller unwinds from a panicking task): a short spin, then
/// parking until the last worker leaves — never waiting for a worker that
/// has not started.
struct TeamGuard<'a>(&'a Arc<Team>);

impl Drop for TeamGuard<'_> {
    fn drop(&mut self) {
        let team = self.0;
        // a worker entering from now on finds no task to claim
        team.next.store(usize::MAX / 2, Ordering::Relaxed);
        team.closed.store(true, Ordering::SeqCst);
        let mut spins = 0u32;
        while team.active.load(Ordering::SeqCst) != 0 {
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::park_timeout(std::time::Duration::from_micros(200));
            }
        }
    }
}

/// The backoff shared by every caller outside the pool (they share the
/// helpers).
static BACKOFF: Backoff = Backoff::new();

/// What one [`Team::run`] call saw, for [`Backoff::observe`].
#[derive(Clone, Copy, Debug)]
struct Call {
    /// Tasks the caller ran itself.
    own_tasks: usize,
    /// A helper ran at least one task.
    helped: bool,
    /// The caller's time running its tasks.
    work: Duration,
    /// The caller's time waiting, its tasks done, for helpers still
    /// running theirs.
    wait: Duration,
    /// The longest a helper took over one task.
    longest_helper_task: Duration,
}

/// When calls from outside the pool run on the calling thread alone.
///
/// A call *stalls* when the caller waited for a helper whose task took
/// much longer than the caller's own tasks (twice their mean plus
/// [`Backoff::STALL`]): the helper was descheduled in the middle of it,
/// which says its core is busy with another process. A helper that merely
/// started late (woken from a halted core, tens to hundreds of microseconds
/// in this VM) is no stall. After a stall the next calls run serially for a
/// penalty, 1 ms at first, doubled (up to 64 ms) each time the first call
/// after a penalty stalls again, and back to 1 ms after a call that the
/// helpers shared without a stall. Under lasting contention the probes cost
/// one stall per 64 ms; on an idle machine a stray stall costs 1 ms on one
/// thread. Serial calls run the same tasks in the same order, so results do
/// not depend on it.
///
/// Measured (batch-128 MLP on 2 threads, 20 000 calls each): with one core
/// busy with a spinning process the caller ran 97% of the tasks itself
/// (the woken helper waits for the spinner's time slice, longer than a
/// call lasts), paid to wake the helper on every call, and waited for it
/// 278 times, 127 µs each on average; on the idle machine it ran 56% of
/// the tasks. Counting calls that no helper joined as contention too (at
/// once, or after 8 in a row) made idle batch-128 runs 25-35% slower: a
/// helper parked through a penalty wakes too slowly to join the next calls.
struct Backoff {
    /// Nanoseconds since [`nanos_since_epoch`]'s epoch until which calls
    /// run serially.
    serial_until: AtomicU64,
    /// The current penalty, in nanoseconds.
    penalty: AtomicU64,
}

impl Backoff {
    /// How much longer than the caller's mean task a helper's task may
    /// take, beyond twice that mean, before the call counts as a stall.
    const STALL: Duration = Duration::from_micros(100);
    const MIN_PENALTY: u64 = 1_000_000;
    const MAX_PENALTY: u64 = 64_000_000;

    const fn new() -> Self {
        Backoff {
            serial_until: AtomicU64::new(0),
            penalty: AtomicU64::new(Self::MIN_PENALTY),
        }
    }

    /// Whether a call starting at `now` runs serially.
    fn serial(&self, now: Instant) -> bool {
        nanos_since_epoch(now) < self.serial_until.load(Ordering::Relaxed)
    }

    /// Updates the state after a parallel call that ended at `now`.
    fn observe(&self, call: Call, now: Instant) {
        let stalled = call.own_tasks > 0
            && call.wait > Self::STALL
            && call.longest_helper_task
                > call.work.saturating_mul(2) / u32::try_from(call.own_tasks).unwrap_or(u32::MAX)
                    + Self::STALL;
        if stalled {
            let penalty = self.penalty.load(Ordering::Relaxed);
            self.serial_until
                .fetch_max(nanos_since_epoch(now) + penalty, Ordering::Relaxed);
            self.penalty
                .store((penalty * 2).min(Self::MAX_PENALTY), Ordering::Relaxed);
        } else if call.helped {
            self.penalty.store(Self::MIN_PENALTY, Ordering::Relaxed);
        }
    }
}

/// Nanoseconds from the first call of this function (by any thread) to
/// `t`; 0 for earlier instants.
fn nanos_since_epoch(t: Instant) -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_tasks_runs_each_task_once_from_many_callers() {
        // several outside threads share the pool at once; every task of
        // every call runs exactly once, and the call returns only after
        std::thread::scope(|s| {
            for caller in 0..4 {
                s.spawn(move || {
                    for round in 0..50 {
                        let tasks = 1 + (caller * 7 + round) % 37;
                        let counts: Vec<AtomicUsize> =
                            (0..tasks).map(|_| AtomicUsize::new(0)).collect();
                        par_tasks(tasks, |i| {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }

    #[test]
    fn par_tasks_reraises_a_panicking_task() {
        let r = std::panic::catch_unwind(|| {
            par_tasks(16, |i| {
                if i == 11 {
                    panic!("task 11");
                }
            })
        });
        assert!(r.is_err());
        // the pool still works afterwards
        let sum = AtomicUsize::new(0);
        par_tasks(8, |i| {
            sum.fetch_add(i, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 28);
    }

    /// A call in which the caller ran `own` tasks in `work` µs and waited
    /// `wait` µs for helpers whose longest task took `longest` µs.
    fn call(own: usize, work: u64, wait: u64, longest: u64) -> Call {
        Call {
            own_tasks: own,
            helped: longest > 0,
            work: Duration::from_micros(work),
            wait: Duration::from_micros(wait),
            longest_helper_task: Duration::from_micros(longest),
        }
    }

    #[test]
    fn a_stall_makes_the_next_calls_serial_for_a_doubling_penalty() {
        let b = Backoff::new();
        nanos_since_epoch(Instant::now()); // the epoch precedes t0
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        assert!(!b.serial(t0));
        // no stall: a short wait; a helper that started late but took no
        // longer than the caller's tasks; one slower, within the margin; a
        // call no helper joined
        b.observe(call(2, 200, 99, 5000), t0);
        b.observe(call(1, 100, 400, 110), t0);
        b.observe(call(2, 400, 400, 500), t0);
        b.observe(call(4, 1000, 0, 0), t0);
        assert!(!b.serial(t0));
        // a stall: a helper's task took 300 µs against 100 µs: serial for 1 ms
        b.observe(call(2, 200, 200, 301), t0);
        assert!(b.serial(t0) && b.serial(ms(1) - Duration::from_micros(1)));
        assert!(!b.serial(ms(1)));
        // stalling again: 2 ms, then 4 ms
        b.observe(call(1, 100, 500, 600), ms(1));
        assert!(b.serial(ms(2)) && !b.serial(ms(3)));
        b.observe(call(1, 100, 500, 600), ms(3));
        assert!(b.serial(ms(6)) && !b.serial(ms(7)));
        // a call no helper joined leaves the penalty as it was; one the
        // helpers shared without a stall resets it
        b.observe(call(3, 100, 0, 0), ms(7));
        assert!(!b.serial(ms(7)));
        assert_eq!(b.penalty.load(Ordering::Relaxed), 8_000_000);
        b.observe(call(1, 100, 0, 100), ms(7));
        b.observe(call(1, 100, 500, 600), ms(8));
        assert!(b.serial(ms(8)) && !b.serial(ms(9)));
        // the penalty stops doubling at 64 ms
        for _ in 0..10 {
            b.observe(call(1, 100, 500, 600), ms(9));
        }
        assert_eq!(b.penalty.load(Ordering::Relaxed), Backoff::MAX_PENALTY);
        assert!(b.serial(ms(72)) && !b.serial(ms(73)));
    }

    #[test]
    fn serial_calls_run_every_task_on_the_caller_in_order() {
        // (other tests of this binary run serially meanwhile: only slower)
        BACKOFF.serial_until.store(u64::MAX, Ordering::Relaxed);
        let me = std::thread::current().id();
        let order = std::sync::Mutex::new(Vec::new());
        par_tasks(8, |i| {
            assert_eq!(std::thread::current().id(), me);
            order.lock().unwrap().push(i);
        });
        BACKOFF.serial_until.store(0, Ordering::Relaxed);
        assert_eq!(order.into_inner().unwrap(), (0..8).collect::<Vec<_>>());
    }
}
