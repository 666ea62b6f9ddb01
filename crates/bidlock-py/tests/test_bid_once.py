"""`bid_once`: at most one successful bid per posting, as a context manager and as a
decorator."""

from __future__ import annotations

import asyncio

import pytest

from bidlock import AlreadyDoneError, LockTimeoutError, get_bid_lock_manager


async def test_context_manager_places_once(backend):
    manager = await get_bid_lock_manager()
    async with manager.bid_once("upwork", "job_123") as bid:
        assert bid.outcome == "pending" and bid.is_held
        token = bid.fencing_token
    assert bid.outcome == "placed" and bid.record_error is None
    status = await manager.status("upwork", "job_123")
    assert not status.held and status.done.startswith(f"{token} ")
    with pytest.raises(AlreadyDoneError, match="bid_lock:upwork:job_123"):
        async with manager.bid_once("upwork", "job_123"):
            pytest.fail("ran twice")
    assert manager.get_metrics()["completions"] == 1


async def test_failed_bid_records_nothing(backend):
    manager = await get_bid_lock_manager()
    with pytest.raises(ValueError, match="marketplace said no"):
        async with manager.bid_once("upwork", "job_123") as bid:
            raise ValueError("marketplace said no")
    assert bid.outcome == "failed"
    status = await manager.status("upwork", "job_123")
    assert status.done is None and not status.held
    async with manager.bid_once("upwork", "job_123") as retry:
        pass
    assert retry.outcome == "placed"


async def test_cancelled_bid_records_nothing(backend):
    manager = await get_bid_lock_manager()
    entered = asyncio.Event()

    async def bid():
        async with manager.bid_once("upwork", "job_123"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(bid())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = await manager.status("upwork", "job_123")
    assert status.done is None and not status.held


async def test_fixed_key_decorator(backend):
    manager = await get_bid_lock_manager()
    calls = []

    @manager.bid_once("upwork", "job_123")
    async def place():
        calls.append(1)
        return "bid-1"

    assert await place() == "bid-1"
    with pytest.raises(AlreadyDoneError):
        await place()
    assert calls == [1]


async def test_decorator_takes_ids_from_arguments(backend):
    manager = await get_bid_lock_manager()
    placed = []

    @manager.bid_once(timeout=5.0)
    async def place_bid(posting_id, marketplace_id, amount=10):
        placed.append((marketplace_id, posting_id, amount))
        return amount

    assert await place_bid("job_1", "upwork") == 10
    assert await place_bid(marketplace_id="fiverr", posting_id="job_1", amount=7) == 7
    with pytest.raises(AlreadyDoneError):
        await place_bid("job_1", "upwork", amount=99)
    assert placed == [("upwork", "job_1", 10), ("fiverr", "job_1", 7)]


async def test_concurrent_bid_once_runs_the_body_once(backend):
    manager = await get_bid_lock_manager()
    ran = []
    outcomes = []

    async def contender(n):
        try:
            async with manager.bid_once("upwork", "job_123", timeout=30):
                ran.append(n)
                await asyncio.sleep(0.01)
            outcomes.append("placed")
        except AlreadyDoneError:
            outcomes.append("already done")

    await asyncio.wait_for(asyncio.gather(*(contender(n) for n in range(10))), 60)
    assert len(ran) == 1
    assert sorted(outcomes) == ["already done"] * 9 + ["placed"]


async def test_clear_done_allows_another_bid(backend):
    manager = await get_bid_lock_manager()
    async with manager.bid_once("upwork", "job_123"):
        pass
    assert await manager.clear_done("upwork", "job_123") is True
    assert await manager.clear_done("upwork", "job_123") is False
    async with manager.bid_once("upwork", "job_123") as again:
        pass
    assert again.outcome == "placed"


async def test_timeout_while_another_holds(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        with pytest.raises(LockTimeoutError):
            async with manager.bid_once("upwork", "job_123", timeout=0.1):
                pytest.fail("ran without the lock")
