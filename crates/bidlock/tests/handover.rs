//! Guarantee: **fair handover** (docs/GUARANTEES.md; docs/HANDOVER.md rules 3 and 6).
//! A release wakes a waiter within about a round trip; on one Redis (and Sentinel),
//! waiters with generated holder ids are served first come, first served across
//! managers, and the lock is never free between holders; a free lock goes to the first
//! live queued waiter, also after a holder's lock expired.
//!
//! - `release_wakes_waiter_without_polling`: the waiter's backoff is 30 s, so only the
//!   release signal can wake it in time.
//! - `waiters_are_served_in_order`: waiters of one manager, on memory and on Redis.
//! - `a_release_hands_the_lock_over_without_it_ever_being_free`: a client that does not
//!   queue (`SET NX`) hammers the key during handovers; it must never get in.
//! - `waiters_of_several_managers_are_served_in_arrival_order`,
//!   `two_waiters_of_one_manager_and_one_of_another_are_served_in_arrival_order`: arrival
//!   order across managers, also when a manager's second waiter arrives before another
//!   manager's first.
//! - `contenders_from_four_managers_never_overlap_and_take_turns`: handover under load.
//! - `a_queue_that_outlived_its_wait_marker_is_still_handed_the_lock`,
//!   `a_dead_waiter_is_skipped_and_a_foreign_release_still_wakes_the_queue`: the queue's
//!   bookkeeping goes stale (a marker expired, a waiter died, a foreign client released).
//! - `a_waiter_that_arrives_when_a_dead_holders_lock_expires_does_not_overtake_the_queue`:
//!   nothing publishes an expiry; a newcomer's first try must not take the freed lock
//!   from a waiter that queued long before (rule 6).
//! - `waiter_wakes_when_a_foreign_client_deletes_the_lock_after_ttl`: a foreign holder's
//!   lock runs out with no release message; the holder's pttl must wake the waiter.
//!
//! Grants (rules 1 and 2) are attacked in `grants.rs`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::RedisServer;
use tokio::time::Instant;

use common::{key, lock_of, no_polling_manager, queue_len, until, wait_for, Fx, Which};

on_both_backends!(
    release_wakes_waiter_without_polling,
    waiters_are_served_in_order,
);

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_hands_the_lock_over_without_it_ever_being_free() {
    let s = RedisServer::start();
    let (a, b) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let k = key("handover");
    let g = a.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move { b.acquire(&k, &wait_for(Duration::from_secs(10))).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "handover") == 1
    })
    .await;
    // A client that does not queue (redis-py's Lock) tries SET NX PX all the while.
    let foreign_won = Arc::new(Mutex::new(false));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let (won, stop) = (foreign_won.clone(), stop.clone());
        let mut c = s.client();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r: Option<String> = ::redis::cmd("SET")
                    .arg("bid_lock:upwork:handover")
                    .arg("redis-py")
                    .arg("NX")
                    .arg("PX")
                    .arg(10_000)
                    .query(&mut c)
                    .unwrap();
                if r.is_some() {
                    *won.lock().unwrap() = true;
                    return;
                }
            }
        })
    };
    let calls_before = b.metrics().backend_calls;
    let first_token = g.fencing_token();
    let t = Instant::now();
    assert!(g.release().await.unwrap());
    let g2 = waiter.await.unwrap().unwrap();
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    assert!(
        !*foreign_won.lock().unwrap(),
        "the lock was free between holders"
    );
    let m = b.metrics();
    assert_eq!(m.handoffs, 1, "{m:?}");
    // No try of its own: the grant was the answer.
    assert_eq!(m.backend_calls, calls_before, "{m:?}");
    assert!(took < Duration::from_secs(2), "handover took {took:?}");
    assert!(g2.fencing_token() > first_token);
    assert!(g2.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_several_managers_are_served_in_arrival_order() {
    let s = RedisServer::start();
    let holder = no_polling_manager(&s.url()).await;
    let k = key("order");
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let m = no_polling_manager(&s.url()).await;
        let (k, order) = (k.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let g = m
                .acquire(&k, &wait_for(Duration::from_secs(20)))
                .await
                .unwrap();
            order.lock().unwrap().push((i, g.fencing_token()));
            g.release().await.unwrap();
            m.metrics().handoffs
        }));
        // Each joins the queue before the next one starts.
        until(Duration::from_secs(5), "the waiter to queue", || {
            queue_len(&s, "order") == i + 1
        })
        .await;
    }
    assert!(g.release().await.unwrap());
    let mut handoffs = 0;
    for t in tasks {
        handoffs += t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let who: Vec<i64> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(who, vec![0, 1, 2, 3], "not first come, first served");
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "tokens: {order:?}"
    );
    assert_eq!(handoffs, 4);
}

