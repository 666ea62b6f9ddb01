"""The managers and the factory functions of the original guide."""

from __future__ import annotations

import threading
import warnings
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, TypeVar, Union, overload

from . import _native
from ._bid import Bid, BidOnce, bid_once_by_arguments
from ._lease import LockContext
from ._types import LockInfo, LockStatus

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")

T = TypeVar("T")
_M = TypeVar("_M", bound="LockManager")

DEFAULT_TIMEOUT: float = _native.DEFAULT_TIMEOUT
"""How long an acquire waits for a busy lock by default: 10 s."""
DEFAULT_TTL: float = _native.DEFAULT_TTL
"""The default lock ttl: 300 s."""


class LockManager:
    """Coordinates bids: one lock per `(marketplace_id, posting_id)`, in Redis (shared by
    the fleet) or in process memory. The base class of `RedisBidLockManager` and
    `BidLockManager`; get one from `get_bid_lock_manager()`.

    Which call should I use?

    - `bid_once(...)`: bid at most once per posting, across the fleet and over time.
    - `with_lock(...)`: run a block under the lock, released on every exit.
    - `acquire_lock(...)` / `release_lock(...)`: the guide's manual pair; the lock is held
      until `release_lock` or its ttl (it is not renewed).

    Every method that waits is a coroutine that never blocks the event loop. A manager
    may be used from several event loops and threads of one process.
    """

    __slots__ = ("_native", "__weakref__")

    def __init__(self, _native_manager: _native.NativeManager) -> None:
        self._native = _native_manager

    @property
    def backend(self) -> str:
        """`"redis"` or `"memory"` once connected (before: the configured choice, maybe `"auto"`)."""
        return self._native.backend

    @property
    def location(self) -> Optional[str]:
        """The Redis URL without its password, or `"memory"`; None before connecting."""
        return self._native.location

    @property
    def ttl(self) -> float:
        """The default lock ttl in seconds."""
        return self._native.ttl

    @property
    def prefix(self) -> str:
        """The key prefix (`bid_lock`)."""
        return self._native.prefix

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._native.closed

    def with_lock(
        self,
        marketplace_id: str,
        posting_id: str,
        timeout: float = DEFAULT_TIMEOUT,
        holder_id: Optional[str] = None,
        *,
        ttl: Optional[float] = None,
    ) -> LockContext:
        """Holds the lock of the posting for the duration of an `async with` block::

            async with manager.with_lock("upwork", "job_123", timeout=10.0) as lease:
                await place_bid("job_123", "upwork", fence=lease.fencing_token)

        Waits up to `timeout` seconds (0: try once) for a busy lock, then raises
        `LockTimeoutError`. The lock is renewed while the block runs and released on every
        exit: return, exception, cancellation of the task, `KeyboardInterrupt`. `holder_id`
        is generated when not given (unique per acquisition); `ttl` defaults to the
        manager's. Invalid ids raise `ValueError`; a Redis failure raises `BackendError`.
        """
        return LockContext(self._native, (marketplace_id, posting_id, timeout, holder_id, ttl))

    async def acquire_lock(
        self,
        marketplace_id: str,
        posting_id: str,
        timeout: float = DEFAULT_TIMEOUT,
        holder_id: Optional[str] = None,
        *,
        ttl: Optional[float] = None,
    ) -> bool:
        """Takes the lock and keeps it after returning, until `release_lock` or its ttl
        (it is not renewed). Returns True when taken, False when another holder kept it
        for `timeout` seconds. Without `holder_id` a unique one is generated, and
        `release_lock` without `holder_id` releases the lock this manager took.

        Raises `AlreadyDoneError` when the posting has a completion record (`bid_once`),
        `BackendError` when Redis fails (never True), `ValueError` for invalid ids.
        """
        return await self._native.acquire_lock(marketplace_id, posting_id, timeout, holder_id, ttl)

    async def release_lock(self, marketplace_id: str, posting_id: str, holder_id: Optional[str] = None) -> bool:
        """Releases the lock if `holder_id` holds it (or, without `holder_id`, the lock this
        manager took with `acquire_lock`). Returns True when released, False for a holder
        mismatch or no lock (nothing changes then)."""
        return await self._native.release_lock(marketplace_id, posting_id, holder_id)

    def get_metrics(self) -> Dict[str, int]:
        """The counters: the guide's `lock_attempts`, `lock_successes`, `lock_conflicts`,
        `lock_timeouts`, `redis_errors`, plus `releases`, `holder_mismatches`, `extensions`,
        `locks_lost`, `already_done`, `completions`, `backend_calls` and the wait-time
        figures (`wait_count`, `wait_p50_us`, `wait_p99_us`, `wait_max_us`)."""
        return self._native.metrics()

    async def health_check(self) -> bool:
        """True when Redis answers a PING, or for a memory manager chosen on purpose
        (`BidLockManager`, `use_redis=False`, `USE_REDIS_LOCKS=false`). False when Redis
        cannot be reached, and for a manager that auto-detection fell back to memory (a
        configured Redis was unreachable at start: the locks exclude this process only).
        Raises `ManagerClosedError` after `close()`, like every other call."""
        return await self._native.health_check()

    async def cleanup_all(self) -> int:
        """Removes every lock of the prefix (testing/shutdown; SCAN, never KEYS). Returns how
        many. Holders learn at their next renewal that they lost their lock."""
        return await self._native.cleanup_all()

    async def close(self) -> None:
        """Releases the locks held through this manager and stops it. Every later call that
        would reach the backend raises `ManagerClosedError` (`health_check()` too);
        `get_metrics()` still returns the final counters, and `close()` again does nothing.
        After the process-wide manager is closed, the next `get_bid_lock_manager()` builds a
        new one."""
        await self._native.close()

    @overload
    def bid_once(self, marketplace_id: str, posting_id: str, timeout: float = ..., holder_id: Optional[str] = ..., *, ttl: Optional[float] = ...) -> BidOnce: ...
    @overload
    def bid_once(self, marketplace_id: None = ..., posting_id: None = ..., timeout: float = ..., holder_id: Optional[str] = ..., *, ttl: Optional[float] = ...) -> Callable[[Callable[_P, Awaitable[T]]], Callable[_P, Awaitable[Bid[T]]]]: ...

    def bid_once(
        self,
        marketplace_id: Optional[str] = None,
        posting_id: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        holder_id: Optional[str] = None,
        *,
        ttl: Optional[float] = None,
    ) -> Union[BidOnce, Callable[[Callable[_P, Awaitable[T]]], Callable[_P, Awaitable[Bid[T]]]]]:
        """Bids at most once per posting, across the fleet and over time::

            async with manager.bid_once("upwork", "job_123") as bid:
                await place_bid("job_123", "upwork", fence=bid.fencing_token)
            # bid.outcome: "placed" (a completion record stops every later bid_once),
            # "placed_after_loss", or "unrecorded" (see BidOutcome)

            @manager.bid_once()              # ids from the function's own arguments
            async def place_bid(posting_id, marketplace_id): ...

            bid = await place_bid("job_123", "upwork")   # a Bid: bid.outcome, bid.value

        Raises `AlreadyDoneError` on entry when the posting was handled before (the block
        does not run), `LockTimeoutError` when the lock stays busy for `timeout`. When the
        block raises, nothing is recorded, another instance may try, and the exception
        goes on (`bid.outcome` is "failed").
        """
        native = self._native

        def make(m: str, p: str) -> BidOnce:
            return BidOnce(native, (m, p, timeout, holder_id, ttl))

        if marketplace_id is None and posting_id is None:
            return bid_once_by_arguments(make)
        if marketplace_id is None or posting_id is None:
            raise TypeError("bid_once takes both marketplace_id and posting_id, or neither (decorator form)")
        return make(marketplace_id, posting_id)

    async def status(self, marketplace_id: str, posting_id: str) -> LockStatus:
        """What the backend knows about the posting: holder, ttl left, completion record."""
        return LockStatus._from(await self._native.status(marketplace_id, posting_id))

    async def locks(self, marketplace_id: Optional[str] = None) -> List[LockInfo]:
        """The held locks of the prefix, optionally of one marketplace (SCAN in batches)."""
        return [LockInfo._from(d) for d in await self._native.locks(marketplace_id)]

    async def clear_done(self, marketplace_id: str, posting_id: str) -> bool:
        """Deletes the posting's completion record so it may be bid on again; True if there was one."""
        return await self._native.clear_done(marketplace_id, posting_id)

    async def __aenter__(self: _M) -> _M:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend!r} location={self.location!r}>"


