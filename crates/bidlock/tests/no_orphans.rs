//! Guarantee: **no orphans, and no release of someone else's lock** (docs/GUARANTEES.md;
//! docs/HANDOVER.md rule 5). A cancelled acquire, one whose reply was lost, and a dropped
//! guard release their lock in the background; a holder id the caller gave is never
//! released in the background (it may hold a later acquisition by then); a wrong or
//! guessed holder changes nothing.
//!
//! - `holder_mismatch_release_changes_nothing`, `release_and_extend_refuse_a_guessed_holder`:
//!   a release or extend by a holder id that does not hold the lock.
//! - `with_lock_releases_on_error`, `..._on_panic`, `..._on_cancellation`,
//!   `acquire_cancelled_mid_wait_leaves_nothing`: every way a caller leaves.
//! - `a_cancelled_acquire_whose_try_took_the_lock_leaves_no_orphan`,
//!   `callers_that_leave_mid_batch_leave_no_lock_behind`: the try took the lock in Redis
//!   and its caller left before the reply (alone, and inside a group-commit batch); the
//!   lock must go long before its ttl.
//! - `a_background_release_never_removes_a_later_acquisition_of_the_same_holder_id`,
//!   `a_cancelled_batched_acquire_never_releases_a_later_acquisition_of_its_given_holder_id`,
//!   `a_lapsed_completion_leaves_a_later_acquisition_of_its_holder_id_alone`,
//!   `redlock_a_busy_try_never_releases_another_acquisition_of_its_holder_id`: the same
//!   given holder id acquires again elsewhere while a background release, a lapsed
//!   completion or a losing Redlock try of the first is still on its way; the later
//!   acquisition's lock must stay.
//!
//! The limits (a background release that cannot reach Redis leaves the lock to its ttl;
//! two owners of one given id at once are one holder to Redis) are in `stated_limits.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, Holder, LockKey};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use tokio::time::Instant;

use common::{key, redis_manager_with_timeout, until, Fx};

async fn free_soon(fx: &Fx, k: &LockKey) {
    // Cancellation and panics release in the background for Redis: wait (bounded).
    let g = fx
        .manager
        .acquire(k, &AcquireOptions::new().timeout(Duration::from_secs(2)))
        .await
        .expect("lock was not released");
    g.release().await.unwrap();
}

on_both_backends!(
    holder_mismatch_release_changes_nothing,
    with_lock_releases_on_error,
    with_lock_releases_on_panic,
    with_lock_releases_on_cancellation,
    acquire_cancelled_mid_wait_leaves_nothing,
);

async fn holder_mismatch_release_changes_nothing(fx: Fx) {
    let k = key("mismatch");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().holder("instance-1"))
        .await
        .unwrap();
    let before = fx.manager.status(&k).await.unwrap();
    assert!(!fx
        .manager
        .release(&k, &Holder::new("instance-2"))
        .await
        .unwrap());
    let after = fx.manager.status(&k).await.unwrap();
    assert_eq!(before.holder, after.holder);
    assert_eq!(after.holder.as_deref(), Some("instance-1"));
    assert_eq!(fx.manager.metrics().holder_mismatches, 1);
    // The original API: release by holder id.
    assert!(fx
        .manager
        .release(&k, &Holder::new("instance-1"))
        .await
        .unwrap());
    assert!(fx.manager.status(&k).await.unwrap().holder.is_none());
    drop(g);
}

async fn with_lock_releases_on_error(fx: Fx) {
    let k = key("err");
    let r: Result<Result<(), &str>, _> = fx
        .manager
        .with_lock(&k, &AcquireOptions::new(), |_| async { Err("bid failed") })
        .await;
    assert_eq!(r.unwrap(), Err("bid failed"));
    // Released before with_lock returned.
    let g = fx
        .manager
        .try_acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    drop(g);
}

