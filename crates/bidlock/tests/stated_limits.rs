//! The stated limits of bidlock's promises, each forced deterministically: the histories
//! the randomized checker lets pass (`tests/chaos/excuses.rs` names one test here per
//! rule) are exactly these, and each test holds the library to the bound the checker
//! applies (who learns, and how soon). Named for the guarantee whose limit they show.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidOutcome, LockKey};
use bidlock_testkit::{Direction, Fault, FaultProxy, RedisServer, Role, ServerOptions};
use tokio::time::Instant;

const NOTICE_EXTRA: Duration = Duration::from_millis(500);
/// An operator's release must reach a holder within this (the checker's bound).
const FORCED_NOTICE: Duration = Duration::from_secs(1);

fn lock_of(s: &RedisServer, k: &str) -> Option<String> {
    s.cmd(&["GET", &format!("bid_lock:upwork:{k}")])
}

/// One acquire and release on a key of its own: the scripts are loaded in Redis before a
/// fault holds a manager's requests or replies (a script that is not loaded yet would be
/// refused with NOSCRIPT, and the request would take nothing).
async fn warm_up(m: &bidlock::BidLockManager) {
    let g = m
        .acquire(&common::key("warm-up"), &AcquireOptions::new())
        .await
        .unwrap();
    assert!(g.release().await.unwrap());
}

/// Waits until `lost()` resolves, at most `limit`; how long it took.
async fn told_lost(g: &bidlock::LockGuard, limit: Duration, what: &str) -> Duration {
    let t = Instant::now();
    tokio::time::timeout(limit, g.lost())
        .await
        .unwrap_or_else(|_| panic!("{what}: not told lost within {limit:?}"));
    t.elapsed()
}

/// Data loss: a second holder can take a lock Redis lost before its holder learns; the
/// first learns at its next renewal (ttl/3) at the latest, and the second's token is
/// higher (rule `lost_in_data_loss`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_a_lock_lost_with_the_data_is_taken_by_a_second_holder_before_the_first_learns() {
    let mut s = RedisServer::start();
    let m1 = common::redis_manager_with_timeout(&s.url(), Duration::from_millis(500)).await;
    let k = common::key("lost-with-data");
    let ttl = Duration::from_secs(3);
    let g1 = m1
        .acquire(&k, &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    s = tokio::task::spawn_blocking(move || {
        s.restart();
        s
    })
    .await
    .unwrap();
    let lost_at = Instant::now();
    assert_eq!(
        lock_of(&s, "lost-with-data"),
        None,
        "the restart kept the lock"
    );
    let m2 = common::redis_manager(&s.url()).await;
    let g2 = m2
        .acquire(&k, &AcquireOptions::new().ttl(ttl))
        .await
        .unwrap();
    assert!(
        g2.fencing_token() > g1.fencing_token(),
        "the second holder's token must be higher"
    );
    let left = (ttl / 3 + NOTICE_EXTRA).saturating_sub(lost_at.elapsed());
    told_lost(&g1, left, "the holder whose lock Redis lost").await;
    assert!(!g2.is_lost());
}

