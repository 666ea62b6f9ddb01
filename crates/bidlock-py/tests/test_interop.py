"""The Python package, the Rust CLI (`bidlock run`) and redis-py's `Lock` exclude one
another on the same key, both ways, because they share the original Redis layout."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from bidlock import LockTimeoutError, get_bid_lock_manager

KEY = "bid_lock:upwork:job_123"
EXIT_NOT_ACQUIRED = 75


def cli_run(bidlock_bin, url, *cmd, wait="0", **kw):
    return [bidlock_bin, "run", "upwork", "job_123", "--redis-url", url, "--wait", wait, "--", *cmd]


async def test_cli_is_excluded_while_python_holds(redis_env, bidlock_bin):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        out = subprocess.run(cli_run(bidlock_bin, redis_env.url, "true"), capture_output=True, timeout=60)
        assert out.returncode == EXIT_NOT_ACQUIRED, out.stderr
    out = subprocess.run(cli_run(bidlock_bin, redis_env.url, "true"), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr


async def test_python_is_excluded_while_the_cli_holds(redis_env, redis_client, bidlock_bin):
    manager = await get_bid_lock_manager()
    proc = subprocess.Popen(cli_run(bidlock_bin, redis_env.url, "sh", "-c", "echo held; exec sleep 60"),
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        cli_holder = redis_client.get(KEY).decode()
        assert await manager.acquire_lock("upwork", "job_123", timeout=0) is False
        with pytest.raises(LockTimeoutError, match=cli_holder):
            async with manager.with_lock("upwork", "job_123", timeout=0.2):
                pytest.fail("held by the CLI")
        proc.send_signal(signal.SIGTERM)  # forwarded to the command; run releases
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stdout.close()
    async with manager.with_lock("upwork", "job_123", timeout=10) as lease:
        assert lease.holder_id != cli_holder


async def test_redis_py_lock_is_excluded_while_python_holds(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    async with manager.with_lock("upwork", "job_123"):
        assert redis_client.lock(KEY, timeout=30).acquire(blocking=False) is False
    lock = redis_client.lock(KEY, timeout=30)
    assert lock.acquire(blocking=False) is True
    lock.release()


async def test_python_is_excluded_while_redis_py_holds(redis_env, redis_client):
    manager = await get_bid_lock_manager()
    lock = redis_client.lock(KEY, timeout=30)
    assert lock.acquire(blocking=False)
    assert await manager.acquire_lock("upwork", "job_123", timeout=0) is False
    with pytest.raises(LockTimeoutError):
        async with manager.with_lock("upwork", "job_123", timeout=0.1):
            pytest.fail("held by redis-py")
    lock.release()
    assert await manager.acquire_lock("upwork", "job_123", timeout=0) is True
    assert await manager.release_lock("upwork", "job_123") is True


async def test_redis_py_asyncio_lock_and_python_exclude_each_other(redis_env):
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_env.url)
    manager = await get_bid_lock_manager()
    try:
        lock = r.lock(KEY, timeout=30)
        assert await lock.acquire(blocking=False)
        assert await manager.acquire_lock("upwork", "job_123", timeout=0) is False
        await lock.release()
        async with manager.with_lock("upwork", "job_123"):
            assert await r.lock(KEY, timeout=30).acquire(blocking=False) is False
    finally:
        await r.aclose()
