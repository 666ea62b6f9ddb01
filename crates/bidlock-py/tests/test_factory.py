"""`get_bid_lock_manager`, `create_bid_lock_manager` and the two classes: configured from
the environment like the Rust library, one process-wide manager, auto-detection with an
in-memory fallback, health checks."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings

import pytest

import bidlock
from bidlock import (
    BackendError,
    BidLockManager,
    ConfigError,
    LockManager,
    ManagerClosedError,
    RedisBidLockManager,
    create_bid_lock_manager,
    get_bid_lock_manager,
)


async def test_one_manager_per_process(backend):
    first, second = await asyncio.gather(get_bid_lock_manager(), get_bid_lock_manager())
    assert first is second
    assert await get_bid_lock_manager() is first
    # From another thread and event loop too.
    other = []
    t = threading.Thread(target=lambda: other.append(asyncio.run(get_bid_lock_manager())))
    t.start()
    t.join(30)
    assert other == [first]


async def test_a_closed_default_manager_is_replaced(backend):
    first = await get_bid_lock_manager()
    await first.close()
    assert first.closed
    with pytest.raises(ManagerClosedError):
        await first.acquire_lock("upwork", "job_123")
    second = await get_bid_lock_manager()
    assert second is not first and not second.closed
    assert await second.acquire_lock("upwork", "job_123")


async def test_redis_from_components(redis_server, redis_client, clean_env):
    clean_env.setenv("REDIS_HOST", "127.0.0.1")
    clean_env.setenv("REDIS_PORT", str(redis_server.port))
    clean_env.setenv("REDIS_DB", "0")
    manager = await get_bid_lock_manager()
    assert isinstance(manager, RedisBidLockManager) and manager.backend == "redis"
    assert manager.location == redis_server.url
    assert await manager.acquire_lock("upwork", "job_123", holder_id="instance-1")
    assert redis_client.get("bid_lock:upwork:job_123") == b"instance-1"


async def test_env_ttl_and_prefix(redis_env, redis_client, clean_env):
    clean_env.setenv("BID_LOCK_TTL", "42")
    clean_env.setenv("BID_LOCK_PREFIX", "team_lock")
    manager = await get_bid_lock_manager()
    assert manager.ttl == 42 and manager.prefix == "team_lock"
    assert await manager.acquire_lock("upwork", "job_123")
    assert 40_000 < redis_client.pttl("team_lock:upwork:job_123") <= 42_000


async def test_auto_detect_falls_back_to_memory_with_a_warning(clean_env, closed_port_url, caplog):
    clean_env.setenv("REDIS_URL", closed_port_url)
    caplog.set_level(logging.WARNING, logger="bidlock")
    with pytest.warns(RuntimeWarning, match=f"Redis at {closed_port_url} could not be reached") as caught:
        manager = await get_bid_lock_manager()
    # Pointing at the caller's line, as a warning should.
    assert [w.filename for w in caught] == [__file__]
    assert "USE_REDIS_LOCKS=true" in str(caught[0].message)
    assert isinstance(manager, BidLockManager) and manager.backend == "memory"
    assert any(r.name.startswith("bidlock") and r.levelno == logging.WARNING and "in-memory" in r.getMessage()
               for r in caplog.records)
    async with manager.with_lock("upwork", "job_123"):
        pass
    # Once per manager: the process-wide one comes back without a second warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await get_bid_lock_manager() is manager


async def test_create_warns_when_a_configured_redis_is_unreachable(clean_env, closed_port_url):
    clean_env.setenv("REDIS_HOST", "127.0.0.1")
    clean_env.setenv("REDIS_PORT", closed_port_url.rsplit(":", 1)[1].split("/")[0])
    with pytest.warns(RuntimeWarning, match="fell back to in-process memory"):
        manager = await create_bid_lock_manager()
    assert manager.backend == "memory"
    assert await manager.health_check() is False
    await manager.close()


async def test_no_warning_when_nothing_was_configured(clean_env):
    """Auto-detection's default address (127.0.0.1:6379) is a guess, not a setting:
    missing it is the normal case of a developer's machine, told by the logger only."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manager = await create_bid_lock_manager()
        await manager.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await (await create_bid_lock_manager(use_redis=False)).close()


