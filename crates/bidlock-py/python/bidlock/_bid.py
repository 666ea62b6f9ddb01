"""`bid_once`: a block (or an `async def`) run at most once per posting, across the fleet
and over time, and the outcome it reports, the same four as Rust's `BidOutcome`."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generic, Literal, Optional, Tuple, TypeVar, Union

from ._lease import Lease, release_quietly
from ._native import NativeGuard, NativeManager

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")

T = TypeVar("T")


# A Union of one-value Literals rather than one Literal of five: the same type, and at
# run time a Union, as type checkers' stub tests expect of an alias.
BidOutcome = Union[
    Literal["pending"], Literal["placed"], Literal["placed_after_loss"], Literal["unrecorded"], Literal["failed"]
]
"""What became of a bid once its block ended, Rust's `BidOutcome` as a string:

- `"pending"`: the block is still running.
- `"placed"`: the block returned; its completion record is written with the release of
  the lock, so no instance runs this posting again (for the record's retention, 7 days).
- `"placed_after_loss"`: the block returned and the record is written, but the lock had
  been lost before it finished (the lease lapsed, another holder took the lock), or
  whether it still held is unknown. Another holder may have bid meanwhile: the fencing
  tokens tell which bid is newer. No instance runs it again after this.
- `"unrecorded"`: the block returned, but the record could not be written within the
  retries (`record_error` says why): another instance may run this posting again.
- `"failed"`: the block raised (or was cancelled): nothing recorded, the lock released,
  another instance may try.
"""

_RECORDED = ("placed", "placed_after_loss")


class Bid(Lease, Generic[T]):
    """What `bid_once` gives: a `Lease` (the fencing token to send with the bid), plus
    the outcome once the bid has ended.

    `async with manager.bid_once(m, p) as bid:` yields it (`value` stays None); an
    `async def` decorated with `@manager.bid_once(...)` returns it when the function
    returned, with the function's result in `value`. A function that raises raises
    through the decorator, as the block's exception leaves `async with`.
    """

    __slots__ = ("outcome", "record_error", "value")

    def __init__(self, guard: NativeGuard) -> None:
        super().__init__(guard)
        self.outcome: BidOutcome = "pending"
        """`"pending"` inside the block, then one of the other outcomes of `BidOutcome`."""
        self.record_error: Optional[str] = None
        """Why the completion record is missing (`UNRECORDED`), else None."""
        self.value: Optional[T] = None
        """The decorated function's result (decorator form), else None."""

    @property
    def is_placed(self) -> bool:
        """Whether the bid ran and returned (recorded or not)."""
        return self.outcome in _RECORDED or self.outcome == "unrecorded"

    @property
    def is_recorded(self) -> bool:
        """Whether a completion record stops every later attempt."""
        return self.outcome in _RECORDED

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r}, outcome={self.outcome!r}, fencing_token={self.fencing_token})"


class BidOnce:
    """Runs a block at most once per posting across the fleet and over time: the async
    context manager returned by `bid_once(marketplace_id, posting_id)`, also usable as a
    decorator of an `async def`.

    On entry it takes the lock, or raises `AlreadyDoneError` when an earlier bid on this
    posting completed (the block does not run), or `LockTimeoutError`. When the block
    returns, the completion record is written atomically with the release and
    `bid.outcome` tells how that went; when it raises (or is cancelled), the lock is
    released without a record.
    """

    __slots__ = ("_native", "_args", "_bid")

    def __init__(self, native: NativeManager, args: Tuple[Any, ...]) -> None:
        self._native = native
        self._args = args
        self._bid: Optional[Bid[Any]] = None

    async def __aenter__(self) -> Bid[Any]:
        if self._bid is not None:
            raise RuntimeError("this bid_once() context is already entered; call bid_once() again")
        self._bid = Bid(await self._native.acquire(*self._args))
        return self._bid

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        bid, self._bid = self._bid, None
        if bid is None:
            raise RuntimeError("this bid_once() context was not entered")
        if exc_type is not None:
            bid.outcome = "failed"
            await release_quietly(bid._guard)
            return
        # The library logs a lapsed lease and a missing record at WARNING/ERROR itself.
        recorded, released, error = await bid._guard.complete()
        if not recorded:
            bid.outcome, bid.record_error = "unrecorded", error
        elif released:
            bid.outcome = "placed"
        else:
            bid.outcome = "placed_after_loss"

    def __call__(self, fn: Callable[_P, Awaitable[T]]) -> Callable[_P, Awaitable[Bid[T]]]:
        _check_coroutine_function(fn)
        native, acquire_args = self._native, self._args

        @functools.wraps(fn)
        async def once(*args: _P.args, **kwargs: _P.kwargs) -> Bid[T]:
            return await _run_once(BidOnce(native, acquire_args), fn(*args, **kwargs))

        return once


async def _run_once(context: BidOnce, call: Awaitable[T]) -> Bid[T]:
    try:
        async with context as bid:
            bid.value = await call
    finally:
        # An acquire that raised (AlreadyDoneError, LockTimeoutError, ...) never awaited
        # the call: close its coroutine so Python does not warn that it was never awaited.
        close = getattr(call, "close", None)
        if close is not None:
            close()
    return bid


def _check_coroutine_function(fn: Callable[..., Any]) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise TypeError("bid_once decorates an async def function")


def bid_once_by_arguments(
    make: Callable[[str, str], BidOnce],
) -> Callable[[Callable[_P, Awaitable[T]]], Callable[_P, Awaitable[Bid[T]]]]:
    """The decorator form of `bid_once()` without ids: the posting comes from the decorated
    function's `marketplace_id` and `posting_id` arguments."""

    def decorate(fn: Callable[_P, Awaitable[T]]) -> Callable[_P, Awaitable[Bid[T]]]:
        _check_coroutine_function(fn)
        signature = inspect.signature(fn)
        missing = {"marketplace_id", "posting_id"} - set(signature.parameters)
        if missing:
            raise TypeError(
                f"{fn.__qualname__} has no parameter {' or '.join(sorted(missing))}: pass the ids "
                "to bid_once(marketplace_id, posting_id) instead"
            )

        @functools.wraps(fn)
        async def once(*args: _P.args, **kwargs: _P.kwargs) -> Bid[T]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            context = make(bound.arguments["marketplace_id"], bound.arguments["posting_id"])
            return await _run_once(context, fn(*args, **kwargs))

        return once

    return decorate
