//! Attacks on extends and renewals answered after the lease ran out (docs/GUARANTEES.md):
//! `Lease::finish_extend` answers `Extended::TooLate` for an extend whose success comes
//! after the lease ran out (marked lost, or past its deadline by the clock); the lease is
//! then marked lost and `extend_lease` says `Ok(false)`. Such a late answer must not count
//! a released lease lost, nor keep a lock past its ttl, nor rerun a bid; and with no fault
//! a lease is never lost. Written by a fresh-context adversarial review.
//!
//! - `a_lease_released_while_held_is_not_counted_lost_when_its_renewal_is_answered_late`
//!   (failed, 4 of 4 runs when written; fixed): the keeper's renewal is out when the guard
//!   releases the lock (`release()` says `Ok(true)`); its `Ok` is taken up after the
//!   lease's end and `finish_extend` marked the released lease lost (`locks_lost` +1, a
//!   lost reason, a "lock lost" warning), where every other path that marks a lease lost
//!   checks `is_released()` first ("a failure seen after this is not a loss"). A released
//!   lease is no longer marked lost by a late answer.
//! - `an_extend_answered_late_is_told_lost_and_leaves_no_lock_past_its_ttl` (passes):
//!   told `LockLost`, stays lost, counted once; a generated id's release still releases
//!   the lock the late extend kept, a given id's lock expires after the extend's ttl.
//! - `a_bid_once_whose_renewal_is_answered_late_still_records_and_says_so` (passes):
//!   `PlacedAfterLoss`, the record is written, the lock expires after its ttl, no rerun.
//! - `given_id_reused_after_a_loss_a_late_shortening_extend_of_the_earlier_owner_cuts_the_later_lock_short`
//!   (failed as an attack, 4 of 4 runs; now a stated limit): M1 is kept lost, but M1's
//!   late `extend` still lands on M2's later acquisition of the same id and cuts its 30 s
//!   lock to 300 ms; M2 is told held (until its next renewal, 10 s away) while a third
//!   manager takes the posting. Redis cannot tell two owners of one id apart:
//!   docs/GUARANTEES.md states it beside the late release, and the test shows the history
//!   is that and nothing wider.
//! - `short_ttl_leases_with_racing_extends_are_never_lost_without_a_fault` (passes): no
//!   fault at all, 200 ms leases, user extends racing the keeper's renewals.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, BidOutcome};
use bidlock_testkit::{Direction, Fault, FaultProxy, RedisServer, Role};

use common::key;
use common::runtimes::{current_thread, multi_thread};

const TOO_LATE: &str = "the lease ran out before its extend was answered";

/// Runs `rt` (and so the keeper task that lives in it) until `at`.
fn drive_until(rt: &tokio::runtime::Runtime, at: Instant) {
    rt.block_on(async move { tokio::time::sleep_until(at.into()).await });
}

fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// A Redis, a proxy in front of it, a manager M1 through the proxy (replies awaited 5 s),
/// whose keeper task lives in `keeper_rt`: a current-thread runtime that runs only while
/// the test drives it. The proxy and M1's connections live in `app`.
struct Setup {
    s: RedisServer,
    app: tokio::runtime::Runtime,
    keeper_rt: tokio::runtime::Runtime,
    proxy: FaultProxy,
    m1: BidLockManager,
}

fn setup(warm: &str) -> Setup {
    let s = RedisServer::start();
    let app = multi_thread();
    let proxy = app.block_on(FaultProxy::start(s.port()));
    let m1 = app.block_on(common::redis_manager_with_timeout(
        &proxy.url(),
        Duration::from_secs(5),
    ));
    let keeper_rt = current_thread();
    // The keeper task starts here; a few renewals and an extend load their scripts (a
    // first EVALSHA answered NOSCRIPT would send every request twice through the proxy).
    keeper_rt.block_on(async {
        let g = m1
            .acquire(
                &key(warm),
                &AcquireOptions::new().ttl(Duration::from_millis(90)),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!g.is_lost(), "setup: renewed");
        g.extend(Duration::from_secs(5)).await.unwrap();
        assert!(g.release().await.unwrap());
    });
    Setup {
        s,
        app,
        keeper_rt,
        proxy,
        m1,
    }
}

