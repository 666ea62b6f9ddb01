"""What `with_lock` yields, and the context manager that releases on every exit: normal
return, exception, task cancellation, `KeyboardInterrupt`."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Optional, Tuple

from ._errors import BackendError, LockLostError
from ._native import NativeGuard, NativeManager

logger = logging.getLogger("bidlock")


class Lease:
    """A held lock: what `async with manager.with_lock(...) as lease:` yields.

    Pass `fencing_token` with the bid, and have the receiver refuse a token lower than one
    it has seen for that posting: a holder that paused past its ttl is then refused. While
    the block runs the lease is renewed every ttl/3; if a renewal finds the lock gone or
    cannot reach Redis in time, `is_lost` turns true and `lost()` resolves. Long critical
    sections should call `ensure_held()` before each irreversible step.
    """

    __slots__ = ("_guard",)

    def __init__(self, guard: NativeGuard) -> None:
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


async def release_quietly(guard: NativeGuard) -> None:
    """Releases `guard` on the way out of a block: a Redis failure is logged (the lock
    expires after its ttl) rather than raised over the block's own exception. The release
    runs to its end in the runtime even if this task is cancelled meanwhile."""
    try:
        await guard.release()
    except BackendError as e:
        logger.warning("release of %s failed; the lock expires after its ttl: %s", guard.key, e)


class LockContext:
    """The async context manager returned by `with_lock`: acquires on entry (raising
    `LockTimeoutError` when `timeout` runs out), yields a `Lease`, releases on exit."""

    __slots__ = ("_native", "_args", "_guard")

    def __init__(self, native: NativeManager, args: Tuple[Any, ...]) -> None:
        self._native = native
        self._args = args
        self._guard: Optional[NativeGuard] = None

    async def __aenter__(self) -> Lease:
        if self._guard is not None:
            raise RuntimeError("this with_lock() context is already entered; call with_lock() again")
        self._guard = guard = await self._native.acquire(*self._args)
        return Lease(guard)

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        guard, self._guard = self._guard, None
        if guard is None:
            raise RuntimeError("this with_lock() context was not entered")
        # release_quietly(guard), inlined: one coroutine less on every exit.
        try:
            await guard.release()
        except BackendError as e:
            logger.warning("release of %s failed; the lock expires after its ttl: %s", guard.key, e)
