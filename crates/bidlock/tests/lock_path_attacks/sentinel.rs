//! FAILS: an acquire through Sentinel on a master the sentinels no longer name (part of
//! `lock_path_attacks`).

use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config};
use tokio::time::Instant;

use super::common::key;

// ---------------------------------------------------------------------------------------
// FAILS (every run). Promises: issue 21 item 4, "A lease on a master the sentinels no
// longer name must count as lost ..., and the same for a master cut off from the
// sentinels but not from its clients"; README "Exclusion" and "A holder is never told
// held after its lock may be gone"; backend/redis/sentinel.rs: "A renewal therefore counts
// only when every sentinel that answers names the master it went to".
//
// Interleaving: A's manager talks to master M0 through Sentinel. M0 stalls (SIGSTOP: cut
// off from the sentinels and from A alike); the sentinels fail over to M1. B connects
// (the sentinels send it to M1) and takes the lock there. A's acquire (renewal off: a
// `run --ttl` without renewal, `bid_once` with a short bid) is sent to M0, which comes
// back still a master for a moment and runs it: A is told held, with a token, while B
// holds the same lock on the master every sentinel names. Only extends are confirmed
// with the sentinels (redis/mod.rs:435 `confirm_master`); an acquire is not, and a lease
// without renewal is never extended, so nothing ever counts it lost on that ground.
// ---------------------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_on_a_master_the_sentinels_no_longer_name_is_not_told_held() {
    let cluster = tokio::task::spawn_blocking(bidlock_testkit::SentinelCluster::start)
        .await
        .unwrap();
    let sentinel_manager = |url: String, response: Duration| async move {
        let cfg = Config::builder()
            .backend(Backend::Redis)
            .redis_url(url)
            .response_timeout(response)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        BidLockManager::new(cfg).await.unwrap()
    };
    // A waits long for answers: the stalled master's answer is what this is about.
    let a = sentinel_manager(cluster.url(), Duration::from_secs(30)).await;
    let k = key("stale-master");
    // Warm A's connection and scripts on M0.
    let warm = a
        .acquire(&key("warm"), &AcquireOptions::new())
        .await
        .unwrap();
    assert!(warm.release().await.unwrap());
    let old = cluster.master_port().unwrap();
    assert!(cluster.server(old).unwrap().pause(), "SIGSTOP M0");
    let cluster = tokio::task::spawn_blocking(move || {
        let new = cluster.wait_new_master(old, Duration::from_secs(30));
        (cluster, new)
    })
    .await
    .unwrap();
    let (cluster, new) = cluster;
    let new = new.expect("the sentinels never promoted the replica");
    let b = sentinel_manager(cluster.url(), Duration::from_secs(2)).await;
    let gb = b
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    let a_try = {
        let (a, k) = (a.clone(), k.clone());
        let opts = AcquireOptions::new()
            .no_wait()
            .ttl(Duration::from_secs(20))
            .renew(false);
        tokio::spawn(async move { a.acquire(&k, &opts).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.server(old).unwrap().resume();
    let got = tokio::time::timeout(Duration::from_secs(30), a_try)
        .await
        .expect("A's acquire never returned")
        .unwrap();
    let Ok(ga) = got else {
        // Refused or an error: A was not told held. Nothing broken.
        assert!(gb.release().await.unwrap());
        return;
    };
    let told_at = Instant::now();
    if ga.is_lost() {
        // Told held and lost in one breath: the caller sees a lost guard at once.
        assert!(gb.release().await.unwrap());
        return;
    }
    // How long A stays "held" beside B (bounded: 5 s of A's 20 s lease).
    while !ga.is_lost() && told_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let named = cluster.master_port();
    let both = format!(
        "A was told held (token {}, on M0 :{old}) while B held the lock on M1 :{new} \
         (token {}), the master the sentinels named before A's request was sent (they \
         name {named:?} now); A still said held {:?} later (is_lost={}, B is_lost={})",
        ga.fencing_token(),
        gb.fencing_token(),
        told_at.elapsed(),
        ga.is_lost(),
        gb.is_lost()
    );
    drop(ga);
    assert!(gb.release().await.unwrap());
    panic!("{both}");
}
