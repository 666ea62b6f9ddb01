"""The guide's usage of bidlock, as a script that runs as it is:

    python guide.py      # Redis from REDIS_URL (or REDIS_HOST, ...), else in-process memory
"""

import asyncio
import logging

from bidlock import AlreadyDoneError, LockTimeoutError, get_bid_lock_manager


async def place_bid(posting_id: str, marketplace_id: str, fencing_token: int) -> str:
    """Stands for your marketplace call; send the fencing token with the bid."""
    await asyncio.sleep(0.01)
    return f"bid on {marketplace_id}/{posting_id} (fencing token {fencing_token})"


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)  # bidlock logs under the logger "bidlock"
    manager = await get_bid_lock_manager()  # Redis if configured and reachable, else memory

    # The lock is held while the block runs, renewed, and released on every exit.
    async with manager.with_lock(marketplace_id="upwork", posting_id="job_123", timeout=10.0) as lease:
        print(await place_bid("job_123", "upwork", lease.fencing_token))

    # At most one bid per posting, across the fleet and over time.
    try:
        async with manager.bid_once("upwork", "job_456", timeout=10.0) as bid:
            print(await place_bid("job_456", "upwork", bid.fencing_token))
        print("outcome:", bid.outcome)  # "placed"; or "placed_after_loss", "unrecorded"
    except AlreadyDoneError:
        print("job_456 was handled before")
    except LockTimeoutError:
        print("another instance is bidding on job_456")

    print("backend:", manager.backend, "healthy:", await manager.health_check())
    print("locks taken:", manager.get_metrics()["lock_successes"])
    await manager.close()


if __name__ == "__main__":
    asyncio.run(main())
