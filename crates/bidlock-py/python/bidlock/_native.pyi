"""Type stubs of `bidlock._native`, the compiled half of the package (PyO3). Use the
names re-exported by `bidlock`; this module is the thin edge over the Rust library."""

from typing import Any, Awaitable, Dict, List, Optional, Tuple, final

__all__ = [
    "LockError",
    "LockTimeoutError",
    "LockLostError",
    "AlreadyDoneError",
    "BackendError",
    "ConfigError",
    "ManagerClosedError",
    "NativeManager",
    "NativeGuard",
    "default_manager",
    "manager_from_env",
    "reset_log_cache",
    "shutdown",
    "_panic_in_runtime",
    "_panic_at_once",
    "RustPanic",
    "DEFAULT_TTL",
    "DEFAULT_TIMEOUT",
    "ENV_VARS",
    "__version__",
]

__version__: str
DEFAULT_TTL: float
"""The default lock ttl in seconds (300)."""
DEFAULT_TIMEOUT: float
"""How long an acquire waits by default, in seconds (10)."""
ENV_VARS: List[str]
"""The environment variables the configuration reads."""

class LockError(Exception):
    """Base class of every bidlock error: catch it to handle them all."""

class LockTimeoutError(LockError, TimeoutError):
    """The lock stayed held by another holder until `timeout` ran out (contention, not failure)."""

class LockLostError(LockError):
    """The lock is no longer held by this holder: stop the critical section."""

class AlreadyDoneError(LockError):
    """The posting has a completion record: the lock was not taken and the body did not run."""

class BackendError(LockError):
    """Redis could not be reached or failed; never reported as a held lock."""

class ConfigError(LockError, ValueError):
    """Invalid configuration (environment variable named in the message, URL, ttl, prefix)."""

class ManagerClosedError(LockError):
    """The manager was closed; it takes no new work."""

class RustPanic(Exception):
    """A panic in bidlock's Rust code, raised in the task that awaited the operation."""

@final
class NativeGuard:
    """A held lock; `bidlock.Lease` wraps it. Released by `release()`, `complete()`, or
    when garbage collected."""

    @property
    def fencing_token(self) -> int:
        """The fencing token of this acquisition."""
    @property
    def holder_id(self) -> str:
        """The holder id stored in the lock."""
    @property
    def marketplace_id(self) -> str:
        """The marketplace id."""
    @property
    def posting_id(self) -> str:
        """The posting id."""
    @property
    def key(self) -> str:
        """The lock's Redis key."""
    @property
    def is_lost(self) -> bool:
        """Whether the lock may no longer be held."""
    @property
    def lost_reason(self) -> Optional[str]:
        """Why it was lost, once it was."""
    @property
    def is_active(self) -> bool:
        """Whether the guard still holds (not released or completed)."""
    @property
    def expires_in(self) -> Optional[float]:
        """Seconds until the lease runs out unless renewed; None while the store keeps it."""
    def lost(self) -> Awaitable[bool]:
        """Resolves to True when the lock is found lost, False when it was let go first."""
    def release(self) -> Awaitable[bool]:
        """Releases the lock (runs to its end even if the awaiting task is cancelled);
        resolves to whether it was still held."""
    def complete(self) -> Awaitable[Tuple[bool, bool, Optional[str]]]:
        """Writes the completion record and releases: `(recorded, released, error)`."""

@final
class NativeManager:
    """One bidlock manager, connected on first use; the Python managers wrap it."""

    @property
    def id(self) -> int:
        """A number unique to this manager in the process."""
    @property
    def backend(self) -> str:
        """`redis` or `memory` once connected; before, the configured choice (maybe `auto`)."""
    @property
    def location(self) -> Optional[str]:
        """The Redis URL without password, or `memory`; None before connecting."""
    @property
    def ttl(self) -> float:
        """The default lock ttl in seconds."""
    @property
    def prefix(self) -> str:
        """The key prefix."""
    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
    @property
    def connected(self) -> bool:
        """Whether the backend was reached."""
    def take_fallback_warning(self) -> Optional[str]:
        """The warning to give once when a configured Redis was unreachable and the manager
        fell back to memory; None otherwise, and after the first call."""
    def connect(self) -> Awaitable[None]:
        """Connects now; raises `BackendError` when Redis is required and unreachable."""
    def acquire(
        self,
        marketplace_id: str,
        posting_id: str,
        timeout: float,
        holder_id: Optional[str] = None,
        ttl: Optional[float] = None,
        renew: bool = True,
    ) -> Awaitable[NativeGuard]:
        """Takes the lock (raises `LockTimeoutError`, `AlreadyDoneError`, `BackendError`)."""
    def acquire_lock(
        self,
        marketplace_id: str,
        posting_id: str,
        timeout: float,
        holder_id: Optional[str] = None,
        ttl: Optional[float] = None,
    ) -> Awaitable[bool]:
        """The guide's `acquire_lock`: held until `release_lock` or its ttl, not renewed."""
    def release_lock(self, marketplace_id: str, posting_id: str, holder_id: Optional[str] = None) -> Awaitable[bool]:
        """The guide's `release_lock`: False for a wrong holder or no lock."""
    def metrics(self) -> Dict[str, int]:
        """The counters (zeros before the first use)."""
    def health_check(self) -> Awaitable[bool]:
        """True when the backend answers (or memory was chosen); False when Redis cannot be
        reached or auto-detection fell back to memory; raises `ManagerClosedError` after
        `close()`."""
    def status(self, marketplace_id: str, posting_id: str) -> Awaitable[Dict[str, Any]]:
        """What the backend knows about the key."""
    def locks(self, marketplace_id: Optional[str] = None) -> Awaitable[List[Dict[str, Any]]]:
        """The held locks of the prefix."""
    def clear_done(self, marketplace_id: str, posting_id: str) -> Awaitable[bool]:
        """Deletes the completion record of the key."""
    def cleanup_all(self) -> Awaitable[int]:
        """Removes every lock of the prefix; resolves to how many."""
    def close(self) -> Awaitable[None]:
        """Releases what this manager holds and stops it."""

def manager_from_env(
    backend: Optional[str] = None,
    ttl: Optional[float] = None,
    redis_url: Optional[str] = None,
    prefix: Optional[str] = None,
    response_timeout: Optional[float] = None,
) -> NativeManager:
    """A manager configured from the environment with the given overrides (raises
    `ConfigError` naming a malformed variable); connects on first use."""

def default_manager() -> Awaitable[NativeManager]:
    """The process-wide manager (a new one only after the previous one was closed)."""

def reset_log_cache() -> None:
    """Forgets the cached Python logger levels so a `setLevel` applies at once, and sets
    the most verbose level a `bidlock` logger passes as the Rust side's maximum."""

def shutdown() -> None:
    """Called at interpreter exit: closes open managers, then stops calls into Python."""

def _panic_in_runtime(message: str) -> Awaitable[None]:
    """An awaitable whose Rust future panics with `message` in the runtime (tests of the
    panic path): it raises `RustPanic`, and other operations in flight are unaffected."""

def _panic_at_once(message: str) -> Awaitable[None]:
    """An awaitable whose Rust future panics on its first poll, on the caller's thread:
    it raises `RustPanic` when awaited, like a panic in the runtime."""