// ---------------------------------------------------------------------------------------
// TooLate on a released lease
// ---------------------------------------------------------------------------------------

/// Promises: the metric `locks_lost` counts "Leases found lost while their guard lived"
/// (`metrics/mod.rs`); `LockGuard::release`: `Ok(true)` says the lock was still held;
/// `Lease::set_released`: "a failure seen after this is not a loss" (every other path that
/// marks a lease lost checks `is_released()` first: `extend_lease`'s refusal, the
/// keeper's timeout and end).
///
/// Interleaving: M1 holds P (generated id, ttl 300 ms). Its keeper (in a runtime driven
/// by the test) sends the renewal at ~100 ms; the reply is delayed 80 ms and the keeper's
/// runtime is not driven after 150 ms. At ~150 ms the guard releases: `Ok(true)`, Redis
/// no longer has P. At ~400 ms (after the lease's end at 300 ms) the keeper runs again:
/// the renewal's `Ok` is taken up (the timeout polls the renewal first), `finish_extend`
/// finds the lease past its deadline and marks it lost, released or not.
#[test]
fn a_lease_released_while_held_is_not_counted_lost_when_its_renewal_is_answered_late() {
    let Setup {
        s,
        app,
        keeper_rt,
        proxy,
        m1,
    } = setup("r9-warm-released");
    let p = "r9-released";
    let k = key(p);
    let t0 = Instant::now();
    let g = app
        .block_on(m1.acquire(&k, &AcquireOptions::new().ttl(Duration::from_millis(300))))
        .unwrap();
    let lease = g.lease().clone();
    let lost_before = m1.metrics().locks_lost;
    proxy.set_for(
        Role::Commands,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(80)),
    );
    // The keeper renews at ~100 ms; its reply comes at ~180 ms, when nothing drives it.
    drive_until(&keeper_rt, t0 + Duration::from_millis(150));
    let released = app.block_on(g.release());
    let released_at = t0.elapsed();
    assert!(
        matches!(released, Ok(true)),
        "setup: the release of a held lock said {released:?} at {released_at:?}"
    );
    assert_eq!(common::holder_in_redis(&s, p), None, "setup: released");
    sleep_until(t0 + Duration::from_millis(420));
    drive_until(&keeper_rt, t0 + Duration::from_millis(480));
    proxy.set(Fault::None);
    let counted = m1.metrics().locks_lost - lost_before;
    assert!(
        counted == 0 && lease.lost_reason().is_none(),
        "M1's guard released P while it held it (release() = Ok(true) at {released_at:?}); \
         the keeper's renewal, sent at ~100 ms and answered after the lease's end, then \
         marked the released lease lost: locks_lost +{counted}, lost_reason = {:?}",
        lease.lost_reason()
    );
    drop(keeper_rt);
}

// ---------------------------------------------------------------------------------------
// TooLate from a user's extend: told lost, and the lock is not left past its ttl
// ---------------------------------------------------------------------------------------

