//! Guarantee: **fair handover**, its grants (docs/GUARANTEES.md; docs/HANDOVER.md rules
//! 1 and 2). A grant names one tenure of a queued holder id and can never be taken up by
//! a later try; it counts from the last request that found the id queued; a waiter that
//! leaves as it is granted hands the lock on; a granted waiter holds for the ttl it asked
//! for; an acquire ends with "not acquired" only when its wait ran out.
//!
//! - `a_waiter_cancelled_as_it_is_granted_hands_the_lock_on`,
//!   `a_waiter_that_times_out_as_it_is_granted_returns_not_acquired_and_hands_on`: the
//!   grant and the waiter's end cross; the lock must go to the next waiter, not stay with
//!   nobody until the grant ttl.
//! - `a_handed_over_lock_without_renewal_lasts_its_full_ttl`: Redis keeps a granted lock
//!   only for the short grant ttl; a waiter without renewal must still hold its full ttl.
//! - `a_granted_waiter_without_renewal_that_loses_the_lock_before_its_extend_keeps_waiting`:
//!   the lock is taken away between the grant and its first extend; the acquire must go
//!   on waiting, not return "not acquired" early.
//! - `a_grant_held_back_past_its_ttl_is_never_taken_up_by_a_later_try`: a grant message
//!   delayed past its ttl names a tenure that is over (issue 20's hole 2).
//! - `local_waiters_of_a_cold_manager_learn_that_the_store_queues`: waiters of one manager
//!   that all queued locally before any try failed must still come to join the store's
//!   queue, so handovers are grants, not a release message and a try each.

mod common;

use std::time::Duration;

use bidlock::AcquireOptions;
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use tokio::time::Instant;

use common::{key, no_polling_manager, queue_len, until, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_cancelled_as_it_is_granted_hands_the_lock_on() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let holder = no_polling_manager(&s.url()).await;
    let slow = no_polling_manager(&p.url()).await;
    let next = no_polling_manager(&s.url()).await;
    let k = key("cancelled");
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let cancelled = {
        let (slow, k) = (slow.clone(), k.clone());
        tokio::spawn(async move { slow.acquire(&k, &wait_for(Duration::from_secs(20))).await })
    };
    until(Duration::from_secs(5), "the slow waiter to queue", || {
        queue_len(&s, "cancelled") == 1
    })
    .await;
    let behind = {
        let (next, k) = (next.clone(), k.clone());
        tokio::spawn(async move { next.acquire(&k, &wait_for(Duration::from_secs(20))).await })
    };
    until(Duration::from_secs(5), "the next waiter to queue", || {
        queue_len(&s, "cancelled") == 2
    })
    .await;
    // The grant to the slow waiter is made in Redis, but its message is held up.
    p.set(Fault::Latency(Duration::from_millis(400)));
    let first = g.holder().clone();
    assert!(g.release().await.unwrap());
    let granted: Option<String> = s.cmd(&["GET", "bid_lock:upwork:cancelled"]);
    assert!(
        granted.is_some_and(|h| h != first.as_str()),
        "not handed over"
    );
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    // The cancelled waiter hands the lock on (its release passes through the proxy):
    // the next waiter gets it well before the 2 s grant would run out.
    let t = Instant::now();
    let g3 = behind.await.unwrap().unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(next.metrics().handoffs, 1);
    p.set(Fault::None);
    assert!(g3.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_times_out_as_it_is_granted_returns_not_acquired_and_hands_on() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let holder = no_polling_manager(&s.url()).await;
    let slow = no_polling_manager(&p.url()).await;
    let next = no_polling_manager(&s.url()).await;
    let k = key("timed-out");
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let timing_out = {
        let (slow, k) = (slow.clone(), k.clone());
        tokio::spawn(async move {
            slow.acquire(&k, &wait_for(Duration::from_millis(700)))
                .await
        })
    };
    until(Duration::from_secs(5), "the slow waiter to queue", || {
        queue_len(&s, "timed-out") == 1
    })
    .await;
    let behind = {
        let (next, k) = (next.clone(), k.clone());
        tokio::spawn(async move { next.acquire(&k, &wait_for(Duration::from_secs(20))).await })
    };
    until(Duration::from_secs(5), "the next waiter to queue", || {
        queue_len(&s, "timed-out") == 2
    })
    .await;
    // The slow waiter's link stalls: the grant's message reaches it only after its
    // deadline, and so does the release that hands the lock on as it leaves.
    p.set(Fault::Blackhole);
    assert!(g.release().await.unwrap());
    let e = timing_out.await.unwrap().unwrap_err();
    assert!(e.is_not_acquired(), "{e}");
    p.set(Fault::None);
    let g3 = behind.await.unwrap().unwrap();
    // Handed on by the waiter that left, not taken by a try after the grant ran out.
    assert_eq!(next.metrics().handoffs, 1, "{:?}", next.metrics());
    assert_eq!(slow.metrics().handoffs, 0, "{:?}", slow.metrics());
    p.set(Fault::None);
    assert!(g3.release().await.unwrap());
}

/// A waiter without renewal (the Python package's `acquire_lock`) is handed a lock that
/// Redis keeps only for the short grant ttl; it must hold it for the ttl it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_lock_without_renewal_lasts_its_full_ttl() {
    let s = RedisServer::start();
    let (a, b) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let k = key("no-renew");
    let g = a.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move {
            let opts = wait_for(Duration::from_secs(10))
                .ttl(Duration::from_secs(30))
                .renew(false);
            b.acquire(&k, &opts).await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "no-renew") == 1
    })
    .await;
    let handoffs = b.metrics().handoffs;
    assert!(g.release().await.unwrap());
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(b.metrics().handoffs, handoffs + 1, "not a handoff");
    let pttl: i64 = s.cmd(&["PTTL", "bid_lock:upwork:no-renew"]);
    assert!(
        pttl > 25_000,
        "the handed-over lock lives {pttl} ms in Redis, not the 30 s asked for"
    );
    let left = got.lease().expires_at().unwrap() - std::time::Instant::now();
    assert!(left > Duration::from_secs(25), "the lease says {left:?}");
    assert!(!got.is_lost());
    assert!(got.release().await.unwrap());
}

