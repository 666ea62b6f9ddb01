"""Attacks on the bridge's answers that are ready at once: a future is polled once on
the event loop's thread (GIL let go, no-op waker) while none of the loop's futures is in
flight on the runtime, and a ready answer is set in the loop's next pass. What must hold:
no lost wake-up, no starved task (every await yields), cancellation and dropped
awaitables leave no lock, exceptions keep their classes, loops in threads and a closed
loop stay correct (written by a fresh-context review of the change)."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading

import pytest

import bidlock
from bidlock import _native, get_bid_lock_manager


async def fast_path_on(native, posting: str = "probe") -> bool:
    """Whether the loop's futures are resolved at once (the loop's in_flight counter is
    back to 0): a status on the in-process store is then done after one pass of the loop
    (through the runtime it cannot be: its answer comes by the loop's socket later)."""
    fut = native.status("upwork", posting)
    await asyncio.sleep(0)
    done = fut.done()
    # Retrieve it either way (an exception never retrieved would be logged).
    if done:
        fut.result()
    else:
        fut.cancel()
    return done


async def settle(native, what: str, rounds: int = 400) -> None:
    """Waits (bounded) until the loop's in_flight counter is back to 0."""
    for _ in range(rounds):
        if await fast_path_on(native):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"the fast path never came back after {what}: in_flight stuck above 0")


# ---------------------------------------------------------------------------------------
# Starvation: every await of a bidlock call must yield to the event loop once.
# ---------------------------------------------------------------------------------------


async def holding_for_10ms(manager, posting: str) -> asyncio.Future:
    """A task that holds the posting's lock for 10 ms of asyncio work, once it holds it."""
    taken = asyncio.Event()

    async def holder():
        async with manager.with_lock("upwork", posting, timeout=1):
            taken.set()
            await asyncio.sleep(0.01)  # 10 ms of work, then release

    task = asyncio.ensure_future(holder())
    await asyncio.wait_for(taken.wait(), 5)
    assert (await manager.status("upwork", posting)).holder is not None
    return task


async def test_a_try_once_retry_loop_lets_the_holder_run_and_release():
    """`timeout=0` is documented as "try once". A task that retries a try-once acquire
    in a loop must let the task holding the lock run (awaiting never blocks the event
    loop). Were an answer ready at once set before the await, nothing would yield: the
    holder, doing 10 ms of work (`asyncio.sleep(0.01)`), would never run again."""
    manager = bidlock.BidLockManager()
    task = await holding_for_10ms(manager, "spin")
    got = False
    tries = 0
    for tries in range(1, 20001):
        if await manager.acquire_lock("upwork", "spin", timeout=0):
            got = True
            break
    # Clean up before asserting, so a failure leaves nothing behind.
    await asyncio.wait_for(task, 5)
    assert got, (
        f"{tries} try-once acquires never let the holder (10 ms of asyncio.sleep) run and "
        "release: awaiting a bidlock call no longer yields to the event loop"
    )
    assert await manager.release_lock("upwork", "spin")
    await manager.close()


async def test_polling_status_until_free_lets_the_holder_run():
    """A task that polls `status()` until the posting is free must let the holder run."""
    manager = bidlock.BidLockManager()
    task = await holding_for_10ms(manager, "poll")
    free = False
    polls = 0
    for polls in range(1, 20001):
        if (await manager.status("upwork", "poll")).holder is None:
            free = True
            break
    await asyncio.wait_for(task, 5)
    assert free, f"{polls} status polls never let the holder run and release"
    await manager.close()


async def test_a_wait_for_timeout_fires_around_a_loop_of_bidlock_calls():
    """`asyncio.wait_for(..., 0.05)` around a loop of bidlock calls (each awaited) must be
    able to fire: the timeout is a callback of the loop, which needs the task to yield."""
    manager = bidlock.BidLockManager()
    calls = 0

    async def busy():
        nonlocal calls
        for calls in range(1, 50001):
            await manager.acquire_lock("upwork", "busy", timeout=0)
            await manager.release_lock("upwork", "busy")
        return "finished"

    try:
        result = await asyncio.wait_for(busy(), 0.05)
    except asyncio.TimeoutError:
        result = "timed out"
    assert result == "timed out", (
        f"wait_for(0.05) never fired over {calls} acquire/release pairs (the loop never ran)"
    )
    await manager.close()


# ---------------------------------------------------------------------------------------
# The in_flight counter comes back to 0.
# ---------------------------------------------------------------------------------------


