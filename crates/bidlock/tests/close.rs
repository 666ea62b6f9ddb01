//! Guarantee: **close tells first** (docs/GUARANTEES.md). `close()` marks every lease
//! lost before it releases the lock, so no guard says "held" once another instance can
//! take it, and a closed manager hands out no lease.
//!
//! - `close_releases_held_locks`: close releases what the manager holds.
//! - `close_marks_leases_lost_before_their_locks_go`: another instance waits for the
//!   lock; the moment it holds it, the closing manager's lease must already say lost.
//! - `memory_a_waiter_woken_by_close_gets_closed_not_a_lock`,
//!   `redis_a_waiter_woken_by_close_gets_closed_or_a_reported_loss`: close wakes its own
//!   waiters; one that tries again must get "closed", never a guard from the closed
//!   manager. (Review of the issue-12 fixes, R4.)

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};

use common::{key, memory_config, redis_manager_with_timeout, until, Fx};

on_both_backends!(close_releases_held_locks);

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

/// `close()` marks leases lost before another instance can take their locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_marks_leases_lost_before_their_locks_go() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let m2 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("close");
    let g = m1.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let lease = g.lease().clone();
    let waiter = {
        let (m2, k, lease) = (m2.clone(), k.clone(), lease.clone());
        tokio::spawn(async move {
            let g2 = m2
                .acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(10)))
                .await
                .unwrap();
            // The instant another instance holds it, the first must not say "held".
            let first_still_held = !lease.is_lost();
            g2.release().await.unwrap();
            first_still_held
        })
    };
    until(
        Duration::from_secs(5),
        "the waiter to mark the lock",
        || m2.metrics().lock_busy_tries >= 1,
    )
    .await;
    // The release reaches Redis at once; its reply takes 300 ms to come back.
    p.set(Fault::Latency(Duration::from_millis(300)));
    m1.close().await;
    assert!(
        !waiter.await.unwrap(),
        "a closed manager's guard said held while another held the lock"
    );
    assert!(g.is_lost());
    drop(g);
}

/// close() marks every lease lost and releases it, then wakes the local waiters. A waiter
/// of the closing manager that tried again and got a guard from the closed manager would
/// hold the lock in memory for as long as the guard lives; in Redis nobody would renew
/// it and `lost()` would never resolve. (Review of the issue-12 fixes, R4.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_waiter_woken_by_close_gets_closed_not_a_lock() {
    let cfg = memory_config("il_close_waiter");
    let m = BidLockManager::new(cfg.clone()).await.unwrap();
    let m2 = BidLockManager::new(cfg).await.unwrap();
    let k = key("close-waiter");
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (m, k) = (m.clone(), k.clone());
        tokio::spawn(async move {
            m.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(5)))
                .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        m.metrics().lock_busy_tries >= 1
    })
    .await;
    m.close().await;
    assert!(g.is_lost());
    let got = waiter.await.unwrap();
    if let Ok(g2) = &got {
        let other = m2.try_acquire(&k, &AcquireOptions::new()).await;
        panic!(
            "a closed manager handed out a guard (lost={}); another manager's try: {:?}",
            g2.is_lost(),
            other.map(|_| "acquired").map_err(|e| e.to_string())
        );
    }
    assert!(got.unwrap_err().to_string().contains("closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_waiter_woken_by_close_gets_closed_or_a_reported_loss() {
    let s = RedisServer::start();
    let m = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("close-waiter");
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let ttl = Duration::from_secs(1);
    let waiter = {
        let (m, k) = (m.clone(), k.clone());
        tokio::spawn(async move {
            m.acquire(
                &k,
                &AcquireOptions::new()
                    .ttl(ttl)
                    .timeout(Duration::from_secs(5)),
            )
            .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        m.metrics().lock_busy_tries >= 1
    })
    .await;
    m.close().await;
    assert!(g.is_lost());
    match waiter.await.unwrap() {
        Err(e) => assert!(e.to_string().contains("closed"), "{e}"),
        Ok(g2) => {
            // Handed out by a closed manager: at least its loss must be reported.
            let reported = tokio::time::timeout(ttl * 3, g2.lost()).await.is_ok();
            assert!(
                reported,
                "a guard from a closed manager: never renewed, is_lost()={} but lost() \
                 did not resolve within 3x its ttl",
                g2.is_lost()
            );
        }
    }
}
