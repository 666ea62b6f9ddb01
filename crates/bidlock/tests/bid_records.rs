//! `bid_once` when Redis fails right after the bid: the record is written by a spawned
//! task if the caller stops waiting, and `Unrecorded` tells the caller when it could not
//! be written. Both forced with a fault proxy between the manager and a real Redis, so
//! neither depends on a random fault landing at the right moment.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, BidOutcome};
use bidlock_testkit::{Fault, FaultProxy, RedisServer};
use common::{key, redis_manager, redis_manager_with_timeout, until};
use tokio::sync::Notify;

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