/// Promises: "once a lease is lost, also by the clock, it stays lost: an extend answered
/// after its end does not revive it"; `extend()` says `LockLost` and the guard is marked
/// lost (counted once); "No orphans": a generated id's release releases the lock; a
/// given id's lost lease leaves it alone, to expire after its ttl.
///
/// M1 (keeper idle: nothing else marks the lease) holds P with ttl 600 ms. At ~300 ms the
/// replies to M1 slow to 500 ms and the section calls `extend(1 s)`: Redis applies it at
/// ~300 ms (the lock now ends at ~1.3 s), the reply comes at ~800 ms, after the lease's
/// end (600 ms). Passes on 487a235.
#[test]
fn an_extend_answered_late_is_told_lost_and_leaves_no_lock_past_its_ttl() {
    let Setup {
        s,
        app,
        keeper_rt,
        proxy,
        m1,
    } = setup("r9-warm-late-extend");
    for given in [false, true] {
        let p = if given {
            "r9-late-extend-given"
        } else {
            "r9-late-extend-generated"
        };
        let k = key(p);
        let mut opts = AcquireOptions::new().ttl(Duration::from_millis(600));
        if given {
            opts = opts.holder("inst-r9-late");
        }
        app.block_on(async {
            let lost_before = m1.metrics().locks_lost;
            let t0 = tokio::time::Instant::now();
            let g = m1.acquire(&k, &opts).await.unwrap();
            tokio::time::sleep_until(t0 + Duration::from_millis(300)).await;
            proxy.set_for(
                Role::Commands,
                Some(Direction::ToClient),
                Fault::Delay(Duration::from_millis(500)),
            );
            let sent = tokio::time::Instant::now();
            let extended = g.extend(Duration::from_secs(1)).await;
            let answered = t0.elapsed();
            proxy.set(Fault::None);
            assert!(
                matches!(extended, Err(bidlock::Error::LockLost { .. })),
                "given={given}: an extend answered at {answered:?}, after the lease's end \
                 (600 ms): {extended:?}"
            );
            assert!(g.is_lost(), "given={given}: told lost, then not lost");
            assert_eq!(g.lease().lost_reason(), Some(TOO_LATE), "given={given}");
            tokio::time::timeout(Duration::from_millis(50), g.lost())
                .await
                .expect("lost() resolves once the lease was marked lost");
            let shown = common::holder_in_redis(&s, p);
            assert!(shown.is_some(), "setup: the extend applied in Redis");
            let released = g.release().await;
            let after_release = common::holder_in_redis(&s, p);
            if given {
                assert!(
                    matches!(released, Ok(false)) && after_release.is_some(),
                    "given id: a lost lease's release touches nothing: {released:?}, \
                     Redis shows {after_release:?}"
                );
                // Expires after the ttl its extend set (1 s from its send).
                let limit = (sent + Duration::from_millis(1100))
                    .saturating_duration_since(tokio::time::Instant::now());
                common::until(limit, "the given id's lock to expire after its ttl", || {
                    common::holder_in_redis(&s, p).is_none()
                })
                .await;
            } else {
                assert!(
                    matches!(released, Ok(true)) && after_release.is_none(),
                    "generated id: the lease told lost by its late extend owns the lock \
                     Redis shows ({shown:?}); its release() said {released:?} and left \
                     {after_release:?}"
                );
            }
            let counted = m1.metrics().locks_lost - lost_before;
            assert_eq!(counted, 1, "given={given}: counted once");
            let other = common::redis_manager(&s.url()).await;
            let g2 = other
                .try_acquire(&k, &AcquireOptions::new())
                .await
                .expect("the posting is free again");
            assert!(g2.release().await.unwrap());
        });
    }
    drop(keeper_rt);
}

// ---------------------------------------------------------------------------------------
// TooLate inside bid_once
// ---------------------------------------------------------------------------------------

/// Promise ("Exactly once, or told"): once the closure returned `Ok`, the record is
/// written whoever holds the lock by then, and the outcome is `Placed`, `PlacedAfterLoss`
/// or `Unrecorded`, never silence; a posting with a record is not run again; with a given
/// id the lost lease's lock is left to expire after its ttl.
///
/// M1 runs `bid_once` on P with the given id `inst-r9-bid`, ttl 900 ms. Its keeper renews
/// at ~300 ms (Redis: the lock now ends at ~1.2 s), the reply is delayed and taken up at
/// ~950 ms, after the lease's end: the lease is marked lost (`TooLate`) while the closure
/// runs. The closure then returns `Ok`. Passes on 487a235.
#[test]
fn a_bid_once_whose_renewal_is_answered_late_still_records_and_says_so() {
    let Setup {
        s,
        app,
        keeper_rt,
        proxy,
        m1,
    } = setup("r9-warm-bid");
    let p = "r9-bid";
    let k = key(p);
    let opts = AcquireOptions::new()
        .ttl(Duration::from_millis(900))
        .holder("inst-r9-bid");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let t0 = Instant::now();
    let bid = {
        let (m1, k, opts) = (m1.clone(), k.clone(), opts.clone());
        app.spawn(async move {
            m1.bid_once(&k, &opts, move |lease| async move {
                started_tx.send(lease.clone()).unwrap();
                let _ = go_rx.await;
                Ok::<_, ()>(lease.fencing_token())
            })
            .await
        })
    };
    let lease: bidlock::Lease = started_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("setup: bid_once took the lock");
    proxy.set_for(
        Role::Commands,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(100)),
    );
    drive_until(&keeper_rt, t0 + Duration::from_millis(340));
    sleep_until(t0 + Duration::from_millis(960));
    drive_until(&keeper_rt, t0 + Duration::from_millis(1000));
    proxy.set(Fault::None);
    assert!(lease.is_lost(), "setup: past the lease's end");
    let reason = lease.lost_reason();
    assert_eq!(reason, Some(TOO_LATE), "setup: lost by the late renewal");
    go_tx.send(()).unwrap();
    let outcome = app
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), bid).await })
        .expect("bid_once hung")
        .unwrap()
        .unwrap();
    let status = app.block_on(m1.status(&k)).unwrap();
    assert!(
        matches!(outcome, BidOutcome::PlacedAfterLoss(_)) && status.done.is_some(),
        "the lease was told lost ({reason:?}) while the bid ran; bid_once said {outcome:?}, \
         the record is {:?}",
        status.done
    );
    // The given id's lock (renewed to ~1.2 s) expires after its ttl.
    app.block_on(common::until(
        Duration::from_millis(800),
        "the lock to expire after its ttl",
        || common::holder_in_redis(&s, p).is_none(),
    ));
    let m2 = app.block_on(common::redis_manager(&s.url()));
    let again =
        app.block_on(m2.bid_once(&k, &AcquireOptions::new(), |_| async { Ok::<_, ()>(()) }));
    assert!(
        again.as_ref().is_err_and(|e| e.is_already_done()),
        "a posting with a record ran again: {again:?}"
    );
    drop(keeper_rt);
}

