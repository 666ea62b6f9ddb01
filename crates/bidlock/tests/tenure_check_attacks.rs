//! Attacks on the tenure check of e791a61 and 235fc28 (`tenure.lua`: a renewal, extend or
//! `holds` check that finds the waiters' `''` field naming the lease's holder id with
//! another token than the lease's says the lease lost). Written by a fresh-context review.
//!
//! - `a_waiter_whose_grant_ran_out_unheard_and_then_took_the_free_lock_is_renewed`: a
//!   queued waiter's grant message and its refresh are held back past the grant ttl; the
//!   grant runs out, and its held-back refresh (a try that stays queued) finds the lock
//!   free and takes it with `SET NX` and a new token. The `''` field still names its id
//!   with the grant's token: the check takes the waiter's own, current lock for "a later
//!   tenure of the id" and tells a lease lost whose lock Redis holds for it.
//! - `..._without_renewal_can_extend`: the same for a lease that does not renew, through
//!   an explicit `extend`.
//! - `a_waiter_of_a_default_manager_whose_command_link_stalled_past_the_grant_is_renewed`:
//!   the same with the default configuration (5 s response timeout) and only the command
//!   link stalled (the grant message arrives): a 2.7 s stall of one waiter suffices. The
//!   false loss needs a check while the waiters' hash lives (grant ttl + 5 s after the
//!   grant): with a 30 s ttl and no notice the first renewal comes later and it passed.
//!   These three failed at 235fc28 (passing at dd3afeb, before e791a61); fixed by 859ffa3.
//! - `a_given_holder_id_reused_across_tenures_after_handovers_keeps_renewing` (passes: a
//!   given id never queues, so no grant names it).
//! - `the_lock_of_a_waiter_told_lost_after_its_grant_ran_out_goes_with_its_guard`
//!   (passes: after the false loss, dropping the guard frees the lock at once).
//! - Second review, of 859ffa3 (the stay take rewrites `''`):
//!   `a_stay_take_lost_in_a_rollback_is_told_lost` (passes; the snapshot's queue entry is
//!   always dead by then: entry ttl is 3/4 of the grant ttl, which had to run out, so
//!   another try takes the lock and W is told lost by GET, not by `''`) and
//!   `the_stay_take_leaves_no_waiters_hash_it_wrote_without_a_ttl` (failed: the rewrite
//!   wrote into a waiters' hash an operator PERSISTed and, unlike write_entry and hand_to,
//!   gave it no ttl; rule 4, operator-induced; the rewrite now gives it grant ttl + 5 s).

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager, LockGuard, LockKey};
use bidlock_testkit::{Fault, FaultProxy, RedisServer, Role, ServerOptions};

use common::{holder_in_redis, key, queue_len, queue_of, until, waiters_of};

/// The last grant recorded in the waiters' `''` field, as (holder id, token).
fn last_grant(s: &RedisServer, p: &str) -> Option<(String, u64)> {
    let last: Option<String> = s.cmd(&["HGET", &waiters_of(p), ""]);
    let (id, token) = last?
        .rsplit_once(' ')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))?;
    Some((id, token.parse().ok()?))
}

/// H holds `k`; W (through the proxy `p`, response timeout 10 s) queues behind it with
/// `opts`. W's links stall; H releases, handing the lock to W's queued id; the grant
/// runs out in Redis while W hears nothing; the links heal and W's held-back try that
/// stays queued lands on the free lock and takes it. Returns W's guard, the id granted
/// and the grant's token.
async fn grant_runs_out_then_refresh_takes_it(
    s: &RedisServer,
    p: &FaultProxy,
    h: &BidLockManager,
    w: &BidLockManager,
    k: &LockKey,
    posting: &str,
    opts: AcquireOptions,
) -> (LockGuard, String, u64) {
    stall_then_take(s, p, h, w, k, posting, opts, |p| p.set(Fault::Blackhole)).await
}

