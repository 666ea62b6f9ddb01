"""What `with_lock` and `bid_once` yield, and the context managers that release on every
exit: normal return, exception, task cancellation, `KeyboardInterrupt`."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Awaitable, Callable, Optional, Tuple, TypeVar

from ._errors import BackendError, LockLostError

logger = logging.getLogger("bidlock")

T = TypeVar("T")


class Lease:
    """A held lock: what `async with manager.with_lock(...) as lease:` yields.

    Pass `fencing_token` with the bid, and have the receiver refuse a token lower than one
    it has seen for that posting: a holder that paused past its ttl is then refused. While
    the block runs the lease is renewed every ttl/3; if a renewal finds the lock gone or
    cannot reach Redis in time, `is_lost` turns true and `lost()` resolves. Long critical
    sections should call `ensure_held()` before each irreversible step.
    """

    __slots__ = ("_guard",)

    def __init__(self, guard: Any) -> None:
        self._guard = guard

    @property
    def fencing_token(self) -> int:
        """Strictly greater than every token issued before it (per prefix): send it with the bid."""
        return self._guard.fencing_token

    @property
    def holder_id(self) -> str:
        """The holder id stored in the lock (generated unless you passed one)."""
        return self._guard.holder_id

    @property
    def marketplace_id(self) -> str:
        """The marketplace id."""
        return self._guard.marketplace_id

    @property
    def posting_id(self) -> str:
        """The posting id."""
        return self._guard.posting_id

    @property
    def key(self) -> str:
        """The lock's Redis key, `bid_lock:{marketplace}:{posting}`."""
        return self._guard.key

    @property
    def is_lost(self) -> bool:
        """True when the lock may no longer be held (found gone or taken, or not renewed in
        time). On doubt this is True."""
        return self._guard.is_lost

    @property
    def lost_reason(self) -> Optional[str]:
        """Why the lock was lost, once it was."""
        return self._guard.lost_reason

    @property
    def is_held(self) -> bool:
        """True while the block runs and the lock is not lost."""
        return self._guard.is_active and not self._guard.is_lost

    @property
    def expires_in(self) -> Optional[float]:
        """Seconds left on the lease unless renewed (None while the in-memory store keeps it)."""
        return self._guard.expires_in

    def lost(self) -> Awaitable[bool]:
        """An awaitable that resolves to True when the lock is found lost, or to False when
        the lock was released first. Race it against the work::

            done, _ = await asyncio.wait([work, asyncio.ensure_future(lease.lost())],
                                         return_when=asyncio.FIRST_COMPLETED)
        """
        return self._guard.lost()

    def ensure_held(self) -> None:
        """Raises `LockLostError` unless the lock is still held."""
        if self._guard.is_lost:
            reason = self._guard.lost_reason or "not renewed in time"
            raise LockLostError(f"lock {self.key} was lost: {reason}")
        if not self._guard.is_active:
            raise LockLostError(f"lock {self.key} was released")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(key={self.key!r}, holder_id={self.holder_id!r}, "
            f"fencing_token={self.fencing_token}, is_lost={self.is_lost})"
        )


class Bid(Lease):
    """What `async with manager.bid_once(...) as bid:` yields: a `Lease`, plus the outcome
    once the block has exited.

    `outcome` is `"pending"` inside the block, then `"placed"` (the block returned and the
    completion record is written: no instance will run this posting again), `"unrecorded"`
    (the block returned but the record could not be written, see `record_error`: another
    instance may run it again) or `"failed"` (the block raised: nothing recorded, the lock
    is released, another instance may try).
    """

    __slots__ = ("outcome", "record_error")

    def __init__(self, guard: Any) -> None:
        super().__init__(guard)
        self.outcome: str = "pending"
        self.record_error: Optional[str] = None


async def _release(guard: Any) -> None:
    # `release()` and `complete()` run to their end in the runtime even if this task is
    # cancelled while awaiting them.
    try:
        await guard.release()
    except BackendError as e:
        logger.warning("release of %s failed; the lock expires after its ttl: %s", guard.key, e)


class LockContext:
    """The async context manager returned by `with_lock`: acquires on entry (raising
    `LockTimeoutError` when `timeout` runs out), yields a `Lease`, releases on exit."""

    __slots__ = ("_native", "_args", "_guard")

    def __init__(self, native: Any, args: Tuple[Any, ...]) -> None:
        self._native = native
        self._args = args
        self._guard: Any = None

    async def __aenter__(self) -> Lease:
        if self._guard is not None:
            raise RuntimeError("this with_lock() context is already entered; call with_lock() again")
        self._guard = guard = await self._native.acquire(*self._args)
        return Lease(guard)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        guard, self._guard = self._guard, None
        await _release(guard)
        return False


class BidOnce:
    """Runs a block at most once per posting across the fleet and over time: the async
    context manager (or decorator) returned by `bid_once`.

    On entry it takes the lock, or raises `AlreadyDoneError` when an earlier bid on this
    posting completed (the block does not run), or `LockTimeoutError`. When the block
    returns, the completion record is written atomically with the release; when it raises
    (or is cancelled), the lock is released without a record. As a decorator it wraps an
    `async def` and returns its result.
    """

    __slots__ = ("_native", "_args", "_bid")

    def __init__(self, native: Any, args: Tuple[Any, ...]) -> None:
        self._native = native
        self._args = args
        self._bid: Optional[Bid] = None

    async def __aenter__(self) -> Bid:
        if self._bid is not None:
            raise RuntimeError("this bid_once() context is already entered; call bid_once() again")
        self._bid = Bid(await self._native.acquire(*self._args))
        return self._bid

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        bid, self._bid = self._bid, None
        assert bid is not None
        if exc_type is not None:
            bid.outcome = "failed"
            await _release(bid._guard)
            return False
        recorded, _released, error = await bid._guard.complete()
        if recorded:
            bid.outcome = "placed"
        else:
            bid.outcome, bid.record_error = "unrecorded", error
            logger.warning("bid on %s ran but its completion was not recorded; another instance may run it again: %s", bid.key, error)
        return False

    def __call__(self, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("bid_once decorates an async def function")
        native, acquire_args = self._native, self._args

        @functools.wraps(fn)
        async def once(*args: Any, **kwargs: Any) -> T:
            async with BidOnce(native, acquire_args):
                return await fn(*args, **kwargs)

        return once


def bid_once_by_arguments(
    make: Callable[[str, str], BidOnce],
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """The decorator form of `bid_once()` without ids: the posting comes from the decorated
    function's `marketplace_id` and `posting_id` arguments."""

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("bid_once decorates an async def function")
        signature = inspect.signature(fn)
        missing = {"marketplace_id", "posting_id"} - set(signature.parameters)
        if missing:
            raise TypeError(
                f"{fn.__qualname__} has no parameter {' or '.join(sorted(missing))}: pass the ids "
                "to bid_once(marketplace_id, posting_id) instead"
            )

        @functools.wraps(fn)
        async def once(*args: Any, **kwargs: Any) -> T:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            async with make(bound.arguments["marketplace_id"], bound.arguments["posting_id"]):
                return await fn(*args, **kwargs)

        return once

    return decorate
