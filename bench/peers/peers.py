"""The bidlock bench workloads done with peers: redis-py's Lock (asyncio),
python-redis-lock (threads) and bidlock's own Python package (asyncio, `with_lock`).
Prints one JSON line per run with the fields of `bidlock bench`. Run through
bench/peers/run.sh, which makes the virtualenv."""
import argparse
import asyncio
import importlib
import json
import os
import resource
import threading
import time
import uuid


def quantile(values, q):
    if not values:
        return 0
    values = sorted(values)
    return int(values[min(len(values) - 1, max(0, int(q * len(values) + 0.999999) - 1))])


class HotKeyLog:
    def __init__(self):
        self.lock = threading.Lock()
        self.last = None
        self.sections = []
        self.gaps = []
        self.inside = False
        self.overlaps = 0
        self.timeouts = 0

    def enter(self, w):
        now = time.perf_counter()
        with self.lock:
            if self.last and self.last[1] != w:
                self.gaps.append((now - self.last[0]) * 1e6)
            if self.inside:
                self.overlaps += 1
            self.inside = True

    def leave(self, w):
        with self.lock:
            self.inside = False
            self.sections.append(w)
            self.last = (time.perf_counter(), w)

    def summary(self, secs, workers):
        s = self.sections
        n = max(len(s), 1)
        same = sum(1 for a, b in zip(s, s[1:]) if a == b)
        per = [s.count(w) for w in range(workers)]
        return {
            "cs": len(s),
            "cs_per_sec": round(len(s) / secs),
            "gap_p50_us": quantile(self.gaps, 0.5),
            "gap_p99_us": quantile(self.gaps, 0.99),
            "same_holder_frac": round(same / max(n - 1, 1), 2),
            "max_worker_share": round(max(per) / n, 2) if per else 0,
            "overlaps": self.overlaps,
            "timeouts": self.timeouts,
        }


async def redis_py_uncontended(url, workers, duration):
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, max_connections=workers + 4)
    run = uuid.uuid4().hex[:8]
    pairs, errors, lat = 0, 0, []
    deadline = time.perf_counter() + duration

    async def worker(w):
        nonlocal pairs, errors
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            lock = r.lock(f"bid_lock:peer:{run}-{w}-{i}", timeout=300)
            t = time.perf_counter()
            if await lock.acquire(blocking=False):
                lat.append((time.perf_counter() - t) * 1e6)
                await lock.release()
                pairs += 1
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    secs = time.perf_counter() - start
    await r.aclose()
    return {"pairs_per_sec": round(pairs / secs), "acquire_p50_us": quantile(lat, 0.5),
            "acquire_p99_us": quantile(lat, 0.99), "errors": errors}


async def redis_py_hot_key(url, workers, duration, hold_us):
    import redis.asyncio as aioredis

    r = aioredis.from_url(url, max_connections=workers + 4)
    key = f"bid_lock:peer:hot-{uuid.uuid4().hex[:8]}"
    log = HotKeyLog()
    deadline = time.perf_counter() + duration
    loop = asyncio.get_running_loop()

    async def worker(w):
        while time.perf_counter() < deadline:
            # redis-py's defaults: poll every 0.1 s while blocked.
            lock = r.lock(key, timeout=30, blocking_timeout=5)
            if await lock.acquire():
                log.enter(w)
                await loop.run_in_executor(None, time.sleep, hold_us / 1e6)
                log.leave(w)
                await lock.release()
            else:
                log.timeouts += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    secs = time.perf_counter() - start
    await r.aclose()
    return log.summary(secs, workers)


async def bidlock_py_manager(url):
    import bidlock

    manager = bidlock.RedisBidLockManager(redis_url=url)
    assert await manager.health_check(), f"no Redis at {url}"
    return manager


async def bidlock_py_uncontended(url, workers, duration):
    from bidlock import LockTimeoutError

    manager = await bidlock_py_manager(url)
    run = uuid.uuid4().hex[:8]
    pairs, errors, lat = 0, 0, []
    deadline = time.perf_counter() + duration

    async def worker(w):
        nonlocal pairs, errors
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            t = time.perf_counter()
            try:
                # As the guide uses it (keywords, timeout=10.0; a fresh key is taken at
                # once); the same key layout as the redis-py run: bid_lock:peer:...
                async with manager.with_lock(marketplace_id="peer", posting_id=f"{run}-{w}-{i}", timeout=10.0):
                    lat.append((time.perf_counter() - t) * 1e6)
                pairs += 1
            except LockTimeoutError:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    secs = time.perf_counter() - start
    await manager.close()
    return {"pairs_per_sec": round(pairs / secs), "acquire_p50_us": quantile(lat, 0.5),
            "acquire_p99_us": quantile(lat, 0.99), "errors": errors}