/// As [`grant_runs_out_then_refresh_takes_it`], with the stall `stall` sets on `p`.
#[allow(clippy::too_many_arguments)]
async fn stall_then_take(
    s: &RedisServer,
    p: &FaultProxy,
    h: &BidLockManager,
    w: &BidLockManager,
    k: &LockKey,
    posting: &str,
    opts: AcquireOptions,
    stall: impl Fn(&FaultProxy),
) -> (LockGuard, String, u64) {
    let gh = h
        .acquire(k, &AcquireOptions::new().ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let waiting = {
        let (w, k) = (w.clone(), k.clone());
        tokio::spawn(async move { w.acquire(&k, &opts).await })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(s, posting) == 1
    })
    .await;
    // W's links stall (a GC pause, a partition): its grant message and its next refresh
    // are held back, not lost.
    stall(p);
    assert!(gh.release().await.unwrap(), "H's release");
    let granted_id = holder_in_redis(s, posting).expect("the release handed the lock over");
    let (named, t1) = last_grant(s, posting).expect("the grant is recorded in ''");
    assert_eq!(named, granted_id, "the '' field names the id granted");
    until(
        Duration::from_secs(5),
        "the unheard grant to run out",
        || holder_in_redis(s, posting).is_none(),
    )
    .await;
    assert_eq!(
        last_grant(s, posting),
        Some((granted_id.clone(), t1)),
        "the '' field outlives the grant (waiters' ttl: grant ttl + 5 s)"
    );
    // The links heal: W's held-back refresh runs on the free lock.
    p.set(Fault::None);
    let g = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiter's acquire to return")
        .unwrap()
        .expect("the waiter acquires");
    (g, granted_id, t1)
}

/// Promises attacked (README "leases renewed while held and told lost when lost";
/// docs/GUARANTEES.md "Renewal follows `extend`": "While a guard lives its lock is
/// renewed every third of its ttl"). The change under review says a lease lost when the
/// `''` field names its id with another token; here that field is a stale record of the
/// id's own grant, which ran out unheard before the same tenure took the free lock with
/// `SET NX`. Redis holds the lock for this lease, no rollback happened, nobody else held
/// the key: the lease must stay held and be renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_grant_ran_out_unheard_and_then_took_the_free_lock_is_renewed() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let h = common::redis_manager(&s.url()).await;
    let w = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(10)).await;
    let k = key("ran-out-unheard");
    let ttl = Duration::from_secs(6);
    let opts = AcquireOptions::new()
        .ttl(ttl)
        .renew(true)
        .timeout(Duration::from_secs(30));
    let (g, granted_id, t1) =
        grant_runs_out_then_refresh_takes_it(&s, &p, &h, &w, &k, "ran-out-unheard", opts).await;
    let t2 = g.fencing_token().get();
    assert_eq!(
        holder_in_redis(&s, "ran-out-unheard").as_deref(),
        Some(g.holder().as_str()),
        "Redis holds the lock for W's lease"
    );
    eprintln!(
        "W holds under id {} with token {t2}; the grant that ran out was to {granted_id} with \
         token {t1}; '' now: {:?}",
        g.holder(),
        last_grant(&s, "ran-out-unheard")
    );
    // Two renewal periods (ttl/3 = 2 s each) on a healthy link.
    let watch_until = tokio::time::Instant::now() + Duration::from_millis(4500);
    while tokio::time::Instant::now() < watch_until {
        assert!(
            !g.is_lost(),
            "W's lease (id {}, token {t2}) was told lost while Redis holds its lock for it \
             (GET = {:?}, '' = {:?}, pttl = {} ms): the stale '' record of the id's own grant \
             (token {t1}), which ran out unheard, was taken for a later tenure",
            g.holder(),
            holder_in_redis(&s, "ran-out-unheard"),
            last_grant(&s, "ran-out-unheard"),
            s.cmd::<i64>(&["PTTL", &common::lock_of("ran-out-unheard")]),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        holder_in_redis(&s, "ran-out-unheard").as_deref(),
        Some(g.holder().as_str())
    );
    assert!(g.release().await.unwrap());
}

