//! The process's one clock base: instants kept compact as microseconds since it (a
//! lease's deadline, the keeper's wake-up target, the in-memory store's entries), and the
//! wall clock in microseconds (fencing tokens).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

fn base() -> Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    Instant::from_std(*BASE.get_or_init(std::time::Instant::now))
}

/// Sets the base now if it is not set (when a manager is built, before any request is
/// sent: an instant before the base would be clamped up to it).
pub(crate) fn start() {
    let _ = base();
}

/// `t` as microseconds since the base (0 before it; saturating far after it).
pub(crate) fn micros(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base()).as_micros()).unwrap_or(u64::MAX - 1)
}

/// The instant `us` microseconds after the base.
pub(crate) fn instant(us: u64) -> Instant {
    base() + Duration::from_micros(us)
}

/// A duration in microseconds (saturating).
pub(crate) fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1)
}

/// The wall clock in microseconds since the Unix epoch (0 if it is before the epoch).
pub(crate) fn wall_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}
