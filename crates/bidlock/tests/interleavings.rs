//! Interleavings an adversarial review of the issue-12 fixes found (R1–R7): each test
//! forces one that broke a guarantee the README states (all failed on 196a893), and each
//! failure message names the broken promise.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use common::{key, redis_manager_with_timeout as manager, until};
use tokio::time::Instant;

// The scripts as sent: their shared parts first (backend/redis/scripts.rs).
const EXTEND_LUA: &str = concat!(
    include_str!("../src/backend/scripts/junk.lua"),
    include_str!("../src/backend/scripts/extend.lua")
);
const RENEW_LUA: &str = concat!(
    include_str!("../src/backend/scripts/junk.lua"),
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

fn memory_config(prefix: &str) -> Config {
    Config::builder()
        .backend(Backend::Memory)
        .prefix(prefix)
        .build()
        .unwrap()
}

fn script_loaded(s: &RedisServer, body: &str) -> bool {
    let sha = redis::Script::new(body).get_hash().to_owned();
    s.cmd::<Vec<i64>>(&["SCRIPT", "EXISTS", &sha]) == vec![1]
}

async fn wait_gone(s: &RedisServer, redis_key: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while s.cmd::<i64>(&["EXISTS", redis_key]) == 1 {
        assert!(Instant::now() < deadline, "{redis_key} never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// R1. The "only the newest extend's reply moves the deadline" rule assumes extends reach
//     Redis in the order they were started. redis-rs's `invoke_async` answers NOSCRIPT
//     with SCRIPT LOAD + a second EVALSHA, so an older extend can land after a newer one
//     (first use of extend.lua on a fresh server, after any restart, failover or SCRIPT
//     FLUSH). Older short extend lands last; newer long extend's reply sets the deadline.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extends_landing_out_of_order_never_leave_the_deadline_after_the_expiry() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_secs(5)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
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
    e1.await.unwrap().unwrap();
    e2.await.unwrap().unwrap();
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

// R2. A renewal is an extend by holder id. With a holder id of the caller's (the
//     migration guide's `holder("instance-1")`), a renewal of an acquisition already
//     released can land on a later acquisition of the same id and shorten it: the later
//     guard keeps its 300 s deadline while Redis drops the lock after the old ttl.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_renewal_never_shortens_a_later_acquisition_of_the_same_holder_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_secs(5)).await;
    let m3 = manager(&s.url(), Duration::from_secs(2)).await;
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

// R3. Redlock: a busy try releases "its own copies" everywhere by holder id. With a
//     holder id of the caller's, a second task of the same instance trying the same
//     posting deletes the first task's lock on every node (single Redis just waits).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_a_busy_try_never_releases_another_acquisition_of_its_holder_id() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(servers.iter().map(RedisServer::url))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg.clone()).await.unwrap();
    let other = BidLockManager::new(cfg).await.unwrap();
    let k = key("redlock-given");
    let mine = AcquireOptions::new().holder("instance-1");
    let a = m.acquire(&k, &mine).await.unwrap();
    // A second task of the same instance tries the same posting: it must just fail.
    let e = m.try_acquire(&k, &mine).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    let holders: Vec<Option<String>> = servers
        .iter()
        .map(|s| s.cmd(&["GET", "bid_lock:upwork:redlock-given"]))
        .collect();
    let told = tokio::time::timeout(Duration::from_secs(2), a.lost())
        .await
        .is_ok();
    let third = other.try_acquire(&k, &AcquireOptions::new()).await.is_ok();
    assert!(
        holders.iter().all(|h| h.as_deref() == Some("instance-1")),
        "a try that found the lock held removed it: node holders {holders:?}; A told lost \
         by the release message: {told}; another manager then acquired: {third}"
    );
}

// R4. close() marks every lease lost and releases it, then wakes the local waiters. A
//     waiter of the closing manager then tries again (no closed check after the first)
//     and gets a guard from the closed manager: in memory it holds the lock for as long
//     as the guard lives; in Redis nobody renews it and `lost()` never resolves.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_waiter_woken_by_close_gets_closed_not_a_lock() {
    let cfg = memory_config("il_close_waiter");
    let m = BidLockManager::new(cfg.clone()).await.unwrap();
    let m2 = BidLockManager::new(cfg).await.unwrap();
    let k = key("close-waiter");
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiter = {
        let (m, k) = (m.clone(), k.clone());
        tokio::spawn(async move {
            m.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(5)))
                .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        m.metrics().lock_busy_tries >= 1
    })
    .await;
    m.close().await;
    assert!(g.is_lost());
    let got = waiter.await.unwrap();
    if let Ok(g2) = &got {
        let other = m2.try_acquire(&k, &AcquireOptions::new()).await;
        panic!(
            "a closed manager handed out a guard (lost={}); another manager's try: {:?}",
            g2.is_lost(),
            other.map(|_| "acquired").map_err(|e| e.to_string())
        );
    }
    assert!(got.unwrap_err().to_string().contains("closed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_waiter_woken_by_close_gets_closed_or_a_reported_loss() {
    let s = RedisServer::start();
    let m = manager(&s.url(), Duration::from_secs(2)).await;
    let k = key("close-waiter");
    let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let ttl = Duration::from_secs(1);
    let waiter = {
        let (m, k) = (m.clone(), k.clone());
        tokio::spawn(async move {
            m.acquire(
                &k,
                &AcquireOptions::new()
                    .ttl(ttl)
                    .timeout(Duration::from_secs(5)),
            )
            .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        m.metrics().lock_busy_tries >= 1
    })
    .await;
    m.close().await;
    assert!(g.is_lost());
    match waiter.await.unwrap() {
        Err(e) => assert!(e.to_string().contains("closed"), "{e}"),
        Ok(g2) => {
            // Handed out by a closed manager: at least its loss must be reported.
            let reported = tokio::time::timeout(ttl * 3, g2.lost()).await.is_ok();
            assert!(
                reported,
                "a guard from a closed manager: never renewed, is_lost()={} but lost() \
                 did not resolve within 3x its ttl",
                g2.is_lost()
            );
        }
    }
}

// R5. "Renewal follows extend": only an extend whose reply is applied reschedules the
//     keeper. A shortening extend that fails (reply late: a backend error) or is
//     cancelled (dropped by a timeout or select!) lowers the deadline but leaves the next
//     renewal at its old time (ttl/3 of the OLD ttl). Redis applies the short ttl, the
//     lock expires while the renewing guard lives, and `lost()` resolves only at the old
//     renewal time (10 s here). The existing test of this case asserts only `is_lost()`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_shortening_extend_keeps_renewal_going() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_millis(300)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let mut broken = Vec::new();
    for how in ["failed", "cancelled"] {
        let k = key(&format!("shorten-{how}"));
        let redis_key = format!("bid_lock:upwork:shorten-{how}");
        let g = m1
            .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(30)))
            .await
            .unwrap();
        g.extend(Duration::from_secs(30)).await.unwrap(); // load the script
        let lost_at = {
            let lost = g.lost();
            tokio::spawn(async move {
                lost.await;
                Instant::now()
            })
        };
        p.set(Fault::Latency(Duration::from_millis(500)));
        let sent = Instant::now();
        if how == "failed" {
            let e = g.extend(Duration::from_secs(1)).await.unwrap_err();
            assert!(e.is_backend(), "{e}");
        } else {
            let r =
                tokio::time::timeout(Duration::from_millis(100), g.extend(Duration::from_secs(1)))
                    .await;
            assert!(r.is_err(), "the extend was not cancelled");
        }
        // The extend reaches Redis: the lock now lives 1 s there.
        until(Duration::from_secs(3), "the short ttl to apply", || {
            let pttl: i64 = s.cmd(&["PTTL", &redis_key]);
            pttl <= 1000
        })
        .await;
        p.set(Fault::None);
        // The guard lives and renews: either renewal keeps the lock, or loss is reported
        // by the deadline. Wait 3x the new ttl.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let other = m2.try_acquire(&k, &AcquireOptions::new()).await;
        let reported = lost_at.is_finished();
        if other.is_ok() && !reported {
            broken.push(format!(
                "{how}: another manager holds the lock {:?} after a 1 s extend, the renewing \
                 guard's lost() has not resolved (is_lost()={})",
                sent.elapsed(),
                g.is_lost()
            ));
        }
        drop(other);
        drop(g);
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

// R6. Caller-reachable panics: a long wait or ttl overflows `Instant + Duration`.

#[tokio::test]
async fn a_very_long_timeout_or_ttl_is_an_error_not_a_panic() {
    let m = BidLockManager::new(memory_config("il_overflow"))
        .await
        .unwrap();
    let cases = [
        (
            "timeout(Duration::MAX)",
            AcquireOptions::new().timeout(Duration::MAX),
        ),
        (
            "ttl(u64::MAX s)",
            AcquireOptions::new().ttl(Duration::from_secs(u64::MAX)),
        ),
    ];
    let mut panicked = Vec::new();
    for (i, (what, opts)) in cases.into_iter().enumerate() {
        let (m, k) = (m.clone(), key(&format!("overflow{i}")));
        let r = tokio::spawn(async move { m.acquire(&k, &opts).await.map(drop) }).await;
        if let Err(e) = r {
            assert!(e.is_panic());
            panicked.push(what);
        }
    }
    // A retention far beyond any use is refused up front, naming the setting...
    let e = Config::builder()
        .backend(Backend::Memory)
        .done_retention(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("done_retention"), "{e}");
    // ...and the longest accepted one records a bid without overflowing.
    let cfg = Config::builder()
        .backend(Backend::Memory)
        .prefix("il_overflow_rec")
        .done_retention(Duration::from_secs(3650 * 24 * 3600))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = {
        let ran = ran.clone();
        tokio::spawn(async move {
            m.bid_once(
                &key("overflow-done"),
                &AcquireOptions::new(),
                |_| async move {
                    ran.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, ()>(())
                },
            )
            .await
            .map(|o| o.is_recorded())
        })
        .await
    };
    if r.is_err() {
        panicked.push("done_retention(Duration::MAX), after the bid ran");
    }
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert!(panicked.is_empty(), "panicked for {panicked:?}");
}

// R7. `release_detached` now polls the release once before looking for a runtime. For a
//     Redis guard that first poll reaches redis-rs's response timeout, which needs the
//     tokio time driver: a guard dropped outside a runtime panics (in `Drop`) instead of
//     logging "the lock expires after its ttl" as before the change.

#[test]
fn a_redis_guard_dropped_outside_a_runtime_does_not_panic() {
    let s = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (m, g) = rt.block_on(async {
        let m = manager(&s.url(), Duration::from_secs(2)).await;
        let g = m
            .acquire(&key("outside-runtime"), &AcquireOptions::new())
            .await
            .unwrap();
        (m, g)
    });
    // No runtime entered on this thread (a guard kept in a struct dropped after
    // `block_on`, or sent to a plain thread).
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(g)));
    let _enter = rt.enter();
    drop(m);
    assert!(
        dropped.is_ok(),
        "dropping a Redis guard outside a tokio runtime panicked"
    );
}
