//! What the benchmark loops count, the same for bidlock and the raw baseline, and how
//! the figures are put into the JSON line.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::latency::Latencies;
use serde_json::{json, Value};

/// What an uncontended loop counts.
#[derive(Default)]
pub(crate) struct PairStats {
    pub(crate) acquire: Latencies,
    pairs: AtomicU64,
    errors: AtomicU64,
}

impl PairStats {
    pub(crate) fn pair(&self) {
        self.pairs.fetch_add(1, Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn summary(&self, secs: f64) -> Value {
        json!({
            "pairs": self.pairs.load(Relaxed),
            "elapsed_s": secs,
            "pairs_per_sec": self.pairs.load(Relaxed) as f64 / secs,
            "acquire_p50_us": self.acquire.quantile_us(0.5),
            "acquire_p99_us": self.acquire.quantile_us(0.99),
            "errors": self.errors.load(Relaxed),
        })
    }
}

/// One critical section of a hot-key run: who held it, from when to when (ns on the
/// machine's monotonic clock, comparable across processes).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Section {
    pub(crate) worker: u32,
    pub(crate) enter_ns: u64,
    pub(crate) leave_ns: u64,
}

/// What a hot-key loop records: every critical section, and the waits that gave up.
#[derive(Default)]
pub(crate) struct HotKeyLog {
    sections: Mutex<Vec<Section>>,
    pub(crate) timeouts: AtomicU64,
}

/// Now on the monotonic clock, in ns: the same clock in every process of the machine.
pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

impl HotKeyLog {
    pub(crate) fn record(&self, worker: u32, enter_ns: u64, leave_ns: u64) {
        if let Ok(mut s) = self.sections.lock() {
            s.push(Section {
                worker,
                enter_ns,
                leave_ns,
            });
        }
    }

    pub(crate) fn take(&self) -> Vec<Section> {
        self.sections
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// The value at quantile `q` of sorted nanoseconds, in µs (nearest rank: a value that
/// was measured, not a bucket's midpoint). `None` when there are none.
pub(crate) fn exact_quantile_us(sorted_ns: &[u64], q: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * sorted_ns.len() as f64).ceil() as usize).max(1);
    Some(sorted_ns[rank.min(sorted_ns.len()) - 1] as f64 / 1e3)
}

/// The figures of a hot-key run from its sections (of one process or several): the gap
/// from one holder's release to the next holder's entry (different holders only), how
/// often the same worker held twice in a row, the largest share, and overlaps. Gap
/// quantiles are exact (every gap is kept), so two contenders a few µs apart are told
/// apart: a histogram's buckets are 8 µs wide at 64-128 µs.
pub(crate) fn hot_key_summary(
    mut sections: Vec<Section>,
    timeouts: u64,
    secs: f64,
    workers: u32,
) -> Value {
    sections.sort_by_key(|s| s.enter_ns);
    let mut gaps = Vec::with_capacity(sections.len());
    let (mut same, mut overlaps) = (0u64, 0u64);
    for w in sections.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b.enter_ns < a.leave_ns {
            overlaps += 1;
        }
        if a.worker == b.worker {
            same += 1;
        } else {
            gaps.push(b.enter_ns.saturating_sub(a.leave_ns));
        }
    }
    gaps.sort_unstable();
    let n = sections.len().max(1) as f64;
    let mut per = vec![0u64; workers as usize];
    for s in &sections {
        if let Some(c) = per.get_mut(s.worker as usize) {
            *c += 1;
        }
    }
    let max_share = per.iter().copied().max().unwrap_or(0) as f64 / n;
    json!({
        "cs": sections.len(),
        "cs_per_sec": sections.len() as f64 / secs,
        "gaps": gaps.len(),
        "gap_p50_us": exact_quantile_us(&gaps, 0.5),
        "gap_p99_us": exact_quantile_us(&gaps, 0.99),
        "same_holder_frac": same as f64 / (n - 1.0).max(1.0),
        "max_worker_share": max_share,
        "overlaps": overlaps,
        "timeouts": timeouts,
    })
}

/// Copies every field of `from` into `out`, each name prefixed.
pub(crate) fn merge(out: &mut Value, from: &Value, prefix: &str) {
    if let (Some(o), Some(f)) = (out.as_object_mut(), from.as_object()) {
        for (k, v) in f {
            o.insert(format!("{prefix}{k}"), v.clone());
        }
    }
}

/// `a / b`, or null.
pub(crate) fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    }
}

/// A one-line countdown on a terminal (nothing when piped).
pub(crate) fn progress(label: &str, deadline: Instant) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let label = label.to_owned();
    Some(tokio::spawn(async move {
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            eprint!("\r{label}: {left:>3} s left ");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprint!("\r{:60}\r", "");
    }))
}

/// Waits for the workers and clears the progress line.
pub(crate) async fn finish(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    bar: Option<tokio::task::JoinHandle<()>>,
) {
    for t in tasks {
        let _ = t.await;
    }
    if let Some(b) = bar {
        b.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(worker: u32, enter_us: u64, leave_us: u64) -> Section {
        Section {
            worker,
            enter_ns: enter_us * 1000,
            leave_ns: leave_us * 1000,
        }
    }

    #[test]
    fn gap_quantiles_are_measured_values_not_buckets() {
        assert_eq!(exact_quantile_us(&[], 0.5), None);
        let ns = [64_100, 65_000, 71_900];
        assert_eq!(exact_quantile_us(&ns, 0.5), Some(65.0));
        assert_eq!(exact_quantile_us(&ns, 0.99), Some(71.9));
        // Workers 0, 1, 1, 0: gaps 64.1 µs (0 -> 1) and 71.9 µs (1 -> 0); 1 -> 1 is a
        // same-holder repeat, not a handover.
        let s = vec![
            section(1, 2_064, 3_000),
            section(0, 0, 2_000),
            section(1, 3_010, 4_000),
            section(0, 4_072, 5_000),
        ];
        let v = hot_key_summary(s, 0, 1.0, 2);
        assert_eq!(v["gaps"], 2);
        assert_eq!(v["gap_p50_us"].as_f64(), Some(64.0));
        assert_eq!(v["gap_p99_us"].as_f64(), Some(72.0));
        assert_eq!(v["overlaps"], 0);
        assert!((v["same_holder_frac"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    }
}
