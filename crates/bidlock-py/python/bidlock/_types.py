"""Plain records returned by `status()` and `locks()`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class LockStatus:
    """What the backend knows about one posting: its lock and its completion record."""

    redis_key: str
    """The lock's Redis key, `bid_lock:{marketplace}:{posting}`."""
    holder: Optional[str]
    """The holder id, when the lock is held."""
    ttl_left_ms: Optional[int]
    """Milliseconds before the lock expires."""
    done: Optional[str]
    """The completion record (`"{token} {holder}"`), when the posting was handled."""
    done_ttl_left_ms: Optional[int]
    """Milliseconds before the completion record expires."""

    @property
    def held(self) -> bool:
        """Whether someone holds the lock."""
        return self.holder is not None

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> LockStatus:
        return cls(d["redis_key"], d.get("holder"), d.get("ttl_left_ms"), d.get("done"), d.get("done_ttl_left_ms"))


@dataclass(frozen=True)
class LockInfo:
    """One held lock, as listed by `locks()`."""

    redis_key: str
    """The lock's Redis key."""
    marketplace_id: str
    """The marketplace id."""
    posting_id: str
    """The posting id."""
    holder: str
    """The holder id stored in the lock."""
    ttl_left_ms: Optional[int]
    """Milliseconds before the lock expires (None: no expiry)."""

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> LockInfo:
        return cls(d["redis_key"], d["marketplace"], d["posting"], d["holder"], d.get("ttl_left_ms"))