class BidLockManager(LockManager):
    """Locks in this process's memory (the original in-memory manager): they exclude
    tasks and threads of this process only. `BidLockManager()` reads `BID_LOCK_TTL` and
    `BID_LOCK_PREFIX` from the environment unless `ttl` / `prefix` are given."""

    __slots__ = ()

    def __init__(self, ttl: Optional[float] = None, *, prefix: Optional[str] = None) -> None:
        super().__init__(_native.manager_from_env("memory", ttl, None, prefix))


class RedisBidLockManager(LockManager):
    """Locks in Redis, shared by the fleet. `RedisBidLockManager()` is configured from the
    environment (`REDIS_URL`, or `REDIS_HOST`/`PORT`/`DB`/`PASSWORD`, `BID_LOCK_TTL`, ...)
    unless `redis_url`, `ttl` or `prefix` are given, and connects on first use::

        m = RedisBidLockManager()
        if await m.health_check():   # False when Redis cannot be reached
            ...

    Other calls raise `BackendError` while Redis cannot be reached. `response_timeout`
    (seconds, default 5) bounds each command's wait for Redis's reply. A malformed
    variable or argument raises `ConfigError` here, naming it.
    """

    __slots__ = ()

    def __init__(
        self,
        redis_url: Optional[str] = None,
        ttl: Optional[float] = None,
        *,
        prefix: Optional[str] = None,
        response_timeout: Optional[float] = None,
    ) -> None:
        super().__init__(_native.manager_from_env("redis", ttl, redis_url, prefix, response_timeout))


