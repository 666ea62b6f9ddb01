"""The exceptions bidlock raises. Every one is a `LockError`:

- `LockTimeoutError` (also a `TimeoutError`): the lock stayed held until `timeout` ran out.
- `LockLostError`: the lock is no longer held by this holder.
- `AlreadyDoneError`: the posting has a completion record (`bid_once`).
- `BackendError`: Redis could not be reached or failed; never reported as held.
- `ConfigError` (also a `ValueError`): a malformed environment variable, URL or ttl.
- `ManagerClosedError`: the manager was closed.

Invalid marketplace or posting ids raise the built-in `ValueError`, naming the problem.
"""

from ._native import (
    AlreadyDoneError,
    BackendError,
    ConfigError,
    LockError,
    LockLostError,
    LockTimeoutError,
    ManagerClosedError,
)

__all__ = [
    "AlreadyDoneError",
    "BackendError",
    "ConfigError",
    "LockError",
    "LockLostError",
    "LockTimeoutError",
    "ManagerClosedError",
]