/// Data loss that rolls back an acknowledged extend: the lock comes back with its older
/// expiry and ends before the lease it was extended for; a second holder can take it, and
/// the first learns at its next renewal, a third of the extended ttl (rule
/// `extend_rolled_back`). Its link stalls meanwhile, as a slow reconnect after the
/// restart would (a renewal, or the reconnect's check, that reaches Redis before the
/// older expiry renews the lock and undoes the rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_an_extend_rolled_back_with_the_data_ends_the_lock_before_the_lease() {
    let mut s = RedisServer::start_with(ServerOptions::default());
    let p = FaultProxy::start(s.port()).await;
    let m1 = common::redis_manager_with_timeout(&p.url(), Duration::from_millis(500)).await;
    let k = common::key("rolled-back");
    let g1 = m1
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(2)))
        .await
        .unwrap();
    let snap = s.snapshot();
    let extended = Duration::from_secs(9);
    g1.extend(extended).await.unwrap();
    let extended_at = Instant::now();
    p.set(Fault::Blackhole);
    s = tokio::task::spawn_blocking(move || {
        s.restore_snapshot(&snap);
        s
    })
    .await
    .unwrap();
    let pttl: i64 = s.cmd(&["PTTL", "bid_lock:upwork:rolled-back"]);
    assert!(
        (0..2000).contains(&pttl),
        "the restore must bring the lock back with its older expiry (pttl {pttl} ms)"
    );
    common::until(
        Duration::from_secs(3),
        "the rolled-back lock expires",
        || lock_of(&s, "rolled-back").is_none(),
    )
    .await;
    let gone_at = Instant::now();
    let m2 = common::redis_manager(&s.url()).await;
    let g2 = m2.try_acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(g2.fencing_token() > g1.fencing_token());
    assert!(
        !g1.is_lost(),
        "the first holder cannot know before a renewal reaches Redis"
    );
    p.set(Fault::None);
    let left = (extended / 3 + NOTICE_EXTRA).saturating_sub(gone_at.elapsed());
    told_lost(&g1, left, "the holder whose extend was rolled back").await;
    assert!(
        extended_at.elapsed() < extended,
        "told by a renewal, not by its deadline"
    );
}

/// An operator's force release, cleanup, or release by holder id (without force) of a
/// held key: a second holder may start at once; the first is told within a second, by
/// the message the removal publishes (rule `removed_by_operator`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_an_operators_release_lets_a_second_holder_start_before_the_first_learns_within_a_second(
) {
    let s = RedisServer::start();
    let (m1, m2) = (
        common::redis_manager(&s.url()).await,
        common::redis_manager(&s.url()).await,
    );
    let operator = common::redis_manager(&s.url()).await;
    // Renewed every 2 s: a notice within a second cannot come from a renewal.
    let opts = AcquireOptions::new().ttl(Duration::from_secs(6));
    for how in ["force_release", "cleanup_all", "release by holder id"] {
        let k = common::key(&format!("operator-{}", how.replace(' ', "-")));
        let g1 = m1.acquire(&k, &opts).await.unwrap();
        let removed = match how {
            "force_release" => operator.force_release(&k).await.unwrap(),
            "cleanup_all" => operator.cleanup_all().await.unwrap() > 0,
            _ => operator.release(&k, g1.holder()).await.unwrap(),
        };
        assert!(removed, "{how} removed nothing");
        let at = Instant::now();
        let g2 = m2.try_acquire(&k, &opts).await.unwrap();
        assert!(g2.fencing_token() > g1.fencing_token(), "{how}");
        let left = FORCED_NOTICE.saturating_sub(at.elapsed());
        told_lost(&g1, left, &format!("a holder whose lock {how} removed")).await;
        assert!(g2.release().await.unwrap());
    }
}

/// Two owners of one given holder id at the same time (the first's lock vanished behind
/// bidlock's back, as in data loss, and the second took the id) are one holder to Redis:
/// the first's renewal keeps the second's lock, so its loss stays hidden while the second
/// holds (rule `loss_hidden_by_given_id`), and the first's release removes the second's
/// lock, which learns at its next renewal at the latest (rule
/// `given_id_two_owners_at_once`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_two_owners_of_one_given_id_at_once_are_one_holder_to_redis() {
    let s = RedisServer::start();
    let (m1, m2) = (
        common::redis_manager(&s.url()).await,
        common::redis_manager(&s.url()).await,
    );
    let k = common::key("two-owners");
    let ttl = Duration::from_millis(900);
    let opts = AcquireOptions::new().holder("instance-1").ttl(ttl);
    let g1 = m1.acquire(&k, &opts).await.unwrap();
    let deleted: i64 = s.cmd(&["DEL", "bid_lock:upwork:two-owners"]);
    assert_eq!(deleted, 1);
    let g2 = m2.acquire(&k, &opts).await.unwrap();
    // Past several renewals of the first: each found "instance-1" and kept it.
    tokio::time::sleep(ttl * 2).await;
    assert!(
        !g1.is_lost() && !g2.is_lost(),
        "both owners say held: Redis holds one id for both"
    );
    assert!(
        g1.release().await.unwrap(),
        "the first's release finds its id"
    );
    let at = Instant::now();
    assert_eq!(
        lock_of(&s, "two-owners"),
        None,
        "and removes the second's lock"
    );
    let left = (ttl / 3 + NOTICE_EXTRA).saturating_sub(at.elapsed());
    told_lost(&g2, left, "the second owner").await;
}

