//! Keeps the runtime's worker awake for a moment while Python calls are out.
//!
//! A Redis call from Python crosses threads twice around its round trip: the event loop
//! hands it to the runtime's worker, and the worker hands the answer back. When the
//! worker has just gone to sleep, each crossing also wakes a sleeping thread (on an idle
//! virtual machine, waking a halted vCPU costs tens of µs, more than the round trip on
//! loopback), and the reply itself wakes it once more. While calls are out, a small task
//! here keeps the worker polling instead: it yields, and tokio polls its I/O driver
//! without blocking before it runs the task again (`park_yield`). Then a request, a reply
//! and the next call find the worker awake.
//!
//! Bounded: it spins only while at most [`MAX_OUT`] calls are out and something happened
//! within [`BUSY_WINDOW`], or for [`LINGER`] after the last event (a task's next call
//! usually follows within it), and stops by itself; an idle process, a call that waits
//! long (a queued acquire) or a busy worker costs nothing more (`test_idle_costs_nothing.py`).
//! Each pass also yields the core to any thread ready to run (`sched_yield`), so a Redis
//! server on the same machine is not kept waiting by it. At most one spinner runs.
//!
//! Measured (`bench/peers`, one task, 3 s runs interleaved with redis-py's `Lock`, four
//! sessions of three while it was tuned, one redis-server on loopback, 2 shared cores,
//! load 0.7-2.5): 2,619-5,034 `with_lock` pairs/s with a spinner against 1,434-3,067
//! without, redis-py 2,038-3,050; in every run it led the run without it of its session.
//! Client CPU per pair 279-451 µs with it, 231-393 without, redis-py 278-416 (the
//! wake-ups it saves cost CPU too). At 32 tasks it does not run (more than
//! [`MAX_OUT`] out); with it running there, throughput did not change.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the spinner keeps the worker awake after the last event while calls are
/// out: longer than a round trip to Redis on a local network.
const BUSY_WINDOW: Duration = Duration::from_micros(1_000);

/// Spinning pays while few calls are out (a task's next call waits for its answer);
/// with more out, the worker is seldom idle and each pass of the spinner only costs.
const MAX_OUT: usize = 4;

/// How long it stays awake after the last event when nothing is out: the gap between
/// one call's answer and the same task's next call (an acquire and its release).
const LINGER: Duration = Duration::from_micros(100);

static SPINNING: AtomicBool = AtomicBool::new(false);
static OUT: AtomicUsize = AtomicUsize::new(0);
/// Nanoseconds from [`epoch`] to the last event (a call sent or answered).
static LAST_EVENT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn now_nanos() -> u64 {
    nanos(epoch().elapsed())
}

/// A call leaves for the runtime: counted out, and the worker kept awake.
pub(crate) fn call_sent() {
    let out = OUT.fetch_add(1, Ordering::AcqRel) + 1;
    LAST_EVENT.store(now_nanos(), Ordering::Release);
    if out <= MAX_OUT && !SPINNING.swap(true, Ordering::AcqRel) {
        pyo3_async_runtimes::tokio::get_runtime().spawn(spin());
    }
}

/// A call's answer is on its way to its loop.
pub(crate) fn call_answered() {
    OUT.fetch_sub(1, Ordering::AcqRel);
    LAST_EVENT.store(now_nanos(), Ordering::Release);
}

async fn spin() {
    let busy = nanos(BUSY_WINDOW);
    let linger = nanos(LINGER);
    loop {
        // Another thread ready to run on this core (the Redis server on the same
        // machine, the event loop) goes first: spinning must not delay the answer.
        std::thread::yield_now();
        tokio::task::yield_now().await;
        let seen = LAST_EVENT.load(Ordering::Acquire);
        let out = OUT.load(Ordering::Acquire);
        let window = if out > 0 { busy } else { linger };
        if out <= MAX_OUT && now_nanos().saturating_sub(seen) < window {
            continue;
        }
        SPINNING.store(false, Ordering::Release);
        // A call sent after the check found the flag still set and started no spinner:
        // go on for it, unless another spinner started meanwhile.
        if LAST_EVENT.load(Ordering::Acquire) == seen
            || OUT.load(Ordering::Acquire) > MAX_OUT
            || SPINNING.swap(true, Ordering::AcqRel)
        {
            return;
        }
    }
}
