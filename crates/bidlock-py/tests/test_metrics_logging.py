"""`get_metrics()` keys, and logs through Python's `logging` (logger `bidlock`)."""

from __future__ import annotations

import logging

from bidlock import LockTimeoutError, get_bid_lock_manager

GUIDE_KEYS = {"lock_attempts", "lock_successes", "lock_conflicts", "lock_timeouts", "redis_errors"}
BIDLOCK_KEYS = {"releases", "holder_mismatches", "extensions", "locks_lost", "already_done", "completions",
                "backend_calls", "wait_count", "wait_p50_us", "wait_p99_us", "wait_max_us"}


async def test_metrics_keys_and_counts(backend):
    manager = await get_bid_lock_manager()
    before = manager.get_metrics()
    assert GUIDE_KEYS | BIDLOCK_KEYS <= set(before)
    assert all(isinstance(v, int) for v in before.values())
    async with manager.with_lock("upwork", "job_123"):
        try:
            async with manager.with_lock("upwork", "job_123", timeout=0):
                pass
        except LockTimeoutError:
            pass
    m = manager.get_metrics()
    assert m["lock_attempts"] == 2 and m["lock_successes"] == 1 and m["lock_timeouts"] == 1
    assert m["lock_conflicts"] >= 1 and m["releases"] == 1 and m["redis_errors"] == 0
    assert m["backend_calls"] > 0 if backend == "redis" else m["backend_calls"] == 0
    assert manager.get_metrics() is not manager.get_metrics()  # a snapshot each call


async def test_debug_logging_shows_each_acquire_and_release(backend, caplog):
    manager = await get_bid_lock_manager()
    logger = logging.getLogger("bidlock")
    caplog.set_level(logging.DEBUG, logger="bidlock")

    async with manager.with_lock("upwork", "job_123") as lease:
        pass
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("bidlock")]
    acquired = [m for m in messages if m.startswith("acquired") and "upwork:job_123" in m]
    released = [m for m in messages if m.startswith("released") and "upwork:job_123" in m]
    assert len(acquired) == 1 and str(lease.fencing_token) in acquired[0]
    assert len(released) == 1 and lease.holder_id in released[0]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.getMessage() in acquired + released)

    # A level raised at run time applies at once (the bridge drops its cache).
    logger.setLevel(logging.WARNING)
    caplog.clear()
    async with manager.with_lock("upwork", "job_456"):
        pass
    assert not [r for r in caplog.records if r.name.startswith("bidlock") and r.levelno < logging.WARNING]

    logger.setLevel(logging.DEBUG)
    async with manager.with_lock("upwork", "job_789"):
        pass
    assert any("upwork:job_789" in r.getMessage() for r in caplog.records)
