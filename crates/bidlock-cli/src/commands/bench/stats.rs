//! What the benchmark loops count, the same for bidlock and the raw baseline, and how
//! the figures are put into the JSON line.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bidlock::Histogram;
use serde_json::{json, Value};

/// What an uncontended loop counts.
#[derive(Default)]
pub(crate) struct PairStats {
    pub(crate) acquire: Histogram,
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
            "pairs_per_sec": (self.pairs.load(Relaxed) as f64 / secs).round(),
            "acquire_p50_us": self.acquire.quantile_us(0.5),
            "acquire_p99_us": self.acquire.quantile_us(0.99),
            "errors": self.errors.load(Relaxed),
        })
    }
}

/// What a hot-key loop records: every critical section's holder, the gap between one
/// holder's release and the next holder's entry, and any overlap.
#[derive(Default)]
pub(crate) struct HotKeyLog {
    last: Mutex<Option<(Instant, u32)>>,
    sections: Mutex<Vec<u32>>,
    gaps: Histogram,
    inside: AtomicBool,
    overlaps: AtomicU64,
    pub(crate) timeouts: AtomicU64,
}

impl HotKeyLog {
    pub(crate) fn enter(&self, w: u32) {
        let now = Instant::now();
        if let Ok(last) = self.last.lock() {
            if let Some((t, who)) = *last {
                if who != w {
                    self.gaps.record(now.saturating_duration_since(t));
                }
            }
        }
        if self.inside.swap(true, Relaxed) {
            self.overlaps.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn leave(&self, w: u32) {
        self.inside.store(false, Relaxed);
        if let Ok(mut s) = self.sections.lock() {
            s.push(w);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), w));
        }
    }

    pub(crate) fn summary(&self, secs: f64, workers: u32) -> Value {
        let s = self.sections.lock().map(|s| s.clone()).unwrap_or_default();
        let n = s.len().max(1) as f64;
        let same = s.windows(2).filter(|w| w[0] == w[1]).count() as f64;
        let mut per = vec![0u64; workers as usize];
        for w in &s {
            per[*w as usize] += 1;
        }
        let max_share = per.iter().copied().max().unwrap_or(0) as f64 / n;
        json!({
            "cs": s.len(),
            "cs_per_sec": (s.len() as f64 / secs).round(),
            "gap_p50_us": self.gaps.quantile_us(0.5),
            "gap_p99_us": self.gaps.quantile_us(0.99),
            "same_holder_frac": round2(same / (n - 1.0).max(1.0)),
            "max_worker_share": round2(max_share),
            "overlaps": self.overlaps.load(Relaxed),
            "timeouts": self.timeouts.load(Relaxed),
        })
    }
}

/// Copies every field of `from` into `out`, each name prefixed.
pub(crate) fn merge(out: &mut Value, from: &Value, prefix: &str) {
    if let (Some(o), Some(f)) = (out.as_object_mut(), from.as_object()) {
        for (k, v) in f {
            o.insert(format!("{prefix}{k}"), v.clone());
        }
    }
}

/// `a / b` rounded to two decimals, or null.
pub(crate) fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round2(a / b)),
        _ => Value::Null,
    }
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
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
