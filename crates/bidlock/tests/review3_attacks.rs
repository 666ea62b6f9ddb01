//! Third review's attacks on the stated guarantees (README "Guarantees", "Waiting and
//! handover", docs/HANDOVER.md). A failing test here shows a hole; each says which
//! promise it attacks and the history it drives.
//!
//! - `a_waiter_that_arrived_before_its_manager_learnt_the_store_queues_is_served_first`:
//!   fair handover across managers. Two waiters of a fresh manager arrive back to back
//!   (the second before the first's answer taught the manager that the store queues);
//!   a waiter of another manager arrives after both. The second must be served before it.
//! - `given_holder_id_used_twice`: a lease of a holder id of the caller's that lapsed must
//!   not release (or shorten) a later acquisition under the same id (memory and Redis).
//! - `memory_a_force_release_through_another_manager_is_noticed_at_once`: loss is
//!   reported at once when a force release names the key (in-memory store, Notices).
//! - `tokens_stay_above_a_batch_after_the_counter_is_rolled_back_to_before_it`: tokens
//!   never go back, also when one script issued many tokens (a batch) and the counter is
//!   rolled back to its value before that batch.
//! - `a_timed_out_queued_waiter_leaves_nothing_that_blocks_the_next_client`: a waiter that
//!   timed out is told so only once its place is gone: a release right after hands the
//!   lock to nobody dead.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::RedisServer;

use common::{key, no_polling_manager, queue_len, redis_manager, until, wait_for, Fx};

on_both_backends!(given_holder_id_used_twice,);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_arrived_before_its_manager_learnt_the_store_queues_is_served_first() {
    let s = RedisServer::start();
    let h = no_polling_manager(&s.url()).await;
    // A fresh manager with the default backoff: it has not yet seen the store queue.
    let m1 = redis_manager(&s.url()).await;
    let m2 = no_polling_manager(&s.url()).await;
    let p = "fifo-before-learning";
    let k = key(p);
    let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let spawn_waiter = |m: &BidLockManager, name: &'static str| {
        let (m, k, order) = (m.clone(), k.clone(), order.clone());
        tokio::spawn(async move {
            let g = m
                .acquire(&k, &wait_for(Duration::from_secs(20)))
                .await
                .unwrap();
            order.lock().unwrap().push(name);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(g.release().await.unwrap());
        })
    };
    // A and B call acquire back to back, before M1 has any answer from Redis.
    let a = spawn_waiter(&m1, "A (M1, first)");
    let b = spawn_waiter(&m1, "B (M1, second)");
    // A's try is answered (it queued); B has called acquire already.
    until(Duration::from_secs(5), "A to queue", || queue_len(&s, p) == 1).await;
    let c = spawn_waiter(&m2, "C (M2, third)");
    until(Duration::from_secs(5), "all three to queue", || {
        queue_len(&s, p) == 3
    })
    .await;
    assert!(g.release().await.unwrap());
    for t in [a, b, c] {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec!["A (M1, first)", "B (M1, second)", "C (M2, third)"],
        "B called acquire before C but was served after it: not first come, first served \
         across managers"
    );
}

async fn given_holder_id_used_twice(fx: Fx) {
    let other = fx.instance().await;
    let k = key("given-twice");
    let short = AcquireOptions::new()
        .holder("shared-id")
        .renew(false)
        .ttl(Duration::from_millis(200));
    let first = fx.manager.acquire(&k, &short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(first.is_lost(), "a lease past its ttl without renewal");
    let long = AcquireOptions::new()
        .holder("shared-id")
        .ttl(Duration::from_secs(30))
        .timeout(Duration::from_secs(5));
    let second = other.acquire(&k, &long).await.unwrap();
    // The lapsed lease tries everything it may: extend, release, and a drop of a clone.
    assert!(first.extend(Duration::from_millis(20)).await.is_err());
    assert!(!first.release().await.unwrap_or(false));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = other.status(&k).await.unwrap();
    assert_eq!(st.holder.as_deref(), Some("shared-id"), "{st:?}");
    assert!(
        st.ttl_left_ms.unwrap_or(0) > 20_000,
        "the later acquisition was shortened: {st:?}"
    );
    assert!(!second.is_lost());
    let third = fx
        .manager
        .try_acquire(&k, &AcquireOptions::new())
        .await;
    assert!(third.is_err(), "a third holder got in");
    assert!(second.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_force_release_through_another_manager_is_noticed_at_once() {
    let prefix = common::unique_prefix();
    let a = BidLockManager::new(common::memory_config(&prefix)).await.unwrap();
    let b = BidLockManager::new(common::memory_config(&prefix)).await.unwrap();
    let k = key("forced-memory");
    // Renewal every 20 s: only the notice can tell the holder within the wait below.
    let g = a
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(b.force_release(&k).await.unwrap());
    let told = tokio::time::timeout(Duration::from_secs(5), g.lost()).await;
    assert!(told.is_ok(), "holder not told of a force release by another manager");
    let g2 = b.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(g2.fencing_token().get() > g.fencing_token().get());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_stay_above_a_batch_after_the_counter_is_rolled_back_to_before_it() {
    let s = RedisServer::start();
    let m = redis_manager(&s.url()).await;
    let warm = common::token_of(&m, &key("warm")).await;
    let before: String = s.cmd(&["GET", "bid_lock_fence"]);
    assert_eq!(before, warm.to_string());
    // Many acquires at once: all but the first few go as one script (a batch), whose
    // tokens count on from one clock reading.
    let opts = AcquireOptions::new().ttl(Duration::from_secs(60)).no_wait();
    let futs = (0..3000).map(|i| {
        let (m, opts) = (m.clone(), opts.clone());
        async move { m.acquire(&key(&format!("batch-{i}")), &opts).await.unwrap() }
    });
    let guards = futures_util::future::join_all(futs).await;
    let top = guards.iter().map(|g| g.fencing_token().get()).max().unwrap();
    // The counter is rolled back to before the batch (an RDB restore, a lagging replica).
    let _: () = s.cmd(&["SET", "bid_lock_fence", &before]);
    let after = common::token_of(&m, &key("after-rollback")).await;
    assert!(
        after > top,
        "token {after} after the rollback is not above the batch's {top}"
    );
    drop(guards);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_queued_waiter_leaves_nothing_that_blocks_the_next_client() {
    let s = RedisServer::start();
    let (h, w, c) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let p = "timed-out-waiter";
    let k = key(p);
    for round in 0..5 {
        let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
        let err = w
            .acquire(&k, &wait_for(Duration::from_millis(150 + 40 * round)))
            .await
            .unwrap_err();
        assert!(err.is_not_acquired(), "{err}");
        // Told "not acquired": its place must be gone, so this release frees the lock.
        assert!(g.release().await.unwrap());
        assert_eq!(queue_len(&s, p), 0, "round {round}: the waiter is still queued");
        let g = c
            .try_acquire(&k, &AcquireOptions::new())
            .await
            .unwrap_or_else(|e| panic!("round {round}: lock given to a departed waiter: {e}"));
        assert!(g.release().await.unwrap());
    }
}
