//! [`Histogram`]: a lock-free log-linear histogram of durations, for wait times and the
//! benchmark's latencies.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A lock-free log-linear histogram of durations in microseconds: 8 sub-buckets per
/// power of two (relative error under 9%), up to about 2^40 µs (12 days).
#[derive(Debug)]
pub(crate) struct Histogram {
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
    pub(crate) fn new() -> Histogram {
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
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.record_us(us);
    }

    /// Records one value in microseconds.
    pub(crate) fn record_us(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max.fetch_max(us, Relaxed);
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The largest value recorded, in µs.
    pub(crate) fn max_us(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The value at quantile `q` (0..=1), in µs: the midpoint of the bucket holding it,
    /// capped at the maximum seen. 0 when empty.
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
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
}
