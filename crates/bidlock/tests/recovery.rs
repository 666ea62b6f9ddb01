//! Recovery (docs/GUARANTEES.md, "What each mode survives": one Redis survives a
//! restart): operations during a Redis restart fail as "unknown", never as "held", and
//! work again once it is back; a `SCRIPT FLUSH` mid-run costs nothing but a reload.

mod common;

use std::time::Duration;

use bidlock::{AcquireOptions, BidLockManager};
use bidlock_testkit::RedisServer;

use common::{key, server_config, Fx, Which};

#[tokio::test]
async fn redis_restart_between_and_during_operations() {
    let mut server = RedisServer::start();
    let m = BidLockManager::new(server_config(&server).build().unwrap())
        .await
        .unwrap();
    let g = m
        .acquire(
            &key("r1"),
            &AcquireOptions::new().ttl(Duration::from_millis(900)),
        )
        .await
        .unwrap();
    let t1 = g.fencing_token();
    server.kill();
    // While Redis is down: typed errors, counted, never "acquired", no panic.
    let err = m
        .acquire(&key("r2"), &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_backend() && err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&server.url()), "{err}");
    assert!(!m.health_check().await);
    assert!(m.metrics().redis_errors >= 1);
    // The held lease cannot be renewed: it is reported lost before its ttl runs out.
    tokio::time::timeout(Duration::from_secs(3), g.lost())
        .await
        .expect("lease not lost");
    assert!(g.is_lost());
    drop(g);
    server.restart();
    // The manager recovers by itself.
    let g2 = common::acquire_eventually(
        &m,
        &key("r2"),
        &AcquireOptions::new(),
        Duration::from_secs(15),
    )
    .await;
    assert!(m.health_check().await);
    // Data was lost with the restart (no persistence), yet tokens keep increasing: the
    // counter is re-seeded from the server clock.
    assert!(g2.fencing_token() > t1, "{} <= {t1}", g2.fencing_token());
    assert!(g2.release().await.unwrap());
}

#[tokio::test]
async fn script_flush_mid_run_is_harmless() {
    let fx = Fx::new(Which::Redis).await;
    for i in 0..5 {
        let g = fx
            .manager
            .acquire(&key("flush"), &AcquireOptions::new())
            .await
            .unwrap();
        let _: () = fx.server().cmd(&["SCRIPT", "FLUSH"]);
        g.extend(Duration::from_secs(10)).await.unwrap();
        let _: () = fx.server().cmd(&["SCRIPT", "FLUSH"]);
        assert!(g.release().await.unwrap(), "round {i}");
    }
    assert_eq!(fx.manager.metrics().redis_errors, 0);
}
