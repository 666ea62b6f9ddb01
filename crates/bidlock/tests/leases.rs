//! Fencing tokens, renewed leases with loss reporting, and exactly-once bids — on both
//! backends.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, FencingToken, LockKey};
use common::Fx;
use tokio::time::Instant;

fn key(p: &str) -> LockKey {
    LockKey::new("upwork", p).unwrap()
}

on_both_backends!(
    tokens_strictly_increase_across_holders_and_managers,
    renewal_keeps_a_short_ttl_lock_for_5s,
    deleted_lock_is_reported_lost,
    paused_holder_loses_to_a_higher_token,
    bid_once_runs_once_across_16_instances,
    bid_once_after_failure_runs_again,
    completion_records_expire,
    manual_extend_and_lost_extend,
    with_lock_hands_the_lease_to_the_closure,
);

async fn tokens_strictly_increase_across_holders_and_managers(fx: Fx) {
    let mut last: Option<FencingToken> = None;
    for round in 0..3 {
        // A fresh manager each round: a restarted instance.
        let m = fx.instance().await;
        for i in 0..20 {
            let k = key(&format!("t{}", i % 4));
            let g = m.acquire(&k, &AcquireOptions::new()).await.unwrap();
            let t = g.fencing_token();
            assert!(
                last.is_none_or(|l| t > l),
                "round {round} key {k}: {t} after {last:?}"
            );
            last = Some(t);
            g.release().await.unwrap();
        }
    }
    // Concurrent acquirers on many keys never see the same token twice.
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let m = fx.instance().await;
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let g = m
                    .acquire(
                        &key(&format!("c{}", (t + i) % 8)),
                        &AcquireOptions::new().timeout(Duration::from_secs(30)),
                    )
                    .await
                    .unwrap();
                assert!(seen.lock().unwrap().insert(g.fencing_token()));
                g.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(seen.lock().unwrap().len(), 16 * 25);
}

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

async fn deleted_lock_is_reported_lost(fx: Fx) {
    for steal in [false, true] {
        let k = key(if steal { "stolen" } else { "deleted" });
        let g = fx
            .manager
            .acquire(&k, &AcquireOptions::new().ttl(Duration::from_millis(600)))
            .await
            .unwrap();
        let lost = g.lost();
        let t0 = Instant::now();
        match (&fx.server, steal) {
            (Some(s), false) => {
                let _: i64 = s.cmd(&["DEL", "bid_lock:upwork:deleted"]);
            }
            (Some(s), true) => {
                let _: () = s.cmd(&["SET", "bid_lock:upwork:stolen", "thief", "PX", "60000"]);
            }
            (None, _) => {
                assert!(fx.manager.force_release(&k).await.unwrap());
                if steal {
                    let _thief = fx
                        .manager
                        .acquire(&k, &AcquireOptions::new().holder("thief"))
                        .await
                        .unwrap();
                    tokio::time::timeout(Duration::from_secs(1), lost)
                        .await
                        .expect("lost not reported");
                    assert!(g.is_lost());
                    continue;
                }
            }
        }
        // Within one renewal period (ttl/3 = 200 ms) plus a round trip and slack.
        tokio::time::timeout(Duration::from_millis(500), lost)
            .await
            .expect("lost not reported within a renewal period");
        assert!(g.is_lost());
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert!(g.lease().lost_reason().is_some());
        // Releasing a lost lock changes nothing (the thief keeps it).
        assert!(!g.release().await.unwrap());
        if steal {
            if let Some(s) = &fx.server {
                let v: String = s.cmd(&["GET", "bid_lock:upwork:stolen"]);
                assert_eq!(v, "thief");
            }
        }
    }
    assert!(fx.manager.metrics().locks_lost >= 2);
}

