//! Counters and the wait-time histogram, their point-in-time snapshot, and the
//! Prometheus text rendering of that snapshot.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Live counters of one manager. Cheap to update from any task.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) lock_attempts: AtomicU64,
    pub(crate) lock_successes: AtomicU64,
    pub(crate) lock_conflicts: AtomicU64,
    pub(crate) lock_busy_tries: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) redis_errors: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) holder_mismatches: AtomicU64,
    pub(crate) extensions: AtomicU64,
    pub(crate) locks_lost: AtomicU64,
    pub(crate) already_done: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) backend_calls: AtomicU64,
    pub(crate) wait_time: Histogram,
    backend: std::sync::OnceLock<&'static str>,
}

/// The counters, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    LockAttempts,
    LockSuccesses,
    LockConflicts,
    LockBusyTries,
    LockTimeouts,
    RedisErrors,
    Releases,
    HolderMismatches,
    Extensions,
    LocksLost,
    AlreadyDone,
    Completions,
    BackendCalls,
}

impl Counter {
    /// The exported name (Prometheus and the `metrics` facade).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn name(self) -> &'static str {
        match self {
            Counter::LockAttempts => "bidlock_lock_attempts_total",
            Counter::LockSuccesses => "bidlock_lock_successes_total",
            Counter::LockConflicts => "bidlock_lock_conflicts_total",
            Counter::LockBusyTries => "bidlock_lock_busy_tries_total",
            Counter::LockTimeouts => "bidlock_lock_timeouts_total",
            Counter::RedisErrors => "bidlock_redis_errors_total",
            Counter::Releases => "bidlock_releases_total",
            Counter::HolderMismatches => "bidlock_holder_mismatches_total",
            Counter::Extensions => "bidlock_extensions_total",
            Counter::LocksLost => "bidlock_locks_lost_total",
            Counter::AlreadyDone => "bidlock_already_done_total",
            Counter::Completions => "bidlock_completions_total",
            Counter::BackendCalls => "bidlock_backend_calls_total",
        }
    }
}

impl Metrics {
    fn atomic(&self, c: Counter) -> &AtomicU64 {
        match c {
            Counter::LockAttempts => &self.lock_attempts,
            Counter::LockSuccesses => &self.lock_successes,
            Counter::LockConflicts => &self.lock_conflicts,
            Counter::LockBusyTries => &self.lock_busy_tries,
            Counter::LockTimeouts => &self.lock_timeouts,
            Counter::RedisErrors => &self.redis_errors,
            Counter::Releases => &self.releases,
            Counter::HolderMismatches => &self.holder_mismatches,
            Counter::Extensions => &self.extensions,
            Counter::LocksLost => &self.locks_lost,
            Counter::AlreadyDone => &self.already_done,
            Counter::Completions => &self.completions,
            Counter::BackendCalls => &self.backend_calls,
        }
    }

    /// Counts one event. With the `metrics` feature it also goes to the `metrics`
    /// facade, labelled by backend and marketplace (never by posting: unbounded).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn count(&self, c: Counter, marketplace: Option<&str>) {
        self.atomic(c).fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        {
            let backend = self.backend.get().copied().unwrap_or("unknown");
            match marketplace {
                Some(m) => ::metrics::counter!(c.name(), "backend" => backend, "marketplace" => m.to_owned()).increment(1),
                None => ::metrics::counter!(c.name(), "backend" => backend).increment(1),
            }
        }
    }

    /// Records the wait of one successful acquire.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn record_wait(&self, waited: Duration, marketplace: &str) {
        self.wait_time.record(waited);
        #[cfg(feature = "metrics")]
        {
            let backend = self.backend.get().copied().unwrap_or("unknown");
            ::metrics::histogram!("bidlock_wait_seconds", "backend" => backend, "marketplace" => marketplace.to_owned())
                .record(waited.as_secs_f64());
        }
    }

    /// Names the backend for exported labels (once, when the manager is built).
    pub(crate) fn set_backend(&self, name: &'static str) {
        let _ = self.backend.set(name);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            lock_attempts: self.lock_attempts.load(Relaxed),
            lock_successes: self.lock_successes.load(Relaxed),
            lock_conflicts: self.lock_conflicts.load(Relaxed),
            lock_busy_tries: self.lock_busy_tries.load(Relaxed),
            lock_timeouts: self.lock_timeouts.load(Relaxed),
            redis_errors: self.redis_errors.load(Relaxed),
            releases: self.releases.load(Relaxed),
            holder_mismatches: self.holder_mismatches.load(Relaxed),
            extensions: self.extensions.load(Relaxed),
            locks_lost: self.locks_lost.load(Relaxed),
            already_done: self.already_done.load(Relaxed),
            completions: self.completions.load(Relaxed),
            backend_calls: self.backend_calls.load(Relaxed),
            wait_count: self.wait_time.count(),
            wait_p50_us: self.wait_time.quantile_us(0.50),
            wait_p99_us: self.wait_time.quantile_us(0.99),
            wait_max_us: self.wait_time.max_us(),
        }
    }
}

