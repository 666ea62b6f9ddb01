"""The bridge between asyncio and the Rust runtime: a panic in Rust reaches the task that
awaited it and no other, results reach every loop, and a cancelled wait stops."""

from __future__ import annotations

import asyncio

import pytest

import bidlock
from bidlock import _native, get_bid_lock_manager


async def test_a_panic_raises_in_its_own_task_and_spares_the_batch(backend):
    manager = await get_bid_lock_manager()
    native = manager._native
    # Started in one loop iteration, these leave for the runtime as one batch, driven by
    # one runtime task: the panic must not take the others down with it.
    before = [native.status("upwork", f"job_{i}") for i in range(10)]
    boom = _native._panic_in_runtime("boom in the runtime")
    after = [native.acquire_lock("upwork", f"job_{i}", 5.0) for i in range(10)]
    results = await asyncio.wait_for(asyncio.gather(*before, boom, *after, return_exceptions=True), 30)
    panic = results[10]
    assert isinstance(panic, bidlock.RustPanic) and not isinstance(panic, bidlock.LockError)
    assert "rust future panicked: boom in the runtime" in str(panic)
    assert all(isinstance(r, dict) and r["holder"] is None for r in results[:10]), results[:10]
    assert results[11:] == [True] * 10
    # The loop and the manager go on working.
    async with manager.with_lock("upwork", "after-the-panic") as lease:
        assert lease.is_held


async def test_panics_in_many_tasks_each_reach_their_own(backend):
    manager = await get_bid_lock_manager()
    futures = [_native._panic_in_runtime(f"panic {i}") for i in range(5)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [str(r) for r in results] == [f"rust future panicked: panic {i}" for i in range(5)]
    assert await manager.acquire_lock("upwork", "job_1", timeout=1)


async def test_a_panic_on_the_first_poll_raises_in_its_own_task(backend):
    """A future is polled once on the caller's thread before it goes to the runtime: a
    panic there is the same `RustPanic`, raised when awaited, and nothing else stops."""
    manager = await get_bid_lock_manager()
    results = await asyncio.gather(
        _native._panic_at_once("boom at once"),
        manager.acquire_lock("upwork", "job_1", timeout=1),
        return_exceptions=True,
    )
    assert isinstance(results[0], bidlock.RustPanic), results
    assert str(results[0]) == "rust future panicked: boom at once"
    assert results[1] is True


async def test_an_answer_ready_at_once_is_set_in_the_next_pass_of_the_loop():
    """On the in-process store nothing waits: the answer is set in the loop's next pass
    (no runtime task, no wake-up from another thread; an await still yields once), unless
    another of the loop's futures is out on the runtime; a contended acquire still waits."""
    manager = bidlock.BidLockManager()
    native = manager._native
    taken = native.acquire("upwork", "job_9", 5.0, None, None)
    assert not taken.done()  # an await yields to the loop once, as any I/O does
    await asyncio.sleep(0)
    assert taken.done()
    guard = taken.result()
    waiting = native.acquire("upwork", "job_9", 5.0, None, None)
    # While a future of the loop is out on the runtime, the others go there too: one
    # pass of the loop is not enough for the runtime's answer to come back.
    status = native.status("upwork", "job_8")
    await asyncio.sleep(0)
    assert not waiting.done() and not status.done()
    released = guard.release()
    assert await released is True
    second = await asyncio.wait_for(waiting, 5)
    assert second.fencing_token > guard.fencing_token
    assert (await status)["holder"] is None
    again = native.status("upwork", "job_8")
    await asyncio.sleep(0)
    assert again.done()
    assert await second.release() is True
    await manager.close()


async def test_cancelling_a_wait_stops_it_and_leaves_the_lock_alone(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123") as first:
        waiter = asyncio.ensure_future(manager.acquire_lock("upwork", "job_123", timeout=30))
        await asyncio.sleep(0.1)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (await manager.status("upwork", "job_123")).holder == first.holder_id
    # The cancelled wait did not take the lock after the release.
    await asyncio.sleep(0.1)
    assert not (await manager.status("upwork", "job_123")).held


def test_results_reach_a_loop_that_takes_no_attributes(backend):
    """A loop without a __dict__ (as uvloop's C loop) keeps its inbox in a side table."""

    class NoAttributeLoop(asyncio.SelectorEventLoop):
        def __setattr__(self, name, value):
            if name == "_bidlock_inbox":
                raise AttributeError(name)
            super().__setattr__(name, value)

    async def work():
        manager = await get_bid_lock_manager()
        async with manager.with_lock("upwork", "job_123") as lease:
            return lease.fencing_token

    loop = NoAttributeLoop()
    try:
        assert loop.run_until_complete(work()) > 0
        assert not hasattr(loop, "_bidlock_inbox")
    finally:
        loop.close()