async def test_use_redis_locks_true_raises_when_unreachable(clean_env, closed_port_url):
    clean_env.setenv("REDIS_URL", closed_port_url)
    clean_env.setenv("USE_REDIS_LOCKS", "true")
    with pytest.raises(BackendError, match=closed_port_url.removesuffix("/0")):
        await get_bid_lock_manager()


async def test_create_force_redis_raises_when_unreachable(clean_env, closed_port_url):
    clean_env.setenv("REDIS_URL", closed_port_url)
    with pytest.raises(BackendError):
        await create_bid_lock_manager(use_redis=True)


async def test_create_reads_the_environment(redis_env):
    """use_redis=None honours REDIS_URL and USE_REDIS_LOCKS (production never falls back)."""
    manager = await create_bid_lock_manager()
    assert manager.backend == "redis" and manager.ttl == 300
    assert manager is not await get_bid_lock_manager()
    await manager.close()


async def test_create_memory_ignores_redis(redis_env):
    manager = await create_bid_lock_manager(use_redis=False, ttl=60)
    assert isinstance(manager, BidLockManager) and manager.ttl == 60
    await manager.close()


async def test_health_check_true_with_redis(redis_env):
    manager = await get_bid_lock_manager()
    assert await manager.health_check() is True
    assert await RedisBidLockManager().health_check() is True


async def test_health_check_false_when_redis_is_down(closed_port_url):
    manager = RedisBidLockManager(redis_url=closed_port_url)
    assert await manager.health_check() is False


async def test_classes_as_the_verify_script_uses_them(redis_env):
    m = RedisBidLockManager()
    assert m.backend == "redis" and m.location is None  # connects on first use
    assert await m.health_check()
    assert m.location is not None
    await m.close()
    memory = BidLockManager(ttl=30)
    assert isinstance(memory, LockManager) and memory.backend == "memory" and memory.ttl == 30
    async with memory.with_lock("upwork", "job_123"):
        pass
    await memory.close()


async def test_manager_as_async_context_manager(backend):
    async with await create_bid_lock_manager(use_redis=backend == "redis") as manager:
        assert await manager.acquire_lock("upwork", "job_123")
    assert manager.closed


@pytest.mark.parametrize(
    "var,value",
    [
        ("REDIS_PORT", "sixty"),
        ("REDIS_DB", "-1"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("USE_REDIS_LOCKS", "maybe"),
        ("BID_LOCK_TTL", "-5"),
        ("BID_LOCK_PREFIX", "has space"),
    ],
)
async def test_malformed_variable_is_named_at_creation(clean_env, var, value):
    clean_env.setenv(var, value)
    for create in (get_bid_lock_manager, create_bid_lock_manager):
        with pytest.raises(ConfigError, match=var) as caught:
            await create()
        assert isinstance(caught.value, ValueError)
    with pytest.raises(ConfigError, match=var):
        RedisBidLockManager()
    with pytest.raises(ConfigError, match=var):
        BidLockManager()


def test_password_never_in_errors_or_repr(clean_env, closed_port_url):
    url = closed_port_url.replace("redis://", "redis://user:s3cret@")
    manager = RedisBidLockManager(redis_url=url)
    with pytest.raises(BackendError) as caught:
        asyncio.run(manager.acquire_lock("upwork", "job_123"))
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(manager)


def test_exceptions_hierarchy():
    assert issubclass(bidlock.LockTimeoutError, bidlock.LockError)
    assert issubclass(bidlock.LockTimeoutError, TimeoutError)
    assert issubclass(bidlock.ConfigError, ValueError)
    for exc in (bidlock.LockLostError, bidlock.AlreadyDoneError, bidlock.BackendError, bidlock.ConfigError,
                bidlock.ManagerClosedError):
        assert issubclass(exc, bidlock.LockError)
        assert exc.__module__ == "bidlock" and exc.__doc__
