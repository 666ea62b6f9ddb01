"""bidlock: fleet-wide bid locks for marketplace bidding agents, on a Rust core.

The original guide's API, call for call::

    import asyncio
    from bidlock import get_bid_lock_manager

    async def main() -> None:
        manager = await get_bid_lock_manager()  # Redis if configured and reachable, else memory
        async with manager.with_lock(marketplace_id="upwork", posting_id="job_123", timeout=10.0) as lease:
            print("bidding with fencing token", lease.fencing_token)  # send it with the bid

    asyncio.run(main())

Beyond the guide: fencing tokens, leases renewed while held (with loss reported through
`lease.is_lost`, `lease.lost()` and `lease.ensure_held()`), exactly-once bids
(`manager.bid_once`), fair handover to waiters, Redlock (`REDIS_URLS`) and Sentinel
(`redis+sentinel://`). The Redis layout is the original one (`bid_lock:{marketplace}:{posting}`
holding the holder id with a ttl), so this package, the `bidlock` CLI, the original system
and redis-py's `Lock` exclude each other on the same key.

Logs go to the `logging` logger `bidlock`.
"""

import atexit as _atexit

from . import _logging  # noqa: F401  (installs the logging bridge's cache reset)
from . import _native
from ._errors import (
    AlreadyDoneError,
    BackendError,
    ConfigError,
    LockError,
    LockLostError,
    LockTimeoutError,
    ManagerClosedError,
    RustPanic,
)
from ._bid import Bid, BidOnce, BidOutcome
from ._lease import Lease, LockContext
from ._manager import (
    DEFAULT_TIMEOUT,
    DEFAULT_TTL,
    BidLockManager,
    LockManager,
    RedisBidLockManager,
    create_bid_lock_manager,
    get_bid_lock_manager,
)
from ._native import ENV_VARS, __version__
from ._types import LockInfo, LockStatus

# Before the interpreter finalizes: close the managers still open (releasing their
# locks), then stop the runtime's threads from calling into Python (src/shutdown.rs).
_atexit.register(_native.shutdown)

__all__ = [
    "AlreadyDoneError",
    "BackendError",
    "Bid",
    "BidLockManager",
    "BidOnce",
    "BidOutcome",
    "ConfigError",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TTL",
    "ENV_VARS",
    "Lease",
    "LockContext",
    "LockError",
    "LockInfo",
    "LockLostError",
    "LockManager",
    "LockStatus",
    "LockTimeoutError",
    "ManagerClosedError",
    "RedisBidLockManager",
    "RustPanic",
    "__version__",
    "create_bid_lock_manager",
    "get_bid_lock_manager",
]
