//! One manager of a `bench scale` run (a child process): takes its leases, says so, and
//! measures itself over the window the parent opens and closes on stdin; then releases
//! every lease and reports. The protocol is in `scale.rs`.

use std::time::Instant;

use bidlock::{AcquireOptions, BidLockManager, LockKey, MetricsSnapshot};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::cost::Usage;
use super::footprint::rss_kib;
use crate::exit::{self, CliError};
use crate::output::print;

/// What this process had used at one moment.
struct Mark {
    at: Instant,
    usage: Usage,
    metrics: MetricsSnapshot,
    rss_kib: u64,
}

impl Mark {
    fn now(m: &BidLockManager) -> Mark {
        Mark {
            at: Instant::now(),
            usage: Usage::now(),
            metrics: m.metrics(),
            rss_kib: rss_kib(),
        }
    }

    fn secs_since(&self, from: &Mark) -> f64 {
        self.at.duration_since(from.at).as_secs_f64()
    }

    fn cpu_since(&self, from: &Mark) -> f64 {
        self.usage.cpu_s_since(&from.usage)
    }

    fn csw_since(&self, from: &Mark) -> i64 {
        (self.usage.voluntary - from.usage.voluntary)
            + (self.usage.involuntary - from.usage.involuntary)
    }
}

/// Waits for the parent's next word on stdin (end of input counts as `stop`). A
/// blocking read on a blocking thread: the runtime's workers stay free for renewals.
async fn heard() -> String {
    let read = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(n) if n > 0 => line.trim().to_owned(),
            _ => "stop".to_owned(),
        }
    });
    read.await.unwrap_or_else(|_| "stop".to_owned())
}

/// What one manager takes: how many leases, their ttl, how many acquires in flight.
pub(crate) struct Plan {
    pub(crate) leases: u32,
    pub(crate) ttl: std::time::Duration,
    pub(crate) in_flight: u32,
}

/// Takes the leases, holds them through the parent's window, releases them.
pub(crate) async fn run(m: &BidLockManager, a: &Plan, run: &str) -> Result<Value, CliError> {
    let pid = std::process::id();
    // The keys are the caller's and exist before: they are not counted per lease.
    let keys: Vec<LockKey> = (0..a.leases)
        .map(|i| LockKey::new("scale", format!("{run}-{pid}-{i}")))
        .collect::<Result<_, _>>()?;
    let opts = AcquireOptions::new().no_wait().ttl(a.ttl);
    let start = Mark::now(m);
    let results: Vec<_> = stream::iter(&keys)
        .map(|k| m.acquire(k, &opts))
        .buffer_unordered(a.in_flight as usize)
        .collect()
        .await;
    let held_mark = Mark::now(m);
    let acquire_errors = results.iter().filter(|r| r.is_err()).count();
    let guards: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    let held = guards.len();
    print(&format!(
        "{}\n",
        json!({ "held": held, "acquire_s": held_mark.secs_since(&start) })
    ))?;
    if heard().await != "go" {
        return Err(CliError::new(
            exit::FAILURE,
            "bench scale: the parent did not say go",
        ));
    }
    let open = Mark::now(m);
    heard().await;
    let close = Mark::now(m);
    let lost_in_window = guards.iter().filter(|g| g.is_lost()).count();
    let released: Vec<_> = stream::iter(guards)
        .map(|g| g.release())
        .buffer_unordered(a.in_flight as usize)
        .collect()
        .await;
    let end = Mark::now(m);
    let (w0, w1) = (&open.metrics, &close.metrics);
    Ok(json!({
        "held": held,
        "acquire_errors": acquire_errors,
        "acquire_s": held_mark.secs_since(&start),
        "acquire_cpu_s": held_mark.cpu_since(&start),
        "rss_kib_before": start.rss_kib,
        "rss_kib_held": held_mark.rss_kib,
        "rss_kib_after_window": close.rss_kib,
        "rss_bytes_per_lease": (held_mark.rss_kib.saturating_sub(start.rss_kib) * 1024) as f64 / held.max(1) as f64,
        "window_s": close.secs_since(&open),
        "window_cpu_s": close.cpu_since(&open),
        "window_csw": close.csw_since(&open),
        "window_renewals": w1.extensions.saturating_sub(w0.extensions),
        "window_round_trips": w1.backend_calls.saturating_sub(w0.backend_calls),
        "window_lost": w1.locks_lost.saturating_sub(w0.locks_lost),
        "lost_by_window_end": lost_in_window,
        "redis_errors": end.metrics.redis_errors.saturating_sub(start.metrics.redis_errors),
        "release_s": end.secs_since(&close),
        "release_cpu_s": end.cpu_since(&close),
        "released": released.iter().filter(|r| matches!(r, Ok(true))).count(),
    }))
}
