//! The promises a review found broken (issue 12), each attacked the way it broke: the
//! fencing counter rolled back, an extend whose reply is lost, a holder id used twice,
//! replies that arrive after the ttl, releases that other managers must notice. Every
//! test forces its interleaving with real servers, proxies and timeouts.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bidlock::{AcquireOptions, Backend, BidLockManager, BidOutcome, Config, LockKey};
use bidlock_testkit::{Fault, FaultProxy, RedisServer, ServerOptions};
use common::{key, redis_manager_with_timeout as manager, until, Fx};
use tokio::time::Instant;

on_both_backends!(
    bid_once_records_a_bid_whose_lease_lapsed,
    conflicts_count_once_per_acquire_and_busy_tries_per_try,
);

fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn token_of(m: &BidLockManager, k: &LockKey) -> u64 {
    let g = m.acquire(k, &AcquireOptions::new()).await.unwrap();
    let t = g.fencing_token().get();
    assert!(g.release().await.unwrap());
    t
}

// 1. Tokens never go back when the counter is rolled back (not just deleted).

#[tokio::test]
async fn tokens_keep_increasing_after_the_counter_is_rolled_back() {
    let s = RedisServer::start();
    let m = manager(&s.url(), Duration::from_secs(2)).await;
    let k = key("rollback");
    let before = token_of(&m, &k).await;
    // What an AOF everysec crash, an RDB restore or a lagging replica leaves behind.
    let _: () = s.cmd(&["SET", "bid_lock_fence", "5"]);
    let after = token_of(&m, &k).await;
    assert!(after > before, "token went back: {before} then {after}");
    let _: () = s.cmd(&["SET", "bid_lock_fence", &(before - 1000).to_string()]);
    assert!(token_of(&m, &k).await > after);
}

#[tokio::test]
async fn redlock_tokens_keep_increasing_after_every_counter_is_rolled_back() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_urls(servers.iter().map(RedisServer::url))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    let k = key("redlock-rollback");
    let before = token_of(&m, &k).await;
    for s in &servers {
        let _: () = s.cmd(&["SET", "bid_lock_fence", "5"]);
    }
    let after = token_of(&m, &k).await;
    assert!(after > before, "token went back: {before} then {after}");
}

#[tokio::test]
async fn memory_tokens_are_above_the_wall_clock() {
    let m = BidLockManager::new(
        common::base_config(common::Which::Memory, None)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let now = wall_clock_us();
    let t = token_of(&m, &key("clock")).await;
    assert!(t >= now, "token {t} below the clock {now}");
}

// 2. Any extend reschedules renewal, and a lost extend reply never leaves the local
//    deadline after Redis' expiry.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_shorter_keeps_renewing_on_the_new_schedule() {
    let s = RedisServer::start();
    let m1 = manager(&s.url(), Duration::from_secs(2)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let k = key("shorter");
    let opts = AcquireOptions::new().ttl(Duration::from_secs(30));
    let g = m1.acquire(&k, &opts).await.unwrap();
    g.extend(Duration::from_secs(1)).await.unwrap();
    let pttl: i64 = s.cmd(&["PTTL", "bid_lock:upwork:shorter"]);
    assert!(pttl <= 1000, "{pttl}");
    // More than twice the new ttl: only renewals on the new schedule keep it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        m2.try_acquire(&k, &AcquireOptions::new()).await.is_err(),
        "another manager took a lock whose guard lives"
    );
    assert!(!g.is_lost());
    let pttl: i64 = s.cmd(&["PTTL", "bid_lock:upwork:shorter"]);
    assert!(
        pttl > 0 && pttl <= 1000,
        "renewals keep the new ttl: {pttl}"
    );
    assert!(g.release().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shortening_extend_whose_reply_is_lost_lowers_the_deadline() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_millis(300)).await;
    let m3 = manager(&s.url(), Duration::from_secs(2)).await;
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

// 3. Prefixes cannot reach each other's keys (see also the property test and the
//    CLI test); here: the record of the default prefix survives every other prefix.

#[tokio::test]
async fn no_other_prefix_can_see_or_delete_the_default_prefixs_records() {
    let s = RedisServer::start();
    let m = manager(&s.url(), Duration::from_secs(2)).await;
    let k = key("records");
    let out = m
        .bid_once(&k, &AcquireOptions::new(), |_| async { Ok::<_, ()>(()) })
        .await
        .unwrap();
    assert!(out.is_recorded());
    for prefix in ["bid_done", "bid", "bid_lock_wait"] {
        let err = Config::builder()
            .backend(Backend::Redis)
            .redis_url(s.url())
            .prefix(prefix)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains(prefix), "{err}");
    }
    let other = Config::builder()
        .backend(Backend::Redis)
        .redis_url(s.url())
        .prefix("bid_lock2")
        .build()
        .unwrap();
    let other = BidLockManager::new(other).await.unwrap();
    other.cleanup_all().await.unwrap();
    assert!(other.locks(None).await.unwrap().is_empty());
    assert!(m.is_done(&k).await.unwrap());
}

