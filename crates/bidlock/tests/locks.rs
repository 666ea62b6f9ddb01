//! The core lock contract, run on the memory backend and on a real redis-server alike.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, Holder, LockKey};
use common::Fx;
use tokio::time::Instant;

fn key(p: &str) -> LockKey {
    LockKey::new("upwork", p).unwrap()
}

on_both_backends!(
    mutual_exclusion_64_tasks,
    ttl_expiry_and_takeover,
    holder_mismatch_release_changes_nothing,
    with_lock_releases_on_error,
    with_lock_releases_on_panic,
    with_lock_releases_on_cancellation,
    timeout_returns_not_acquired,
    release_wakes_waiter_without_polling,
    waiters_are_served_in_order,
    cleanup_all_removes_every_lock,
    metrics_count_what_happened,
    invalid_input_is_rejected_before_the_backend,
    acquire_cancelled_mid_wait_leaves_nothing,
    status_and_locks_listing,
    close_releases_held_locks,
    ttl_too_short_is_rejected,
);

async fn mutual_exclusion_64_tasks(fx: Fx) {
    const TASKS: usize = 64;
    const ROUNDS: usize = 5;
    let inside = Arc::new(AtomicUsize::new(0));
    let sections = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let a = fx.manager.clone();
    let b = fx.instance().await;
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let m = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (inside, sections, overlaps) = (inside.clone(), sections.clone(), overlaps.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let opts = AcquireOptions::new().timeout(Duration::from_secs(60));
                m.with_lock(&key("hot"), &opts, |_| async {
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    sections.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(sections.load(Ordering::SeqCst), TASKS * ROUNDS);
    assert!(a.status(&key("hot")).await.unwrap().holder.is_none());
}

async fn ttl_expiry_and_takeover(fx: Fx) {
    let k = key("ttl");
    let first = fx
        .manager
        .acquire(
            &k,
            &AcquireOptions::new()
                .ttl(Duration::from_millis(300))
                .renew(false),
        )
        .await
        .unwrap();
    let other = fx.instance().await;
    let second = other
        .acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(second.fencing_token() > first.fencing_token());
    assert!(first.is_lost());
    // The expired holder cannot release the new holder's lock.
    assert!(!first.release().await.unwrap());
    assert_eq!(
        other.status(&k).await.unwrap().holder.as_deref(),
        Some(second.holder().as_str())
    );
    assert!(second.release().await.unwrap());
}

async fn holder_mismatch_release_changes_nothing(fx: Fx) {
    let k = key("mismatch");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().holder("instance-1"))
        .await
        .unwrap();
    let before = fx.manager.status(&k).await.unwrap();
    assert!(!fx
        .manager
        .release(&k, &Holder::new("instance-2"))
        .await
        .unwrap());
    let after = fx.manager.status(&k).await.unwrap();
    assert_eq!(before.holder, after.holder);
    assert_eq!(after.holder.as_deref(), Some("instance-1"));
    assert_eq!(fx.manager.metrics().holder_mismatches, 1);
    // The original API: release by holder id.
    assert!(fx
        .manager
        .release(&k, &Holder::new("instance-1"))
        .await
        .unwrap());
    assert!(fx.manager.status(&k).await.unwrap().holder.is_none());
    drop(g);
}

async fn free_soon(fx: &Fx, k: &LockKey) {
    // Cancellation and panics release in the background for Redis: wait (bounded).
    let g = fx
        .manager
        .acquire(k, &AcquireOptions::new().timeout(Duration::from_secs(2)))
        .await
        .expect("lock was not released");
    g.release().await.unwrap();
}

async fn with_lock_releases_on_error(fx: Fx) {
    let k = key("err");
    let r: Result<Result<(), &str>, _> = fx
        .manager
        .with_lock(&k, &AcquireOptions::new(), |_| async { Err("bid failed") })
        .await;
    assert_eq!(r.unwrap(), Err("bid failed"));
    // Released before with_lock returned.
    let g = fx
        .manager
        .try_acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    drop(g);
}

async fn with_lock_releases_on_panic(fx: Fx) {
    let k = key("panic");
    let m = fx.manager.clone();
    let k2 = k.clone();
    let joined = tokio::spawn(async move {
        m.with_lock(&k2, &AcquireOptions::new(), |_| async {
            panic!("bid code panicked");
        })
        .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    let g = fx.manager.try_acquire(&k, &AcquireOptions::new()).await;
    assert!(g.is_ok(), "released before the panic resumed: {g:?}");
}

async fn with_lock_releases_on_cancellation(fx: Fx) {
    let k = key("cancel");
    let entered = Arc::new(tokio::sync::Notify::new());
    let e2 = entered.clone();
    let m = fx.manager.clone();
    let k2 = k.clone();
    let task = tokio::spawn(async move {
        m.with_lock(&k2, &AcquireOptions::new(), |_| async move {
            e2.notify_one();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
        .await
    });
    entered.notified().await;
    assert!(fx.manager.status(&k).await.unwrap().holder.is_some());
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    free_soon(&fx, &k).await;
}

async fn timeout_returns_not_acquired(fx: Fx) {
    let k = key("timeout");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().holder("busy-holder"))
        .await
        .unwrap();
    let other = fx.instance().await;
    let start = Instant::now();
    let err = other
        .acquire(
            &k,
            &AcquireOptions::new().timeout(Duration::from_millis(400)),
        )
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("busy-holder"), "{err}");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Zero wait tries exactly once.
    let err = other
        .try_acquire(&k, &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(other.metrics().lock_timeouts, 2);
    drop(g);
}

async fn release_wakes_waiter_without_polling(fx: Fx) {
    // Backoff of 30 s: only the release signal can wake the waiter in time.
    let fx = Fx::with(fx.which, |b| b.retry(common::no_polling())).await;
    let waiter_mgr = fx.instance().await;
    let k = key("wake");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(120)))
        .await
        .unwrap();
    let k2 = k.clone();
    let waiter = tokio::spawn(async move {
        let g = waiter_mgr
            .acquire(&k2, &AcquireOptions::new().timeout(Duration::from_secs(20)))
            .await
            .unwrap();
        let at = Instant::now();
        g.release().await.unwrap();
        at
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    assert!(g.release().await.unwrap());
    let acquired_at = waiter.await.unwrap();
    assert!(
        acquired_at.duration_since(released_at) < Duration::from_secs(2),
        "waiter was not woken by the release"
    );
}

async fn waiters_are_served_in_order(fx: Fx) {
    let k = key("fifo");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let m = fx.manager.clone();
        let (k, order) = (k.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let g = m
                .acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(20)))
                .await
                .unwrap();
            order.lock().unwrap().push(i);
            g.release().await.unwrap();
        }));
        // Let each waiter join the queue before the next.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

async fn cleanup_all_removes_every_lock(fx: Fx) {
    let mut guards = Vec::new();
    for i in 0..7 {
        guards.push(
            fx.manager
                .acquire(&key(&format!("c{i}")), &AcquireOptions::new())
                .await
                .unwrap(),
        );
    }
    assert_eq!(fx.manager.locks(None).await.unwrap().len(), 7);
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 7);
    assert!(fx.manager.locks(None).await.unwrap().is_empty());
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 0);
    // Every key can be taken again at once.
    for i in 0..7 {
        let g = fx
            .manager
            .try_acquire(&key(&format!("c{i}")), &AcquireOptions::new())
            .await
            .unwrap();
        drop(g);
    }
}

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