/// Promises attacked (docs/GUARANTEES.md "Renewal follows `extend`"; README "leases ...
/// told lost when lost"): the same history with a lease that does not renew; its holder
/// extends it while Redis holds the lock for it, and must not be told `LockLost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_grant_ran_out_unheard_and_then_took_the_free_lock_without_renewal_can_extend(
) {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let h = common::redis_manager(&s.url()).await;
    let w = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(10)).await;
    let k = key("ran-out-extend");
    let opts = AcquireOptions::new()
        .ttl(Duration::from_secs(6))
        .renew(false)
        .timeout(Duration::from_secs(30));
    let (g, granted_id, t1) =
        grant_runs_out_then_refresh_takes_it(&s, &p, &h, &w, &k, "ran-out-extend", opts).await;
    let before = holder_in_redis(&s, "ran-out-extend");
    assert_eq!(before.as_deref(), Some(g.holder().as_str()));
    let extended = g.extend(Duration::from_secs(6)).await;
    assert!(
        extended.is_ok() && !g.is_lost(),
        "W (id {}, token {}) holds the lock in Redis (GET = {before:?}) but its extend said \
         {extended:?}: the stale '' record of the grant to {granted_id} with token {t1} was \
         taken for a later tenure",
        g.holder(),
        g.fencing_token(),
    );
    assert!(g.release().await.unwrap());
}

