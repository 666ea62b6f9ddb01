//! Every key a script writes carries a ttl on every path, or is deleted on the path that
//! ends its use; the fencing counter is the one exception (docs/HANDOVER.md, rule 4).
//! Each scenario drives the handover through one way a tenure can end, then takes a
//! census of the whole keyspace.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager, BidOutcome, LockGuard};
use bidlock_testkit::RedisServer;
use common::{key, redis_manager as manager, until};

/// Every key of the server without a ttl, except the fencing counter.
fn keys_without_ttl(s: &RedisServer) -> Vec<String> {
    let keys: Vec<String> = s.cmd(&["KEYS", "*"]);
    keys.into_iter()
        .filter(|k| k != "bid_lock_fence")
        .filter(|k| s.cmd::<i64>(&["PTTL", k]) == -1)
        .collect()
}

fn queue_len(s: &RedisServer, p: &str) -> i64 {
    s.cmd(&["ZCARD", &format!("bid_lock_queue:upwork:{p}")])
}

/// `holder` holds `p`; a waiter of another manager queues, and the release hands it the
/// lock. Returns the waiter's guard.
async fn handed_over(s: &RedisServer, holder: &BidLockManager, p: &str) -> LockGuard {
    let waiter = manager(&s.url()).await;
    let k = key(p);
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let task = {
        let k = k.clone();
        tokio::spawn(async move {
            let opts = AcquireOptions::new().timeout(Duration::from_secs(10));
            waiter.acquire(&k, &opts).await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(s, p) == 1
    })
    .await;
    assert!(g.release().await.unwrap());
    let g = task.await.unwrap().unwrap();
    assert_eq!(
        g.lease().holder().as_str(),
        s.cmd::<String>(&["GET", &format!("bid_lock:upwork:{p}")])
    );
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_way_a_handed_over_tenure_ends_leaves_no_key_without_a_ttl() {
    let s = RedisServer::start();
    let m = manager(&s.url()).await;
    // Released.
    let g = handed_over(&s, &m, "released").await;
    assert!(g.release().await.unwrap());
    // Completed (bid_once's and `run --once`'s path).
    let g = handed_over(&s, &m, "completed").await;
    assert!(g.complete().await.unwrap());
    // Force-released by an operator.
    let g = handed_over(&s, &m, "forced").await;
    assert!(m.force_release(&key("forced")).await.unwrap());
    drop(g);
    // Its holder died: the lock runs out its ttl.
    let g = handed_over(&s, &m, "died").await;
    std::mem::forget(g);
    s.cmd::<i64>(&["PEXPIRE", "bid_lock:upwork:died", "1"]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A bid placed through a handover, the agents' main path.
    let k = key("bid");
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let bidder = {
        let (s_url, k) = (s.url(), k.clone());
        tokio::spawn(async move {
            let b = manager(&s_url).await;
            let opts = AcquireOptions::new().timeout(Duration::from_secs(10));
            b.bid_once(&k, &opts, |_| async { Ok::<_, String>(()) })
                .await
        })
    };
    until(Duration::from_secs(5), "the bidder to queue", || {
        queue_len(&s, "bid") == 1
    })
    .await;
    assert!(g.release().await.unwrap());
    assert!(matches!(
        bidder.await.unwrap().unwrap(),
        BidOutcome::Placed(())
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(keys_without_ttl(&s), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_that_time_out_or_are_cancelled_leave_no_key_without_a_ttl() {
    let s = RedisServer::start();
    let m = manager(&s.url()).await;
    let k = key("left");
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let w1 = manager(&s.url()).await;
    let w2 = manager(&s.url()).await;
    let short = AcquireOptions::new().timeout(Duration::from_millis(300));
    let timed_out = {
        let k = k.clone();
        tokio::spawn(async move { w1.acquire(&k, &short).await.map(drop) })
    };
    let cancelled = {
        let k = k.clone();
        tokio::spawn(async move {
            w2.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(30)))
                .await
                .map(drop)
        })
    };
    until(Duration::from_secs(5), "both waiters to queue", || {
        queue_len(&s, "left") == 2
    })
    .await;
    cancelled.abort();
    assert!(timed_out.await.unwrap().unwrap_err().is_timeout());
    until(Duration::from_secs(5), "both to leave the queue", || {
        queue_len(&s, "left") == 0
    })
    .await;
    assert!(g.release().await.unwrap());
    assert_eq!(keys_without_ttl(&s), Vec::<String>::new());
}