/// A point-in-time copy of a manager's metrics.
///
/// The fields are read one by one while other tasks keep counting, so they are not
/// guaranteed to be consistent with each other (for example `lock_successes` may already
/// include an acquire whose wait time is not yet in the histogram).
///
/// The first five names are those of the original Python system
/// (`get_metrics()`), so dashboards and alerts keep working.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Calls to acquire (including `with_lock` and `bid_once`).
    pub lock_attempts: u64,
    /// Acquires that got the lock.
    pub lock_successes: u64,
    /// Acquires that found the lock held by another holder (once per acquire, however
    /// many tries it made: the original system's meaning, so its `lock_conflicts > 100`
    /// alert keeps working).
    pub lock_conflicts: u64,
    /// Tries that found the lock held (an acquire that waits may try several times).
    pub lock_busy_tries: u64,
    /// Acquires that gave up when their wait ran out.
    pub lock_timeouts: u64,
    /// Failed backend commands (Redis errors, timeouts, lost connections).
    pub redis_errors: u64,
    /// Releases that released a held lock.
    pub releases: u64,
    /// Releases or extensions refused because the caller was not the holder.
    pub holder_mismatches: u64,
    /// Successful lease extensions (watchdog and manual).
    pub extensions: u64,
    /// Leases found lost while their guard lived.
    pub locks_lost: u64,
    /// Acquires answered with "already done" (completion record present).
    pub already_done: u64,
    /// Completion records written.
    pub completions: u64,
    /// Requests sent to Redis (each script run, SCAN or PING is one round trip).
    pub backend_calls: u64,
    /// Acquires whose wait time is in the histogram.
    pub wait_count: u64,
    /// Median wait before the lock was acquired, in microseconds.
    pub wait_p50_us: u64,
    /// 99th percentile wait before the lock was acquired, in microseconds.
    pub wait_p99_us: u64,
    /// Longest wait before the lock was acquired, in microseconds.
    pub wait_max_us: u64,
}