// ---------------------------------------------------------------------------------------
// A given id reused after a loss: the later acquisition
// ---------------------------------------------------------------------------------------

/// The stated limit (docs/GUARANTEES.md, No orphans, "Limit: one holder id, two
/// owners"): a request of an earlier owner of a given holder id that Redis runs late acts
/// on a later owner's lock. For a shortening extend the later owner is not told.
///
/// Interleaving (that of `given_id_reuse_attacks.rs`, with a shortening extend): M1's
/// keeper is idle; M1 takes P with `inst-r9` (ttl 1 s). At ~600 ms its link to Redis
/// slows to 700 ms one way and the section calls `extend(300 ms)` (deadline lowered to
/// ~900 ms). M1 is told lost; the lock expires; M2 takes P with `inst-r9`, ttl 30 s. At
/// ~1.3 s M1's extend lands on M2's lock and sets it to 300 ms: M1 is told `LockLost`
/// (and stays lost), M2's lock is cut short, expires at ~1.6 s, and M3 takes P while M2
/// is still told held. The test shows the history is that limit and nothing wider: the
/// lock is shortened to the extend's ttl (not deleted, not lengthened), M1 stays lost,
/// and M3's token is above M2's. (Found by the adversarial review, which asked for it to
/// hold; stated instead: Redis cannot tell two owners of one id apart, and a
/// per-acquisition id, the default, never meets it.)
#[test]
fn given_id_reused_after_a_loss_a_late_shortening_extend_of_the_earlier_owner_cuts_the_later_lock_short(
) {
    let Setup {
        s,
        app,
        keeper_rt,
        proxy,
        m1,
    } = setup("r9-warm-cut");
    let m2 = app.block_on(common::redis_manager(&s.url()));
    let m3 = app.block_on(common::redis_manager(&s.url()));
    app.block_on(async {
        let p = "r9-cut-short";
        let k = key(p);
        let opts = AcquireOptions::new()
            .ttl(Duration::from_secs(1))
            .holder("inst-r9");
        let t0 = tokio::time::Instant::now();
        let g1 = Arc::new(m1.acquire(&k, &opts).await.unwrap());
        tokio::time::sleep_until(t0 + Duration::from_millis(600)).await;
        proxy.set_for(
            Role::Commands,
            Some(Direction::ToServer),
            Fault::Delay(Duration::from_millis(700)),
        );
        let g1c = g1.clone();
        let extend = tokio::spawn(async move { g1c.extend(Duration::from_millis(300)).await });
        common::until(Duration::from_secs(1), "the extend to be held back", || {
            proxy.traffic().held(Role::Commands, Direction::ToServer) > 0
        })
        .await;
        tokio::time::timeout(Duration::from_millis(1500), g1.lost())
            .await
            .expect("setup: M1 told lost at its end");
        common::until(Duration::from_secs(1), "M1's lock to expire", || {
            common::holder_in_redis(&s, p).is_none()
        })
        .await;
        let g2 = m2
            .try_acquire(&k, &opts.clone().ttl(Duration::from_secs(30)))
            .await
            .expect("setup: M2 takes P with the same id once M1's lock expired");
        let m2_at = t0.elapsed();
        let answered = tokio::time::timeout(Duration::from_secs(3), extend)
            .await
            .expect("setup: the extend hung")
            .unwrap();
        let answered_at = t0.elapsed();
        let pttl: i64 = s.cmd(&["PTTL", &common::lock_of(p)]);
        proxy.set(Fault::None);
        assert!(g1.is_lost(), "487a235: M1 stays lost");
        // Wait (bounded) for M2's lock to vanish, then let M3 try.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
        while common::holder_in_redis(&s, p).is_some() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let g3 = m3.try_acquire(&k, &AcquireOptions::new()).await;
        let m3_at = t0.elapsed();
        // Give a message, if any, a moment to reach M2.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m2_held = !g2.is_lost();
        let m2_left = g2
            .lease()
            .expires_at()
            .map(|u| u.saturating_duration_since(Instant::now()));
        let history = format!(
            "M2 took P with `inst-r9` (ttl 30 s) at {m2_at:?}; M1's extend(300 ms) answered \
             {answered:?} at {answered_at:?} and left M2's lock {pttl} ms; M3 took P at \
             {m3_at:?}; M2 still held: {m2_held} (deadline {m2_left:?} from now)"
        );
        assert!(answered.is_err(), "M1 must be told lost: {history}");
        assert!(
            (0..=300).contains(&pttl),
            "shortened to the extend's ttl: {history}"
        );
        if let Ok(g3) = &g3 {
            assert!(g3.fencing_token() > g2.fencing_token(), "{history}");
        }
        // The limit: M2 is not told (no message names a shortening extend).
        eprintln!("{history}");
        drop(g2);
        drop(g3);
    });
    drop(keeper_rt);
}