/// Promises attacked (docs/GUARANTEES.md "Renewal follows `extend`" and "No orphans":
/// "A holder id *you* give ..." reused one owner at a time): a caller-given holder id
/// never queues, so no grant ever names it; reused across tenures on a key whose `''`
/// field records grants to other ids, each tenure must renew for as long as it holds.
/// History: H holds; Y (generated) queues and is handed the lock (`''` = `Y t`); X with
/// the given id `inst-x` waits (without queueing) and takes the lock when Y releases; X
/// releases and takes it again uncontended; each of X's tenures must be renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_holder_id_reused_across_tenures_after_handovers_keeps_renewing() {
    let s = RedisServer::start();
    let (h, m1, m2) = (
        common::redis_manager(&s.url()).await,
        common::redis_manager(&s.url()).await,
        common::redis_manager(&s.url()).await,
    );
    let k = key("given-reused");
    let ttl = Duration::from_millis(1500);
    let gh = h
        .acquire(&k, &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    let y = {
        let (m2, k) = (m2.clone(), k.clone());
        tokio::spawn(async move {
            m2.acquire(
                &k,
                &AcquireOptions::new()
                    .ttl(ttl)
                    .timeout(Duration::from_secs(10)),
            )
            .await
        })
    };
    until(Duration::from_secs(5), "Y to queue", || {
        queue_len(&s, "given-reused") == 1
    })
    .await;
    assert!(gh.release().await.unwrap());
    let gy = y.await.unwrap().unwrap();
    assert_eq!(
        last_grant(&s, "given-reused").map(|(id, _)| id).as_deref(),
        Some(gy.holder().as_str()),
        "Y was handed the lock"
    );
    let x = {
        let (m1, k) = (m1.clone(), k.clone());
        tokio::spawn(async move {
            m1.acquire(
                &k,
                &AcquireOptions::new()
                    .ttl(ttl)
                    .holder("inst-x")
                    .timeout(Duration::from_secs(10)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(gy.release().await.unwrap());
    let mut first = Some(
        tokio::time::timeout(Duration::from_secs(10), x)
            .await
            .expect("X gets the lock once Y releases")
            .unwrap()
            .unwrap(),
    );
    for round in 0..2 {
        let gx = match first.take() {
            Some(g) => g,
            None => m1
                .acquire(&k, &AcquireOptions::new().ttl(ttl).holder("inst-x"))
                .await
                .unwrap(),
        };
        let until_at = tokio::time::Instant::now() + Duration::from_millis(2200);
        while tokio::time::Instant::now() < until_at {
            assert!(
                !gx.is_lost(),
                "X's tenure {round} (token {}) told lost; GET = {:?}, '' = {:?}",
                gx.fencing_token(),
                holder_in_redis(&s, "given-reused"),
                last_grant(&s, "given-reused")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gx.release().await.unwrap());
    }
}

/// Promise attacked (docs/GUARANTEES.md "No orphans": "a dropped guard release[s] their
/// lock in the background"): after the false loss above, the holder that was told lost
/// drops its guard (as `with_lock` does when the lease says lost); the lock Redis still
/// holds under its generated id must go then, not stay until its ttl (6 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_of_a_waiter_told_lost_after_its_grant_ran_out_goes_with_its_guard() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let h = common::redis_manager(&s.url()).await;
    let w = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(10)).await;
    let k = key("ran-out-orphan");
    let opts = AcquireOptions::new()
        .ttl(Duration::from_secs(6))
        .renew(true)
        .timeout(Duration::from_secs(30));
    let (g, _, _) =
        grant_runs_out_then_refresh_takes_it(&s, &p, &h, &w, &k, "ran-out-orphan", opts).await;
    // Whether told lost (the false loss) or not, the guard is dropped now.
    let _ = tokio::time::timeout(Duration::from_secs(3), g.lost()).await;
    let lost = g.is_lost();
    drop(g);
    let dropped_at = tokio::time::Instant::now();
    until(
        Duration::from_secs(2),
        &format!("the dropped guard's lock to go (lease told lost: {lost})"),
        || holder_in_redis(&s, "ran-out-orphan").is_none(),
    )
    .await;
    eprintln!(
        "lock gone {:?} after the drop (lease told lost: {lost})",
        dropped_at.elapsed()
    );
}

/// Promises attacked (README "leases renewed while held and told lost when lost";
/// docs/GUARANTEES.md "Renewal follows `extend`"): the first history with a manager of
/// the default configuration (response timeout 5 s) whose command link alone stalls for
/// a little over the grant ttl (2 s): the grant message arrives, but the waiter is then
/// waiting for the answer of its refresh, which lands on the free lock and takes it. A
/// stall of 2 to 5 s of one waiter's link is enough for the false loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_of_a_default_manager_whose_command_link_stalled_past_the_grant_is_renewed() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let h = common::redis_manager(&s.url()).await;
    let w = common::redis_manager(&p.url()).await;
    let k = key("commands-stall");
    // Renewed every 2 s: the first renewal comes while the waiters' hash, and its ''
    // field, still lives (grant ttl + 5 s after the grant). With a 30 s ttl the field
    // is gone by the first renewal (10 s) and the lease is kept (tried: passes).
    let opts = AcquireOptions::new()
        .ttl(Duration::from_secs(6))
        .timeout(Duration::from_secs(30));
    let (g, granted_id, t1) = stall_then_take(&s, &p, &h, &w, &k, "commands-stall", opts, |p| {
        p.set_for(Role::Commands, None, Fault::Blackhole);
        // The waiter's next refresh (every 500 ms) is sent into the stall: it waits for
        // that answer, not for the grant message, when the release comes (its entry,
        // refreshed less than 1.2 s before the release, lives 1.5 s).
        tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(700)));
    })
    .await;
    assert_eq!(
        g.holder().as_str(),
        granted_id,
        "the tenure's own id took the lock"
    );
    eprintln!(
        "W holds with token {} (the grant that ran out: {t1}); '' = {:?}",
        g.fencing_token(),
        last_grant(&s, "commands-stall")
    );
    assert_eq!(
        holder_in_redis(&s, "commands-stall").as_deref(),
        Some(g.holder().as_str()),
        "Redis holds the lock for W (W told lost: {:?}, token {}, '' = {:?})",
        g.lease().lost_reason(),
        g.fencing_token(),
        last_grant(&s, "commands-stall"),
    );
    let told = tokio::time::timeout(Duration::from_millis(4500), g.lost()).await;
    assert!(
        told.is_err(),
        "W (token {}) was told lost ({:?}) while Redis holds its lock for it (GET = {:?}, \
         pttl = {} ms, '' = {:?}; the grant that ran out unheard had token {t1})",
        g.fencing_token(),
        g.lease().lost_reason(),
        holder_in_redis(&s, "commands-stall"),
        s.cmd::<i64>(&["PTTL", &common::lock_of("commands-stall")]),
        last_grant(&s, "commands-stall"),
    );
    assert!(g.release().await.unwrap());
}

/// Second review (859ffa3, the stay take rewrites `''`): question 1, can the rewrite
/// re-open the rollback hole? History: H holds (2 s, no renewal); W queues; a snapshot is
/// taken (W queued, `''` absent); W's link stalls; H releases, the grant to W's id runs
/// out unheard; the link heals and W's held-back stay try takes the free lock (token T2,
/// `''` rewritten to `W T2`). After H's lock in the snapshot has expired, the snapshot is
/// restored (W's link stalled) and another manager tries. W's lease (T2) lost its lock in
/// the rollback and must be told lost once its link heals. (The re-grant to W's id the
/// attack aimed at cannot happen on this path: W's queue entry in the snapshot is dead by
/// the restore, its life being 3/4 of the grant ttl that had to run out first; the other
/// manager takes the lock itself, and W is told lost because the lock no longer names it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stay_take_lost_in_a_rollback_is_told_lost() {
    let mut s = RedisServer::start_with(ServerOptions::default());
    let p = FaultProxy::start(s.port()).await;
    let h = common::redis_manager(&s.url()).await;
    let w = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(10)).await;
    let k = key("take-rolled-back");
    let pk = "take-rolled-back";
    let gh = h
        .acquire(
            &k,
            &AcquireOptions::new()
                .ttl(Duration::from_secs(2))
                .renew(false),
        )
        .await
        .unwrap();
    let waiting = {
        let (w, k) = (w.clone(), k.clone());
        tokio::spawn(async move {
            w.acquire(
                &k,
                &AcquireOptions::new()
                    .ttl(Duration::from_secs(6))
                    .renew(true)
                    .timeout(Duration::from_secs(30)),
            )
            .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, pk) == 1
    })
    .await;
    let snap = s.snapshot();
    p.set(Fault::Blackhole);
    assert!(gh.release().await.unwrap(), "H's release");
    let (granted, t1) = last_grant(&s, pk).expect("the grant is recorded in ''");
    until(
        Duration::from_secs(8),
        "the unheard grant to run out",
        || holder_in_redis(&s, pk).is_none(),
    )
    .await;
    p.set(Fault::None);
    let g = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiter's acquire to return")
        .unwrap()
        .expect("the waiter acquires");
    let t2 = g.fencing_token().get();
    assert_eq!(
        g.holder().as_str(),
        granted,
        "the tenure's own id took the free lock"
    );
    assert_eq!(
        last_grant(&s, pk),
        Some((granted.clone(), t2)),
        "859ffa3 rewrote ''"
    );
    eprintln!("grant {granted} t1={t1} ran out; stay take t2={t2}");
    // H's lock in the snapshot has run out by the restore.
    let expired_at = snap.taken_at + Duration::from_millis(2100);
    tokio::time::sleep(expired_at.saturating_duration_since(std::time::Instant::now())).await;
    p.set(Fault::Blackhole);
    s = tokio::task::spawn_blocking(move || {
        s.restore_snapshot(&snap);
        s
    })
    .await
    .unwrap();
    assert_eq!(
        holder_in_redis(&s, pk),
        None,
        "the restore took the lock away"
    );
    let queued: Vec<String> = s.cmd(&["ZRANGE", &queue_of(pk), "0", "-1"]);
    assert_eq!(
        queued,
        vec![granted.clone()],
        "the restore put the id back in the queue"
    );
    // The entry's deadline (entry ttl = 3/4 of the grant ttl) may have passed by now: the
    // try then drops it and takes the lock itself; else it hands the lock to W's id again.
    let other = common::redis_manager(&s.url()).await;
    let tried = other.try_acquire(&k, &AcquireOptions::new()).await;
    let now_holder = holder_in_redis(&s, pk);
    let (again, t3) = last_grant(&s, pk).unwrap_or_default();
    eprintln!(
        "after the restore: other's try = {:?}; lock = {now_holder:?}; '' = {again} {t3} \
         (lease token {t2})",
        tried.as_ref().map(|g| g.holder().as_str().to_owned())
    );
    p.set(Fault::None);
    tokio::time::timeout(Duration::from_secs(6), g.lost())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "W's lease (id {granted}, token {t2}, from its stay take) lost its lock in the \
                 rollback (now: lock {now_holder:?}, '' = {again} {t3}), but it was not told \
                 lost within 6 s of its link healing"
            )
        });
}

