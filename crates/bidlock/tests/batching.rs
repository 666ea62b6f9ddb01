//! Group commit: a manager's concurrent acquires (and releases) on one Redis go as one
//! script call. These tests attack what batching could break: a token issued twice or out
//! of order inside a batch, two tries of one key in one batch, and a caller that leaves
//! while its batch is in flight (its lock must not stay behind for a whole ttl).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, LockKey};
use bidlock_testkit::RedisServer;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_tries_get_distinct_increasing_tokens_and_exclude_each_other() {
    let s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let calls_before = m.metrics().backend_calls;
    let tokens = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // 64 tasks: half on their own posting, half on four shared ones (tries of one key
    // land in one batch).
    for t in 0..64u32 {
        let (m, tokens) = (m.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let posting = if t % 2 == 0 {
                format!("own-{t}")
            } else {
                format!("shared-{}", t % 4)
            };
            let key = LockKey::new("upwork", posting).unwrap();
            for _ in 0..50 {
                if let Ok(g) = m.try_acquire(&key, &AcquireOptions::new()).await {
                    // Pushed while held: per key, the order of pushes is that of sections.
                    let token = g.fencing_token().get();
                    tokens.lock().unwrap().push((key.clone(), token));
                    assert!(g.release().await.unwrap(), "release of a held lock");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tokens = tokens.lock().unwrap().clone();
    let ops = 2 * tokens.len() as u64;
    let calls = m.metrics().backend_calls - calls_before;
    let distinct: HashSet<u64> = tokens.iter().map(|(_, t)| *t).collect();
    assert_eq!(distinct.len(), tokens.len(), "a token was issued twice");
    assert!(tokens.len() > 1000, "{} sections", tokens.len());
    // Per key, in the order the sections happened, tokens only go up.
    let mut by_key: std::collections::HashMap<LockKey, Vec<u64>> = Default::default();
    for (k, t) in &tokens {
        by_key.entry(k.clone()).or_default().push(*t);
    }
    for (k, ts) in by_key {
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{k}: {ts:?}");
    }
    assert!(
        calls < ops,
        "no batching happened: {calls} script calls for {ops} operations"
    );
    assert_eq!(
        s.cmd::<i64>(&["DBSIZE"]),
        1,
        "only the fencing counter is left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_leave_mid_batch_leave_no_lock_behind() {
    let s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let opts = AcquireOptions::new().ttl(Duration::from_secs(60));
    for round in 0..20u32 {
        let mut tasks = Vec::new();
        for t in 0..48u32 {
            let (m, opts) = (m.clone(), opts.clone());
            tasks.push(tokio::spawn(async move {
                let key = LockKey::new("upwork", format!("leave-{round}-{t}")).unwrap();
                // Held briefly then released by dropping the guard; or abandoned.
                if let Ok(g) = m.try_acquire(&key, &opts).await {
                    drop(g);
                }
            }));
        }
        // Abort some callers at once, some a little later: before, during and after
        // their batch is sent.
        tokio::time::sleep(Duration::from_micros(50 * u64::from(round))).await;
        for (i, t) in tasks.iter().enumerate() {
            if i % 3 == 0 {
                t.abort();
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }
    // Every lock is released in the background well within its 60 s ttl.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = s.cmd(&["KEYS", "bid_lock:upwork:leave-*"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} locks left behind, e.g. {:?}",
            left.len(),
            &left[..left.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
