//! The footprint workload: memory per held lock (client RSS growth over N held locks).

use std::time::Instant;

use bidlock::{AcquireOptions, BidLockManager, LockKey};
use serde_json::{json, Value};

use crate::exit::CliError;

/// This process's resident set size, KiB (0 when /proc cannot say).
pub(crate) fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

pub(crate) async fn run(m: &BidLockManager, locks: u32) -> Result<Value, CliError> {
    let keys: Vec<LockKey> = (0..locks)
        .filter_map(|i| LockKey::new("bench", format!("posting-{i:08}")).ok())
        .collect();
    let mut guards = Vec::with_capacity(keys.len());
    let before = rss_kib();
    let start = Instant::now();
    for k in &keys {
        guards.push(m.acquire(k, &AcquireOptions::new().no_wait()).await?);
    }
    let held_secs = start.elapsed().as_secs_f64();
    let after = rss_kib();
    let bytes = (after.saturating_sub(before) * 1024) as f64 / f64::from(locks.max(1));
    drop(guards);
    Ok(json!({
        "workload": "footprint",
        "backend": m.topology().to_string(),
        "locks": locks,
        "rss_kib_before": before,
        "rss_kib_held": after,
        "bytes_per_held_lock": bytes,
        "acquires_per_sec": f64::from(locks) / held_secs,
        "note": "bytes per held lock = client RSS growth / locks held, guard included (keys are allocated before the measurement)",
    }))
}