/// Second review, question 3 (HANDOVER.md rule 4: every key a script writes has a ttl but
/// the fencing counter): acquire.lua's other writes to the waiters' hash (write_entry,
/// hand_to) give it a ttl when it has none (`PTTL < life`, -1 included); the rewrite of
/// 859ffa3 assumes "the hash keeps its ttl". History: as the false-loss attack, and while
/// the grant runs out unheard an operator (redis-cli) PERSISTs the waiters' hash; the
/// stay take then writes `''` into a hash without a ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stay_take_leaves_no_waiters_hash_it_wrote_without_a_ttl() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let h = common::redis_manager(&s.url()).await;
    let w = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(10)).await;
    let k = key("take-ttl");
    let pk = "take-ttl";
    let gh = h
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(10)))
        .await
        .unwrap();
    let waiting = {
        let (w, k) = (w.clone(), k.clone());
        tokio::spawn(async move {
            w.acquire(
                &k,
                &AcquireOptions::new()
                    .ttl(Duration::from_secs(6))
                    .timeout(Duration::from_secs(30)),
            )
            .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, pk) == 1
    })
    .await;
    p.set(Fault::Blackhole);
    assert!(gh.release().await.unwrap(), "H's release");
    let (granted, t1) = last_grant(&s, pk).expect("the grant is recorded in ''");
    let persisted: i64 = s.cmd(&["PERSIST", &waiters_of(pk)]);
    assert_eq!(persisted, 1, "the hand_to gave the hash a ttl");
    until(
        Duration::from_secs(8),
        "the unheard grant to run out",
        || holder_in_redis(&s, pk).is_none(),
    )
    .await;
    p.set(Fault::None);
    let g = tokio::time::timeout(Duration::from_secs(15), waiting)
        .await
        .expect("the waiter's acquire to return")
        .unwrap()
        .expect("the waiter acquires");
    let t2 = g.fencing_token().get();
    let last = last_grant(&s, pk);
    let pttl: i64 = s.cmd(&["PTTL", &waiters_of(pk)]);
    eprintln!("grant {granted} t1={t1}; take t2={t2}; '' = {last:?}; waiters pttl = {pttl}");
    assert_eq!(last, Some((granted.clone(), t2)), "the take wrote the hash");
    assert!(
        pttl > 0,
        "the stay take wrote '' = {granted} {t2} into the waiters' hash and left it \
         without a ttl (PTTL = {pttl}): rule 4"
    );
    assert!(g.release().await.unwrap());
}
