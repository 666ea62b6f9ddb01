//! Attacks on a caller-given holder id reused by another manager after a loss
//! (docs/GUARANTEES.md): the earlier, lost lease must neither become held again nor remove
//! the later acquisition, through a late extend's answer or through `close()`. Written by
//! a fresh-context adversarial review.
//!
//! - `an_extend_answered_after_the_lease_ran_out_does_not_make_it_held_again`: a lease of
//!   a given id whose keeper is idle (the stated limit: it runs out at its ttl and `lost()`
//!   says so) is told lost; its lock expires and another manager takes the same id; the
//!   lease's extend, sent before its end and delivered late, lands on that later lock and
//!   its answer made the lost lease "held" again (`is_lost()` false), so its `release()`
//!   deleted the later acquisition (failed 3 of 3 when written). Now an extend's answer
//!   never revives a lease lost by the clock: the lease is marked lost and the extend
//!   says so.
//! - `close_leaves_a_later_acquisition_of_a_given_id_alone_and_releases_a_held_one`
//!   (passes).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bidlock::AcquireOptions;
use bidlock_testkit::{Direction, Fault, FaultProxy, RedisServer, Role};

use common::key;
use common::runtimes::{current_thread, multi_thread, poll_once, start_keeper_in};

// ---------------------------------------------------------------------------------------
// lease.rs: a lease told lost is told held again
// ---------------------------------------------------------------------------------------

/// Promises (docs/GUARANTEES.md, "A holder is never told held after its lock may be
/// gone"): "only the newest extend's reply moves it forward ... a lock whose acquire reply
/// arrives after its ttl is not returned"; ("No orphans, and no release of someone else's
/// lock"): "once its lease is lost, neither `release()`, `extend()` nor a completion
/// touches the lock"; the stated limit of the keeper's runtime: "the lease runs out at its
/// ttl, and `lost()` ... resolves then".
///
/// Interleaving: M1's keeper lives in an idle current-thread runtime (its Redis link in a
/// live one). In the application's runtime M1 takes P with the given id `inst-r8`, ttl
/// 1 s. At ~0.6 s M1's link to Redis slows to 700 ms one way and the section calls
/// `extend(5 s)` (sent at ~0.6 s, before the lease's end). At ~1 s the lease runs out:
/// `lost()` resolves, `is_lost()` is true. The lock expires in Redis; M2 takes P with the
/// same id `inst-r8` (one owner at a time: M1 was told lost). At ~1.3 s M1's extend lands
/// on M2's lock (same id) and answers OK; `finish_extend` moves the lost lease's deadline
/// to ~5.6 s: M1's guard says held again beside M2's, and M1's `release()` (its id "owned"
/// again) deletes M2's lock.
#[test]
fn an_extend_answered_after_the_lease_ran_out_does_not_make_it_held_again() {
    let s = RedisServer::start();
    let app = multi_thread();
    let proxy = app.block_on(FaultProxy::start(s.port()));
    let m1 = app.block_on(common::redis_manager_with_timeout(
        &proxy.url(),
        Duration::from_secs(5),
    ));
    let m2 = app.block_on(common::redis_manager(&s.url()));
    // M1's keeper task starts in a runtime that is then never driven again.
    let sync_rt = current_thread();
    start_keeper_in(&sync_rt, &m1, "r8-warm");
    app.block_on(async {
        let p = "r8-resurrect";
        let k = key(p);
        let opts = AcquireOptions::new()
            .ttl(Duration::from_secs(1))
            .holder("inst-r8");
        let t0 = tokio::time::Instant::now();
        let g1 = Arc::new(m1.acquire(&k, &opts).await.unwrap());
        let mut lost = Box::pin(g1.lost());
        assert!(poll_once(&mut lost).await.is_pending());
        tokio::time::sleep_until(t0 + Duration::from_millis(600)).await;
        proxy.set_for(
            Role::Commands,
            Some(Direction::ToServer),
            Fault::Delay(Duration::from_millis(700)),
        );
        let g1c = g1.clone();
        let extend = tokio::spawn(async move { g1c.extend(Duration::from_secs(5)).await });
        common::until(Duration::from_secs(1), "the extend to be held back", || {
            proxy.traffic().held(Role::Commands, Direction::ToServer) > 0
        })
        .await;
        // The lease runs out (nothing renews it): told lost.
        tokio::time::timeout(Duration::from_millis(1500), &mut lost)
            .await
            .expect("setup: lost() did not resolve at the lease's end");
        assert!(g1.is_lost(), "setup");
        let told_lost_at = t0.elapsed();
        // The lock expires in Redis; M2 takes the same id, one owner at a time.
        common::until(
            Duration::from_secs(1),
            "the lock to expire in Redis",
            || common::holder_in_redis(&s, p).is_none(),
        )
        .await;
        let g2 = m2
            .try_acquire(&k, &opts.clone().ttl(Duration::from_secs(30)))
            .await
            .expect("setup: M2 takes P once M1's lock expired");
        let m2_at = t0.elapsed();
        // M1's extend, sent before its lease's end, lands late.
        let answered = tokio::time::timeout(Duration::from_secs(3), extend)
            .await
            .expect("setup: the extend hung")
            .unwrap();
        let answered_at = t0.elapsed();
        // M2 asked for 30 s; an extend to 5 s that landed on its lock cut it short.
        let m2_pttl: i64 = s.cmd(&["PTTL", &common::lock_of(p)]);
        proxy.set(Fault::None);
        let again_held = !g1.is_lost();
        let until = g1.lease().expires_at();
        let g1 = Arc::try_unwrap(g1).expect("one guard");
        let released = g1.release().await;
        let shown = common::holder_in_redis(&s, p);
        assert!(
            !again_held && shown.as_deref() == Some("inst-r8"),
            "M1's lease of `inst-r8` was told lost at {told_lost_at:?} (lost() resolved); \
             its lock expired and M2 took `inst-r8` at {m2_at:?}; M1's extend, sent at \
             ~600 ms, answered {answered:?} at {answered_at:?} (M2's 30 s lock then had \
             {m2_pttl} ms left); M1's guard then said \
             is_lost()={} (deadline {:?} from now), its release() answered {released:?}, \
             and Redis shows {shown:?} while M2's guard says is_lost()={}",
            !again_held,
            until.map(|u| u.saturating_duration_since(std::time::Instant::now())),
            g2.is_lost()
        );
        drop(g2);
    });
    drop(sync_rt);
}

