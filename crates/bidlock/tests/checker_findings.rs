//! Holes the randomized checker (`tests/chaos`) found after the review of the issue-12
//! fixes: each test forces the interleaving the checker reported, and its failure message
//! names the broken promise.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, LockKey};
use bidlock_testkit::RedisServer;
use tokio::time::Instant;

/// A completion by a lapsed lease whose holder id the caller chose: another acquisition
/// of the same id holds the lock now. The record is written (the bid was placed), but the
/// other acquisition's lock must stay: it says "held", and Redis must agree (checker seed
/// 4, a variant of hole 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_completion_leaves_a_later_acquisition_of_its_holder_id_alone() {
    let s = RedisServer::start();
    let m1 = common::redis_manager(&s.url()).await;
    let m2 = common::redis_manager(&s.url()).await;
    let k = LockKey::new("upwork", "shared-id-complete").unwrap();
    let shared = AcquireOptions::new().holder("instance-1");
    let first = m1
        .acquire(
            &k,
            &shared.clone().ttl(Duration::from_millis(150)).renew(false),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !first.is_lost() {
        assert!(Instant::now() < deadline, "the first lease never lapsed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let redis_key = "bid_lock:upwork:shared-id-complete";
    let second = m2
        .acquire(
            &k,
            &shared
                .clone()
                .ttl(Duration::from_secs(30))
                .timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert!(
        !first.complete().await.unwrap(),
        "a lapsed lease must not be told its lock was released with the record"
    );
    assert_eq!(
        s.cmd::<Option<String>>(&["GET", "bid_lock:upwork:shared-id-complete"])
            .as_deref(),
        Some("instance-1"),
        "the lapsed completion deleted the later acquisition's lock while it says held"
    );
    assert!(s.cmd::<i64>(&["PTTL", redis_key]) > 20_000);
    assert_eq!(
        s.cmd::<i64>(&["EXISTS", "bid_done:upwork:shared-id-complete"]),
        1,
        "the placed bid must be recorded"
    );
    assert!(!second.is_lost());
    assert!(second.release().await.unwrap());
}

/// A manager whose link to Redis is slow (200 ms each way) with a connect timeout of
/// 500 ms: its release subscriber (a connection, then one SUBSCRIBE after another) never
/// finishes within the connect timeout, so it retries forever and no release message
/// reaches the manager. A forced release of a key it holds must still reach the holder
/// within a second (README: a release, cleanup or `release --force` of a key you hold
/// reaches every manager as a message), not at its next renewal (checker, class
/// holder-release with links of 20-150 ms, seed 3182180358).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_reaches_a_holder_whose_link_is_slow() {
    let s = RedisServer::start();
    let p = bidlock_testkit::FaultProxy::start(s.port()).await;
    p.set(bidlock_testkit::Fault::Delay(Duration::from_millis(200)));
    let cfg = common::redis_config(&p.url())
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500));
    let m = bidlock::BidLockManager::new(cfg.build().unwrap())
        .await
        .unwrap();
    let operator = common::redis_manager(&s.url()).await;
    let k = LockKey::new("upwork", "slow-link").unwrap();
    // Renewed every 3 s: a notice within a second comes from the release message.
    let g = m
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(9)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(operator.force_release(&k).await.unwrap());
    tokio::time::timeout(Duration::from_secs(1), g.lost())
        .await
        .expect("the holder on a slow link was not told of the forced release within a second");
}
