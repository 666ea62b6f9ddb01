"""Where the microseconds of one `with_lock` pair go, in one process, one task:

    bench/peers/run.sh setup && target/peers-venv/bin/python bench/peers/breakdown.py --redis-url URL

Each step is timed over the same number of pairs, the steps interleaved round by round
(so load drift hits each alike), and the per-pair median of the rounds printed as one
JSON line per step:

- `event loop`: `await asyncio.sleep(0)`, one pass of the event loop;
- `memory with_lock`: the guide's `with_lock` on the in-process store: the Python
  objects, the crossings into Rust and back, the wake-ups, and no network;
- `redis-py set+delete`: two round trips to Redis from asyncio (`SET NX PX`, `DEL`): the
  network floor of any lock pair, as Python sees it;
- `redis with_lock`: the guide's `with_lock` on Redis.

`redis with_lock` − `memory with_lock` is what Redis and the network add to the binding;
`memory with_lock` − `event loop` is the binding's own cost per pair.
"""

import argparse
import asyncio
import json
import statistics
import time
import uuid


async def per_pair(step, n):
    t = time.perf_counter()
    for i in range(n):
        await step(i)
    return (time.perf_counter() - t) / n * 1e6


async def main(url, pairs, rounds):
    import bidlock
    import redis.asyncio as redis_py

    memory = bidlock.BidLockManager()
    remote = bidlock.RedisBidLockManager(redis_url=url)
    assert await remote.health_check(), f"no Redis at {url}"
    r = redis_py.Redis.from_url(url)
    run = uuid.uuid4().hex[:8]

    async def loop_pass(i):
        await asyncio.sleep(0)

    async def memory_pair(i):
        async with memory.with_lock(marketplace_id="peer", posting_id=f"m{run}-{i}", timeout=10.0):
            pass

    async def redis_py_pair(i):
        k = f"bid_lock:peer:p{run}-{i}"
        await r.set(k, "x", nx=True, px=30000)
        await r.delete(k)

    async def remote_pair(i):
        async with remote.with_lock(marketplace_id="peer", posting_id=f"r{run}-{i}", timeout=10.0):
            pass

    steps = {
        "event loop": loop_pass,
        "memory with_lock": memory_pair,
        "redis-py set+delete": redis_py_pair,
        "redis with_lock": remote_pair,
    }
    for step in steps.values():  # warm up: connections, scripts loaded, caches
        await per_pair(step, 200)
    seen = {name: [] for name in steps}
    names = list(steps)
    for rnd in range(rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        for name in order:
            seen[name].append(await per_pair(steps[name], pairs))
    await memory.close()
    await remote.close()
    await r.aclose()
    for name in names:
        print(json.dumps({"step": name, "us_per_pair": round(statistics.median(seen[name]), 1),
                          "rounds": [round(v, 1) for v in seen[name]]}))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--redis-url", required=True)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    asyncio.run(main(a.redis_url, a.pairs, a.rounds))
