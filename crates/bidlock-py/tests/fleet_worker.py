"""One instance of a fleet for test_fleet.py: several asyncio tasks race for the same
postings through `with_lock`, then through `bid_once`. Overlaps are detected with an
O_EXCL marker file per posting (created on entry, removed on exit), independent of
bidlock. Prints "ready", waits for "go" on stdin, then prints one JSON line per event."""

import asyncio
import json
import os
import random
import sys
import time

from bidlock import AlreadyDoneError, get_bid_lock_manager


async def main(run_dir, postings, tasks, seed):
    manager = await get_bid_lock_manager()
    assert manager.backend == "redis", manager.backend
    out = []
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"

    async def racer(n):
        rng = random.Random(seed * 1000 + n)
        order = list(range(postings))
        rng.shuffle(order)
        for p in order:
            async with manager.with_lock("fleet", f"p{p}", timeout=60) as lease:
                marker = os.path.join(run_dir, f"p{p}.inside")
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    overlap = False
                except FileExistsError:
                    overlap = True
                start = time.monotonic_ns()
                await asyncio.sleep(rng.uniform(0, 0.002))
                end = time.monotonic_ns()
                if not overlap:
                    os.unlink(marker)
                out.append({"kind": "section", "posting": p, "token": lease.fencing_token, "start": start,
                            "end": end, "overlap": overlap, "pid": os.getpid()})
        for p in order:
            try:
                async with manager.bid_once("fleet", f"once{p}", timeout=60) as bid:
                    await asyncio.sleep(0.001)
                out.append({"kind": "bid", "posting": p, "outcome": bid.outcome})
            except AlreadyDoneError:
                pass

    await asyncio.gather(*(racer(n) for n in range(tasks)))
    await manager.close()
    for event in out:
        print(json.dumps(event))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
