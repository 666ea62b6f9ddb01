//! Latency histograms for `simulate` and `bench`: an HdrHistogram (3 significant digits)
//! shared by the tasks that record into it. Recording takes an uncontended lock, next to
//! a lock round trip of tens of microseconds or more.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Durations in microseconds, recorded from any task.
#[derive(Debug)]
pub(crate) struct Latencies(Mutex<Option<Histogram<u64>>>);

impl Default for Latencies {
    fn default() -> Self {
        // Auto-resizing, so no duration is out of range; `new` refuses only more than 5
        // significant digits.
        Latencies(Mutex::new(Histogram::new(3).ok()))
    }
}

impl Latencies {
    fn read<T: Default>(&self, f: impl FnOnce(&mut Histogram<u64>) -> T) -> T {
        match self.0.lock() {
            Ok(mut h) => h.as_mut().map(f).unwrap_or_default(),
            Err(poisoned) => poisoned.into_inner().as_mut().map(f).unwrap_or_default(),
        }
    }

    /// Records one duration (whole microseconds).
    pub(crate) fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // `record` grows the histogram to fit; `saturating_record` would clamp instead.
        self.read(|h| {
            if h.record(us).is_err() {
                h.saturating_record(us);
            }
        });
    }

    /// How many durations were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.read(|h| h.len())
    }

    /// The duration at quantile `q` (0..=1), in µs; 0 when nothing was recorded.
    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        self.read(|h| h.value_at_quantile(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_recorded_durations() {
        let l = Latencies::default();
        assert_eq!((l.count(), l.quantile_us(0.5)), (0, 0));
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        let p50 = l.quantile_us(0.5);
        assert!((49_900..=50_100).contains(&p50), "{p50}");
        assert!(l.quantile_us(0.99) >= 98_900, "{}", l.quantile_us(0.99));
    }
}
