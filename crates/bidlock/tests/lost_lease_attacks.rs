//! Attacks on what a lost lease may still do (docs/GUARANTEES.md): `lost()` resolves by the
//! lease's deadline, also one a shortening extend brought forward; a lease that no longer
//! owns its caller-given id is not released by `close()` nor answered held over the newer
//! holder; and the ACL check asks TYPE on the fencing counter. Written by a fresh-context
//! adversarial review; four failed when written (every run of four); each is fixed:
//!
//! - `close_never_releases_a_later_acquisition_of_a_lost_lease_of_a_given_id`: an extend
//!   that finds the lock gone marks the lease lost but leaves it in the keeper; close
//!   (and the keeper's own shutdown) released every drained lease by holder id, so a
//!   later acquisition of the same given id by another manager was deleted. Now a lease
//!   that no longer owns its id is marked lost and not released.
//! - `lost_resolves_by_a_deadline_that_a_shortening_extend_brought_forward`: a `lost()`
//!   polled before a shortening extend slept until the old deadline (deadline 1.3 s, told
//!   at 3.0 s). A deadline brought forward now wakes every `lost()`.
//! - `with_an_idle_keeper_lost_resolves_at_a_shortened_deadline`: the same with the
//!   keeper in an idle runtime (the stated limit promises `lost()` at the end).
//! - `acl_a_user_without_type_on_the_counter_is_named_at_connect_or_told_the_junk`:
//!   hlc.lua's `TYPE` on a counter that holds junk was not asked at connect; with junk in
//!   the counter every acquire was NOPERM, not the named junk. Now asked.
//! - `a_superseded_answer_of_a_given_id_waits_and_is_served_after_the_newer_holder`
//!   (passed).

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::{Direction, Fault, FaultProxy, RedisServer, Role};

use common::key;
use common::runtimes::{current_thread, multi_thread, poll_once, start_keeper_in};

// ---------------------------------------------------------------------------------------
// dcb96e1: close() drains the keeper and releases what is left
// ---------------------------------------------------------------------------------------

/// Promise (docs/GUARANTEES.md, "No orphans, and no release of someone else's lock"): "A
/// holder id *you* give is never released in the background (it may hold a later
/// acquisition by then) ... once its lease is lost, neither `release()`, `extend()` nor a
/// completion touches the lock"; the stated limit of two owners of one id covers only
/// two acquisitions *at the same time*.
///
/// Interleaving: manager M1 holds posting P with the holder id `instance-x` (ttl 30 s).
/// A foreign client deletes the lock (`redis-cli DEL`: no message). M1's guard extends:
/// `LockLost`, the lease is lost (and `release()` would now answer `Ok(false)` without
/// touching Redis). Only then, M2 acquires P with the same id `instance-x`: one owner at a
/// time. M1 closes: its keeper still keeps the lost lease (an extend that finds the lock
/// gone marks the lease lost but leaves it in the keeper until its next renewal, ttl/3
/// away), the drain hands it to `release_all`, which releases by holder id whatever the
/// lease's state: M2's lock is deleted while M2 is told held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_never_releases_a_later_acquisition_of_a_lost_lease_of_a_given_id() {
    let s = RedisServer::start();
    let m1 = common::redis_manager(&s.url()).await;
    let m2 = common::redis_manager(&s.url()).await;
    let p = "close-given";
    let k = key(p);
    let opts = AcquireOptions::new()
        .ttl(Duration::from_secs(30))
        .holder("instance-x");
    let g1 = m1.acquire(&k, &opts).await.unwrap();
    let deleted: i64 = s.cmd(&["DEL", &common::lock_of(p)]);
    assert_eq!(deleted, 1);
    let extended = g1.extend(Duration::from_secs(30)).await;
    assert!(
        matches!(extended, Err(bidlock::Error::LockLost { .. })),
        "setup: {extended:?}"
    );
    assert!(g1.is_lost());
    let g2 = m2.acquire(&k, &opts).await.unwrap();
    assert!(!g2.is_lost());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        common::holder_in_redis(&s, p).as_deref(),
        Some("instance-x"),
        "setup: M2 holds P before M1 closes"
    );
    m1.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shown = common::holder_in_redis(&s, p);
    assert!(
        shown.as_deref() == Some("instance-x"),
        "M1's lease of `instance-x` was lost (its extend said so) before M2 acquired P \
         with that id; M1.close() then deleted M2's lock: Redis shows {shown:?}, M2's \
         guard says is_lost={} ({:?})",
        g2.is_lost(),
        g2.lease().lost_reason()
    );
    drop(g1);
    drop(g2);
}