// 4. `bid_once` records the bid once the closure succeeded, whoever holds the lock.

async fn bid_once_records_a_bid_whose_lease_lapsed(fx: Fx) {
    let k = key("lapsed");
    let other = fx.instance().await;
    let opts = AcquireOptions::new()
        .ttl(Duration::from_millis(200))
        .renew(false);
    let out = fx
        .manager
        .bid_once(&k, &opts, |lease| {
            let (other, k) = (other.clone(), k.clone());
            async move {
                // The lease lapses while the bid runs; another instance takes the lock.
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    match other.try_acquire(&k, &AcquireOptions::new()).await {
                        Ok(g) => {
                            assert!(lease.is_lost());
                            return Ok::<_, ()>(g);
                        }
                        Err(e) if e.is_timeout() && Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        })
        .await
        .unwrap();
    // Recorded, and the caller is told the lock had been lost meanwhile.
    let BidOutcome::PlacedAfterLoss(g2) = out else {
        panic!("the placed bid was not recorded as placed after a loss: {out:?}");
    };
    assert!(fx.manager.is_done(&k).await.unwrap());
    // The other instance's lock was left alone, and nobody bids again.
    assert!(g2.release().await.unwrap());
    let again = other
        .bid_once(&k, &AcquireOptions::new(), |_| async { Ok::<_, ()>(()) })
        .await;
    assert!(again.unwrap_err().is_already_done());
}

// 5. A background release only ever removes its own acquisition.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_release_never_removes_a_later_acquisition_of_the_same_holder_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_secs(5)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let m3 = manager(&s.url(), Duration::from_secs(2)).await;
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
/// "caller gone" release did not apply the rule for given holder ids.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_batched_acquire_never_releases_a_later_acquisition_of_its_given_holder_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_secs(10)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let m3 = manager(&s.url(), Duration::from_secs(2)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_whose_try_took_the_lock_leaves_no_orphan() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_secs(5)).await;
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

// 6. `close()` marks leases lost before another instance can take their locks.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_marks_leases_lost_before_their_locks_go() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = manager(&p.url(), Duration::from_secs(5)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let k = key("close");
    let g = m1.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let lease = g.lease().clone();
    let waiter = {
        let (m2, k, lease) = (m2.clone(), k.clone(), lease.clone());
        tokio::spawn(async move {
            let g2 = m2
                .acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(10)))
                .await
                .unwrap();
            // The instant another instance holds it, the first must not say "held".
            let first_still_held = !lease.is_lost();
            g2.release().await.unwrap();
            first_still_held
        })
    };
    until(
        Duration::from_secs(5),
        "the waiter to mark the lock",
        || m2.metrics().lock_busy_tries >= 1,
    )
    .await;
    // The release reaches Redis at once; its reply takes 300 ms to come back.
    p.set(Fault::Latency(Duration::from_millis(300)));
    m1.close().await;
    assert!(
        !waiter.await.unwrap(),
        "a closed manager's guard said held while another held the lock"
    );
    assert!(g.is_lost());
    drop(g);
}

