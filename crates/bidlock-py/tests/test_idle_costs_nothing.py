"""While Python calls are out, the runtime's worker polls instead of sleeping for a
moment (crates/bidlock-py/src/spin.rs): the bound of that promise. Once calls stop, or
while the only call out is a long wait, the process uses no CPU to speak of."""

from __future__ import annotations

import asyncio
import time

import pytest

import bidlock

# A spinner left running would use about a core for the whole window; what the process
# does idle (the lease keeper's timers, a renewal) is a few milliseconds at most.
WINDOW = 0.8
IDLE_CPU = 0.15


async def test_after_a_burst_of_calls_the_process_idles(redis_env):
    manager = bidlock.RedisBidLockManager(redis_url=redis_env.url)
    try:
        for i in range(300):
            async with manager.with_lock("upwork", f"job_{i}"):
                pass
        cpu = time.process_time()
        await asyncio.sleep(WINDOW)
        used = time.process_time() - cpu
    finally:
        await manager.close()
    assert used < IDLE_CPU, f"{used:.3f} s of CPU in {WINDOW} s with no call out"


async def test_a_long_wait_does_not_keep_the_runtime_spinning(redis_env):
    holder = bidlock.RedisBidLockManager(redis_url=redis_env.url)
    waiter = bidlock.RedisBidLockManager(redis_url=redis_env.url)
    try:
        assert await holder.acquire_lock("upwork", "job_1", timeout=0, holder_id="holder-1")
        # Warm both up so the wait below is the only thing going on.
        async with waiter.with_lock("upwork", "job_2"):
            pass
        cpu = time.process_time()
        with pytest.raises(bidlock.LockTimeoutError):
            async with waiter.with_lock("upwork", "job_1", timeout=WINDOW):
                pass
        used = time.process_time() - cpu
    finally:
        await holder.close()
        await waiter.close()
    assert used < IDLE_CPU, f"{used:.3f} s of CPU while one acquire waited {WINDOW} s"