// ---------------------------------------------------------------------------------------
// dcb96e1: lost() watches the deadline itself
// ---------------------------------------------------------------------------------------

/// Promise (docs/GUARANTEES.md, "A holder is never told held after its lock may be
/// gone"): "An extend first lowers the deadline to what it alone guarantees ... Loss is
/// reported no later than the deadline"; `Lease::lost`: "no later than its end ... this
/// future watches the deadline itself".
///
/// `lost()` reads the deadline once and sleeps until it; a lowering of the deadline is
/// not a notification. The keeper would say it lost at the new deadline, but not while
/// a renewal of the lease is out: that renewal's timeout is the deadline read when it was
/// sent, and `reschedule` leaves a lease that is out alone.
///
/// Interleaving: a 3 s lease with renewal; a section awaits `lost()` (polled: it sleeps
/// until the 3 s deadline). At ~0.8 s the link to Redis goes dark (a partition), so the
/// renewal sent at 1 s hangs. The section shortens its lease: `extend(300 ms)`, which
/// gets no answer and is given up after 100 ms; the lease's deadline is lowered to
/// ~1.5 s (`expires_at()` and `is_lost()` say so). `lost()` resolves only when the keeper's
/// renewal times out at the old deadline (~3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_resolves_by_a_deadline_that_a_shortening_extend_brought_forward() {
    let s = RedisServer::start();
    let proxy = FaultProxy::start(s.port()).await;
    let m = common::redis_manager_with_timeout(&proxy.url(), Duration::from_secs(5)).await;
    let k = key("shortened");
    let t0 = tokio::time::Instant::now();
    let g = m
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    let mut lost = Box::pin(g.lost());
    assert!(poll_once(&mut lost).await.is_pending());
    tokio::time::sleep_until(t0 + Duration::from_millis(800)).await;
    // A link that delivers nothing for 10 s (a partition whose bytes are counted).
    proxy.set_for(
        Role::Commands,
        Some(Direction::ToServer),
        Fault::Delay(Duration::from_secs(10)),
    );
    common::until(
        Duration::from_secs(2),
        "the renewal to be held back",
        || proxy.traffic().held(Role::Commands, Direction::ToServer) > 0,
    )
    .await;
    let shortened = tokio::time::timeout(
        Duration::from_millis(100),
        g.extend(Duration::from_millis(300)),
    )
    .await;
    assert!(shortened.is_err(), "setup: the extend was answered");
    let end = tokio::time::Instant::from_std(g.lease().expires_at().unwrap());
    let slack = Duration::from_millis(250);
    let told = tokio::time::timeout_at(end + slack, &mut lost).await;
    if told.is_err() {
        let late = tokio::time::timeout(Duration::from_secs(5), &mut lost).await;
        proxy.set(Fault::None);
        panic!(
            "the lease's deadline was brought forward to {:?} after the acquire (is_lost() \
             now: {}), yet lost() was still pending {:?} after it; it resolved {}",
            end - t0,
            g.is_lost(),
            slack,
            match late {
                Ok(()) => format!("at {:?} after the acquire", t0.elapsed()),
                Err(_) => "not within 5 s more".to_owned(),
            }
        );
    }
    proxy.set(Fault::None);
    drop(g);
}

