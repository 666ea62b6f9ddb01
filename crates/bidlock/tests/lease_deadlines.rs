//! Guarantee: **a holder is never told "held" after its lock may be gone**
//! (docs/GUARANTEES.md): the deadline. A lease counts from the moment its request was
//! *sent*, so its deadline is never after Redis' expiry; an extend first lowers the
//! deadline to what it alone guarantees and only the newest answered extend raises it;
//! renewals only ever lengthen a lock; an acquire answered after its ttl is not returned;
//! loss is reported no later than the deadline. (Loss told *at once* by a message is
//! `notices.rs`.)
//!
//! - `deleted_lock_is_reported_lost`: the lock is deleted or stolen behind the holder's
//!   back; `lost()` must resolve within one renewal period.
//! - `a_shortening_extend_whose_reply_is_lost_lowers_the_deadline`: a shorter extend
//!   reaches Redis but its reply is lost; Redis drops the lock early, so the guard must
//!   not keep the old deadline.
//! - `extends_landing_out_of_order_never_leave_the_deadline_after_the_expiry`: an older
//!   short extend lands after a newer long one (redis-rs retries a NOSCRIPT); the
//!   deadline must follow what Redis kept.
//! - `a_stale_renewal_never_shortens_a_later_acquisition_of_the_same_holder_id`: a late
//!   renewal of a released acquisition lands on a later acquisition of the same given id.
//! - `a_lock_acquired_after_its_ttl_ran_out_is_not_returned`: the acquire's reply takes
//!   longer than the ttl.
//! - `redlock_leases_count_the_acquire_time_once`: a slow Redlock acquire must count its
//!   round trips once (from the send), never more and never less.
//!
//! A ttl with a fraction of a millisecond is attacked in `whole_milliseconds.rs` (a test
//! binary of its own). The out-of-order extends and the stale renewal were found by the
//! review of the issue-12 fixes (both failed on 196a893).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use tokio::time::Instant;

use common::{key, redis_manager_with_timeout, token_of, until, Fx};

// The scripts as sent: their shared parts first (backend/redis/scripts.rs).
const EXTEND_LUA: &str = concat!(
    include_str!("../src/backend/scripts/junk.lua"),
    include_str!("../src/backend/scripts/tenure.lua"),
    include_str!("../src/backend/scripts/extend.lua")
);

const RENEW_LUA: &str = concat!(
    include_str!("../src/backend/scripts/junk.lua"),
    include_str!("../src/backend/scripts/tenure.lua"),
    include_str!("../src/backend/scripts/renew.lua")
);

const ACQUIRE_LUA: &str = concat!(
    include_str!("../src/backend/scripts/hlc.lua"),
    include_str!("../src/backend/scripts/junk.lua"),
    include_str!("../src/backend/scripts/queue.lua"),
    include_str!("../src/backend/scripts/acquire.lua")
);

const RELEASE_LUA: &str = concat!(
    include_str!("../src/backend/scripts/hlc.lua"),
    include_str!("../src/backend/scripts/junk.lua"),
    include_str!("../src/backend/scripts/queue.lua"),
    include_str!("../src/backend/scripts/release.lua")
);

fn script_loaded(s: &RedisServer, body: &str) -> bool {
    let sha = ::redis::Script::new(body).get_hash().to_owned();
    s.cmd::<Vec<i64>>(&["SCRIPT", "EXISTS", &sha]) == vec![1]
}