async def test_the_fast_path_comes_back_after_waits_cancellations_timeouts_and_panics():
    manager = bidlock.BidLockManager()
    native = manager._native
    assert await fast_path_on(native)
    guard = await native.acquire("upwork", "busy", 5.0, None, None)
    # A cancelled wait.
    waiting = asyncio.ensure_future(manager.acquire_lock("upwork", "busy", timeout=5))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await settle(native, "a cancelled wait")
    # A wait that wait_for gives up on.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(manager.acquire_lock("upwork", "busy", timeout=5), 0.05)
    await settle(native, "wait_for's timeout")
    # A wait that runs out by itself.
    assert await manager.acquire_lock("upwork", "busy", timeout=0.05) is False
    await settle(native, "a wait that ran out")
    # A panic in the runtime and one at once.
    with pytest.raises(bidlock.RustPanic):
        await _native._panic_in_runtime("p1")
    with pytest.raises(bidlock.RustPanic):
        await _native._panic_at_once("p2")
    await settle(native, "panics")
    # lost() awaited, then the guard released: it resolves False and counts out.
    lost = asyncio.ensure_future(guard.lost())
    await asyncio.sleep(0.01)
    assert not await fast_path_on(native), "lost() is out on the runtime"
    assert await guard.release() is True
    assert await asyncio.wait_for(lost, 5) is False
    await settle(native, "lost() resolved")
    await manager.close()


async def test_a_waiting_acquire_dropped_unawaited_waits_until_served_then_lets_go():
    """Stated in docs/PYTHON.md: an acquire whose awaitable is dropped unawaited is not
    cancelled (only `cancel()` stops a wait); it keeps its place until it is served or its
    timeout ends, and a lock it is served is let go at once, so the waiter behind it is
    served next. Meanwhile the loop's answers go through the runtime (the fast path is
    off while a future of the loop is out), and come back once it ends."""
    manager = bidlock.BidLockManager()
    native = manager._native
    guard = await native.acquire("upwork", "dropped", 5.0, None, None)
    fut = native.acquire("upwork", "dropped", 30.0, None, None)
    assert not fut.done()
    del fut
    gc.collect()
    behind = asyncio.ensure_future(native.acquire("upwork", "dropped", 5.0, None, None))
    await asyncio.sleep(0.05)
    assert await guard.release() is True
    second = await asyncio.wait_for(behind, 5)
    assert second.holder_id != guard.holder_id
    assert await second.release() is True
    await settle(native, "a dropped waiter that was served and let go")
    await manager.close()


async def test_the_fast_path_comes_back_after_many_concurrent_tasks(backend):
    manager = await get_bid_lock_manager()
    inside = 0
    most = 0

    async def one(i):
        nonlocal inside, most
        async with manager.with_lock("upwork", "hot", timeout=10):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(40))), 30)
    assert most == 1
    if backend == "memory":
        await settle(manager._native, "40 tasks")


# ---------------------------------------------------------------------------------------
# Guards in resolved futures that nobody awaits.
# ---------------------------------------------------------------------------------------


async def test_a_guard_in_a_resolved_future_never_awaited_is_released_when_collected(backend):
    manager = await get_bid_lock_manager()
    native = manager._native
    fut = native.acquire("upwork", "orphan", 5.0, None, None)
    if backend == "memory":
        await asyncio.sleep(0)
        assert fut.done(), "memory acquire of a free lock resolves in the next pass"
    else:
        await asyncio.wait_for(asyncio.wait([fut]), 5)
    del fut
    gc.collect()
    assert await manager.acquire_lock("upwork", "orphan", timeout=3), "the orphan guard kept the lock"
    assert await manager.release_lock("upwork", "orphan")


async def test_a_task_cancelled_before_awaiting_its_resolved_acquire_leaves_no_lock(backend):
    manager = await get_bid_lock_manager()
    native = manager._native
    started = asyncio.Event()

    async def take():
        fut = native.acquire("upwork", "cancelled-early", 5.0, None, None)
        started.set()
        await asyncio.sleep(10)
        await fut  # never reached

    task = asyncio.ensure_future(take())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del task
    gc.collect()
    assert await manager.acquire_lock("upwork", "cancelled-early", timeout=3)
    assert await manager.release_lock("upwork", "cancelled-early")


async def test_wait_for_zero_around_acquire_lock_leaves_no_lock(backend):
    manager = await get_bid_lock_manager()
    try:
        got = await asyncio.wait_for(manager.acquire_lock("upwork", "zero", timeout=5), 0)
    except asyncio.TimeoutError:
        got = None
    status = await manager.status("upwork", "zero")
    if got:
        assert status.holder is not None
        assert await manager.release_lock("upwork", "zero")
    else:
        assert status.holder is None, f"a timed-out acquire left a lock: {status}"