/// A marketplace-side guard: refuses a bid whose token is lower than one already seen
/// for the posting.
#[derive(Default)]
struct Ledger {
    highest: Mutex<HashMap<String, u64>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

impl Ledger {
    fn bid(&self, posting: &str, token: FencingToken) -> bool {
        let mut h = self.highest.lock().unwrap();
        let seen = h.entry(posting.to_owned()).or_insert(0);
        if token.get() < *seen {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        *seen = token.get();
        self.accepted.fetch_add(1, Ordering::SeqCst);
        true
    }
}

async fn paused_holder_loses_to_a_higher_token(fx: Fx) {
    let k = key("paused");
    let ledger = Ledger::default();
    // The first holder "pauses": no renewal, and it sleeps past its ttl.
    let first = fx
        .manager
        .acquire(
            &k,
            &AcquireOptions::new()
                .ttl(Duration::from_millis(300))
                .renew(false),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = fx.instance().await;
    let second = other.acquire(&k, &AcquireOptions::new()).await.unwrap();
    assert!(second.fencing_token() > first.fencing_token());
    assert!(ledger.bid("paused", second.fencing_token()));
    // The paused holder wakes up and bids late: refused by the token check.
    assert!(first.is_lost());
    assert!(!ledger.bid("paused", first.fencing_token()));
    assert_eq!(ledger.refused.load(Ordering::SeqCst), 1);
    assert!(!first.release().await.unwrap());
    assert!(second.release().await.unwrap());
}

async fn bid_once_runs_once_across_16_instances(fx: Fx) {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let m = fx.instance().await;
        let runs = runs.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for p in 0..10 {
                let r = m
                    .bid_once(
                        &key(&format!("once{p}")),
                        &AcquireOptions::new().timeout(Duration::from_secs(30)),
                        |lease| {
                            let runs = runs.clone();
                            async move {
                                runs.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                Ok::<_, String>(lease.fencing_token())
                            }
                        },
                    )
                    .await;
                outcomes.push(match r.map(bidlock::BidOutcome::into_result) {
                    Ok(Ok(_)) => "bid",
                    Err(e) if e.is_already_done() => "done",
                    other => panic!("unexpected {other:?}"),
                });
            }
            outcomes
        }));
    }
    let mut bids = 0;
    for t in tasks {
        bids += t.await.unwrap().iter().filter(|o| **o == "bid").count();
    }
    assert_eq!(runs.load(Ordering::SeqCst), 10);
    assert_eq!(bids, 10);
    assert!(fx.manager.is_done(&key("once3")).await.unwrap());
}

async fn bid_once_after_failure_runs_again(fx: Fx) {
    let k = key("retry");
    let opts = AcquireOptions::new();
    let r = fx
        .manager
        .bid_once(&k, &opts, |_| async {
            Err::<(), _>("marketplace said 503")
        })
        .await
        .unwrap();
    assert_eq!(r.into_result(), Err("marketplace said 503"));
    assert!(!fx.manager.is_done(&k).await.unwrap());
    let other = fx.instance().await;
    let r = other
        .bid_once(&k, &opts, |_| async { Ok::<_, String>(42) })
        .await
        .unwrap();
    assert_eq!(r.into_result(), Ok(42));
    let again = fx
        .manager
        .bid_once(&k, &opts, |_| async { Ok::<_, String>(0) })
        .await;
    assert!(again.unwrap_err().is_already_done());
    // A plain acquire of a completed posting is refused too, unless asked not to check.
    assert!(fx
        .manager
        .acquire(&k, &opts)
        .await
        .unwrap_err()
        .is_already_done());
    let g = fx
        .manager
        .acquire(&k, &opts.clone().check_done(false))
        .await
        .unwrap();
    g.release().await.unwrap();
    // Clearing the record allows bidding again.
    assert!(fx.manager.clear_done(&k).await.unwrap());
    assert!(fx.manager.acquire(&k, &opts).await.is_ok());
}

async fn completion_records_expire(fx: Fx) {
    let fx = Fx::with(fx.which, |b| b.done_retention(Duration::from_millis(400))).await;
    let k = key("retention");
    fx.manager
        .bid_once(&k, &AcquireOptions::new(), |_| async {
            Ok::<_, String>(())
        })
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert!(fx
        .manager
        .acquire(&k, &AcquireOptions::new())
        .await
        .unwrap_err()
        .is_already_done());
    let st = fx.manager.status(&k).await.unwrap();
    assert!(st.done.is_some() && st.done_ttl_left_ms.unwrap() <= 400);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new())
        .await
        .unwrap();
    g.release().await.unwrap();
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

async fn with_lock_hands_the_lease_to_the_closure(fx: Fx) {
    let k = key("ctx");
    let (token, holder) = fx
        .manager
        .with_lock(
            &k,
            &AcquireOptions::new().holder("agent-7"),
            |lease| async move {
                assert!(!lease.is_lost());
                (lease.fencing_token(), lease.holder().to_string())
            },
        )
        .await
        .unwrap();
    assert!(token.get() > 0);
    assert_eq!(holder, "agent-7");
    // The closure can stop when the lease is lost.
    let m = fx.manager.clone();
    let k2 = k.clone();
    let stopped = tokio::spawn(async move {
        m.with_lock(
            &k2,
            &AcquireOptions::new().ttl(Duration::from_millis(300)),
            |lease| async move {
                tokio::select! {
                    _ = lease.lost() => "stopped: lost",
                    _ = tokio::time::sleep(Duration::from_secs(30)) => "ran to the end",
                }
            },
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fx.manager.force_release(&k).await.unwrap());
    assert_eq!(stopped.await.unwrap(), "stopped: lost");
}
