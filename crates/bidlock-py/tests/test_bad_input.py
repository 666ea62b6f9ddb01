"""Bad input to each public function: a clear exception naming the problem, and nothing
changed (no lock taken, no attempt counted)."""

from __future__ import annotations

import math

import pytest

from bidlock import (
    BidLockManager,
    ConfigError,
    LockLostError,
    ManagerClosedError,
    RedisBidLockManager,
    create_bid_lock_manager,
    get_bid_lock_manager,
)

BAD_IDS = [
    ("", "job_123", "marketplace id is empty"),
    ("up:work", "job_123", "marketplace id has ':'"),
    ("up work", "job_123", "marketplace id has ' '"),
    ("m" * 65, "job_123", "at most 64"),
    ("upwork", "", "posting id is empty"),
    ("upwork", "job\n123", "control character"),
    ("upwork", "p" * 513, "at most 512"),
]
BAD_SECONDS = [(-1.0, "zero or more"), (math.nan, "finite"), (math.inf, "finite")]


async def assert_unchanged(manager):
    assert manager.get_metrics()["lock_attempts"] == 0
    assert await manager.locks() == []


@pytest.mark.parametrize("marketplace_id,posting_id,problem", BAD_IDS)
async def test_invalid_ids(backend, marketplace_id, posting_id, problem):
    manager = await get_bid_lock_manager()
    calls = [
        lambda: manager.acquire_lock(marketplace_id, posting_id),
        lambda: manager.release_lock(marketplace_id, posting_id, holder_id="instance-1"),
        lambda: manager.status(marketplace_id, posting_id),
        lambda: manager.clear_done(marketplace_id, posting_id),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=problem):
            await call()
    with pytest.raises(ValueError, match=problem):
        async with manager.with_lock(marketplace_id, posting_id):
            pytest.fail("entered with an invalid id")
    with pytest.raises(ValueError, match=problem):
        async with manager.bid_once(marketplace_id, posting_id):
            pytest.fail("entered with an invalid id")

    @manager.bid_once()
    async def place_bid(marketplace_id, posting_id):
        pytest.fail("ran with an invalid id")

    with pytest.raises(ValueError, match=problem):
        await place_bid(marketplace_id, posting_id)
    await assert_unchanged(manager)


async def test_ids_of_the_wrong_type(backend):
    manager = await get_bid_lock_manager()
    with pytest.raises(TypeError, match="posting_id"):
        await manager.acquire_lock("upwork", 123)
    with pytest.raises(TypeError, match="marketplace_id"):
        async with manager.with_lock(None, "job_123"):
            pass
    await assert_unchanged(manager)