async def test_wait_for_zero_around_with_lock_leaves_no_lock(backend):
    manager = await get_bid_lock_manager()
    ctx = manager.with_lock("upwork", "zero-ctx", timeout=5)
    try:
        lease = await asyncio.wait_for(ctx.__aenter__(), 0)
    except asyncio.TimeoutError:
        lease = None
    if lease is not None:
        await ctx.__aexit__(None, None, None)
    assert (await manager.status("upwork", "zero-ctx")).holder is None


# ---------------------------------------------------------------------------------------
# Wake-ups: a waiter whose first poll was on the loop thread with a no-op waker.
# ---------------------------------------------------------------------------------------


async def test_a_waiter_first_polled_at_once_is_woken_by_a_release_at_once(backend):
    """The waiter's first poll (no-op waker) finds the lock taken; the release, made when
    the loop is otherwise idle, must still wake it."""
    manager = await get_bid_lock_manager()
    native = manager._native
    for i in range(20):
        guard = await native.acquire("upwork", f"wake-{i}", 5.0, None, None)
        waiter = native.acquire("upwork", f"wake-{i}", 5.0, None, None)
        assert not waiter.done()
        assert await guard.release() is True
        second = await asyncio.wait_for(waiter, 5)
        assert second.fencing_token > guard.fencing_token
        assert await second.release() is True


async def test_a_cancelled_front_waiter_passes_the_release_on(backend):
    """The first waiter joins the queue at its first poll on the loop thread and is
    cancelled before its batch left: the release must reach the waiter behind it."""
    manager = await get_bid_lock_manager()
    native = manager._native
    guard = await native.acquire("upwork", "front", 5.0, None, None)
    first = native.acquire("upwork", "front", 5.0, None, None)
    second = asyncio.ensure_future(manager.acquire_lock("upwork", "front", timeout=5))
    first.cancel()
    await asyncio.sleep(0.02)
    assert await guard.release() is True
    assert await asyncio.wait_for(second, 5) is True
    assert await manager.release_lock("upwork", "front")


async def test_lost_resolves_when_the_lock_is_removed_redis(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "lose-me", ttl=1) as lease:
        lost = lease.lost()
        await asyncio.sleep(0.05)
        redis_client.delete(lease.key)
        assert await asyncio.wait_for(lost, 5) is True
        assert lease.is_lost


async def test_lost_after_release_resolves_false_at_once(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "released") as lease:
        pass
    assert await asyncio.wait_for(lease.lost(), 5) is False


async def test_exceptions_keep_their_classes_at_once(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "held"):
        with pytest.raises(bidlock.LockTimeoutError):
            async with manager.with_lock("upwork", "held", timeout=0):
                pass
        assert await manager.acquire_lock("upwork", "held", timeout=0) is False
    async with manager.bid_once("upwork", "done-once"):
        pass
    with pytest.raises(bidlock.AlreadyDoneError):
        async with manager.bid_once("upwork", "done-once"):
            pass
    with pytest.raises(ValueError):
        await manager.acquire_lock("upwork", "", timeout=0)
    await manager.close()
    with pytest.raises(bidlock.ManagerClosedError):
        await manager.acquire_lock("upwork", "x", timeout=0)


async def test_order_within_one_task_unawaited_release_then_acquire(backend):
    """A task that starts a release and then an acquire of the same posting, before
    awaiting either, gets the lock (the release runs first)."""
    manager = await get_bid_lock_manager()
    native = manager._native
    for i in range(10):
        guard = await native.acquire("upwork", f"order-{i}", 5.0, None, None)
        released = guard.release()
        again = native.acquire("upwork", f"order-{i}", 5.0, None, None)
        assert await asyncio.wait_for(released, 5) is True
        g2 = await asyncio.wait_for(again, 5)
        assert g2.fencing_token > guard.fencing_token
        assert await g2.release() is True