async fn wait_gone(s: &RedisServer, redis_key: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while s.cmd::<i64>(&["EXISTS", redis_key]) == 1 {
        assert!(Instant::now() < deadline, "{redis_key} never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

on_both_backends!(deleted_lock_is_reported_lost);

async fn deleted_lock_is_reported_lost(fx: Fx) {
    for steal in [false, true] {
        let k = key(if steal { "stolen" } else { "deleted" });
        let g = fx
            .manager
            .acquire(&k, &AcquireOptions::new().ttl(Duration::from_millis(600)))
            .await
            .unwrap();
        let lost = g.lost();
        let t0 = Instant::now();
        match (&fx.server, steal) {
            (Some(s), false) => {
                let _: i64 = s.cmd(&["DEL", "bid_lock:upwork:deleted"]);
            }
            (Some(s), true) => {
                let _: () = s.cmd(&["SET", "bid_lock:upwork:stolen", "thief", "PX", "60000"]);
            }
            (None, _) => {
                assert!(fx.manager.force_release(&k).await.unwrap());
                if steal {
                    let _thief = fx
                        .manager
                        .acquire(&k, &AcquireOptions::new().holder("thief"))
                        .await
                        .unwrap();
                    tokio::time::timeout(Duration::from_secs(1), lost)
                        .await
                        .expect("lost not reported");
                    assert!(g.is_lost());
                    continue;
                }
            }
        }
        // Within one renewal period (ttl/3 = 200 ms) plus a round trip and slack.
        tokio::time::timeout(Duration::from_millis(500), lost)
            .await
            .expect("lost not reported within a renewal period");
        assert!(g.is_lost());
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert!(g.lease().lost_reason().is_some());
        // Releasing a lost lock changes nothing (the thief keeps it).
        assert!(!g.release().await.unwrap());
        if steal {
            if let Some(s) = &fx.server {
                let v: String = s.cmd(&["GET", "bid_lock:upwork:stolen"]);
                assert_eq!(v, "thief");
            }
        }
    }
    assert!(fx.manager.metrics().locks_lost >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortening_extend_whose_reply_is_lost_lowers_the_deadline() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_millis(300)).await;
    let m3 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("lost-extend");
    let g = m1
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    // Load the extend script first (a NOSCRIPT round trip would hide the interleaving).
    g.extend(Duration::from_secs(3)).await.unwrap();
    // The extend reaches Redis after 500 ms; its reply comes too late for the client.
    p.set(Fault::Latency(Duration::from_millis(500)));
    let e = g.extend(Duration::from_millis(400)).await.unwrap_err();
    assert!(e.is_backend(), "{e}");
    // Redis applied the shorter ttl: the lock expires there long before the old 3 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:lost-extend"]) == 1 {
        assert!(
            Instant::now() < deadline,
            "the shortened lock never expired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let g3 = m3.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(
        g.is_lost(),
        "the guard still says held while another manager holds the lock"
    );
    p.set(Fault::None);
    assert!(g3.release().await.unwrap());
}

/// The "only the newest extend's reply moves the deadline" rule assumes extends reach
/// Redis in the order they were started. redis-rs's `invoke_async` answers NOSCRIPT with
/// SCRIPT LOAD + a second EVALSHA, so an older extend can land after a newer one (first
/// use of extend.lua on a fresh server, after any restart, failover or SCRIPT FLUSH).
/// Here the older short extend lands last and the newer long extend's reply arrives: the
/// deadline must not be the long one. (Review of the issue-12 fixes, R1.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extends_landing_out_of_order_never_leave_the_deadline_after_the_expiry() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let m2 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("noscript-order");
    let g = Arc::new(
        m1.acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(30)))
            .await
            .unwrap(),
    );
    // What a restart with persistence, a failover or a fresh server leaves: no scripts.
    let _: () = s.cmd(&["SCRIPT", "FLUSH"]);
    p.set(Fault::Latency(Duration::from_millis(300)));
    // E1 (older, shorter): EVALSHA -> NOSCRIPT -> SCRIPT LOAD -> EVALSHA.
    let e1 = {
        let g = g.clone();
        tokio::spawn(async move { g.extend(Duration::from_secs(2)).await })
    };
    until(Duration::from_secs(5), "E1's SCRIPT LOAD to run", || {
        script_loaded(&s, EXTEND_LUA)
    })
    .await;
    // E2 (newer, longer) is sent now: it reaches Redis before E1's second EVALSHA.
    let e2 = {
        let g = g.clone();
        tokio::spawn(async move { g.extend(Duration::from_secs(60)).await })
    };
    // Each extend succeeds, or (a loaded machine: the keeper's renewal through the slow
    // link missed the deadline E1 lowered) says the lease was lost before its answer.
    for e in [e1, e2] {
        match e.await.unwrap() {
            Ok(_) => {}
            Err(bidlock::Error::LockLost { .. }) => assert!(g.is_lost()),
            Err(other) => panic!("extend failed: {other}"),
        }
    }
    p.set(Fault::None);
    let pttl: i64 = s.cmd(&["PTTL", "bid_lock:upwork:noscript-order"]);
    let local_left = g
        .lease()
        .expires_at()
        .unwrap()
        .saturating_duration_since(std::time::Instant::now());
    eprintln!("redis pttl {pttl} ms, local deadline in {local_left:?}");
    wait_gone(&s, "bid_lock:upwork:noscript-order", Duration::from_secs(5)).await;
    let g2 = m2.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(
        g.is_lost(),
        "another manager holds the lock while the guard says held (redis pttl was {pttl} ms, \
         local deadline {local_left:?} away)"
    );
    drop(g2);
}

