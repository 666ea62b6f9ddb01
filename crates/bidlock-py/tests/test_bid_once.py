"""`bid_once`: at most one successful bid per posting, as a context manager and as a
decorator, and the outcome each form reports (Rust's `BidOutcome`)."""

from __future__ import annotations

import asyncio
import typing

import pytest

from bidlock import AlreadyDoneError, BidOutcome, LockTimeoutError, RedisBidLockManager, get_bid_lock_manager
from conftest import RedisServer


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
    assert bid.outcome == "failed" and not bid.is_placed and not bid.is_recorded
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

    bid = await place()
    assert bid.value == "bid-1" and bid.outcome == "placed" and bid.is_recorded
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

    assert (await place_bid("job_1", "upwork")).value == 10
    assert (await place_bid(marketplace_id="fiverr", posting_id="job_1", amount=7)).value == 7
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


# The outcomes beyond "placed", each forced for real: another client takes the lock
# before the block ends, or the Redis server dies before the record is written.

KEY = "bid_lock:upwork:job_123"


def take_the_lock_away(redis_client):
    """What another client does when the lease has lapsed: the key is gone, then it is
    someone else's."""
    assert redis_client.delete(KEY) == 1
    assert redis_client.set(KEY, "intruder", px=60_000, nx=True)


async def test_a_bid_whose_lock_was_taken_meanwhile_is_placed_after_loss(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    async with manager.bid_once("upwork", "job_123") as bid:
        take_the_lock_away(redis_client)
    assert bid.outcome == "placed_after_loss"
    assert bid.is_recorded and bid.is_placed and bid.record_error is None
    assert bid.is_lost
    # Recorded all the same, and the other holder's lock is left alone.
    status = await manager.status("upwork", "job_123")
    assert status.done.startswith(f"{bid.fencing_token} ") and status.holder == "intruder"
    redis_client.delete(KEY)
    with pytest.raises(AlreadyDoneError):
        async with manager.bid_once("upwork", "job_123"):
            pytest.fail("ran after a recorded bid")


async def test_the_decorator_reports_placed_after_loss(redis_env, redis_client):
    manager = await get_bid_lock_manager()

    @manager.bid_once()
    async def place_bid(marketplace_id, posting_id):
        take_the_lock_away(redis_client)
        return "sent"

    bid = await place_bid("upwork", "job_123")
    assert bid.outcome == "placed_after_loss" and bid.value == "sent"
    assert (await manager.status("upwork", "job_123")).done is not None


@pytest.fixture
def doomed_redis():
    """A redis-server of its own, for a test that kills it."""
    server = RedisServer()
    yield server
    server.stop()


async def test_a_bid_whose_record_cannot_be_written_is_unrecorded(doomed_redis):
    # Completion retries transient errors for twice the response timeout, then gives up.
    manager = RedisBidLockManager(redis_url=doomed_redis.url, response_timeout=0.3)
    async with manager.bid_once("upwork", "job_123") as bid:
        doomed_redis.proc.kill()
        doomed_redis.proc.wait(timeout=10)
    assert bid.outcome == "unrecorded"
    assert bid.is_placed and not bid.is_recorded
    assert bid.record_error and str(doomed_redis.port) in bid.record_error
    assert manager.get_metrics()["completions"] == 0
    await manager.close()


async def test_the_decorator_reports_unrecorded_with_the_value(doomed_redis):
    manager = RedisBidLockManager(redis_url=doomed_redis.url, response_timeout=0.3)

    @manager.bid_once("upwork", "job_123")
    async def place_bid():
        doomed_redis.proc.kill()
        doomed_redis.proc.wait(timeout=10)
        return 42

    bid = await place_bid()
    assert bid.outcome == "unrecorded" and bid.value == 42 and bid.record_error
    await manager.close()


async def test_the_decorator_raises_what_the_bid_raised_and_records_nothing(backend):
    manager = await get_bid_lock_manager()

    @manager.bid_once()
    async def place_bid(marketplace_id, posting_id):
        raise ConnectionError("marketplace unreachable")

    with pytest.raises(ConnectionError, match="marketplace unreachable"):
        await place_bid("upwork", "job_123")
    status = await manager.status("upwork", "job_123")
    assert status.done is None and not status.held


async def test_the_decorator_gives_every_outcome_field(backend):
    manager = await get_bid_lock_manager()

    @manager.bid_once(ttl=30)
    async def place_bid(marketplace_id, posting_id):
        return {"amount": 10}

    bid = await place_bid("upwork", "job_123")
    assert bid.outcome == "placed" and bid.value == {"amount": 10}
    assert bid.marketplace_id == "upwork" and bid.posting_id == "job_123" and bid.fencing_token > 0
    assert not bid.is_held and "placed" in repr(bid)


def test_outcomes_are_the_rust_ones():
    outcomes = [typing.get_args(literal)[0] for literal in typing.get_args(BidOutcome)]
    assert outcomes == ["pending", "placed", "placed_after_loss", "unrecorded", "failed"]
