//! An acquire's wait bounds everything it does, and only the lock being held by someone
//! else, for the whole wait, ends it with "not acquired": a try is cut at the deadline,
//! and a transient backend error during the wait is retried until the deadline (issue 21).

mod common;

use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::RedisServer;
use common::{key, redis_manager_with_timeout as manager, server_config, Fx};

on_both_backends!(timeout_returns_not_acquired);

async fn timeout_returns_not_acquired(fx: Fx) {
    let k = key("timeout");
    let g = fx
        .manager
        .acquire(&k, &AcquireOptions::new().holder("busy-holder"))
        .await
        .unwrap();
    let other = fx.instance().await;
    let start = tokio::time::Instant::now();
    let err = other
        .acquire(
            &k,
            &AcquireOptions::new().timeout(Duration::from_millis(400)),
        )
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(err.is_not_acquired(), "{err}");
    assert!(err.to_string().contains("busy-holder"), "{err}");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Zero wait tries exactly once.
    let err = other
        .try_acquire(&k, &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_not_acquired());
    assert_eq!(other.metrics().lock_timeouts, 2);
    drop(g);
}

/// Redis stops answering (SIGSTOP): an acquire that may wait 1 s returns a backend error
/// soon after 1 s, not after the 5 s response timeout, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_is_cut_at_the_acquires_deadline() {
    let s = RedisServer::start();
    let m = manager(&s.url(), Duration::from_secs(5)).await;
    assert!(s.pause());
    let t = Instant::now();
    let e = m
        .acquire(
            &key("paused"),
            &AcquireOptions::new().timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    let took = t.elapsed();
    s.resume();
    assert!(e.is_backend() && e.is_retryable(), "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    // The response timeout (5 s) never came into it.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // The cut try's lock, if the server took it after all, is let go in the background.
    let m2 = manager(&s.url(), Duration::from_secs(2)).await;
    let g = common::acquire_eventually(
        &m2,
        &key("paused"),
        &AcquireOptions::new(),
        Duration::from_secs(5),
    )
    .await;
    assert!(g.release().await.unwrap());
}

/// Redis restarts while a waiter waits: the waiter's tries fail for a while, and it keeps
/// waiting, and takes the lock once the server is back (a restart without persistence
/// freed it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_outlives_a_redis_restart() {
    let mut s = RedisServer::start();
    let (holder, waiter) = (
        manager(&s.url(), Duration::from_secs(1)).await,
        manager(&s.url(), Duration::from_secs(1)).await,
    );
    let k = key("restart");
    let _g = holder.acquire(&k, &AcquireOptions::new()).await.unwrap();
    let waiting = {
        let k = k.clone();
        let w = waiter.clone();
        tokio::spawn(async move {
            w.acquire(&k, &AcquireOptions::new().timeout(Duration::from_secs(30)))
                .await
        })
    };
    common::until(Duration::from_secs(5), "the waiter to try", || {
        waiter.metrics().lock_busy_tries >= 1
    })
    .await;
    s.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.restart();
    let g = waiting
        .await
        .unwrap()
        .expect("the waiter gave up on a transient error");
    assert!(waiter.metrics().redis_errors >= 1, "{:?}", waiter.metrics());
    assert!(g.release().await.unwrap());
}

#[tokio::test]
async fn waiters_keep_working_across_a_restart() {
    let mut server = RedisServer::start();
    let m = BidLockManager::new(server_config(&server).build().unwrap())
        .await
        .unwrap();
    let g = m
        .acquire(
            &key("w"),
            &AcquireOptions::new().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let m2 = m.clone();
    let waiter = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match m2
                .acquire(
                    &key("w"),
                    &AcquireOptions::new().timeout(Duration::from_secs(20)),
                )
                .await
            {
                Ok(g) => return g.fencing_token(),
                Err(e) if e.is_backend() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart(); // the lock is gone with the data
    let token = tokio::time::timeout(Duration::from_secs(25), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(token > g.fencing_token());
    drop(g);
}

/// A wait that ends while the backend is still failing reports the backend's error (the
/// CLI's exit 69), not "not acquired" (75): nobody was seen holding the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_ends_on_errors_reports_the_error_not_a_timeout() {
    let mut s = RedisServer::start();
    let m = manager(&s.url(), Duration::from_millis(300)).await;
    s.kill();
    let e = m
        .acquire(
            &key("down"),
            &AcquireOptions::new().timeout(Duration::from_millis(800)),
        )
        .await
        .unwrap_err();
    assert!(!e.is_not_acquired(), "{e}");
    assert!(e.is_backend(), "{e}");
}
