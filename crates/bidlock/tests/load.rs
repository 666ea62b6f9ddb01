//! Load, soak and security against one real redis-server. Sizes are bounded for CI;
//! scripts/reliability.sh --long runs the full profile (BIDLOCK_LOAD_POSTINGS,
//! BIDLOCK_SOAK_SECS).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, LockKey};
use bidlock_testkit::RedisServer;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn write_report(name: &str, doc: serde_json::Value) {
    bidlock_testkit::write_report(name, &format!("{doc:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_instances_race_for_postings() {
    let postings = env_num("BIDLOCK_LOAD_POSTINGS", 1500) as u32;
    let server = RedisServer::start();
    let mut managers = Vec::new();
    for _ in 0..16 {
        managers.push(common::redis_manager(&server.url()).await);
    }
    let bids = Arc::new(Mutex::new(HashMap::<u32, u64>::new()));
    let duplicates = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let rss = Arc::new(Mutex::new(vec![(0.0f64, rss_kib())]));
    let start = Instant::now();
    let sampler = {
        let rss = rss.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                rss.lock()
                    .unwrap()
                    .push((start.elapsed().as_secs_f64(), rss_kib()));
            }
        })
    };
    let mut tasks = Vec::new();
    for m in &managers {
        let m = m.clone();
        let (bids, duplicates, errors) = (bids.clone(), duplicates.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            for p in 0..postings {
                let key = LockKey::new("load", p.to_string()).unwrap();
                let r = m
                    .bid_once(
                        &key,
                        &AcquireOptions::new().timeout(Duration::from_secs(30)),
                        |lease| {
                            let (bids, duplicates) = (bids.clone(), duplicates.clone());
                            async move {
                                if bids
                                    .lock()
                                    .unwrap()
                                    .insert(p, lease.fencing_token().get())
                                    .is_some()
                                {
                                    duplicates.fetch_add(1, Relaxed);
                                }
                                Ok::<_, ()>(())
                            }
                        },
                    )
                    .await;
                match r {
                    Ok(_) => {}
                    Err(e) if e.is_already_done() => {}
                    Err(_) => {
                        errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
        // Bounded: the CI profile finishes in seconds; nothing loops unboundedly.
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(600), t)
            .await
            .unwrap()
            .unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    sampler.abort();
    let mut attempts = 0;
    let mut p50 = 0;
    let mut p99 = 0;
    for m in &managers {
        let s = m.metrics();
        attempts += s.lock_attempts;
        p50 = p50.max(s.wait_p50_us);
        p99 = p99.max(s.wait_p99_us);
    }
    // One snapshot of the keyspace: the handover markers expire by themselves, so a
    // DBSIZE and a later KEYS can disagree (CI saw 1503 then 1501).
    let all: Vec<String> = server.cmd(&["KEYS", "*"]);
    let lock_keys: Vec<&String> = all.iter().filter(|k| k.starts_with("bid_lock:")).collect();
    let rss = rss.lock().unwrap().clone();
    write_report(
        "load-16x",
        serde_json::json!({
            "instances": 16,
            "postings": postings,
            "bids": bids.lock().unwrap().len(),
            "duplicates": duplicates.load(Relaxed),
            "errors": errors.load(Relaxed),
            "elapsed_s": elapsed,
            "postings_per_sec": postings as f64 / elapsed,
            "acquires_per_sec": attempts as f64 / elapsed,
            "wait_p50_us_worst_instance": p50,
            "wait_p99_us_worst_instance": p99,
            "client_rss_kib_start": rss.first().map(|r| r.1),
            "client_rss_kib_end": rss.last().map(|r| r.1),
            "redis_keys_after": all.len(),
            "lock_keys_after": lock_keys.len(),
        }),
    );
    assert_eq!(duplicates.load(Relaxed), 0);
    assert_eq!(errors.load(Relaxed), 0);
    assert_eq!(bids.lock().unwrap().len(), postings as usize);
    // Nothing leaked: one completion record per posting plus the fencing counter, and
    // what is left of the handovers (wait markers, the waiters' hash with the last grant)
    // runs out by itself.
    assert!(lock_keys.is_empty(), "{lock_keys:?}");
    let records = all.iter().filter(|k| k.starts_with("bid_done:")).count();
    assert_eq!(records, postings as usize);
    let others: Vec<&String> = all
        .iter()
        .filter(|k| !k.starts_with("bid_done:") && k.as_str() != "bid_lock_fence")
        .collect();
    for k in &others {
        assert!(
            k.starts_with("bid_lock_wait:")
                || k.starts_with("bid_lock_waiters:")
                || k.starts_with("bid_lock_queue:"),
            "an unexpected key is left: {k}"
        );
        // -2: it expired since the snapshot, which is what a marker should do.
        let pttl: i64 = server.cmd(&["PTTL", k]);
        assert!(pttl > 0 || pttl == -2, "{k} has no ttl");
    }
    assert!(
        all.iter().any(|k| k == "bid_lock_fence"),
        "no fencing counter"
    );
    assert_eq!(all.len(), postings as usize + 1 + others.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_soak_with_64_waiters() {
    let secs = env_num("BIDLOCK_SOAK_SECS", 4);
    let server = RedisServer::start();
    let mut managers = Vec::new();
    for _ in 0..4 {
        managers.push(common::redis_manager(&server.url()).await);
    }
    let last_release = Arc::new(Mutex::new(None::<(Instant, usize)>));
    let gaps = Arc::new(Micros::default());
    let waits = Arc::new(Micros::default());
    let sections = Arc::new(AtomicU64::new(0));
    let overlaps = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    // Warm up, then measure memory while the run goes on.
    let rss_start = rss_kib();
    let mut tasks = Vec::new();
    for w in 0..64usize {
        let m = managers[w % 4].clone();
        let (last_release, gaps, waits, sections, overlaps, inside, errors) = (
            last_release.clone(),
            gaps.clone(),
            waits.clone(),
            sections.clone(),
            overlaps.clone(),
            inside.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let key = LockKey::new("soak", "hot").unwrap();
            while Instant::now() < deadline {
                let asked = Instant::now();
                match m
                    .acquire(
                        &key,
                        &AcquireOptions::new().timeout(Duration::from_secs(10)),
                    )
                    .await
                {
                    Ok(g) => {
                        let now = Instant::now();
                        waits.record(now.duration_since(asked));
                        if let Some((t, who)) = *last_release.lock().unwrap() {
                            if who != w {
                                gaps.record(now.duration_since(t));
                            }
                        }
                        if inside.fetch_add(1, Relaxed) != 0 {
                            overlaps.fetch_add(1, Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        inside.fetch_sub(1, Relaxed);
                        sections.fetch_add(1, Relaxed);
                        *last_release.lock().unwrap() = Some((Instant::now(), w));
                        if g.release().await.is_err() {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60 + secs), t)
            .await
            .unwrap()
            .unwrap();
    }
    let rss_end = rss_kib();
    let n = sections.load(Relaxed);
    let keys: u64 = server.cmd(&["DBSIZE"]);
    // A full rotation: every waiter holds once.
    let rotation_us = secs * 1_000_000 * 64 / n.max(1);
    let handoffs: u64 = managers.iter().map(|m| m.metrics().handoffs).sum();
    write_report(
        "soak-hot-key-64",
        serde_json::json!({
            "waiters": 64,
            "seconds": secs,
            "sections": n,
            "sections_per_sec": n as f64 / secs as f64,
            "handover_gap_p50_us": gaps.quantile_us(0.5),
            "handover_gap_p99_us": gaps.quantile_us(0.99),
            "wait_p50_us": waits.quantile_us(0.5),
            "wait_p99_us": waits.quantile_us(0.99),
            "wait_max_us": waits.max_us(),
            "rotation_us": rotation_us,
            "handoffs": handoffs,
            "overlaps": overlaps.load(Relaxed),
            "errors": errors.load(Relaxed),
            "client_rss_kib_start": rss_start,
            "client_rss_kib_end": rss_end,
            "redis_keys_after": keys,
        }),
    );
    assert_eq!(overlaps.load(Relaxed), 0);
    // No starvation: nobody gave up after 10 s, and nobody waited much over a full turn of
    // all 64 (the first wave all arrive at once, so the last of them waits one rotation).
    assert_eq!(errors.load(Relaxed), 0);
    assert!(
        waits.max_us() <= 2 * rotation_us + 100_000,
        "longest wait {} us, rotation {rotation_us} us",
        waits.max_us()
    );
    assert!(n > 100, "{n}");
    // Only the fencing counter stays; the rest of the handovers (markers, the waiters'
    // hash with the last grant) runs out by itself.
    let left: Vec<String> = server.cmd(&["KEYS", "*"]);
    for k in &left {
        // -2: it ran out since the KEYS above, as a marker should.
        let pttl: i64 = server.cmd(&["PTTL", k]);
        assert!(
            k == "bid_lock_fence" || pttl > 0 || pttl == -2,
            "{k} is left without a ttl ({keys} keys left)"
        );
        assert!(!k.starts_with("bid_lock:"), "a lock is left: {k}");
    }
    assert!(
        rss_end < rss_start + 64 * 1024,
        "client memory grew from {rss_start} to {rss_end} KiB"
    );
}

/// Durations in µs, recorded from many tasks (an HdrHistogram behind a lock).
struct Micros(Mutex<hdrhistogram::Histogram<u64>>);

impl Default for Micros {
    fn default() -> Self {
        Micros(Mutex::new(hdrhistogram::Histogram::new(3).unwrap()))
    }
}

impl Micros {
    fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // Grows to fit (`saturating_record` would clamp at the current bound).
        self.0.lock().unwrap().record(us).unwrap();
    }

    fn quantile_us(&self, q: f64) -> u64 {
        self.0.lock().unwrap().value_at_quantile(q)
    }

    fn max_us(&self) -> u64 {
        self.0.lock().unwrap().max()
    }
}
