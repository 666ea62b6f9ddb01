//! Counters and the wait-time histogram of one manager, and their point-in-time
//! snapshot. Each counter is declared once, in the table below; the snapshot's fields,
//! the exported names and the Prometheus help text all come from it.

mod histogram;
mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub(crate) use histogram::Histogram;

/// Declares the counters: `Variant => field, "help"`. The field is the snapshot's (and the
/// original system's `get_metrics()` key); the exported name is `bidlock_{field}_total`.
macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $variant:ident => $field:ident, $help:literal; )*) => {
        /// The counters, by name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Counter { $($variant),* }

        /// Every counter, in export order.
        const COUNTERS: &[Counter] = &[$(Counter::$variant),*];

        impl Counter {
            /// The exported name (Prometheus and the `metrics` facade).
            pub(crate) fn name(self) -> &'static str {
                match self { $(Counter::$variant => concat!("bidlock_", stringify!($field), "_total")),* }
            }

            /// The Prometheus help text.
            pub(crate) fn help(self) -> &'static str {
                match self { $(Counter::$variant => $help),* }
            }
        }

        /// A point-in-time copy of a manager's metrics.
        ///
        /// The fields are read one by one while other tasks keep counting, so they are not
        /// guaranteed to be consistent with each other (for example `lock_successes` may
        /// already include an acquire whose wait time is not yet in the histogram).
        ///
        /// The first five names are those of the original Python system
        /// (`get_metrics()`), with the same meanings, so dashboards and alerts keep working.
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
        #[non_exhaustive]
        pub struct MetricsSnapshot {
            $( $(#[doc = $doc])* pub $field: u64, )*
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
            /// The value of one counter.
            pub(crate) fn get(&self, c: Counter) -> u64 {
                match c { $(Counter::$variant => self.$field),* }
            }

            fn set(&mut self, c: Counter, v: u64) {
                match c { $(Counter::$variant => self.$field = v),* }
            }
        }
    };
}

counters! {
    /// Calls to acquire (including `with_lock` and `bid_once`).
    LockAttempts => lock_attempts, "Calls to acquire.";
    /// Acquires that got the lock.
    LockSuccesses => lock_successes, "Acquires that got the lock.";
    /// Acquires that found the lock held by another holder (once per acquire, however
    /// many tries it made: the original system's meaning, so its `lock_conflicts > 100`
    /// alert keeps working).
    LockConflicts => lock_conflicts, "Acquires that found the lock held by another holder.";
    /// Acquires that gave up when their wait ran out.
    LockTimeouts => lock_timeouts, "Acquires that gave up when their wait ran out.";
    /// Failed backend commands (Redis errors, timeouts, lost connections).
    RedisErrors => redis_errors, "Failed backend commands.";
    /// Tries that found the lock held (an acquire that waits may try several times).
    LockBusyTries => lock_busy_tries, "Tries that found the lock held by another holder.";
    /// Releases that released a held lock.
    Releases => releases, "Releases of a held lock.";
    /// Releases or extensions refused because the caller was not the holder.
    HolderMismatches => holder_mismatches, "Releases or extensions refused because the caller was not the holder.";
    /// Successful lease extensions (renewals and manual).
    Extensions => extensions, "Successful lease extensions.";
    /// Leases found lost while their guard lived.
    LocksLost => locks_lost, "Leases found lost while their guard lived.";
    /// Acquires answered with "already done" (completion record present).
    AlreadyDone => already_done, "Acquires answered with already done.";
    /// Completion records written.
    Completions => completions, "Completion records written.";
    /// Requests sent to Redis (each script run, SCAN or PING is one round trip).
    BackendCalls => backend_calls, "Requests sent to Redis.";
    /// Locks handed over directly by the previous holder's release (no try needed).
    Handoffs => handoffs, "Locks handed over directly by the previous holder's release.";
}

/// Live counters of one manager. Cheap to update from any task.
#[derive(Debug)]
pub(crate) struct Metrics {
    counters: Box<[AtomicU64]>,
    pub(crate) wait_time: Histogram,
    backend: std::sync::OnceLock<&'static str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: COUNTERS.iter().map(|_| AtomicU64::new(0)).collect(),
            wait_time: Histogram::new(),
            backend: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Counts one event. With the `metrics` feature it also goes to the `metrics`
    /// facade, labelled by backend and marketplace (never by posting: unbounded).
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn count(&self, c: Counter, marketplace: Option<&str>) {
        self.counters[c as usize].fetch_add(1, Relaxed);
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
        let mut s = MetricsSnapshot {
            wait_count: self.wait_time.count(),
            wait_p50_us: self.wait_time.quantile_us(0.50),
            wait_p99_us: self.wait_time.quantile_us(0.99),
            wait_max_us: self.wait_time.max_us(),
            ..MetricsSnapshot::default()
        };
        for &c in COUNTERS {
            s.set(c, self.counters[c as usize].load(Relaxed));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_a_distinct_name_and_slot() {
        let m = Metrics::default();
        for (i, &c) in COUNTERS.iter().enumerate() {
            assert_eq!(c as usize, i);
            for _ in 0..=i {
                m.count(c, None);
            }
        }
        let s = m.snapshot();
        for (i, &c) in COUNTERS.iter().enumerate() {
            assert_eq!(s.get(c), i as u64 + 1, "{}", c.name());
        }
        let mut names: Vec<&str> = COUNTERS.iter().map(|c| c.name()).collect();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len());
    }
}