impl MetricsSnapshot {
    /// The snapshot in the Prometheus text exposition format (version 0.0.4).
    ///
    /// Every series carries `backend="…"`; pass extra constant labels (for example the
    /// instance) in `labels`. Posting ids are never labels: their number is unbounded.
    pub fn to_prometheus(&self, backend: &str, labels: &[(&str, &str)]) -> String {
        let mut lbl = format!("backend=\"{}\"", escape_label(backend));
        for (k, v) in labels {
            let _ = write!(lbl, ",{}=\"{}\"", k, escape_label(v));
        }
        let mut out = String::new();
        let counters: [(&str, &str, u64); 13] = [
            ("lock_attempts", "Calls to acquire.", self.lock_attempts),
            (
                "lock_successes",
                "Acquires that got the lock.",
                self.lock_successes,
            ),
            (
                "lock_conflicts",
                "Acquires that found the lock held by another holder.",
                self.lock_conflicts,
            ),
            (
                "lock_busy_tries",
                "Tries that found the lock held by another holder.",
                self.lock_busy_tries,
            ),
            (
                "lock_timeouts",
                "Acquires that gave up when their wait ran out.",
                self.lock_timeouts,
            ),
            (
                "redis_errors",
                "Failed backend commands.",
                self.redis_errors,
            ),
            ("releases", "Releases of a held lock.", self.releases),
            (
                "holder_mismatches",
                "Releases or extensions refused because the caller was not the holder.",
                self.holder_mismatches,
            ),
            (
                "extensions",
                "Successful lease extensions.",
                self.extensions,
            ),
            (
                "locks_lost",
                "Leases found lost while their guard lived.",
                self.locks_lost,
            ),
            (
                "already_done",
                "Acquires answered with already done.",
                self.already_done,
            ),
            (
                "completions",
                "Completion records written.",
                self.completions,
            ),
            (
                "backend_calls",
                "Requests sent to Redis.",
                self.backend_calls,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP bidlock_{name}_total {help}");
            let _ = writeln!(out, "# TYPE bidlock_{name}_total counter");
            let _ = writeln!(out, "bidlock_{name}_total{{{lbl}}} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP bidlock_wait_seconds Time from the call to acquire until the lock was held."
        );
        let _ = writeln!(out, "# TYPE bidlock_wait_seconds summary");
        for (q, v) in [("0.5", self.wait_p50_us), ("0.99", self.wait_p99_us)] {
            let _ = writeln!(
                out,
                "bidlock_wait_seconds{{{lbl},quantile=\"{q}\"}} {}",
                v as f64 / 1e6
            );
        }
        let _ = writeln!(
            out,
            "bidlock_wait_seconds_count{{{lbl}}} {}",
            self.wait_count
        );
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A lock-free log-linear histogram of durations in microseconds: 8 sub-buckets per
/// power of two (relative error under 9%), up to about 2^40 µs (12 days).
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

const SUB: u32 = 8;
const SUB_BITS: u32 = 3;
const POWERS: u32 = 41;

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            buckets: (0..(POWERS * SUB) as usize)
                .map(|_| AtomicU64::new(0))
                .collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    fn index(us: u64) -> usize {
        if us < u64::from(SUB) {
            return us as usize;
        }
        let power = 63 - us.leading_zeros(); // >= SUB_BITS
        let sub = (us >> (power - SUB_BITS)) & u64::from(SUB - 1);
        let idx = ((power - SUB_BITS + 1) * SUB) as u64 + sub;
        idx.min(u64::from(POWERS * SUB - 1)) as usize
    }

    /// The lower bound (µs) of bucket `idx`.
    fn lower_bound(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < u64::from(SUB) {
            return idx;
        }
        let power = idx / u64::from(SUB) - 1 + u64::from(SUB_BITS);
        let sub = idx % u64::from(SUB);
        (1u64 << power) + (sub << (power - u64::from(SUB_BITS)))
    }

    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.record_us(us);
    }

    /// Records one value in microseconds.
    pub fn record_us(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The largest value recorded, in µs.
    pub fn max_us(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The value at quantile `q` (0..=1), in µs: the midpoint of the bucket holding it,
    /// capped at the maximum seen. 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().map(|b| b.load(Relaxed)).sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                let lo = Self::lower_bound(i);
                let hi = Self::lower_bound(i + 1);
                return (lo + (hi.saturating_sub(lo)) / 2)
                    .min(self.max_us())
                    .max(lo.min(self.max_us()));
            }
        }
        self.max_us()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record_us(us);
        }
        let p50 = h.quantile_us(0.5) as f64;
        let p99 = h.quantile_us(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.1, "p50 {p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.1, "p99 {p99}");
        assert_eq!(h.max_us(), 10_000);
        assert_eq!(h.count(), 10_000);
        assert_eq!(Histogram::new().quantile_us(0.5), 0);
    }

    #[test]
    fn bucket_bounds_are_monotonic() {
        let mut last = 0;
        for i in 1..(POWERS * SUB) as usize {
            let lb = Histogram::lower_bound(i);
            assert!(lb > last, "bucket {i}");
            assert_eq!(Histogram::index(lb), i);
            last = lb;
        }
    }

    #[test]
    fn prometheus_text_has_every_counter() {
        let s = MetricsSnapshot {
            lock_attempts: 3,
            ..Default::default()
        };
        let text = s.to_prometheus("memory", &[("marketplace", "up\"work")]);
        assert!(text.contains(
            "bidlock_lock_attempts_total{backend=\"memory\",marketplace=\"up\\\"work\"} 3"
        ));
        assert_eq!(text.matches("# TYPE").count(), 14);
    }
}