/// Promise (docs/GUARANTEES.md, "Fair handover"): waiters with generated holder ids are
/// served first come, first served across managers.
///
/// Interleaving: H holds. Manager M1's waiter A queues (in Redis); then M1's waiter B
/// arrives; then manager M2's waiter C queues. If only the front local waiter joined
/// Redis' queue, B would join only when A has taken the lock, behind C: served A, C, B,
/// although B waited longer than C. Every waiter that takes handoffs joins Redis' queue
/// on arrival.
///
/// Found by the review of issue 20 (failed on f328693).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_waiters_of_one_manager_and_one_of_another_are_served_in_arrival_order() {
    let s = RedisServer::start();
    let (h, m1, m2) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let p = "fifo-across";
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
    let a = spawn_waiter(&m1, "A (M1, first)");
    until(Duration::from_secs(5), "A to queue", || {
        queue_len(&s, p) == 1
    })
    .await;
    let b = spawn_waiter(&m1, "B (M1, second)");
    // B is waiting (behind A, in M1) well before C arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = spawn_waiter(&m2, "C (M2, third)");
    // Every waiter that takes handoffs joins Redis' queue on arrival: A, B, then C.
    until(Duration::from_secs(5), "C to queue", || {
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
        "not first come, first served across managers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_from_four_managers_never_overlap_and_take_turns() {
    let s = RedisServer::start();
    let mut managers = Vec::new();
    for _ in 0..4 {
        managers.push(no_polling_manager(&s.url()).await);
    }
    let w = common::checker::Workload {
        keys: 1,
        tasks_per_instance: 2,
        duration: Duration::from_secs(3),
        hold: Duration::from_millis(2),
        long_hold: Duration::from_millis(2),
        ttl: Duration::from_secs(2),
        wait: Duration::from_secs(5),
    };
    let rec = common::checker::contend(managers.clone(), w).await;
    let o = common::checker::check(&rec, None);
    assert_eq!(o.unsafe_overlaps, 0, "{o:?}");
    assert_eq!(o.token_order_violations, 0, "{o:?}");
    assert_eq!(o.not_acquired, 0, "{o:?}");
    let handoffs: u64 = managers.iter().map(|m| m.metrics().handoffs).sum();
    assert!(
        handoffs * 2 > o.sections,
        "few handoffs: {handoffs} of {o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_outlived_its_wait_marker_is_still_handed_the_lock() {
    let s = RedisServer::start();
    let (a, b) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let k = key("no-marker");
    let g = a.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move { b.acquire(&k, &wait_for(Duration::from_secs(10))).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "no-marker") == 1
    })
    .await;
    // The marker goes (deleted by hand; or a foreign holder's lock outlived it).
    let _: i64 = s.cmd(&["DEL", "bid_lock_wait:upwork:no-marker"]);
    let handoffs = b.metrics().handoffs;
    assert!(g.release().await.unwrap());
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(
        b.metrics().handoffs,
        handoffs + 1,
        "the release freed the lock instead of handing it to the queued waiter"
    );
    assert!(got.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_waiter_is_skipped_and_a_foreign_release_still_wakes_the_queue() {
    let s = RedisServer::start();
    let m = no_polling_manager(&s.url()).await;
    let k = key("mixed");
    // A holder that does not hand over: redis-py's Lock.
    let _: () = s.cmd(&["SET", "bid_lock:upwork:mixed", "redis-py", "PX", "60000"]);
    // A waiter that died while queued (its entry is there, nobody refreshes it).
    let _: i64 = s.cmd(&["ZADD", "bid_lock_queue:upwork:mixed", "1", "ghost"]);
    let _: i64 = s.cmd(&[
        "HSET",
        "bid_lock_waiters:upwork:mixed",
        "ghost",
        "1|2000|nobody",
    ]);
    let waiter = {
        let (m, k) = (m.clone(), k.clone());
        tokio::spawn(async move { m.acquire(&k, &wait_for(Duration::from_secs(10))).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "mixed") == 2
    })
    .await;
    // redis-py releases with its compare-and-delete: no grant, no message.
    let t = Instant::now();
    let _: i64 = s.cmd(&["DEL", "bid_lock:upwork:mixed"]);
    let g = waiter.await.unwrap().unwrap();
    // The queue refresh (every half second at most) notices the free lock.
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Its release skips the dead entry and frees the lock.
    let g_holder = g.holder().clone();
    assert!(g.release().await.unwrap());
    let left: Option<String> = s.cmd(&["GET", "bid_lock:upwork:mixed"]);
    assert_eq!(
        left, None,
        "handed to {left:?} (the releaser was {g_holder})"
    );
    let q: Vec<String> = s.cmd(&["ZRANGE", "bid_lock_queue:upwork:mixed", "0", "-1"]);
    let marker: i64 = s.cmd(&["EXISTS", "bid_lock_wait:upwork:mixed"]);
    assert!(q.is_empty(), "queue {q:?}, marker {marker}");
}

/// Promise (docs/GUARANTEES.md, "Fair handover"; docs/HANDOVER.md rule 6): a free lock
/// goes to the first live queued waiter.
///
/// Interleaving: H (a holder id of its own, no renewal, ttl 1.25 s) dies holding the lock:
/// its lock runs out its ttl (a given id is never released in the background). W queued
/// right after H took the lock (ttl 8 s: grant ttl 2 s, refresh every 500 ms). H's lock
/// expires ~250 ms before W's next refresh; nothing publishes an expiry, so W learns only
/// at that refresh, and the lock is free meanwhile: N, a waiter that arrives after the
/// expiry, must not take it with its first try ahead of W, who had waited 1.25 s.
///
/// Found by the review of issue 20 (failed on f328693).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_arrives_when_a_dead_holders_lock_expires_does_not_overtake_the_queue() {
    let s = RedisServer::start();
    let (h, mw, mn) = (
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
        no_polling_manager(&s.url()).await,
    );
    let p = "dead-holder";
    let k = key(p);
    let opts = AcquireOptions::new()
        .holder("crashed")
        .ttl(Duration::from_millis(1250))
        .renew(false);
    let g = h.acquire(&k, &opts).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let w = {
        let (mw, k, order) = (mw.clone(), k.clone(), order.clone());
        let opts = wait_for(Duration::from_secs(20)).ttl(Duration::from_secs(8));
        tokio::spawn(async move {
            let g = mw.acquire(&k, &opts).await.unwrap();
            order.lock().unwrap().push("W (queued first)");
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(g.release().await.unwrap());
        })
    };
    until(Duration::from_secs(5), "W to queue", || {
        queue_len(&s, p) == 1
    })
    .await;
    // H's process dies: nothing releases its lock (a holder id of its own).
    drop(g);
    let mut c = s.client();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: i64 = ::redis::cmd("EXISTS")
            .arg(lock_of(p))
            .query(&mut c)
            .unwrap();
        if exists == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "H's lock never expired");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let n = {
        let (mn, k, order) = (mn.clone(), k.clone(), order.clone());
        tokio::spawn(async move {
            let g = mn
                .acquire(&k, &wait_for(Duration::from_secs(20)))
                .await
                .unwrap();
            order.lock().unwrap().push("N (arrived after the expiry)");
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(g.release().await.unwrap());
        })
    };
    w.await.unwrap();
    n.await.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order,
        vec!["W (queued first)", "N (arrived after the expiry)"],
        "a newcomer overtook the queue while the lock was free between holders"
    );
}

#[tokio::test]
async fn waiter_wakes_when_a_foreign_client_deletes_the_lock_after_ttl() {
    // A foreign holder's ttl runs out: no release message, the pttl hint wakes the waiter.
    let fx = Fx::with(Which::Redis, |b| b.retry(common::no_polling())).await;
    let _: Option<String> =
        fx.server()
            .cmd(&["SET", "bid_lock:upwork:expiring", "py", "NX", "PX", "400"]);
    let start = Instant::now();
    let g = fx
        .manager
        .acquire(
            &key("expiring"),
            &AcquireOptions::new().timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(g);
}
