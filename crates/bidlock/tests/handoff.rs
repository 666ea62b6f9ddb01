//! Direct handoff in Redis: a release hands the lock to the first live queued waiter of
//! the whole fleet. These tests attack it where it could break: a waiter that dies, is
//! cancelled or times out at the moment it is granted the lock, clients that do not queue
//! (redis-py's `SET NX PX`, `--wait 0`), and the order of service across managers.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use common::{key, until};
use tokio::time::Instant;

/// A manager whose waiters never poll: only a grant or a release message (or a queue
/// refresh) can explain a quick handover.
async fn manager(url: &str) -> BidLockManager {
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .response_timeout(Duration::from_secs(5))
        .retry(common::no_polling())
        .build()
        .unwrap();
    BidLockManager::new(cfg).await.unwrap()
}

fn queue_len(s: &RedisServer, p: &str) -> i64 {
    s.cmd(&["ZCARD", &format!("bid_lock_queue:upwork:{p}")])
}

fn wait_for(t: Duration) -> AcquireOptions {
    AcquireOptions::new().timeout(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_hands_the_lock_over_without_it_ever_being_free() {
    let s = RedisServer::start();
    let (a, b) = (manager(&s.url()).await, manager(&s.url()).await);
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
                let r: Option<String> = redis::cmd("SET")
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
    let holder = manager(&s.url()).await;
    let k = key("order");
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let m = manager(&s.url()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_cancelled_as_it_is_granted_hands_the_lock_on() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let holder = manager(&s.url()).await;
    let slow = manager(&p.url()).await;
    let next = manager(&s.url()).await;
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
    let holder = manager(&s.url()).await;
    let slow = manager(&p.url()).await;
    let next = manager(&s.url()).await;
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
    assert!(e.is_timeout(), "{e}");
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
    let (a, b) = (manager(&s.url()).await, manager(&s.url()).await);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_outlived_its_wait_marker_is_still_handed_the_lock() {
    let s = RedisServer::start();
    let (a, b) = (manager(&s.url()).await, manager(&s.url()).await);
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
    let m = manager(&s.url()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_from_four_managers_never_overlap_and_take_turns() {
    let s = RedisServer::start();
    let mut managers = Vec::new();
    for _ in 0..4 {
        managers.push(manager(&s.url()).await);
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

/// A grant whose message is held back past its grant ttl names a tenure that is over: the
/// waiter's next try (after its refresh found it no longer queued) must never take it up,
/// while another holder has the lock with a higher token. (Issue 20, hole 2: the acquire
/// kept its holder id across tries, so the old grant named the new try too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_held_back_past_its_ttl_is_never_taken_up_by_a_later_try() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let (h, x) = (manager(&s.url()).await, manager(&s.url()).await);
    let w = manager(&p.url()).await;
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