/// Promise: as above, within the stated limit of the keeper's runtime: "While that
/// runtime is shut down or not being driven ... nothing renews: the lease runs out at its
/// ttl, and `lost()`, which watches the deadline itself, resolves then."
///
/// The keeper lives in a sync wrapper's idle current-thread runtime. In the application's
/// runtime a 30 s lease is taken and a section awaits `lost()` (sleeping until 30 s);
/// then the section shortens the lease to 300 ms (answered). The lease runs out at
/// ~300 ms (`is_lost()` says so), and `lost()` sleeps on until the old 30 s deadline.
#[test]
fn with_an_idle_keeper_lost_resolves_at_a_shortened_deadline() {
    let prefix = common::unique_prefix();
    let sync_rt = current_thread();
    let m = sync_rt
        .block_on(BidLockManager::new(common::memory_config(&prefix)))
        .unwrap();
    start_keeper_in(&sync_rt, &m, "sync");
    let app = multi_thread();
    app.block_on(async {
        let g = m
            .acquire(
                &key("app"),
                &AcquireOptions::new().ttl(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        let mut lost = Box::pin(g.lost());
        assert!(poll_once(&mut lost).await.is_pending());
        g.extend(Duration::from_millis(300)).await.unwrap();
        let t0 = tokio::time::Instant::now();
        let told = tokio::time::timeout(Duration::from_millis(1500), &mut lost).await;
        assert!(
            told.is_ok(),
            "a lease shortened to 300 ms, its keeper idle: {:?} later is_lost()={} but \
             lost() is still pending (it sleeps until the deadline it read before the \
             extend, 30 s)",
            t0.elapsed(),
            g.is_lost()
        );
        drop(g);
    });
    drop(sync_rt);
}

// ---------------------------------------------------------------------------------------
// dcb96e1: the ACL check
// ---------------------------------------------------------------------------------------

/// Creates user `name` with `rules`; returns its URL.
fn acl_user(s: &RedisServer, name: &str, rules: &str) -> String {
    let rules: Vec<String> = rules.split_whitespace().map(str::to_owned).collect();
    let args = bidlock_testkit::acl::setuser_args(name, &rules, "pw-7");
    let _: () = s.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    bidlock_testkit::acl::with_credentials(&s.url(), name, "pw-7")
}

/// `ACL DRYRUN user words...`: "OK" or Redis' reason.
fn dryrun(s: &RedisServer, user: &str, words: &[&str]) -> String {
    let mut c = redis::cmd("ACL");
    c.arg("DRYRUN").arg(user);
    for w in words {
        c.arg(*w);
    }
    c.query(&mut s.client()).unwrap()
}

/// Promises (docs/GUARANTEES.md, "Secrets and permissions"): "a permission it lacks is
/// named at connect and by `bidlock health`"; ("Bad input and junk in the keys"): "a
/// ... counter of another kind ... is an error naming the key, and nothing changes".
///
/// hlc.lua, prepended to every script that issues tokens, sends `TYPE` on the fencing
/// counter when the counter is not a string (to name what it holds). needs.rs asks `TYPE`
/// on locks, records, queues and waiters, and only `GET`/`SET` on the counter. A user
/// whose root reaches every name of a posting with every command bidlock asks but `TYPE`,
/// which a selector grants on the names needs.rs asks it on, passes connect (the EVALSHA
/// with six names included) and `health()`; the day the counter holds junk, every acquire
/// is refused with NOPERM instead of naming the junk key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_a_user_without_type_on_the_counter_is_named_at_connect_or_told_the_junk() {
    let s = RedisServer::start();
    let rules = "reset on ~bid_lock:* ~bid_done:* ~bid_lock_wait:* ~bid_lock_queue:* \
         ~bid_lock_waiters:* ~bid_lock_fence &bid_lock_released &bid_lock_grants:* -@all \
         +evalsha +script|load +get +set +del +exists +pttl +pexpire +zadd +zrem +zscore \
         +zrange +zcard +hset +hget +hdel +time +publish +subscribe +scan +ping +info \
         (~bid_lock:* ~bid_done:* ~bid_lock_queue:* ~bid_lock_waiters:* +type)";
    let url = acl_user(&s, "no-type-on-fence", rules);
    // Setup: what the user may and may not run on the counter.
    assert_eq!(
        dryrun(&s, "no-type-on-fence", &["GET", "bid_lock_fence"]),
        "OK"
    );
    assert_ne!(
        dryrun(&s, "no-type-on-fence", &["TYPE", "bid_lock_fence"]),
        "OK"
    );
    let m = match BidLockManager::new(common::redis_config(&url).build().unwrap()).await {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("type") && e.contains("bid_lock_fence"),
                "refused at connect without naming TYPE on the counter: {e}"
            );
            return;
        }
        Ok(m) => m,
    };
    let missing = m
        .health()
        .await
        .unwrap()
        .missing_permissions
        .unwrap_or_default();
    // The user takes and releases locks.
    let k = key("acl-junk");
    let g = m.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(g.release().await.unwrap());
    // Someone writes junk into the counter.
    let _: i64 = s.cmd(&["DEL", "bid_lock_fence"]);
    let _: i64 = s.cmd(&["RPUSH", "bid_lock_fence", "junk"]);
    let got = m.try_acquire(&k, &AcquireOptions::new()).await;
    let shown = common::holder_in_redis(&s, "acl-junk");
    match got {
        Err(bidlock::Error::WrongType { key, .. }) => assert_eq!(key, "bid_lock_fence"),
        other => panic!(
            "connect approved the user and health names {missing:?} missing; with junk in \
             the counter the acquire answers {:?} instead of naming the junk key (Redis \
             shows the lock held by {shown:?})",
            other.map(|g| g.holder().clone()).map_err(|e| e.to_string())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// dcb96e1: a superseded answer goes on waiting
// ---------------------------------------------------------------------------------------

/// Promises: within one manager a section answered after a newer one of another holder
/// id is not told held (GUARANTEES, "Limit: operators"); a wait ends in "not acquired"
/// only for a holder ("A wait is bounded"); a holder id you give is never released in the
/// background.
///
/// A (holder id of its own, `inst-a`, waits 5 s) sends its try through a proxy that
/// delays replies by 100 ms; its task is not polled while an operator force-releases and
/// B (same manager, generated id) takes the key. A's late answer is refused
/// (`Superseded`), not released (a given id), and A goes on waiting: when B releases,
/// A must get the key within its wait, with a token above B's, and not before B let go.
/// Passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_answer_of_a_given_id_waits_and_is_served_after_the_newer_holder() {
    let s = RedisServer::start();
    let proxy = FaultProxy::start(s.port()).await;
    let m = common::redis_manager_with_timeout(&proxy.url(), Duration::from_secs(5)).await;
    let operator = common::redis_manager(&s.url()).await;
    let warm = key("sup-warm");
    let g = m.acquire(&warm, &AcquireOptions::new()).await.unwrap();
    assert!(g.release().await.unwrap());
    proxy.set_for(
        Role::Commands,
        Some(Direction::ToClient),
        Fault::Delay(Duration::from_millis(100)),
    );
    let p = "sup-given";
    let k = key(p);
    let a_opts = common::wait_for(Duration::from_secs(5))
        .ttl(Duration::from_secs(30))
        .holder("inst-a");
    let mut a = Box::pin(m.acquire(&k, &a_opts));
    let t0 = tokio::time::Instant::now();
    loop {
        assert!(poll_once(&mut a).await.is_pending(), "A answered too soon");
        if common::holder_in_redis(&s, p).is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "A's try never arrived"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(operator.force_release(&k).await.unwrap());
    let b = m
        .try_acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(30)))
        .await
        .unwrap();
    // A's task runs again: its (stale) answer is in.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(poll_once(&mut a).await.is_pending(), "A told held beside B");
    assert!(!b.is_lost());
    let b_token = b.fencing_token();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(poll_once(&mut a).await.is_pending(), "A told held beside B");
    assert!(b.release().await.unwrap());
    let a = tokio::time::timeout(Duration::from_secs(5), a)
        .await
        .expect("A's acquire hung past its wait")
        .expect("A not served after B released");
    assert!(a.fencing_token() > b_token);
    assert_eq!(common::holder_in_redis(&s, p).as_deref(), Some("inst-a"));
    proxy.set(Fault::None);
    assert!(a.release().await.unwrap());
}
