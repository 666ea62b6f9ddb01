"""`with_lock`: released on every exit, exclusive under contention, tokens increasing,
loss reported, safe across event loops and threads."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from bidlock import LockLostError, LockTimeoutError, get_bid_lock_manager



async def held(manager, posting="job_123"):
    return (await manager.status("upwork", posting)).held


async def test_released_on_exception(backend):
    manager = await get_bid_lock_manager()
    with pytest.raises(RuntimeError, match="bid failed"):
        async with manager.with_lock("upwork", "job_123"):
            assert await held(manager)
            raise RuntimeError("bid failed")
    assert not await held(manager)
    assert manager.get_metrics()["releases"] == 1


async def test_released_on_task_cancellation(backend):
    manager = await get_bid_lock_manager()
    inside = asyncio.Event()

    async def bid():
        async with manager.with_lock("upwork", "job_123"):
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(bid())
    await asyncio.wait_for(inside.wait(), 10)
    assert await held(manager)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not await held(manager)


async def test_released_when_an_outer_timeout_expires(backend):
    manager = await get_bid_lock_manager()

    async def slow_bid():
        async with manager.with_lock("upwork", "job_123"):
            await asyncio.sleep(60)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(slow_bid(), 0.2)
    assert not await held(manager)


async def test_lock_timeout_raises_and_leaves_nothing_behind(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123") as first:
        with pytest.raises(LockTimeoutError) as caught:
            async with manager.with_lock("upwork", "job_123", timeout=0.2):
                pytest.fail("the body ran without the lock")
        assert isinstance(caught.value, TimeoutError)
        assert "bid_lock:upwork:job_123" in str(caught.value)
        # Rounded as people write durations: "within 200 ms", not "within 200.912345ms".
        assert re.search(r"not acquired within \d+ ms \(held by ", str(caught.value)), str(caught.value)
        assert (await manager.status("upwork", "job_123")).holder == first.holder_id
    assert not await held(manager)
    assert manager.get_metrics()["lock_timeouts"] == 1


def test_released_on_keyboard_interrupt_in_the_body(redis_env, redis_client):
    """KeyboardInterrupt raised inside the block, on a loop of its own thread."""
    outcome = {}

    async def interrupted():
        manager = await get_bid_lock_manager()
        async with manager.with_lock("upwork", "job_123"):
            outcome["held"] = redis_client.get("bid_lock:upwork:job_123")
            raise KeyboardInterrupt

    def run():
        try:
            asyncio.run(interrupted())
        except KeyboardInterrupt:
            outcome["interrupted"] = True

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert outcome == {"held": outcome["held"], "interrupted": True} and outcome["held"]
    assert redis_client.get("bid_lock:upwork:job_123") is None


SIGINT_SCRIPT = """
import asyncio, signal, sys
from bidlock import get_bid_lock_manager

# Ctrl-C as a terminal delivers it, even when this test runs under a launcher that
# started it with SIGINT ignored (a background job of a non-interactive shell): Python
# then installs no KeyboardInterrupt handler, and asyncio.run none of its own.
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main():
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        print("held", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""


def test_released_on_ctrl_c(redis_env, redis_client):
    """A real SIGINT to a process holding the lock (ttl 300 s): the key is deleted, not
    left to expire."""
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert redis_client.pttl("bid_lock:upwork:job_123") > 200_000
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in err
    assert redis_client.exists("bid_lock:upwork:job_123") == 0


async def test_twenty_tasks_on_one_posting_never_overlap(backend):
    manager = await get_bid_lock_manager()
    inside = 0
    overlaps = 0
    tokens = []

    async def bidder(n):
        nonlocal inside, overlaps
        for _ in range(5):
            async with manager.with_lock("upwork", "hot", timeout=30) as lease:
                inside += 1
                overlaps += inside > 1
                tokens.append(lease.fencing_token)
                await asyncio.sleep(0.001)
                inside -= 1

    await asyncio.wait_for(asyncio.gather(*(bidder(n) for n in range(20))), 120)
    assert overlaps == 0
    assert len(tokens) == 100
    assert tokens == sorted(tokens) and len(set(tokens)) == 100, "tokens increase in holding order"
    m = manager.get_metrics()
    assert m["lock_successes"] == 100 and m["releases"] == 100 and m["lock_timeouts"] == 0


async def test_tokens_increase_across_postings(backend):
    manager = await get_bid_lock_manager()
    tokens = []
    for i in range(10):
        async with manager.with_lock("upwork", f"job_{i % 3}") as lease:
            assert isinstance(lease.fencing_token, int)
            tokens.append(lease.fencing_token)
    assert all(a < b for a, b in zip(tokens, tokens[1:]))


async def test_lease_reports_loss(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123", ttl=0.3) as lease:
        lease.ensure_held()
        assert lease.is_held and not lease.is_lost
        # Someone deletes the lock (an operator's FLUSHDB, a data-losing restart).
        assert redis_client.delete("bid_lock:upwork:job_123") == 1
        assert await asyncio.wait_for(lease.lost(), 10) is True
        assert lease.is_lost and lease.lost_reason
        with pytest.raises(LockLostError, match="bid_lock:upwork:job_123"):
            lease.ensure_held()
    assert manager.get_metrics()["locks_lost"] == 1


async def test_lease_renewed_while_held(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123", ttl=0.3) as lease:
        await asyncio.sleep(1.0)  # more than three ttls: only renewal keeps it
        assert not lease.is_lost
        assert redis_client.get("bid_lock:upwork:job_123").decode() == lease.holder_id
    assert manager.get_metrics()["extensions"] >= 2


async def test_lost_awaitable_ends_when_released(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123") as lease:
        lost = asyncio.ensure_future(lease.lost())
        await asyncio.sleep(0)
        assert not lost.done()
    assert await asyncio.wait_for(lost, 10) is False
    with pytest.raises(LockLostError, match="released"):
        lease.ensure_held()


def test_one_manager_from_several_event_loops_and_threads(backend):
    """The process-wide manager is shared by loops in 4 threads; they exclude each other."""
    state = {"inside": 0, "overlaps": 0, "sections": 0, "managers": set()}
    guard = threading.Lock()

    async def worker():
        manager = await get_bid_lock_manager()
        state["managers"].add(id(manager))
        for _ in range(10):
            async with manager.with_lock("upwork", "shared", timeout=30):
                with guard:
                    state["inside"] += 1
                    state["overlaps"] += state["inside"] > 1
                await asyncio.sleep(0.001)
                with guard:
                    state["inside"] -= 1
                    state["sections"] += 1

    threads = [threading.Thread(target=asyncio.run, args=(worker(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert state["sections"] == 40 and state["overlaps"] == 0
    assert len(state["managers"]) == 1


async def test_the_event_loop_keeps_running_while_waiting(backend):
    """Awaiting a busy lock does not block the loop: a ticker keeps ticking."""
    manager = await get_bid_lock_manager()
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    async with manager.with_lock("upwork", "job_123"):
        with pytest.raises(LockTimeoutError):
            async with manager.with_lock("upwork", "job_123", timeout=0.5):
                pass
    t.cancel()
    assert ticks >= 10
