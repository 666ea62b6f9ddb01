//! Metrics (docs/OPERATING.md): the counters, with the original system's names, count
//! what happened: one conflict per acquire that met a holder, one busy try per try. (The
//! `metrics` facade is `metrics_facade.rs`.)

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, Holder};

use common::{key, Fx};

on_both_backends!(
    metrics_count_what_happened,
    conflicts_count_once_per_acquire_and_busy_tries_per_try,
);

async fn metrics_count_what_happened(fx: Fx) {
    let m = &fx.manager;
    let g = m.acquire(&key("m1"), &AcquireOptions::new()).await.unwrap();
    let g2 = m.acquire(&key("m2"), &AcquireOptions::new()).await.unwrap();
    let _ = m
        .try_acquire(&key("m1"), &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(g.release().await.unwrap());
    assert!(!m.release(&key("m2"), &Holder::new("nobody")).await.unwrap());
    assert!(g2.release().await.unwrap());
    let s = m.metrics();
    assert_eq!(s.lock_attempts, 3);
    assert_eq!(s.lock_successes, 2);
    assert_eq!(s.lock_conflicts, 1);
    assert_eq!(s.lock_timeouts, 1);
    assert_eq!(s.redis_errors, 0);
    assert_eq!(s.releases, 2);
    assert_eq!(s.holder_mismatches, 1);
    assert_eq!(s.wait_count, 2);
    let text = s.to_prometheus(if fx.is_redis() { "redis" } else { "memory" }, &[]);
    assert!(text.contains("bidlock_lock_attempts_total{backend="));
}

async fn conflicts_count_once_per_acquire_and_busy_tries_per_try(fx: Fx) {
    let k = key("conflicts");
    let holder = fx.instance().await;
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let opts = AcquireOptions::new()
        .timeout(Duration::from_millis(400))
        .ttl(Duration::from_secs(30));
    let e = fx.manager.acquire(&k, &opts).await.unwrap_err();
    assert!(e.is_not_acquired());
    let m = fx.manager.metrics();
    assert_eq!(m.lock_conflicts, 1, "{m:?}");
    if fx.is_redis() {
        // Queued in Redis for a handoff: it refreshes its place instead of trying again.
        assert_eq!(m.lock_busy_tries, 1, "{m:?}");
    } else {
        assert!(m.lock_busy_tries >= 2, "backoff tries again: {m:?}");
    }
    assert_eq!(m.lock_timeouts, 1);
    drop(g);
}