@pytest.mark.parametrize("timeout,problem", BAD_SECONDS)
async def test_invalid_timeouts(backend, timeout, problem):
    manager = await get_bid_lock_manager()
    with pytest.raises(ValueError, match=f"timeout must be .*{problem}"):
        await manager.acquire_lock("upwork", "job_123", timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        async with manager.with_lock("upwork", "job_123", timeout=timeout):
            pass
    with pytest.raises(ValueError, match="timeout"):
        async with manager.bid_once("upwork", "job_123", timeout=timeout):
            pass
    with pytest.raises(TypeError):
        await manager.acquire_lock("upwork", "job_123", timeout="10")
    await assert_unchanged(manager)


@pytest.mark.parametrize("ttl", [0, -1.0, math.nan, math.inf])
async def test_invalid_ttls(backend, ttl):
    manager = await get_bid_lock_manager()
    with pytest.raises(ValueError, match="ttl"):
        await manager.acquire_lock("upwork", "job_123", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        async with manager.with_lock("upwork", "job_123", ttl=ttl):
            pass
    with pytest.raises(ConfigError, match="ttl"):
        await create_bid_lock_manager(ttl=ttl)
    with pytest.raises(ConfigError, match="ttl"):
        BidLockManager(ttl=ttl)
    with pytest.raises(ConfigError, match="ttl"):
        RedisBidLockManager(ttl=ttl)
    await assert_unchanged(manager)


@pytest.mark.parametrize("ttl,problem", [(-5, "more than zero"), (0.001, "between 10 ms and 30 days"),
                                         (10**9, "between 10 ms and 30 days")])
async def test_one_exception_type_per_kind_of_bad_ttl(backend, ttl, problem):
    """A bad ttl given to one call is a ValueError; a bad ttl of a manager is a ConfigError
    (a ValueError too), whether it is too small, negative or too large."""
    manager = await get_bid_lock_manager()
    for call in (lambda: manager.acquire_lock("upwork", "job_123", ttl=ttl),
                 lambda: manager.with_lock("upwork", "job_123", ttl=ttl).__aenter__(),
                 lambda: manager.bid_once("upwork", "job_123", ttl=ttl).__aenter__()):
        with pytest.raises(ValueError, match=problem) as caught:
            await call()
        assert not isinstance(caught.value, ConfigError), caught.value
    with pytest.raises(ConfigError, match=f"ttl must be .*{problem}"):
        await create_bid_lock_manager(ttl=ttl)
    with pytest.raises(ConfigError, match=f"ttl must be .*{problem}"):
        BidLockManager(ttl=ttl)
    with pytest.raises(ConfigError, match=f"ttl must be .*{problem}"):
        RedisBidLockManager(ttl=ttl)
    await assert_unchanged(manager)


@pytest.mark.parametrize("holder_id,problem", [("", "holder_id is empty"), ("a\tb", "control character")])
async def test_invalid_holder_ids(backend, holder_id, problem):
    manager = await get_bid_lock_manager()
    with pytest.raises(ValueError, match=problem):
        await manager.acquire_lock("upwork", "job_123", holder_id=holder_id)
    with pytest.raises(ValueError, match=problem):
        await manager.release_lock("upwork", "job_123", holder_id=holder_id)
    with pytest.raises(ValueError, match=problem):
        async with manager.with_lock("upwork", "job_123", holder_id=holder_id):
            pass
    await assert_unchanged(manager)


async def test_create_bid_lock_manager_use_redis_must_be_a_bool_or_none():
    for value in ("yes", 1, "false"):
        with pytest.raises(TypeError, match="use_redis"):
            await create_bid_lock_manager(use_redis=value)
    with pytest.raises(TypeError):
        await create_bid_lock_manager(ttl="300")


def test_constructors_reject_bad_values():
    for bad in (0, -1.0, math.nan):
        with pytest.raises(ConfigError, match="response_timeout"):
            RedisBidLockManager(response_timeout=bad)
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        RedisBidLockManager(redis_url="nonsense://here")
    with pytest.raises(ConfigError, match="prefix"):
        BidLockManager(prefix="bad prefix")
    with pytest.raises(ConfigError, match="prefix"):
        RedisBidLockManager(prefix="a:b")


async def test_locks_with_a_bad_marketplace(backend):
    manager = await get_bid_lock_manager()
    with pytest.raises(ValueError, match="marketplace id has ':'"):
        await manager.locks("up:work")


async def test_bid_once_misuse(backend):
    manager = await get_bid_lock_manager()
    with pytest.raises(TypeError, match="both"):
        manager.bid_once("upwork")
    with pytest.raises(TypeError, match="async def"):
        manager.bid_once()(lambda marketplace_id, posting_id: None)
    with pytest.raises(TypeError, match="no parameter posting_id"):

        @manager.bid_once()
        async def place(marketplace_id, job):
            pass

    await assert_unchanged(manager)


async def test_context_managers_cannot_be_entered_twice(backend):
    manager = await get_bid_lock_manager()
    cm = manager.with_lock("upwork", "job_1")
    async with cm:
        with pytest.raises(RuntimeError, match="already entered"):
            async with cm:
                pass


async def test_closed_manager_refuses_work(backend):
    manager = await get_bid_lock_manager()
    await manager.close()
    with pytest.raises(ManagerClosedError):
        await manager.acquire_lock("upwork", "job_123")
    with pytest.raises(ManagerClosedError):
        async with manager.with_lock("upwork", "job_123"):
            pass
    with pytest.raises(ManagerClosedError):
        await manager.cleanup_all()
    # One behaviour for every call that would reach the backend, the health check too.
    with pytest.raises(ManagerClosedError):
        await manager.health_check()
    assert manager.get_metrics()["lock_attempts"] == 0  # the last counters stay readable
    await manager.close()  # idempotent


async def test_ensure_held_after_release(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123") as lease:
        pass
    assert not lease.is_held
    with pytest.raises(LockLostError):
        lease.ensure_held()