/// Promise: `acquire` returns `Error::NotAcquired` only when the wait ran out;
/// docs/HANDOVER.md's state table: `Granted` -> "without renewal, one extend to the full
/// ttl first (`Try(None)` if lost by then)", i.e. the acquire goes on waiting.
///
/// Interleaving: W (renew off, ttl 30 s: grant ttl 2 s, so it extends once) queues through
/// a link with 100 ms latency; H releases and the lock is handed to W; before W's extend
/// arrives the lock is gone (an operator's force release here; a grant whose extend
/// arrives after the grant ttl does the same) and X takes it. W's extend answers "lost";
/// the acquire must go back to waiting (it leaves the local queue only once the lock is
/// held for good), not end with "not acquired" a second into a 20 s wait while X would
/// release a second later.
///
/// Found by the review of issue 20 (failed on f328693).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_waiter_without_renewal_that_loses_the_lock_before_its_extend_keeps_waiting() {
    let s = RedisServer::start();
    let proxy = FaultProxy::start(s.port()).await;
    let (h, x) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let w = no_polling_manager(&proxy.url()).await;
    let p = "lost-before-extend";
    let k = key(p);
    let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let started = Instant::now();
    let waiter = {
        let (w, k) = (w.clone(), k.clone());
        let opts = wait_for(Duration::from_secs(20))
            .ttl(Duration::from_secs(30))
            .renew(false);
        tokio::spawn(async move { w.acquire(&k, &opts).await })
    };
    until(Duration::from_secs(5), "W to queue", || {
        queue_len(&s, p) == 1
    })
    .await;
    proxy.set(Fault::Latency(Duration::from_millis(100)));
    assert!(g.release().await.unwrap());
    assert!(x.force_release(&k).await.unwrap());
    let gx = x
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    proxy.set(Fault::None);
    if waiter.is_finished() {
        let got = waiter.await.unwrap();
        panic!(
            "W's 20 s acquire ended after {:?} while X held the lock: {:?}",
            started.elapsed(),
            got.map(|g| g.fencing_token())
        );
    }
    let tx = gx.fencing_token();
    assert!(gx.release().await.unwrap());
    let gw = waiter.await.unwrap().unwrap();
    assert!(gw.fencing_token() > tx);
    assert!(gw.release().await.unwrap());
}

/// A grant whose message is held back past its grant ttl names a tenure that is over: the
/// waiter's next try (after its refresh found it no longer queued) must never take it up,
/// while another holder has the lock with a higher token. (Issue 20, hole 2: the acquire
/// kept its holder id across tries, so the old grant named the new try too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_held_back_past_its_ttl_is_never_taken_up_by_a_later_try() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let (h, x) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let w = no_polling_manager(&p.url()).await;
    let k = key("held-back");
    let lock = "bid_lock:upwork:held-back";
    let g = h.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (w, k) = (w.clone(), k.clone());
        let opts = wait_for(Duration::from_secs(20)).ttl(Duration::from_millis(200));
        tokio::spawn(async move {
            let g = w.acquire(&k, &opts).await;
            (Instant::now(), g)
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "held-back") == 1
    })
    .await;
    // W's link stalls; the release hands W the lock, and the grant message is stuck.
    p.set(Fault::Blackhole);
    let t1 = g.fencing_token();
    assert!(g.release().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.cmd::<i64>(&["EXISTS", lock]) == 1 {
        assert!(Instant::now() < deadline, "the grant never expired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The grant ran out; X takes the lock.
    let gx = x.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(gx.fencing_token() > t1);
    p.set(Fault::None);
    // Whatever W does now, it must not be told "held" while X holds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !waiter.is_finished(),
        "W was told held while X holds: {:?}",
        s.cmd::<Option<String>>(&["GET", lock])
    );
    let released_at = Instant::now();
    let tx = gx.fencing_token();
    assert!(gx.release().await.unwrap());
    let (at, gw) = waiter.await.unwrap();
    let gw = gw.unwrap();
    assert!(at >= released_at, "W was told held before X released");
    assert!(gw.fencing_token() > tx, "W's token is not above X's");
    let holder: Option<String> = s.cmd(&["GET", lock]);
    assert_eq!(holder.as_deref(), Some(gw.holder().as_str()));
    assert!(gw.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_waiters_of_a_cold_manager_learn_that_the_store_queues() {
    let s = RedisServer::start();
    let m = no_polling_manager(&s.url()).await;
    let k = key("cold");
    let _: String = s.cmd(&["CONFIG", "RESETSTAT"]);
    // Four waiters at once: all queue locally before the first try is answered.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (m, k) = (m.clone(), k.clone());
            tokio::spawn(async move {
                for _ in 0..3 {
                    let g = m
                        .acquire(&k, &wait_for(Duration::from_secs(20)))
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    assert!(g.release().await.unwrap());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats: String = s.cmd(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_zadd:"),
        "no waiter joined the store's queue: {stats}"
    );
}
