//! Guarantee: **renewal follows `extend`** (docs/GUARANTEES.md). While a guard lives,
//! its lock is renewed every third of its ttl; any extend, shorter or longer, reschedules
//! renewal, and an extend that fails or is cancelled never leaves renewal on the old
//! schedule.
//!
//! - `renewal_keeps_a_short_ttl_lock_for_5s`: a 300 ms lock held for 5 s must never lapse.
//! - `manual_extend_and_lost_extend`: a lock without renewal, extended by hand past its
//!   ttl; an extend after a forced release must say lost.
//! - `extend_shorter_keeps_renewing_on_the_new_schedule`: after a shortening extend the
//!   next renewal must come at a third of the *new* ttl, or Redis drops the lock first.
//! - `a_failed_or_cancelled_shortening_extend_keeps_renewal_going`: the shortening
//!   extend's reply is late (an error) or its future is dropped; Redis may have applied
//!   the short ttl, so renewal must follow it anyway.
//! - `renewals_of_one_round_go_together_and_keep_every_lock`: 200 leases due in the same
//!   keeper rounds are renewed in fewer script calls than renewals (one call carries
//!   many), every lock stays held with a ttl, and no wait marker appears for a lock
//!   nobody waits for.

mod common;

use std::time::Duration;

use bidlock::AcquireOptions;
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use tokio::time::Instant;

use common::{key, redis_manager_with_timeout, until, Fx};

on_both_backends!(
    renewal_keeps_a_short_ttl_lock_for_5s,
    manual_extend_and_lost_extend,
);

async fn renewal_keeps_a_short_ttl_lock_for_5s(fx: Fx) {
    let k = key("renew");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().ttl(Duration::from_secs(1)))
        .await
        .unwrap();
    let other = fx.instance().await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        assert!(other.try_acquire(&k, &AcquireOptions::new()).await.is_err());
        assert!(!g.is_lost());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if fx.is_redis() {
        assert!(
            fx.manager.metrics().extensions >= 10,
            "{:?}",
            fx.manager.metrics()
        );
    }
    assert!(g.release().await.unwrap());
}

async fn manual_extend_and_lost_extend(fx: Fx) {
    let k = key("extend");
    let g = fx
        .manager
        .acquire(
            &k,
            &AcquireOptions::new()
                .ttl(Duration::from_millis(500))
                .renew(false),
        )
        .await
        .unwrap();
    g.extend(Duration::from_secs(30)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!g.is_lost());
    let left = fx.manager.status(&k).await.unwrap().ttl_left_ms.unwrap();
    assert!(left > 20_000, "{left}");
    assert!(fx.manager.force_release(&k).await.unwrap());
    let err = g.extend(Duration::from_secs(30)).await.unwrap_err();
    assert!(err.is_lost(), "{err}");
    assert!(g.is_lost());
}

/// Any extend reschedules renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_shorter_keeps_renewing_on_the_new_schedule() {
    let s = RedisServer::start();
    let m1 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
    let m2 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
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

/// A shortening extend that fails (reply late: a backend error) or is cancelled (dropped
/// by a timeout or `select!`) lowers the deadline; if it left the next renewal at its old
/// time (a third of the OLD ttl), Redis would apply the short ttl, the lock would expire
/// while the renewing guard lives, and `lost()` would resolve only at the old renewal
/// time (10 s here). (Review of the issue-12 fixes, R5: only an extend whose reply was
/// applied rescheduled the keeper.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_shortening_extend_keeps_renewal_going() {
    let s = RedisServer::start();
    let p = FaultProxy::start(s.port()).await;
    let m1 = redis_manager_with_timeout(&p.url(), Duration::from_millis(300)).await;
    let m2 = redis_manager_with_timeout(&s.url(), Duration::from_secs(2)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_of_one_round_go_together_and_keep_every_lock() {
    let s = RedisServer::start();
    let m = common::redis_manager(&s.url()).await;
    let opts = AcquireOptions::new().ttl(Duration::from_millis(900));
    let keys: Vec<_> = (0..200).map(|i| key(&format!("round-{i}"))).collect();
    let taken = futures_util::future::join_all(keys.iter().map(|k| m.acquire(k, &opts))).await;
    let guards: Vec<_> = taken.into_iter().map(|g| g.unwrap()).collect();
    let _: () = s.cmd(&["CONFIG", "RESETSTAT"]);
    let before = m.metrics().extensions;
    // Five renewal periods (a third of 900 ms each).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let renewals = m.metrics().extensions - before;
    let stats: String = s.cmd(&["INFO", "commandstats"]);
    let script_calls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(renewals >= 200, "{renewals} renewals of 200 leases");
    assert!(
        script_calls < renewals,
        "renewals not batched: {script_calls} script calls for {renewals} renewals"
    );
    for (g, k) in guards.iter().zip(&keys) {
        assert!(!g.is_lost(), "{k} lost");
        let pttl: i64 = s.cmd(&["PTTL", &format!("bid_lock:{k}")]);
        assert!(pttl > 0, "{k}: pttl {pttl}");
    }
    assert_eq!(
        s.cmd::<i64>(&["DBSIZE"]),
        201,
        "the locks and the fencing counter, no wait marker"
    );
    for g in guards {
        assert!(g.release().await.unwrap());
    }
}
