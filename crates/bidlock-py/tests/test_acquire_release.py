"""The guide's manual pair: `acquire_lock` keeps the lock after it returns, until
`release_lock` or its ttl; `release_lock` is False for a wrong holder or no lock."""

from __future__ import annotations

import asyncio

import pytest

from bidlock import AlreadyDoneError, BackendError, RedisBidLockManager, get_bid_lock_manager


async def test_lock_stays_held_after_acquire_returns(backend):
    manager = await get_bid_lock_manager()
    assert await manager.acquire_lock("upwork", "job_123", holder_id="instance-1") is True
    await asyncio.sleep(0.05)
    assert (await manager.status("upwork", "job_123")).holder == "instance-1"
    # Another instance does not get it.
    assert await manager.acquire_lock("upwork", "job_123", timeout=0, holder_id="instance-2") is False
    assert await manager.acquire_lock("upwork", "job_123", timeout=0.2) is False
    assert await manager.release_lock("upwork", "job_123", holder_id="instance-1") is True
    assert not (await manager.status("upwork", "job_123")).held


async def test_release_by_wrong_holder_is_false_and_changes_nothing(backend):
    manager = await get_bid_lock_manager()
    assert await manager.acquire_lock("upwork", "job_123", holder_id="instance-1")
    assert await manager.release_lock("upwork", "job_123", holder_id="instance-2") is False
    assert (await manager.status("upwork", "job_123")).holder == "instance-1"
    assert manager.get_metrics()["holder_mismatches"] == 1
    assert await manager.release_lock("upwork", "job_123", holder_id="instance-1") is True


async def test_release_of_no_lock_is_false(backend):
    manager = await get_bid_lock_manager()
    assert await manager.release_lock("upwork", "nothing", holder_id="instance-1") is False
    assert await manager.release_lock("upwork", "nothing") is False


async def test_default_holder_pairs_acquire_and_release(backend):
    """As in the guide's old code: acquire_lock / release_lock without holder_id."""
    manager = await get_bid_lock_manager()
    assert await manager.acquire_lock("upwork", "job_123", timeout=5.0)
    holder = (await manager.status("upwork", "job_123")).holder
    assert holder
    # Each acquisition gets its own id: a second task of this process is excluded.
    assert await manager.acquire_lock("upwork", "job_123", timeout=0) is False
    assert await manager.release_lock("upwork", "job_123") is True
    assert await manager.release_lock("upwork", "job_123") is False


async def test_held_until_ttl_without_renewal(backend):
    manager = await get_bid_lock_manager()
    assert await manager.acquire_lock("upwork", "job_123", holder_id="instance-1", ttl=0.3)
    # Not renewed: another holder gets it once the ttl has run out.
    assert await manager.acquire_lock("upwork", "job_123", timeout=10, holder_id="instance-2")
    assert (await manager.status("upwork", "job_123")).holder == "instance-2"
    # The first holder's release is refused: the lock is someone else's now.
    assert await manager.release_lock("upwork", "job_123", holder_id="instance-1") is False
    assert await manager.release_lock("upwork", "job_123", holder_id="instance-2") is True
    assert manager.get_metrics()["extensions"] == 0


async def test_release_by_holder_of_a_lock_taken_elsewhere(redis_env, redis_client):
    """The guide's release by holder id also frees a lock another process took."""
    redis_client.set("bid_lock:upwork:job_123", "instance-9", px=60_000)
    manager = await get_bid_lock_manager()
    assert await manager.release_lock("upwork", "job_123", holder_id="instance-9") is True
    assert redis_client.exists("bid_lock:upwork:job_123") == 0


async def test_close_releases_manual_locks(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    assert await manager.acquire_lock("upwork", "job_123")
    assert redis_client.exists("bid_lock:upwork:job_123") == 1
    await manager.close()
    assert redis_client.exists("bid_lock:upwork:job_123") == 0


async def test_already_done_posting_raises(backend):
    manager = await get_bid_lock_manager()
    async with manager.bid_once("upwork", "job_123"):
        pass
    with pytest.raises(AlreadyDoneError):
        await manager.acquire_lock("upwork", "job_123")


async def test_redis_failure_is_an_exception_never_true(closed_port_url):
    manager = RedisBidLockManager(redis_url=closed_port_url)
    with pytest.raises(BackendError, match="127.0.0.1"):
        await manager.acquire_lock("upwork", "job_123")
    with pytest.raises(BackendError):
        await manager.release_lock("upwork", "job_123", holder_id="instance-1")
    assert await manager.health_check() is False


async def test_redis_stopping_mid_use_is_an_exception(clean_env):
    """A Redis killed while the manager is connected: acquire raises, never returns True."""
    from conftest import RedisServer

    server = RedisServer()
    try:
        manager = RedisBidLockManager(redis_url=server.url)
        assert await manager.acquire_lock("upwork", "job_1")
        server.proc.kill()
        server.proc.wait(10)
        with pytest.raises(BackendError):
            await manager.acquire_lock("upwork", "job_2", timeout=0)
        assert await manager.health_check() is False
        assert manager.get_metrics()["redis_errors"] >= 1
    finally:
        server.stop()
