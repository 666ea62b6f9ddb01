//! Sentinel: one master, one replica, three sentinels (`redis-sentinel` from the OS).
//! The client finds the master through the sentinels and follows a failover; what
//! happens to held locks matches the documented guarantee (replication is asynchronous:
//! a held lock either survives on the new master or its holder is told it is lost).

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config};
use bidlock_testkit::SentinelCluster;
use common::key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_master_through_a_failover() {
    let mut cluster = tokio::task::spawn_blocking(SentinelCluster::start)
        .await
        .unwrap();
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(cluster.url())
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(1))
        // Only a release message can wake a waiter quickly (checked at the end).
        .retry(common::no_polling())
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg.clone()).await.unwrap();
    assert!(m.location().starts_with("redis+sentinel://"));
    let g = m
        .acquire(
            &key("held"),
            &AcquireOptions::new().ttl(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let t1 = g.fencing_token();
    let on_master: String = cluster.master().cmd(&["GET", "bid_lock:upwork:held"]);
    assert_eq!(on_master, g.holder().as_str());
    // Let the replica catch up (replication is asynchronous), then kill the master.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = tokio::task::spawn_blocking(move || {
        let took = cluster.fail_over();
        (cluster, took)
    })
    .await
    .unwrap();
    let (cluster, failover) = took;
    {
        let keys: Vec<String> = cluster.master().cmd(&["KEYS", "*"]);
        let role: Vec<redis::Value> = cluster.master().cmd(&["ROLE"]);
        eprintln!(
            "new master keys right after failover: {keys:?} role {:?}",
            role.first()
        );
    }
    // The client follows: new acquires succeed on the new master.
    let g2 = common::acquire_eventually(
        &m,
        &key("after"),
        &AcquireOptions::new().no_wait(),
        Duration::from_secs(20),
    )
    .await;
    let new_master = cluster.master();
    let v: String = new_master.cmd(&["GET", "bid_lock:upwork:after"]);
    assert_eq!(v, g2.holder().as_str());
    // The fencing counter was replicated (or re-seeded from the clock): still increasing.
    assert!(g2.fencing_token() > t1);
    // The held lock: kept on the new master, or its holder is told it is lost.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kept: Option<String> = new_master.cmd(&["GET", "bid_lock:upwork:held"]);
    let outcome = if g.is_lost() { "lost" } else { "kept" };
    eprintln!(
        "failover took {failover:?}; held lock {outcome} ({:?})",
        g.lease().lost_reason()
    );
    if g.is_lost() {
        assert_ne!(
            kept.as_deref(),
            Some(g.holder().as_str()),
            "lost but still held"
        );
    } else {
        assert_eq!(kept.as_deref(), Some(g.holder().as_str()));
        assert!(g.release().await.unwrap());
    }
    // The release subscriber and the grant channel followed the master too: a waiter of
    // the manager that predates the failover queues on the new master and is handed the
    // lock by the release (direct handoff), not by polling.
    let other = BidLockManager::new(cfg).await.unwrap();
    let k = key("handover");
    let held = other.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (m, k) = (m.clone(), k.clone());
        tokio::spawn(async move {
            m.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(20)))
                .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while m.metrics().lock_busy_tries == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never tried"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let handoffs = m.metrics().handoffs;
    let released_at = std::time::Instant::now();
    let held_token = held.fencing_token();
    assert!(held.release().await.unwrap());
    let g3 = waiter.await.unwrap().unwrap();
    assert_eq!(
        m.metrics().handoffs,
        handoffs + 1,
        "the lock was not handed over through the new master's grant channel"
    );
    assert!(g3.fencing_token() > held_token);
    assert!(
        released_at.elapsed() < Duration::from_secs(3),
        "woken after {:?}: the subscriber did not follow the failover",
        released_at.elapsed()
    );
    drop(g3);
}
