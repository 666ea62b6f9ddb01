//! Guarantee: **exactly once, or told** (docs/GUARANTEES.md). Once `bid_once`'s
//! closure returned `Ok`, the completion record is written whoever holds the lock by
//! then (retried on transient errors, finished in a task if the caller leaves); the
//! outcome is `Placed`, `PlacedAfterLoss` or `Unrecorded` with the reason, never silence.
//! A posting runs twice only after the caller was told.
//!
//! - `bid_once_runs_once_across_16_instances`: 16 managers race for the same postings;
//!   each must be bid once.
//! - `bid_once_after_failure_runs_again`: a failed closure records nothing, so another
//!   instance may try.
//! - `completion_records_expire`: records keep their retention ttl.
//! - `bid_once_records_a_bid_whose_lease_lapsed`: the lease lapses while the closure
//!   runs and another holder takes the lock; the record must still be written and the
//!   outcome be `PlacedAfterLoss`.
//! - `a_bid_once_dropped_after_its_bid_still_records`: the caller drops the future while
//!   the completion is cut off by the fault proxy; the spawned completion must record it.
//! - `a_bid_whose_record_cannot_be_written_is_reported_unrecorded`: Redis stays away
//!   longer than the retries; the caller must get `Unrecorded` and no record exists.
//!
//! A completion record lost with Redis' data is a stated limit (`stated_limits.rs`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, BidOutcome};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use tokio::sync::Notify;
use tokio::time::Instant;

use common::{key, redis_manager, redis_manager_with_timeout, until, Fx};

on_both_backends!(
    bid_once_runs_once_across_16_instances,
    bid_once_after_failure_runs_again,
    completion_records_expire,
    bid_once_records_a_bid_whose_lease_lapsed,
);

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

/// `bid_once` records the bid once the closure succeeded, whoever holds the lock.
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
                        Err(e) if e.is_not_acquired() && Instant::now() < deadline => {
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

/// The bid returns `Ok` as the link goes dark, and the caller drops the `bid_once`
/// future while its completion is stuck. The bytes of that completion die with the
/// connection; only the completion the drop spawned can write the record once the link
/// heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_once_dropped_after_its_bid_still_records() {
    let s = RedisServer::start();
    let proxy = Arc::new(FaultProxy::start(s.port()).await);
    let m = redis_manager_with_timeout(&proxy.url(), Duration::from_secs(1)).await;
    let k = key("dropped-after-bid");
    let placed = Arc::new(Notify::new());
    let opts = AcquireOptions::new();
    let bid = {
        let (proxy, placed) = (proxy.clone(), placed.clone());
        m.bid_once(&k, &opts, move |_lease| async move {
            proxy.set(Fault::Blackhole);
            placed.notify_one();
            Ok::<_, std::io::Error>("bid")
        })
    };
    tokio::select! {
        outcome = bid => panic!("bid_once finished through a blackhole: {outcome:?}"),
        _ = async {
            placed.notified().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        } => {}
    }
    // The future is gone. Cut the connections (their queued bytes are lost), then heal.
    proxy.drop_connections();
    assert_eq!(
        s.cmd::<i64>(&["EXISTS", "bid_done:upwork:dropped-after-bid"]),
        0
    );
    proxy.set(Fault::None);
    until(
        Duration::from_secs(5),
        "the spawned completion's record",
        || s.cmd::<i64>(&["EXISTS", "bid_done:upwork:dropped-after-bid"]) == 1,
    )
    .await;
    // Written with the release: the lock is gone, and the posting is done for everyone.
    assert_eq!(
        s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:dropped-after-bid"]),
        0
    );
    let other = redis_manager(&s.url()).await;
    let again = other
        .bid_once(&k, &AcquireOptions::new(), |_| async {
            Ok::<_, std::io::Error>("again")
        })
        .await;
    assert!(
        again.as_ref().is_err_and(|e| e.is_already_done()),
        "{again:?}"
    );
}

/// The bid returns `Ok` and Redis stays unreachable for longer than completion retries
/// (twice the response timeout): the caller gets `Unrecorded` with the bid's value and
/// the reason, and indeed no record exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_whose_record_cannot_be_written_is_reported_unrecorded() {
    let s = RedisServer::start();
    let proxy = Arc::new(FaultProxy::start(s.port()).await);
    let m = redis_manager_with_timeout(&proxy.url(), Duration::from_millis(300)).await;
    let k = key("unrecorded");
    let started = tokio::time::Instant::now();
    let outcome = {
        let proxy = proxy.clone();
        m.bid_once(&k, &AcquireOptions::new(), move |_lease| async move {
            proxy.set(Fault::Refuse);
            proxy.drop_connections();
            Ok::<_, std::io::Error>(42)
        })
        .await
        .unwrap()
    };
    let took = started.elapsed();
    match &outcome {
        BidOutcome::Unrecorded { value, error } => {
            assert_eq!(*value, 42);
            assert!(error.is_retryable(), "a connection error: {error}");
        }
        other => panic!("expected Unrecorded, got {other:?}"),
    }
    assert!(outcome.is_placed());
    // It gave up within its bound (2 x 300 ms, plus one last try), not at once.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    proxy.set(Fault::None);
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_done:upwork:unrecorded"]), 0);
}