// 7. An acquire whose reply arrives after its ttl is not returned as held; Redlock
//    counts the time an acquire took once, not twice.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_acquired_after_its_ttl_ran_out_is_not_returned() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m = manager(&p.url(), Duration::from_secs(5)).await;
    p.set(Fault::Latency(Duration::from_millis(300)));
    let k = key("late");
    let opts = AcquireOptions::new()
        .ttl(Duration::from_millis(100))
        .no_wait();
    let r = m.acquire(&k, &opts).await;
    match r {
        Err(e) => assert!(e.is_timeout(), "{e}"),
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

// 8. A release, cleanup or force-release message naming a held key is checked at once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_is_noticed_at_once_not_at_the_next_renewal() {
    let s = RedisServer::start();
    let m1 = manager(&s.url(), Duration::from_secs(2)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let opts = AcquireOptions::new().ttl(Duration::from_secs(300));
    for (i, how) in ["force_release", "cleanup_all"].iter().enumerate() {
        let k = key(&format!("forced{i}"));
        let g = m1.acquire(&k, &opts).await.unwrap();
        let lost = g.lost();
        let t = Instant::now();
        match *how {
            "force_release" => assert!(m2.force_release(&k).await.unwrap()),
            _ => assert_eq!(m2.cleanup_all().await.unwrap(), 1),
        }
        tokio::time::timeout(Duration::from_secs(2), lost)
            .await
            .unwrap_or_else(|_| panic!("{how}: loss not noticed (renewal is 100 s away)"));
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(!g.release().await.unwrap());
    }
}

/// An operator's release by holder id (`bidlock release M P --holder X`, the original
/// API's `release_lock`) removes a lock that a lease of another manager holds: that
/// holder learns at once, not at its next renewal. (Issue 20, hole 4: the release script
/// published only when someone waited.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_by_holder_id_is_noticed_at_once_not_at_the_next_renewal() {
    let s = RedisServer::start();
    let m1 = manager(&s.url(), Duration::from_secs(2)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    for (i, renew) in [true, false].into_iter().enumerate() {
        let k = key(&format!("released-by-id{i}"));
        let opts = AcquireOptions::new()
            .holder("instance-1")
            .ttl(Duration::from_secs(300))
            .renew(renew);
        let g = m1.acquire(&k, &opts).await.unwrap();
        let lost = g.lost();
        assert!(m2
            .release(&k, &bidlock::Holder::new("instance-1"))
            .await
            .unwrap());
        tokio::time::timeout(Duration::from_secs(2), lost)
            .await
            .unwrap_or_else(|_| panic!("renew={renew}: the release by holder id was not noticed"));
        assert!(!g.release().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_release_of_a_lease_without_renewal_is_noticed_too() {
    let s = RedisServer::start();
    let m1 = manager(&s.url(), Duration::from_secs(2)).await;
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let k = key("forced-no-renew");
    let opts = AcquireOptions::new()
        .ttl(Duration::from_secs(300))
        .renew(false);
    let g = m1.acquire(&k, &opts).await.unwrap();
    assert!(m2.force_release(&k).await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), g.lost())
        .await
        .expect("loss of a non-renewing lease not noticed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_is_noticed_within_a_renewal_period() {
    let mut s = RedisServer::start();
    let m = manager(&s.url(), Duration::from_millis(500)).await;
    let ttl = Duration::from_secs(3);
    let g = m
        .acquire(&key("restart"), &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    let s = tokio::task::spawn_blocking(move || {
        s.restart();
        s
    })
    .await
    .unwrap();
    let restarted = Instant::now();
    let exists: i64 = s.cmd(&["EXISTS", "bid_lock:upwork:restart"]);
    assert_eq!(exists, 0, "the restart kept the lock: nothing was lost");
    // The README promises the holder learns at its next renewal (ttl/3) at the latest.
    tokio::time::timeout(ttl / 3 + Duration::from_millis(500), g.lost())
        .await
        .expect("the holder was not told within a renewal period");
    eprintln!("told {:?} after the restart", restarted.elapsed());
}

// 9. An eviction policy that can drop locks is reported; an unreadable one is "unknown".

#[tokio::test]
async fn an_evicting_maxmemory_policy_is_reported() {
    // The policy is read from INFO (what a least-privilege user may run), else from CONFIG
    // GET; unknown when neither answers.
    let cases: [(&[&str], Option<&str>); 4] = [
        (&["--maxmemory-policy", "allkeys-lru"], Some("allkeys-lru")),
        (&["--maxmemory-policy", "noeviction"], Some("noeviction")),
        (&["--rename-command", "CONFIG", ""], Some("noeviction")),
        (
            &[
                "--rename-command",
                "CONFIG",
                "",
                "--rename-command",
                "INFO",
                "",
            ],
            None,
        ),
    ];
    for (args, policy) in cases {
        let s = RedisServer::start_with(ServerOptions {
            extra: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        });
        let logs = common::capture_logs();
        let m = manager(&s.url(), Duration::from_secs(2)).await;
        let h = m.health().await.unwrap();
        assert_eq!(h.maxmemory_policy.as_deref(), policy, "{args:?}");
        assert_eq!(h.can_evict(), policy.map(|p| p != "noeviction"));
        let warned = logs.contains("maxmemory-policy allkeys-lru");
        assert_eq!(
            warned,
            policy == Some("allkeys-lru"),
            "{args:?}: {}",
            logs.text()
        );
        assert!(m.health_check().await);
    }
}

// The parity with the original system (issue 14, in the core).

#[tokio::test]
async fn memory_managers_of_one_prefix_exclude_each_other() {
    let cfg = common::base_config(common::Which::Memory, None)
        .build()
        .unwrap();
    let a = BidLockManager::new(cfg.clone()).await.unwrap();
    let b = BidLockManager::new(cfg).await.unwrap();
    let k = key("shared");
    let g = a.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(b
        .try_acquire(&k, &AcquireOptions::new())
        .await
        .unwrap_err()
        .is_timeout());
    // A waiter on b is woken by a's release, and b's close leaves a's locks alone.
    let waiter = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move { b.acquire(&k, &AcquireOptions::new()).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        b.metrics().lock_conflicts >= 2
    })
    .await;
    assert!(g.release().await.unwrap());
    let g2 = waiter.await.unwrap().unwrap();
    let k2 = key("shared-2");
    let ga = a.acquire(&k2, &AcquireOptions::new()).await.unwrap();
    b.close().await;
    assert!(g2.is_lost());
    assert!(!ga.is_lost());
    assert!(ga.release().await.unwrap());
}

#[tokio::test]
async fn health_check_is_false_after_a_fallback_to_memory() {
    let dead = bidlock_testkit::dead_port();
    let cfg = Config::builder()
        .backend(Backend::Auto)
        .redis_url(format!("redis://127.0.0.1:{dead}/0"))
        .detect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    assert_eq!(m.backend(), Backend::Memory);
    assert!(m.is_fallback());
    assert!(!m.health_check().await);
    let explicit = BidLockManager::new(Config::builder().backend(Backend::Memory).build().unwrap())
        .await
        .unwrap();
    assert!(explicit.health_check().await);
}

async fn conflicts_count_once_per_acquire_and_busy_tries_per_try(fx: Fx) {
    let k = key("conflicts");
    let holder = fx.instance().await;
    let g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let opts = AcquireOptions::new()
        .timeout(Duration::from_millis(400))
        .ttl(Duration::from_secs(30));
    let e = fx.manager.acquire(&k, &opts).await.unwrap_err();
    assert!(e.is_timeout());
    let m = fx.manager.metrics();
    assert_eq!(m.lock_conflicts, 1, "{m:?}");
    if fx.is_redis() {
        // Queued in Redis for a handoff: it refreshes its place instead of trying again.
        assert_eq!(m.lock_busy_tries, 1, "{m:?}");
    } else {
        assert!(m.lock_busy_tries >= 2, "backoff tries again: {m:?}");
    }
    assert_eq!(m.lock_timeouts, 1);
    drop(g);
}