/// A release whose reply was lost, run late by Redis after a partition, removes a later
/// acquisition of the same given holder id; that holder learns at its next renewal at the
/// latest (rule `given_id_late_release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_a_release_whose_reply_was_lost_removes_a_later_acquisition_of_its_given_id() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = common::redis_manager_with_timeout(&p.url(), Duration::from_millis(300)).await;
    let m2 = common::redis_manager(&s.url()).await;
    let k = common::key("late-release");
    warm_up(&m1).await;
    let first = AcquireOptions::new()
        .holder("instance-1")
        .ttl(Duration::from_millis(800))
        .renew(false);
    let g1 = m1.acquire(&k, &first).await.unwrap();
    p.set_for(Role::Commands, Some(Direction::ToServer), Fault::Blackhole);
    assert!(g1.release().await.is_err(), "the release's reply is lost");
    let ttl = Duration::from_secs(3);
    let later = AcquireOptions::new()
        .holder("instance-1")
        .ttl(ttl)
        .timeout(Duration::from_secs(3));
    let g2 = m2.acquire(&k, &later).await.unwrap();
    p.set(Fault::None);
    common::until(Duration::from_secs(2), "the late release runs", || {
        lock_of(&s, "late-release").is_none()
    })
    .await;
    let at = Instant::now();
    let left = (ttl / 3 + NOTICE_EXTRA).saturating_sub(at.elapsed());
    told_lost(&g2, left, "the later acquisition").await;
}

/// The same late release with its reply in time: the checker's `redis-sigstop` round,
/// where a server paused (SIGSTOP) kept a `bidlock run` process's release, sent while its
/// lease was valid, in its socket and on resuming read first another connection carrying
/// a later acquisition of the same given holder id (sent after the first lease ran out).
/// Which connection a resumed server reads first is not for a test to choose, so here a
/// stalled link holds the release instead, which makes that order certain. The release
/// then finds its id and removes the later acquisition's lock, and its reply, in time,
/// says "released"; the later holder is told "held" and then lost at once, since the
/// release of a given id publishes (rule `given_id_late_release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_a_release_run_late_with_its_reply_in_time_removes_a_later_acquisition_of_its_given_id(
) {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let m2 = common::redis_manager(&s.url()).await;
    let k = common::key("held-late-release");
    warm_up(&m1).await;
    let ttl = Duration::from_millis(600);
    let first = AcquireOptions::new()
        .holder("instance-1")
        .ttl(ttl)
        .renew(false);
    let g1 = m1.acquire(&k, &first).await.unwrap();
    let acquired = Instant::now();
    p.set_for(Role::Commands, Some(Direction::ToServer), Fault::Blackhole);
    assert!(!g1.is_lost(), "the first lease is valid when it releases");
    let release = tokio::spawn(g1.release());
    // The first lease (and its lock, by the server's clock) runs out while the release is
    // held; then the later owner acquires the same id.
    tokio::time::sleep_until(acquired + ttl + Duration::from_millis(100)).await;
    let later_ttl = Duration::from_secs(3);
    let later = AcquireOptions::new()
        .holder("instance-1")
        .ttl(later_ttl)
        .timeout(Duration::from_secs(3));
    let g2 = m2.acquire(&k, &later).await.unwrap();
    let told = Instant::now();
    p.set(Fault::None);
    assert!(
        release.await.unwrap().unwrap(),
        "the release ran after it, found its id and says released: its reply was not lost"
    );
    assert_eq!(
        lock_of(&s, "held-late-release"),
        None,
        "the late release removed the later acquisition's lock"
    );
    let left = (later_ttl / 3 + NOTICE_EXTRA).saturating_sub(told.elapsed());
    let took = told_lost(&g2, left, "the later acquisition").await;
    assert!(
        took < FORCED_NOTICE,
        "the release of a given id publishes: told at once, not at a renewal ({took:?})"
    );
}