def _warn_if_fallen_back(native: _native.NativeManager) -> None:
    # Once per manager: a later get_bid_lock_manager() returns the same one, unwarned.
    message = native.take_fallback_warning()
    if message is not None:
        # stacklevel 3: the caller of get_bid_lock_manager() / create_bid_lock_manager().
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _wrap(native: _native.NativeManager) -> LockManager:
    cls = RedisBidLockManager if native.backend == "redis" else BidLockManager
    manager = object.__new__(cls)
    LockManager.__init__(manager, native)
    return manager


_default: Optional[LockManager] = None
_default_lock = threading.Lock()


async def get_bid_lock_manager() -> LockManager:
    """The process-wide manager: a `RedisBidLockManager` when Redis is configured (or
    answers at `127.0.0.1:6379`) and reachable, else a `BidLockManager` (in-memory, with
    one WARNING in the `bidlock` logger). When a Redis address was configured
    (`REDIS_URL`, `REDIS_URLS`, `REDIS_HOST`, ...) but could not be reached, the fallback
    also issues a `RuntimeWarning` through `warnings`, naming the address: a typo'd host
    never runs on memory unseen. A second call returns the same object.

    Configured from the environment exactly as the Rust library: `REDIS_URL` (or
    `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB`, `REDIS_USERNAME`, `REDIS_PASSWORD`),
    `REDIS_URLS` (Redlock), `USE_REDIS_LOCKS` (`true`: Redis or raise `BackendError`;
    `false`: memory; unset/`auto`: detect), `BID_LOCK_TTL`, `BID_LOCK_PREFIX`. A malformed
    value raises `ConfigError` naming the variable. In production set
    `USE_REDIS_LOCKS=true`, so a missing Redis is an error rather than a silent fallback.
    """
    global _default
    current = _default
    if current is not None and not current.closed:
        return current
    native = await _native.default_manager()
    _warn_if_fallen_back(native)
    with _default_lock:
        if _default is None or _default._native.id != native.id:
            _default = _wrap(native)
        return _default


async def create_bid_lock_manager(use_redis: Optional[bool] = None, ttl: float = DEFAULT_TTL) -> LockManager:
    """A new manager (not the process-wide one), connected before it is returned.

    `use_redis=True` forces Redis and raises `BackendError` when it cannot be reached;
    `False` uses memory; `None` does what `USE_REDIS_LOCKS` says, auto-detecting when it is
    unset. The Redis address and prefix come from the environment as for
    `get_bid_lock_manager()`; `ttl` (seconds) is the default lock ttl.
    """
    if use_redis is not None and not isinstance(use_redis, bool):
        raise TypeError(f"use_redis must be True, False or None, got {use_redis!r}")
    backend = None if use_redis is None else ("redis" if use_redis else "memory")
    native = _native.manager_from_env(backend, ttl)
    await native.connect()
    _warn_if_fallen_back(native)
    return _wrap(native)
