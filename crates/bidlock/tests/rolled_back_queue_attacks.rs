//! Attacks on a holder whose own place in the queue comes back with rolled-back data
//! (docs/GUARANTEES.md, "A holder is never told held after its lock may be gone" and the
//! limit "Redis losing data"). Found by the randomized checker (seed 1119661168, round 44,
//! `rdb-rollback`): a waiter was granted the lock, then an older RDB snapshot that still
//! had the waiter's holder id queued was restored. The restore took its lock away; the next
//! try handed the lock to that very id again, with a new token, 19 ms later; the holder's
//! renewals found its own id in Redis and it was never told lost. While its lock was gone,
//! anyone queued ahead of it in the snapshot could have held the key beside it.
//!
//! - `a_holder_handed_its_lock_again_by_its_rolled_back_queue_entry_is_told_lost`: failed
//!   when written (the lease kept renewing for ever). Redis records each grant as the
//!   waiters' `''` field (`holder token`); a renewal or extend that finds its holder id
//!   there with another token than the lease's finds a later tenure of the id, not its
//!   own, and says the lease lost.
//! - `a_holder_without_renewal_handed_its_lock_again_is_told_lost_at_the_reconnects_check`:
//!   the same with a lease that does not renew; the check a reconnect asks for (a read of
//!   the lock) found its id and kept it until its deadline (failed when written, 10 s
//!   ttl: not told within 2 s). The read now looks at the last grant too.

mod common;

use std::time::Duration;

use bidlock::AcquireOptions;
use bidlock_testkit::{Fault, FaultProxy, RedisServer, ServerOptions};
use tokio::time::Instant;

use common::{holder_in_redis, key, queue_len, queue_of, until, waiters_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_handed_its_lock_again_by_its_rolled_back_queue_entry_is_told_lost() {
    handed_again(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_without_renewal_handed_its_lock_again_is_told_lost_at_the_reconnects_check() {
    handed_again(false).await;
}

/// The history of seed 1119661168's round 44, with a holder that renews or not (then the
/// reconnect's check of every lease must find the later tenure, not its deadline).
async fn handed_again(renew: bool) {
    let mut s = RedisServer::start_with(ServerOptions::default());
    let p = FaultProxy::start(s.port()).await;
    let first = common::redis_manager(&s.url()).await;
    let waiter = common::redis_manager_with_timeout(&p.url(), Duration::from_millis(500)).await;
    let k = key("resurrected");
    let ttl = if renew {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(10)
    };
    // The first holder's lock is short and not renewed: in the snapshot it has expired
    // by the time the snapshot is put back, while the waiter's entry there (alive for
    // three quarters of its 2 s grant ttl after its last refresh) is still alive.
    let g1 = first
        .acquire(
            &k,
            &AcquireOptions::new()
                .ttl(Duration::from_millis(500))
                .renew(false),
        )
        .await
        .unwrap();
    let waiting = {
        let (waiter, k) = (waiter.clone(), k.clone());
        tokio::spawn(async move {
            waiter
                .acquire(
                    &k,
                    &AcquireOptions::new()
                        .ttl(ttl)
                        .renew(renew)
                        .timeout(Duration::from_secs(30)),
                )
                .await
        })
    };
    until(Duration::from_secs(5), "the waiter to queue", || {
        queue_len(&s, "resurrected") == 1
    })
    .await;
    let snap = s.snapshot();
    let first_id = g1.holder().as_str().to_owned();
    assert_eq!(
        holder_in_redis(&s, "resurrected").as_deref(),
        Some(&*first_id),
        "the snapshot has the first holder's lock and the waiter queued"
    );
    assert!(g1.release().await.unwrap());
    let g = waiting.await.unwrap().unwrap();
    let id = g.holder().as_str().to_owned();
    let queued: Vec<String> = s.cmd(&["ZRANGE", &queue_of("resurrected"), "0", "-1"]);
    assert!(queued.is_empty(), "the grant took the id out of the queue");
    assert_ne!(id, first_id);
    // The snapshot's lock of the first holder has run out.
    let expired_at = snap.taken_at + Duration::from_millis(550);
    tokio::time::sleep(expired_at.saturating_duration_since(std::time::Instant::now())).await;
    assert_eq!(holder_in_redis(&s, "resurrected").as_deref(), Some(&*id));
    // Its links stall across the restore, so that nothing it sends reaches Redis before
    // the id is handed the lock again (as when its reconnect is slower than that).
    p.set(Fault::Blackhole);
    s = tokio::task::spawn_blocking(move || {
        s.restore_snapshot(&snap);
        s
    })
    .await
    .unwrap();
    assert_eq!(
        holder_in_redis(&s, "resurrected"),
        None,
        "the restore took the lock away"
    );
    let queued: Vec<String> = s.cmd(&["ZRANGE", &queue_of("resurrected"), "0", "-1"]);
    assert_eq!(
        queued,
        vec![id.clone()],
        "the restore put the id back in the queue"
    );
    // A try (of a manager that connects now) finds the lock free with a live waiter
    // queued: it hands the lock to it.
    let other = common::redis_manager(&s.url()).await;
    let tried = other.try_acquire(&k, &AcquireOptions::new()).await;
    assert!(
        matches!(tried, Err(bidlock::Error::NotAcquired { .. })),
        "the try must hand the lock on, not take it: {tried:?}"
    );
    let again_at = Instant::now();
    assert_eq!(holder_in_redis(&s, "resurrected").as_deref(), Some(&*id));
    let last: String = s.cmd(&["HGET", &waiters_of("resurrected"), ""]);
    let token2: u64 = last
        .strip_prefix(&format!("{id} "))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the last grant names the id again: {last:?}"));
    assert!(
        token2 > g.fencing_token().get(),
        "a new tenure of the id, with a higher token"
    );
    assert!(!g.is_lost(), "its links are stalled: it cannot know yet");
    p.set(Fault::None);
    // A renewal (ttl/3) or the reconnect's check, and a response timeout for a request
    // sent on a connection the restart killed.
    let limit = Duration::from_secs(1) + Duration::from_millis(500) + Duration::from_millis(500);
    tokio::time::timeout(limit, g.lost())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the holder whose lock the rollback took away was not told lost within {limit:?} \
                 of its id being handed the lock again ({:?} ago)",
                again_at.elapsed()
            )
        });
    // The later tenure's lock is let go with the guard: the next waiter is not kept out
    // until its grant ttl.
    let _ = g.release().await;
    until(Duration::from_secs(2), "the re-granted lock to go", || {
        holder_in_redis(&s, "resurrected").is_none()
    })
    .await;
}