/// A renewal is an extend by holder id. With a holder id of the caller's (the migration
/// guide's `holder("instance-1")`), a renewal of an acquisition already released can land
/// on a later acquisition of the same id; it must not shorten it, or the later guard
/// keeps its 300 s deadline while Redis drops the lock after the old ttl. (Review of the
/// issue-12 fixes, R2.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_renewal_never_shortens_a_later_acquisition_of_the_same_holder_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let m3 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("stale-renewal");
    let mine = AcquireOptions::new().holder("instance-1");
    let a = m1
        .acquire(&k, &mine.clone().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let _: () = s.cmd(&["SCRIPT", "FLUSH"]);
    // Only extend.lua is missing: acquire and release take one round trip.
    let _: String = s.cmd(&["SCRIPT", "LOAD", ACQUIRE_LUA]);
    let _: String = s.cmd(&["SCRIPT", "LOAD", RELEASE_LUA]);
    p.set(Fault::Latency(Duration::from_millis(250)));
    let calls = m1.metrics().backend_calls;
    // The keeper renews A at ttl/3 (1 s): wait until that renewal is sent.
    until(Duration::from_secs(5), "A's renewal to start", || {
        m1.metrics().backend_calls > calls
    })
    .await;
    assert!(a.release().await.unwrap(), "A's release");
    // The same instance takes the posting again, for 300 s.
    let b = m1
        .acquire(&k, &mine.clone().ttl(Duration::from_secs(300)).no_wait())
        .await
        .unwrap();
    // Let A's renewal (NOSCRIPT, SCRIPT LOAD, EVALSHA) arrive: once the script is loaded,
    // a PING on the same connection answers after the EVALSHA behind it.
    until(
        Duration::from_secs(5),
        "A's renewal to load its script",
        || script_loaded(&s, RENEW_LUA),
    )
    .await;
    m1.ping().await.unwrap();
    p.set(Fault::None);
    let pttl: i64 = s.cmd(&["PTTL", "bid_lock:upwork:stale-renewal"]);
    assert!(
        pttl > 250_000,
        "a stale renewal of A cut B's 300 s lock to {pttl} ms while B says held"
    );
    assert!(!b.is_lost());
    assert!(m3.try_acquire(&k, &AcquireOptions::new()).await.is_err());
    assert!(b.release().await.unwrap());
}

/// An acquire whose reply arrives after its ttl is not returned as held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_acquired_after_its_ttl_ran_out_is_not_returned() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m = redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    p.set(Fault::Latency(Duration::from_millis(300)));
    let k = key("late");
    let opts = AcquireOptions::new()
        .ttl(Duration::from_millis(100))
        .no_wait();
    let r = m.acquire(&k, &opts).await;
    match r {
        Err(e) => assert!(e.is_not_acquired(), "{e}"),
        Ok(g) => panic!("returned a lease that had already run out: {g:?}"),
    }
    p.set(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_leases_count_the_acquire_time_once() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let mut proxies = Vec::new();
    for s in &servers {
        proxies.push(FaultProxy::start(s.port()).await);
    }
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(proxies.iter().map(FaultProxy::url))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    // Load the scripts first: the latency below is for one round trip per node.
    token_of(&m, &key("redlock-warm-up")).await;
    for p in &proxies {
        p.set(Fault::Latency(Duration::from_millis(100)));
    }
    let ttl = Duration::from_secs(5);
    let start = std::time::Instant::now();
    let g = m
        .acquire(&key("redlock-validity"), &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    let took = start.elapsed();
    let returned = std::time::Instant::now();
    let valid = g.lease().expires_at().unwrap() - start;
    // Valid from the send: the ttl less the drift allowance (1% + 2 ms), not less the
    // round trips as well.
    assert!(
        valid >= ttl - Duration::from_millis(52) - Duration::from_millis(30),
        "valid for {valid:?} after an acquire of {took:?}"
    );
    assert!(
        took >= Duration::from_millis(200),
        "the latency did not apply: {took:?}"
    );
    // Never past the ttl from the send of the try that took it (on a loaded machine a
    // first try may fail and a later one take the lock: that one counts).
    assert!(g.lease().expires_at().unwrap() <= returned + ttl);
}