async fn invalid_input_is_rejected_before_the_backend(fx: Fx) {
    let err = fx.manager.locks(Some("bad:market")).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("marketplace id"), "{err}");
    for (m, p) in [("", "p"), ("a b", "p"), ("m", ""), ("m", "a\u{7}b")] {
        assert!(LockKey::new(m, p).is_err());
    }
    assert_eq!(fx.manager.metrics().lock_attempts, 0);
}

async fn acquire_cancelled_mid_wait_leaves_nothing(fx: Fx) {
    let k = key("cancel-wait");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    // Many waiters give up or are dropped at random points.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let m = fx.manager.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let wait = AcquireOptions::new().timeout(Duration::from_millis(5 + i % 7));
            let _ = tokio::time::timeout(Duration::from_millis(i % 5), m.acquire(&k, &wait)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(g.release().await.unwrap());
    // Nothing is left holding the key, and a new waiter is not confused by old tickets.
    free_soon(&fx, &k).await;
    assert!(fx.manager.status(&k).await.unwrap().holder.is_none());
    if fx.is_redis() {
        // Nor anything in the key's queue: every cancelled or timed-out waiter's place is
        // taken out (in the background, for the cancelled ones), and the wait marker went
        // with the release.
        let s = fx.server();
        let queued = || {
            s.cmd::<i64>(&["ZCARD", "bid_lock_queue:upwork:cancel-wait"])
                + s.cmd::<i64>(&["HLEN", "bid_lock_waiters:upwork:cancel-wait"])
        };
        common::until(Duration::from_secs(5), "the queue to empty", || {
            queued() == 0
        })
        .await;
        let left: Vec<String> = s.cmd(&["KEYS", "*cancel-wait*"]);
        for name in left {
            assert!(
                s.cmd::<i64>(&["PTTL", &name]) > 0,
                "{name} is left without a ttl"
            );
        }
    }
}

async fn status_and_locks_listing(fx: Fx) {
    let g = fx
        .manager
        .acquire(
            &key("s1"),
            &AcquireOptions::new()
                .holder("h1")
                .ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    let other = LockKey::new("freelancer", "x:y *?").unwrap();
    let g2 = fx
        .manager
        .acquire(&other, &AcquireOptions::new())
        .await
        .unwrap();
    let st = fx.manager.status(&key("s1")).await.unwrap();
    assert_eq!(st.redis_key, fx.lock_key(&key("s1")));
    assert_eq!(st.holder.as_deref(), Some("h1"));
    let left = st.ttl_left_ms.unwrap();
    assert!(left > 50_000 && left <= 60_000, "{left}");
    let all = fx.manager.locks(None).await.unwrap();
    assert_eq!(all.len(), 2);
    let up = fx.manager.locks(Some("upwork")).await.unwrap();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].holder, "h1");
    let fl = fx.manager.locks(Some("freelancer")).await.unwrap();
    assert_eq!(fl[0].posting, "x:y *?");
    drop((g, g2));
}

async fn close_releases_held_locks(fx: Fx) {
    let k = key("close");
    let m = fx.instance().await;
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    m.close().await;
    assert!(g.is_lost());
    assert!(m
        .acquire(&key("after"), &AcquireOptions::new())
        .await
        .unwrap_err()
        .to_string()
        .contains("closed"));
    if fx.is_redis() {
        assert!(fx.manager.status(&k).await.unwrap().holder.is_none());
    }
    drop(g);
}

async fn ttl_too_short_is_rejected(fx: Fx) {
    let err = fx
        .manager
        .acquire(
            &key("short"),
            &AcquireOptions::new().ttl(Duration::from_millis(1)),
        )
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(fx
        .manager
        .status(&key("short"))
        .await
        .unwrap()
        .holder
        .is_none());
}