// ---------------------------------------------------------------------------------------
// No fault: renewals racing extends on short leases
// ---------------------------------------------------------------------------------------

/// Promise ("Renewal follows `extend`"): "While a guard lives its lock is renewed every
/// third of its ttl"; a spurious loss is safe but must not happen without a fault.
///
/// Eight leases of 200 ms on a plain Redis (no proxy), held 1.5 s; four of them also call
/// `extend(200 ms)` every ~25 ms, so user extends race the keeper's renewals (Older
/// answers, deadlines lowered and raised). None may be told lost, no extend may fail.
/// Passes on 487a235 (on this machine, beside a CI run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ttl_leases_with_racing_extends_are_never_lost_without_a_fault() {
    let s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let ttl = Duration::from_millis(200);
    let mut guards = Vec::new();
    for i in 0..8 {
        let g = m
            .acquire(
                &key(&format!("r9-short-{i}")),
                &AcquireOptions::new().ttl(ttl),
            )
            .await
            .unwrap();
        guards.push(Arc::new(g));
    }
    let stop = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut extenders = Vec::new();
    for (i, g) in guards.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let g = g.clone();
        extenders.push(tokio::spawn(async move {
            let mut n = 0u32;
            while tokio::time::Instant::now() < stop {
                if let Err(e) = g.extend(ttl).await {
                    return Err(format!("lease {i}: extend {n} failed: {e}"));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20 + (i as u64) * 2)).await;
            }
            Ok(n)
        }));
    }
    while tokio::time::Instant::now() < stop {
        for (i, g) in guards.iter().enumerate() {
            assert!(
                !g.is_lost(),
                "lease {i} of 200 ms told lost without a fault: {:?}",
                g.lease().lost_reason()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for e in extenders {
        let n = e.await.unwrap().unwrap();
        assert!(n > 10, "setup: only {n} extends");
    }
    assert_eq!(m.metrics().locks_lost, 0);
    for g in guards {
        let g = Arc::try_unwrap(g).unwrap();
        assert!(g.release().await.unwrap());
    }
}