async def bidlock_py_hot_key(url, workers, duration, hold_us):
    from bidlock import LockTimeoutError

    manager = await bidlock_py_manager(url)
    posting = f"hot-{uuid.uuid4().hex[:8]}"
    log = HotKeyLog()
    deadline = time.perf_counter() + duration
    loop = asyncio.get_running_loop()

    async def worker(w):
        while time.perf_counter() < deadline:
            try:
                async with manager.with_lock("peer", posting, timeout=5):
                    log.enter(w)
                    await loop.run_in_executor(None, time.sleep, hold_us / 1e6)
                    log.leave(w)
            except LockTimeoutError:
                log.timeouts += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    secs = time.perf_counter() - start
    await manager.close()
    return log.summary(secs, workers)


def redis_lock_uncontended(url, workers, duration):
    import redis
    import redis_lock

    pool = redis.ConnectionPool.from_url(url, max_connections=workers + 4)
    run = uuid.uuid4().hex[:8]
    counts = {"pairs": 0, "errors": 0}
    lat = []
    guard = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker(w):
        conn = redis.Redis(connection_pool=pool)
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            lock = redis_lock.Lock(conn, f"peer:{run}-{w}-{i}", expire=300)
            t = time.perf_counter()
            if lock.acquire(blocking=False):
                d = (time.perf_counter() - t) * 1e6
                lock.release()
                with guard:
                    counts["pairs"] += 1
                    lat.append(d)
            else:
                with guard:
                    counts["errors"] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    return {"pairs_per_sec": round(counts["pairs"] / secs), "acquire_p50_us": quantile(lat, 0.5),
            "acquire_p99_us": quantile(lat, 0.99), "errors": counts["errors"]}


def redis_lock_hot_key(url, workers, duration, hold_us):
    import redis
    import redis_lock

    pool = redis.ConnectionPool.from_url(url, max_connections=workers + 4)
    name = f"peer:hot-{uuid.uuid4().hex[:8]}"
    log = HotKeyLog()
    deadline = time.perf_counter() + duration

    def worker(w):
        conn = redis.Redis(connection_pool=pool)
        while time.perf_counter() < deadline:
            lock = redis_lock.Lock(conn, name, expire=30)
            if lock.acquire(blocking=True, timeout=5):
                log.enter(w)
                time.sleep(hold_us / 1e6)
                log.leave(w)
                lock.release()
            else:
                log.timeouts += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return log.summary(time.perf_counter() - start, workers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("workload", choices=["uncontended", "hot-key"])
    p.add_argument("--peer", choices=["redis-py", "python-redis-lock", "bidlock-py"], required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--duration", type=float, default=5)
    p.add_argument("--hold-us", type=int, default=1000)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    a = p.parse_args()
    # The peer's modules are imported before the CPU is read: the figure is the
    # workload's, not the interpreter's start-up.
    for module in {"bidlock-py": ["bidlock"], "redis-py": ["redis.asyncio"],
                   "python-redis-lock": ["redis", "redis_lock"]}[a.peer]:
        importlib.import_module(module)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    if a.peer == "bidlock-py":
        if a.workload == "uncontended":
            r = asyncio.run(bidlock_py_uncontended(a.redis_url, a.workers, a.duration))
        else:
            r = asyncio.run(bidlock_py_hot_key(a.redis_url, a.workers, a.duration, a.hold_us))
    elif a.peer == "redis-py":
        if a.workload == "uncontended":
            r = asyncio.run(redis_py_uncontended(a.redis_url, a.workers, a.duration))
        else:
            r = asyncio.run(redis_py_hot_key(a.redis_url, a.workers, a.duration, a.hold_us))
    else:
        if a.workload == "uncontended":
            r = redis_lock_uncontended(a.redis_url, a.workers, a.duration)
        else:
            r = redis_lock_hot_key(a.redis_url, a.workers, a.duration, a.hold_us)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    out = {"workload": a.workload, "backend": a.peer, "workers": a.workers, "duration_s": a.duration}
    if a.workload == "hot-key":
        out["hold_us"] = a.hold_us
    out.update(r)
    # The client's CPU (every thread of this process: the event loop, bidlock's runtime,
    # redis-py's or the executor's threads) per pair or section: a figure the noise of a
    # shared machine moves less than the rates.
    cpu = sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in ("ru_utime", "ru_stime"))
    done = r.get("cs") or r.get("pairs_per_sec", 0) * a.duration
    out["client_cpu_us_per_op"] = round(cpu * 1e6 / done, 1) if done else None
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