# ---------------------------------------------------------------------------------------
# Several loops in threads sharing one manager; logging at DEBUG from every thread.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_loops_in_threads_sharing_one_manager_exclude_and_progress(store, request):
    if store == "memory":
        manager = bidlock.BidLockManager()
    else:
        server = request.getfixturevalue("redis_server")
        server.client.flushdb()
        manager = bidlock.RedisBidLockManager(redis_url=server.url)
    state = {"inside": 0, "most": 0, "done": 0}
    mutex = threading.Lock()
    errors = []

    async def worker(n):
        for _ in range(60):
            async with manager.with_lock("upwork", "threads", timeout=10):
                with mutex:
                    state["inside"] += 1
                    state["most"] = max(state["most"], state["inside"])
                await asyncio.sleep(0)
                with mutex:
                    state["inside"] -= 1
            with mutex:
                state["done"] += 1

    def run(n):
        try:
            asyncio.run(asyncio.wait_for(worker(n), 20))
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread's loop hung"
    assert errors == []
    assert state["most"] == 1
    assert state["done"] == 240


SCRIPT = r"""
import asyncio, logging, sys, threading, time
import bidlock

class Slow(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0
    def emit(self, record):
        self.count += 1
        record.getMessage()
        if self.count % 7 == 0:
            time.sleep(0.0005)  # lets the GIL go while holding the handler's lock

handler = Slow()
log = logging.getLogger("bidlock")
log.addHandler(handler)
log.setLevel(logging.DEBUG)

manager = bidlock.BidLockManager()
errors = []

async def worker(n):
    for i in range(60):
        async with manager.with_lock("upwork", f"log-{i % 3}", timeout=10) as lease:
            _ = lease.is_held, lease.expires_in
            manager.get_metrics()
            await asyncio.sleep(0)
        await manager.status("upwork", f"log-{i % 3}")

def run(n):
    try:
        asyncio.run(worker(n))
    except BaseException as e:
        errors.append(repr(e))

threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(4)]
for t in threads: t.start()
# The main thread holds the GIL in bursts too, and reads the guards' state.
deadline = time.monotonic() + 30
while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
    manager.get_metrics()
    sum(range(20000))
    time.sleep(0.001)
alive = [t for t in threads if t.is_alive()]
print("ALIVE", len(alive), "ERRORS", errors, "RECORDS", handler.count, flush=True)
sys.stdout.flush()
import os
os._exit(0 if not alive and not errors and handler.count > 0 else 3)
"""


def test_debug_logging_from_every_thread_does_not_deadlock_the_loops():
    """Runtime threads attach to Python to log while the loop threads poll at once with
    the GIL let go: no deadlock, every worker finishes (in a child process, so a deadlock
    fails the test instead of hanging the run)."""
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the child deadlocked: {e.stdout!r} {e.stderr!r}")
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])


def test_a_closed_loop_releases_what_its_pending_futures_held():
    """A try-once acquire (run to its end on cancel) resolved at once in a loop that is
    then closed with the future never awaited: the lock must not stay held by the
    closed loop's leftovers once they are dropped."""
    manager = bidlock.BidLockManager()
    native = manager._native
    loop = asyncio.new_event_loop()
    leftovers = []

    async def start():
        leftovers.append(native.acquire("upwork", "closed-loop", 0.0, None, None))

    loop.run_until_complete(start())
    loop.close()
    assert leftovers[0].done()
    leftovers.clear()
    del loop
    gc.collect()

    async def check():
        return await manager.acquire_lock("upwork", "closed-loop", timeout=3)

    assert asyncio.run(check()) is True


async def test_a_dropped_waiter_does_not_delay_the_real_waiter_behind_it():
    """A waiting acquire whose awaitable was dropped still waits (see above) and is handed
    the lock first; the real waiter behind it must still be served promptly."""
    manager = bidlock.BidLockManager()
    native = manager._native
    guard = await native.acquire("upwork", "ghost", 5.0, None, None)
    ghost = native.acquire("upwork", "ghost", 30.0, None, None)
    del ghost
    gc.collect()
    real = asyncio.ensure_future(manager.acquire_lock("upwork", "ghost", timeout=5))
    await asyncio.sleep(0.02)
    assert await guard.release() is True
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await asyncio.wait_for(real, 5) is True
    assert loop.time() - t0 < 1.0, f"the real waiter waited {loop.time() - t0:.2f}s behind a ghost"
    assert await manager.release_lock("upwork", "ghost")
    await manager.close()


async def test_cancelling_the_body_of_with_lock_releases_at_once(backend):
    manager = await get_bid_lock_manager()
    entered = asyncio.Event()

    async def body():
        async with manager.with_lock("upwork", "cancel-body", timeout=5):
            entered.set()
            await asyncio.sleep(30)

    for _ in range(5):
        entered.clear()
        task = asyncio.ensure_future(body())
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        assert (await manager.status("upwork", "cancel-body")).holder is None
        assert await manager.acquire_lock("upwork", "cancel-body", timeout=0)
        assert await manager.release_lock("upwork", "cancel-body")
