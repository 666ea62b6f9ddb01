"""Every runnable example of the original guide (shared/ORIGINAL_GUIDE.md), verbatim but
for the import path (`src.agent_execution.*` → `bidlock`) and a stub `place_bid`, on the
in-memory backend and on a real Redis.

Not run: the guide's "Old (sync)" snippets (`manager = get_bid_lock_manager()` without
await, the old implementation's API) and `acquire_lock(..., holder_id=holder_id)` in
Troubleshooting, whose `...` stands for arguments; the latter is run with the ids filled
in (`test_troubleshooting_holder_id`)."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from bidlock import (
    BackendError,
    BidLockManager,
    RedisBidLockManager,
    create_bid_lock_manager,
    get_bid_lock_manager,
)

VERIFY_SCRIPT = """
import asyncio
from bidlock import RedisBidLockManager

async def test():
    m = RedisBidLockManager()
    if await m.health_check():
        print('✅ Redis connected')
        await m.close()
    else:
        print('⚠️ Redis unavailable (will use in-memory fallback)')

asyncio.run(test())
"""


def held_by_someone(bids, posting_id="job_123", marketplace_id="upwork"):
    return [c for c in bids.calls if c[:2] == (posting_id, marketplace_id) and c[2] is not None]


async def test_quick_start_factory_and_context_manager(backend, bids):
    place_bid = bids.place_bid
    marketplace_id, posting_id = "upwork", "job_123"

    # Auto-detects Redis or fallback
    manager = await get_bid_lock_manager()

    async with manager.with_lock(
        marketplace_id="upwork",
        posting_id="job_123",
        timeout=10.0,
    ):
        # Your bid logic here
        await place_bid(posting_id, marketplace_id)
    # Lock automatically released

    assert isinstance(manager, RedisBidLockManager if backend == "redis" else BidLockManager)
    assert len(held_by_someone(bids)) == 1
    assert not (await manager.status("upwork", "job_123")).held


@pytest.mark.parametrize("reachable", [True, False])
def test_verify_installation_script(redis_server, closed_port_url, reachable):
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server.url if reachable else closed_port_url}
    out = subprocess.run([sys.executable, "-c", VERIFY_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = "✅ Redis connected" if reachable else "⚠️ Redis unavailable (will use in-memory fallback)"
    assert out.stdout.strip() == expected


async def test_get_bid_lock_manager_reference(backend):
    manager = await get_bid_lock_manager()  # Returns RedisBidLockManager or BidLockManager
    assert isinstance(manager, (RedisBidLockManager, BidLockManager))
    assert manager.backend == backend
    assert await get_bid_lock_manager() is manager


async def test_create_bid_lock_manager_reference(backend):
    # Force Redis
    if backend == "redis":
        manager = await create_bid_lock_manager(use_redis=True, ttl=300)
        assert manager.backend == "redis" and manager.ttl == 300
        await manager.close()
    else:
        # No Redis is configured or running here: forcing it must fail, never fall back.
        with pytest.raises(BackendError):
            manager = await create_bid_lock_manager(use_redis=True, ttl=300)

    # Force in-memory
    manager = await create_bid_lock_manager(use_redis=False, ttl=300)
    assert manager.backend == "memory"
    await manager.close()

    # Auto-detect
    manager = await create_bid_lock_manager(use_redis=None, ttl=300)
    assert manager.backend == backend
    await manager.close()


async def test_with_lock_reference(backend, bids):
    place_bid = bids.place_bid
    marketplace_id, posting_id = "upwork", "job_123"
    manager = await get_bid_lock_manager()

    async with manager.with_lock(
        marketplace_id="upwork",
        posting_id="job_123",
        timeout=10.0,  # Maximum wait time
        holder_id="optional-instance-id",  # Auto-generated if not provided
    ):
        # Lock is held here
        await place_bid(posting_id, marketplace_id)
        # Lock automatically released on exit (even if exception)

    assert bids.calls == [("job_123", "upwork", "optional-instance-id")]
    assert not (await manager.status("upwork", "job_123")).held


async def test_manual_acquisition_and_release_reference(backend, bids):
    place_bid = bids.place_bid
    marketplace_id, posting_id = "upwork", "job_123"
    manager = await get_bid_lock_manager()

    holder_id = "instance-1"
    acquired = await manager.acquire_lock(
        marketplace_id="upwork",
        posting_id="job_123",
        timeout=10.0,
        holder_id=holder_id,
    )

    if acquired:
        try:
            await place_bid(posting_id, marketplace_id)
        finally:
            await manager.release_lock(
                marketplace_id="upwork",
                posting_id="job_123",
                holder_id=holder_id,
            )

    assert acquired is True
    assert bids.calls == [("job_123", "upwork", "instance-1")]
    assert not (await manager.status("upwork", "job_123")).held

    # `manager.release_lock()`: nothing to release now.
    released = await manager.release_lock(
        marketplace_id="upwork",
        posting_id="job_123",
        holder_id="instance-1",
    )
    # Returns True if released, False if holder mismatch or not found
    assert released is False


async def test_get_metrics_reference(backend):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        pass
    metrics = manager.get_metrics()
    # {
    #     "lock_attempts": 100,
    #     "lock_successes": 95,
    #     "lock_conflicts": 5,
    #     "lock_timeouts": 0,
    #     "redis_errors": 0,  # Only for Redis implementation
    # }
    for name in ["lock_attempts", "lock_successes", "lock_conflicts", "lock_timeouts", "redis_errors"]:
        assert isinstance(metrics[name], int), name
    assert metrics["lock_attempts"] == 1 and metrics["lock_successes"] == 1


async def test_health_check_reference(redis_env):
    manager = await get_bid_lock_manager()
    is_healthy = await manager.health_check()
    # Returns True if Redis is available
    assert is_healthy is True


async def test_cleanup_all_reference(backend):
    manager = await get_bid_lock_manager()
    assert await manager.acquire_lock("upwork", "job_1")
    assert await manager.acquire_lock("upwork", "job_2")

    await manager.cleanup_all()

    assert await manager.locks() == []


async def test_monitoring_metrics_check(backend, caplog):
    logger = logging.getLogger("agent")
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        pass

    metrics = manager.get_metrics()
    if metrics["lock_conflicts"] > 100:
        logger.warning("High lock contention detected")
    if metrics["redis_errors"] > 0:
        logger.error(f"Redis errors: {metrics['redis_errors']}")

    assert not [r for r in caplog.records if r.name == "agent"]


def test_enable_debug_logging():
    import logging
    logging.getLogger('bidlock').setLevel(logging.DEBUG)
    assert logging.getLogger("bidlock.manager").isEnabledFor(logging.DEBUG)
    logging.getLogger('bidlock').setLevel(logging.NOTSET)


async def test_troubleshooting_auto_generated_holder(backend):
    manager = await get_bid_lock_manager()
    # Use auto-generated holder_id (recommended)
    async with manager.with_lock("upwork", "job_123"):
        pass  # holder_id auto-generated
    assert not (await manager.status("upwork", "job_123")).held


async def test_troubleshooting_holder_id(backend):
    manager = await get_bid_lock_manager()
    # Or pass same holder_id for acquire/release
    holder_id = "instance-1"
    assert await manager.acquire_lock("upwork", "job_123", holder_id=holder_id)
    assert (await manager.status("upwork", "job_123")).holder == "instance-1"
    assert await manager.release_lock("upwork", "job_123", holder_id=holder_id)


async def test_migration_step3_old_body_on_new_factory(backend, bids):
    place_bid = bids.place_bid
    manager = await get_bid_lock_manager()
    if await manager.acquire_lock("upwork", "job_123", timeout=5.0):
        try:
            await place_bid("job_123", "upwork")
        finally:
            await manager.release_lock("upwork", "job_123")

    assert len(held_by_someone(bids)) == 1
    assert not (await manager.status("upwork", "job_123")).held


async def test_migration_step3_new(backend, bids):
    place_bid = bids.place_bid
    # New (cleaner)
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123", timeout=5.0):
        await place_bid("job_123", "upwork")

    assert len(held_by_someone(bids)) == 1
    assert not (await manager.status("upwork", "job_123")).held


async def test_performance_tuning_ttl(backend):
    manager = await create_bid_lock_manager(ttl=180)  # 3 minutes
    assert manager.ttl == 180
    assert await manager.acquire_lock("upwork", "job_123")
    left = (await manager.status("upwork", "job_123")).ttl_left_ms
    assert 170_000 < left <= 180_000
    await manager.close()
