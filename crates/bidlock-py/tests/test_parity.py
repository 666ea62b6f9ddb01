"""The guide's semantics that the Rust core adopts too (issue 14, "Parity in the core"):
one in-memory store per process, `health_check()` false after a fallback to memory, and
`lock_conflicts` counted once per acquire (the per-try figure is `lock_busy_tries`)."""

from __future__ import annotations

import pytest

from bidlock import BidLockManager, LockTimeoutError, get_bid_lock_manager

async def test_two_memory_managers_of_one_process_exclude_each_other():
    a, b = BidLockManager(), BidLockManager()
    assert await a.acquire_lock("upwork", "job_123")
    assert await b.acquire_lock("upwork", "job_123", timeout=0) is False
    assert (await b.status("upwork", "job_123")).held
    assert await a.release_lock("upwork", "job_123")
    assert await b.acquire_lock("upwork", "job_123", timeout=0)


async def test_fallback_manager_shares_the_store_with_memory_managers(clean_env, closed_port_url):
    clean_env.setenv("REDIS_URL", closed_port_url)
    with pytest.warns(RuntimeWarning, match="fell back"):
        fallback = await get_bid_lock_manager()
    assert fallback.backend == "memory"
    async with fallback.with_lock("upwork", "job_123"):
        with pytest.raises(LockTimeoutError):
            async with BidLockManager().with_lock("upwork", "job_123", timeout=0):
                pass


async def test_health_check_false_after_fallback(clean_env, closed_port_url):
    clean_env.setenv("REDIS_URL", closed_port_url)
    with pytest.warns(RuntimeWarning, match="fell back"):
        manager = await get_bid_lock_manager()
    assert manager.backend == "memory"
    assert await manager.health_check() is False


async def test_health_check_true_for_a_chosen_memory_backend():
    assert await BidLockManager().health_check() is True


async def test_lock_conflicts_counted_once_per_acquire(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        # Memory: backoff from 50 ms, several tries within 0.6 s. Redis: the waiter
        # queues for a handoff and refreshes its place instead of trying again. One
        # acquire either way.
        assert await manager.acquire_lock("upwork", "job_123", timeout=0.6) is False
    m = manager.get_metrics()
    assert m["lock_conflicts"] == 1
    if backend == "redis":
        assert m["lock_busy_tries"] == 1
    else:
        assert m["lock_busy_tries"] >= 2
