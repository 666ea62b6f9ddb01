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
    assert!(cluster.wait_replicated(Duration::from_secs(5)));
    let took = tokio::task::spawn_blocking(move || {
        let took = cluster.fail_over();
        (cluster, took)
    })
    .await
    .unwrap();
    let (cluster, failover) = took;
    let failed_over_at = std::time::Instant::now();
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
    // Right away, not after a pause the release subscriber may still be sleeping off.
    eprintln!(
        "the new master took an acquire {:?} after the failover",
        failed_over_at.elapsed()
    );
    handover_follows_the_failover(&m, cfg).await;
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
}

/// The release subscriber and the grant channel follow the master too: a waiter of the
/// manager that predates the failover queues on the new master and is handed the lock by
/// the release (direct handoff), not by polling, and quickly: the store wakes its
/// subscriber when it moves, instead of leaving it in a reconnect pause of up to 2 s.
async fn handover_follows_the_failover(m: &BidLockManager, cfg: bidlock::Config) {
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
        released_at.elapsed() < Duration::from_secs(1),
        "woken after {:?}: the subscriber did not follow the failover",
        released_at.elapsed()
    );
    drop(g3);
}

fn sentinel_config(url: String) -> bidlock::Config {
    Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// After a planned failover (`SENTINEL FAILOVER`) the old master stays a writable master
/// for a while, so renewals there keep succeeding while the lock's copy on the new master
/// runs out. A renewal counts only when the sentinels still name its master; one that
/// does not is retried on the new master until the lease runs out. So there are two
/// right outcomes, never a third: the old holder renews its replicated copy on the new
/// master and keeps the lock (B does not get it), or it is told it lost the lock before
/// B takes it. (Issue 21, item 4: the holder renewed on the old master and ran on beside
/// the new one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_failover_never_lets_the_old_holder_run_beside_a_new_one() {
    let cluster = tokio::task::spawn_blocking(SentinelCluster::start)
        .await
        .unwrap();
    let a = BidLockManager::new(sentinel_config(cluster.url()))
        .await
        .unwrap();
    let k = key("planned");
    let ttl = Duration::from_secs(3);
    let g = a
        .acquire(&k, &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    let old = cluster.master_port().unwrap();
    // Let a renewal replicate, then ask the sentinels for a failover.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cluster.planned_failover();
    let cluster = tokio::task::spawn_blocking(move || {
        assert!(cluster
            .wait_new_master(old, Duration::from_secs(30))
            .is_some());
        cluster
    })
    .await
    .unwrap();
    // B connects now: the sentinels send it to the new master, where it waits for A's
    // copy of the lock to run out.
    let b = BidLockManager::new(sentinel_config(cluster.url()))
        .await
        .unwrap();
    // Three ttls: long enough for A's copy to run out if A no longer renews it.
    let wait = AcquireOptions::new().timeout(3 * ttl);
    match b.acquire(&k, &wait).await {
        Ok(gb) => {
            assert!(
                g.is_lost(),
                "B holds the lock on the new master while A was never told: {:?}",
                g.lease().lost_reason()
            );
            assert!(gb.fencing_token() > g.fencing_token());
            assert!(gb.release().await.unwrap());
        }
        Err(e) => {
            assert!(e.is_not_acquired(), "{e}");
            assert!(!g.is_lost(), "{:?}", g.lease().lost_reason());
            let holder: Option<String> = cluster.master().cmd(&["GET", "bid_lock:upwork:planned"]);
            assert_eq!(holder.as_deref(), Some(g.holder().as_str()));
            assert!(g.release().await.unwrap());
        }
    }
}

/// Waiters queued before the master is killed keep waiting through the failover and get
/// the lock on the new master. (Issue 21, item 5: both waiters failed with "broken pipe"
/// as soon as the holder's release woke them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_queued_before_the_master_is_killed_get_the_lock_after_the_failover() {
    let cluster = tokio::task::spawn_blocking(SentinelCluster::start)
        .await
        .unwrap();
    let cfg = sentinel_config(cluster.url());
    let h = BidLockManager::new(cfg.clone()).await.unwrap();
    let k = key("survive");
    let g = h
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let m = BidLockManager::new(cfg.clone()).await.unwrap();
        let k = k.clone();
        waiters.push(tokio::spawn(async move {
            let opts = AcquireOptions::new().timeout(Duration::from_secs(60));
            let g = m.acquire(&k, &opts).await?;
            let token = g.fencing_token();
            g.release().await?;
            Ok::<_, bidlock::Error>(token)
        }));
    }
    let queue = "bid_lock_queue:upwork:survive";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.master().cmd::<i64>(&["ZCARD", queue]) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiters never queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut cluster = cluster;
    let old = tokio::task::spawn_blocking(move || {
        let old = cluster.kill_master();
        (cluster, old)
    })
    .await
    .unwrap();
    let (cluster, old) = old;
    let cluster = tokio::task::spawn_blocking(move || {
        assert!(cluster
            .wait_new_master(old.unwrap(), Duration::from_secs(30))
            .is_some());
        cluster
    })
    .await
    .unwrap();
    // The holder lets go on the new master (or its copy runs out there).
    let _ = g.release().await;
    let mut tokens = Vec::new();
    for w in waiters {
        tokens.push(
            w.await
                .unwrap()
                .expect("a waiter gave up on a transient error"),
        );
    }
    assert_ne!(tokens[0], tokens[1]);
    drop(cluster);
}