// ---------------------------------------------------------------------------------------
// renewal.rs: release_all and a given id
// ---------------------------------------------------------------------------------------

/// Promises: "A holder id *you* give is never released in the background ... once its
/// lease is lost, neither `release()`, `extend()` nor a completion touches the lock"; "Close
/// tells first": close marks every lease lost, then releases its lock
/// (`close.rs::close_releases_held_locks`).
///
/// M1 holds P1 with `given-a` (ttl 30 s, validly held) and P2 with `given-b` (ttl 300 ms,
/// no renewal). P2's lease runs out by the clock; its lock expires; M2 takes P2 with
/// `given-b`. M1 closes: P1's lock (still validly M1's) must be released, P2's (M2's now)
/// left alone. Passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_a_later_acquisition_of_a_given_id_alone_and_releases_a_held_one() {
    let s = RedisServer::start();
    let m1 = common::redis_manager(&s.url()).await;
    let m2 = common::redis_manager(&s.url()).await;
    let (p1, p2) = ("r8-close-held", "r8-close-later");
    let g1 = m1
        .acquire(
            &key(p1),
            &AcquireOptions::new()
                .ttl(Duration::from_secs(30))
                .holder("given-a"),
        )
        .await
        .unwrap();
    let b = AcquireOptions::new()
        .ttl(Duration::from_millis(300))
        .renew(false)
        .holder("given-b");
    let g2 = m1.acquire(&key(p2), &b).await.unwrap();
    common::until(Duration::from_secs(2), "P2's lock to expire", || {
        common::holder_in_redis(&s, p2).is_none()
    })
    .await;
    assert!(g2.is_lost());
    let later = m2
        .try_acquire(&key(p2), &b.clone().ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    m1.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(g1.is_lost(), "close marks leases lost");
    assert_eq!(
        common::holder_in_redis(&s, p1),
        None,
        "close left a validly held lock of a given id"
    );
    assert_eq!(
        common::holder_in_redis(&s, p2).as_deref(),
        Some("given-b"),
        "close deleted M2's later acquisition of `given-b`"
    );
    assert!(!later.is_lost());
    drop((g1, g2));
    assert!(later.release().await.unwrap());
}
