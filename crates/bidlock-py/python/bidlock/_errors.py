"""The exceptions bidlock raises. Every one is a `LockError`:

- `LockTimeoutError` (also a `TimeoutError`): the lock stayed held until `timeout` ran out.
- `LockLostError`: the lock is no longer held by this holder.
- `AlreadyDoneError`: the posting has a completion record (`bid_once`).
- `BackendError`: Redis could not be reached or failed; never reported as held.
- `ConfigError` (also a `ValueError`): a malformed environment variable, URL or ttl.
- `ManagerClosedError`: the manager was closed.

One rule for bad input: an argument of one call (ids, `timeout`, a per-call `ttl`,
`holder_id`) that is invalid raises the built-in `ValueError` naming the problem; a bad
setting of a manager (its `ttl`, `prefix`, `redis_url`, `response_timeout`, or an
environment variable) raises `ConfigError`, which is a `ValueError` too. Either way nothing
is sent and nothing changes.

`RustPanic` (not a `LockError`) is a bug in bidlock's Rust code: it reaches the task that
awaited the operation, and no other; please report it.
"""

from ._native import (
    AlreadyDoneError,
    BackendError,
    ConfigError,
    LockError,
    LockLostError,
    LockTimeoutError,
    ManagerClosedError,
    RustPanic,
)

__all__ = [
    "AlreadyDoneError",
    "BackendError",
    "ConfigError",
    "LockError",
    "LockLostError",
    "LockTimeoutError",
    "ManagerClosedError",
    "RustPanic",
]