/// An acquire whose reply arrives after an operator removed the lock its try took, and
/// after a second holder took the key: it is told "held" after the second, with the lower
/// token (Redis' order is the token order), and must be told lost at once (rule
/// `told_after_removal_token_order`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_an_acquire_answered_after_an_operator_removed_its_lock_is_told_lost_at_once() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let (m2, operator) = (
        common::redis_manager(&s.url()).await,
        common::redis_manager(&s.url()).await,
    );
    let k = common::key("told-after-removal");
    warm_up(&m1).await;
    let opts = AcquireOptions::new().ttl(Duration::from_secs(6));
    p.set_for(Role::Commands, Some(Direction::ToClient), Fault::Blackhole);
    let (m, k1, o1) = (m1.clone(), k.clone(), opts.clone());
    let first = tokio::spawn(async move { m.try_acquire(&k1, &o1).await });
    common::until(
        Duration::from_secs(2),
        "the first try takes the lock",
        || lock_of(&s, "told-after-removal").is_some(),
    )
    .await;
    assert!(operator.force_release(&k).await.unwrap());
    let g2 = m2.try_acquire(&k, &opts).await.unwrap();
    p.set(Fault::None);
    let g1 = first
        .await
        .unwrap()
        .expect("the late reply still says held");
    let told = Instant::now();
    assert!(g1.fencing_token() < g2.fencing_token());
    let left = FORCED_NOTICE.saturating_sub(told.elapsed());
    told_lost(&g1, left, "an acquire told held after its lock was removed").await;
    assert!(!g2.is_lost());
}

/// A cancelled acquire whose try took the lock releases it in the background; when its
/// link to Redis is stalled, the release cannot arrive and the lock stays until its ttl
/// (rule `orphan_release_unreachable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_orphans_a_background_release_that_cannot_reach_redis_leaves_the_lock_to_its_ttl() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m = common::redis_manager_with_timeout(&p.url(), Duration::from_secs(5)).await;
    let k = common::key("orphan-unreachable");
    let ttl = Duration::from_millis(1500);
    warm_up(&m).await;
    p.set_for(Role::Commands, Some(Direction::ToClient), Fault::Blackhole);
    let (m1, k1) = (m.clone(), k.clone());
    let acquire = tokio::spawn(async move {
        m1.acquire(&k1, &AcquireOptions::new().ttl(ttl))
            .await
            .map(drop)
    });
    common::until(Duration::from_secs(2), "the try takes the lock", || {
        lock_of(&s, "orphan-unreachable").is_some()
    })
    .await;
    let taken = Instant::now();
    p.set(Fault::Blackhole);
    acquire.abort();
    tokio::time::sleep(ttl - Duration::from_millis(300)).await;
    assert!(
        lock_of(&s, "orphan-unreachable").is_some(),
        "nothing could release it while the link was stalled"
    );
    common::until(Duration::from_secs(2), "the lock expires", || {
        lock_of(&s, "orphan-unreachable").is_none()
    })
    .await;
    assert!(taken.elapsed() + Duration::from_millis(50) >= ttl);
    p.set(Fault::None);
}

/// A completion record lost with Redis' data (a restart without persistence) lets the
/// posting run again, though its first bidder was told `Placed` (rule
/// `record_lost_with_data`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_a_record_lost_with_the_data_lets_the_posting_run_again() {
    let mut s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let k: LockKey = common::key("record-lost");
    let first = m
        .bid_once(&k, &AcquireOptions::new(), |_| async { Ok::<_, String>(1) })
        .await
        .unwrap();
    assert!(matches!(first, BidOutcome::Placed(1)), "{first:?}");
    s = tokio::task::spawn_blocking(move || {
        s.restart();
        s
    })
    .await
    .unwrap();
    let m2 = common::redis_manager(&s.url()).await;
    let again = m2
        .bid_once(&k, &AcquireOptions::new(), |_| async { Ok::<_, String>(2) })
        .await
        .unwrap();
    assert!(
        matches!(again, BidOutcome::Placed(2)),
        "the record went with the data: the posting runs again ({again:?})"
    );
}