async fn with_lock_releases_on_panic(fx: Fx) {
    let k = key("panic");
    let m = fx.manager.clone();
    let k2 = k.clone();
    let joined = tokio::spawn(async move {
        m.with_lock(&k2, &AcquireOptions::new(), |_| async {
            panic!("bid code panicked");
        })
        .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    let g = fx.manager.try_acquire(&k, &AcquireOptions::new()).await;
    assert!(g.is_ok(), "released before the panic resumed: {g:?}");
}

async fn with_lock_releases_on_cancellation(fx: Fx) {
    let k = key("cancel");
    let entered = Arc::new(tokio::sync::Notify::new());
    let e2 = entered.clone();
    let m = fx.manager.clone();
    let k2 = k.clone();
    let task = tokio::spawn(async move {
        m.with_lock(&k2, &AcquireOptions::new(), |_| async move {
            e2.notify_one();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        })
        .await
    });
    entered.notified().await;
    assert!(fx.manager.status(&k).await.unwrap().holder.is_some());
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    free_soon(&fx, &k).await;
}

async fn acquire_cancelled_mid_wait_leaves_nothing(fx: Fx) {
    let k = key("cancel-wait");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    // Many waiters give up or are dropped at random points.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let m = fx.manager.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let wait = AcquireOptions::new().timeout(Duration::from_millis(5 + i % 7));
            let _ = tokio::time::timeout(Duration::from_millis(i % 5), m.acquire(&k, &wait)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(g.release().await.unwrap());
    // Nothing is left holding the key, and a new waiter is not confused by old tickets.
    free_soon(&fx, &k).await;
    assert!(fx.manager.status(&k).await.unwrap().holder.is_none());
    if fx.is_redis() {
        // Nor anything in the key's queue: every cancelled or timed-out waiter's place is
        // taken out (in the background, for the cancelled ones), and the wait marker went
        // with the release.
        let s = fx.server();
        let queued = || {
            s.cmd::<i64>(&["ZCARD", "bid_lock_queue:upwork:cancel-wait"])
                + s.cmd::<i64>(&["HLEN", "bid_lock_waiters:upwork:cancel-wait"])
        };
        common::until(Duration::from_secs(5), "the queue to empty", || {
            queued() == 0
        })
        .await;
        let left: Vec<String> = s.cmd(&["KEYS", "*cancel-wait*"]);
        for name in left {
            assert!(
                s.cmd::<i64>(&["PTTL", &name]) > 0,
                "{name} is left without a ttl"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_and_extend_refuse_a_guessed_holder() {
    let server = RedisServer::start();
    let owner = common::redis_manager(&server.url()).await;
    let attacker = common::redis_manager(&server.url()).await;
    let key = LockKey::new("sec", "p").unwrap();
    let g = owner.acquire(&key, &AcquireOptions::new()).await.unwrap();
    let real = g.holder().as_str().to_owned();
    // Guesses sharing the visible parts (host:pid) but not the random part.
    let parts: Vec<&str> = real.split(':').collect();
    let mut guesses = vec![
        "".to_owned(),
        "*".to_owned(),
        format!("{}:{}", parts[0], parts[1]),
        format!("{}:{}:00000000:0", parts[0], parts[1]),
        real.to_uppercase(),
        format!("{real} "),
    ];
    guesses.retain(|h| h != &real);
    for h in &guesses {
        assert!(
            !attacker.release(&key, &h.as_str().into()).await.unwrap(),
            "released with {h:?}"
        );
        // The extend script, run by another client with the guess.
        let n: i64 = server.cmd(&[
            "EVAL",
            concat!(
                include_str!("../src/backend/scripts/junk.lua"),
                include_str!("../src/backend/scripts/tenure.lua"),
                include_str!("../src/backend/scripts/extend.lua")
            ),
            "1",
            "bid_lock:sec:p",
            h,
            "1",
        ]);
        assert_eq!(n, 0, "extended with {h:?}");
    }
    let pttl: i64 = server.cmd(&["PTTL", "bid_lock:sec:p"]);
    assert!(pttl > 200_000, "ttl was shortened: {pttl}");
    assert!(!g.is_lost());
    assert!(g.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_whose_try_took_the_lock_leaves_no_orphan() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let k = key("orphan");
    p.set(Fault::Latency(Duration::from_millis(300)));
    let started = {
        let (m1, k) = (m1.clone(), k.clone());
        tokio::spawn(async move { m1.acquire(&k, &AcquireOptions::new()).await })
    };
    // The try took the lock on the server; its reply is still on the way back. Cancel.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:orphan"]) == 0 {
        assert!(Instant::now() < deadline, "the try never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.abort();
    assert!(started.await.unwrap_err().is_cancelled());
    // The background release removes it after the proxy's delay, long before the ttl.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:orphan"]) == 1 {
        assert!(Instant::now() < deadline, "the orphan stayed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p.set(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_leave_mid_batch_leave_no_lock_behind() {
    let s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let opts = AcquireOptions::new().ttl(Duration::from_secs(60));
    for round in 0..20u32 {
        let mut tasks = Vec::new();
        for t in 0..48u32 {
            let (m, opts) = (m.clone(), opts.clone());
            tasks.push(tokio::spawn(async move {
                let key = LockKey::new("upwork", format!("leave-{round}-{t}")).unwrap();
                // Held briefly then released by dropping the guard; or abandoned.
                if let Ok(g) = m.try_acquire(&key, &opts).await {
                    drop(g);
                }
            }));
        }
        // Abort some callers at once, some a little later: before, during and after
        // their batch is sent.
        tokio::time::sleep(Duration::from_micros(50 * u64::from(round))).await;
        for (i, t) in tasks.iter().enumerate() {
            if i % 3 == 0 {
                t.abort();
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }
    // Every lock is released in the background well within its 60 s ttl.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = s.cmd(&["KEYS", "bid_lock:upwork:leave-*"]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} locks left behind, e.g. {:?}",
            left.len(),
            &left[..left.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A background release only ever removes its own acquisition. (Review of issue 12.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_release_never_removes_a_later_acquisition_of_the_same_holder_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let m2 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let m3 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("same-holder");
    let mine = AcquireOptions::new().holder("instance-1");
    // m1's try is slow to arrive; the acquire is cancelled while it is on its way.
    p.set(Fault::Latency(Duration::from_millis(400)));
    let cancelled = {
        let (m1, k, mine) = (m1.clone(), k.clone(), mine.clone());
        tokio::spawn(async move { m1.acquire(&k, &mine).await })
    };
    until(Duration::from_secs(5), "m1's try to be sent", || {
        m1.metrics().backend_calls >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    // Meanwhile the same holder id takes the lock legitimately elsewhere.
    let g2 = m2.acquire(&k, &mine.clone().no_wait()).await.unwrap();
    // Everything m1 sent before this PING (on the same connection) is processed first.
    m1.ping().await.unwrap();
    p.set(Fault::None);
    let holder: Option<String> = s.cmd(&["GET", "bid_lock:upwork:same-holder"]);
    assert_eq!(
        holder.as_deref(),
        Some("instance-1"),
        "the lock was removed"
    );
    assert!(m3.try_acquire(&k, &AcquireOptions::new()).await.is_err());
    assert!(!g2.is_lost());
    assert!(g2.release().await.unwrap());
}

/// The same, where the cancelled try rides in a group-commit batch: four slow acquires on
/// other keys fill the manager's in-flight slots, so the try waits for the next batch,
/// and its answer arrives long after its caller left. (Issue 20, hole 1: the batch's
/// "caller gone" release did not apply the rule for given holder ids; found by the
/// review of issue 20.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batched_acquire_never_releases_a_later_acquisition_of_its_given_holder_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_secs(10)).await;
    let m2 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let m3 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let k = key("batched-same-holder");
    let lock = "bid_lock:upwork:batched-same-holder";
    p.set(Fault::Latency(Duration::from_millis(400)));
    let fillers: Vec<_> = (0..4)
        .map(|i| {
            let m1 = m1.clone();
            tokio::spawn(async move {
                let g = m1
                    .acquire(
                        &key(&format!("filler{i}")),
                        &AcquireOptions::new().no_wait(),
                    )
                    .await;
                g.map(drop)
            })
        })
        .collect();
    until(
        Duration::from_secs(5),
        "the four fillers to be sent",
        || m1.metrics().backend_calls >= 4,
    )
    .await;
    let mine = AcquireOptions::new()
        .holder("instance-1")
        .ttl(Duration::from_millis(300))
        .no_wait();
    let cancelled = {
        let (m1, k, mine) = (m1.clone(), k.clone(), mine.clone());
        tokio::spawn(async move { m1.acquire(&k, &mine).await })
    };
    // The batch carrying the try reaches Redis after the fillers' answers came back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<Option<String>>(&["GET", lock]).is_none() {
        assert!(Instant::now() < deadline, "the batched try never arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    // Its lock expires (300 ms) while its answer is still on the way back (400 ms); the
    // same holder id then takes the lock legitimately elsewhere, for 30 s.
    while s.cmd::<i64>(&["EXISTS", lock]) == 1 {
        assert!(Instant::now() < deadline, "the lock never expired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let g2 = m2
        .acquire(&k, &mine.clone().ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    for f in fillers {
        f.await.unwrap().unwrap();
    }
    // The batch's answer has arrived; anything it triggered went out after it, on the
    // same slow link, and is processed before this PING.
    tokio::time::sleep(Duration::from_millis(500)).await;
    m1.ping().await.unwrap();
    let holder: Option<String> = s.cmd(&["GET", lock]);
    assert_eq!(
        holder.as_deref(),
        Some("instance-1"),
        "a background release removed a later acquisition of the same given holder id"
    );
    assert!(m3.try_acquire(&k, &AcquireOptions::new()).await.is_err());
    assert!(!g2.is_lost());
    assert!(g2.release().await.unwrap());
    p.set(Fault::None);
}

/// A completion by a lapsed lease whose holder id the caller chose: another acquisition
/// of the same id holds the lock now. The record is written (the bid was placed), but the
/// other acquisition's lock must stay: it says "held", and Redis must agree. Found by the
/// randomized checker (seed 4) after the issue-12 fixes.
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

/// Redlock: a try that loses lets go of its own copies by holder id. With a holder id of
/// the caller's, a second task of the same instance trying the same posting must not
/// delete the first task's lock on the nodes it holds (a single Redis just waits).
/// (Review of the issue-12 fixes, R3.)
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
    // An acquire returns once a majority took the lock: A's write to the third node may
    // still be on its way, and a try that overtakes it there takes that node's copy (its
    // own write, released when the try loses, while A keeps its majority). The attack is
    // on a lock held everywhere: wait until A's third write landed.
    until(Duration::from_secs(5), "A's lock on every node", || {
        servers.iter().all(|s| {
            s.cmd::<Option<String>>(&["GET", "bid_lock:upwork:redlock-given"])
                .as_deref()
                == Some("instance-1")
        })
    })
    .await;
    // A second task of the same instance tries the same posting: it must just fail.
    let e = m.try_acquire(&k, &mine).await.unwrap_err();
    assert!(e.is_not_acquired(), "{e}");
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
