//! Redis-specific behaviour against real redis-server processes: compatibility with the
//! original system and redis-py's Lock, faults (restart, SCRIPT FLUSH), auth, the
//! auto-detecting factory, and keys that are not ours.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, ConfigBuilder, LockKey};
use bidlock_testkit::{dead_port, RedisServer, ServerOptions};
use common::{Fx, Which};
use tokio::time::Instant;

fn key(p: &str) -> LockKey {
    LockKey::new("upwork", p).unwrap()
}

fn cfg(server: &RedisServer) -> ConfigBuilder {
    common::base_config(Which::Redis, Some(server))
}

/// The compare-and-delete of redis-py's `Lock.release` (and of the original system).
const REDIS_PY_RELEASE: &str = "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 \
     else redis.call('del', KEYS[1]) return 1 end";

#[tokio::test]
async fn layout_matches_the_original_system() {
    let fx = Fx::new(Which::Redis).await;
    let s = fx.server();
    let g = fx
        .manager
        .acquire(
            &key("job_123"),
            &AcquireOptions::new()
                .holder("instance-1")
                .ttl(Duration::from_secs(300)),
        )
        .await
        .unwrap();
    // What the original guide tells operators to run.
    let holder: String = s.cmd(&["GET", "bid_lock:upwork:job_123"]);
    assert_eq!(holder, "instance-1");
    let ttl: i64 = s.cmd(&["TTL", "bid_lock:upwork:job_123"]);
    assert!((290..=300).contains(&ttl), "{ttl}");
    let keys: Vec<String> = s.cmd(&["KEYS", "bid_lock:*"]);
    assert_eq!(keys, vec!["bid_lock:upwork:job_123".to_owned()]);
    // The fencing counter lives outside the bid_lock:* pattern.
    let fence: u64 = s.cmd(&["GET", "bid_lock_fence"]);
    assert_eq!(fence, g.fencing_token().get());
    drop(g);
}

#[tokio::test]
async fn foreign_set_nx_px_lock_excludes_bidlock_and_vice_versa() {
    let fx = Fx::new(Which::Redis).await;
    let s = fx.server();
    // A redis-py Lock / original-system instance takes the lock.
    let ok: Option<String> = s.cmd(&[
        "SET",
        "bid_lock:upwork:shared",
        "py-token-1",
        "NX",
        "PX",
        "5000",
    ]);
    assert_eq!(ok.as_deref(), Some("OK"));
    let err = fx
        .manager
        .try_acquire(&key("shared"), &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert!(err.to_string().contains("py-token-1"), "{err}");
    // bidlock cannot release it with a wrong holder...
    assert!(!fx
        .manager
        .release(&key("shared"), &"wrong".into())
        .await
        .unwrap());
    // ...and redis-py releases it with its own compare-and-delete.
    let n: i64 = s.cmd(&[
        "EVAL",
        REDIS_PY_RELEASE,
        "1",
        "bid_lock:upwork:shared",
        "py-token-1",
    ]);
    assert_eq!(n, 1);
    // Now bidlock holds it, and SET NX by the other system fails.
    let g = fx
        .manager
        .try_acquire(&key("shared"), &AcquireOptions::new())
        .await
        .unwrap();
    let taken: Option<String> = s.cmd(&[
        "SET",
        "bid_lock:upwork:shared",
        "py-token-2",
        "NX",
        "PX",
        "5000",
    ]);
    assert_eq!(taken, None);
    // redis-py's compare-and-delete with the wrong token leaves bidlock's lock alone.
    let n: i64 = s.cmd(&[
        "EVAL",
        REDIS_PY_RELEASE,
        "1",
        "bid_lock:upwork:shared",
        "py-token-2",
    ]);
    assert_eq!(n, 0);
    // And with bidlock's holder id (the original system's release_lock(holder_id)) it works.
    let n: i64 = s.cmd(&[
        "EVAL",
        REDIS_PY_RELEASE,
        "1",
        "bid_lock:upwork:shared",
        g.holder().as_str(),
    ]);
    assert_eq!(n, 1);
    assert!(g.is_lost() || !g.release().await.unwrap());
}

#[tokio::test]
async fn waiter_wakes_when_a_foreign_client_deletes_the_lock_after_ttl() {
    // A foreign holder's ttl runs out: no release message, the pttl hint wakes the waiter.
    let fx = Fx::with(Which::Redis, |b| b.retry(common::no_polling())).await;
    let _: Option<String> =
        fx.server()
            .cmd(&["SET", "bid_lock:upwork:expiring", "py", "NX", "PX", "400"]);
    let start = Instant::now();
    let g = fx
        .manager
        .acquire(
            &key("expiring"),
            &AcquireOptions::new().timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(g);
}

#[tokio::test]
async fn redis_restart_between_and_during_operations() {
    let mut server = RedisServer::start();
    let m = BidLockManager::new(cfg(&server).build().unwrap())
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
async fn waiters_keep_working_across_a_restart() {
    let mut server = RedisServer::start();
    let m = BidLockManager::new(cfg(&server).build().unwrap())
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
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match m2
                .acquire(
                    &key("w"),
                    &AcquireOptions::new().timeout(Duration::from_secs(20)),
                )
                .await
            {
                Ok(g) => return g.fencing_token(),
                Err(e) if e.is_backend() && Instant::now() < deadline => {
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

#[tokio::test]
async fn password_and_acl_user() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("s3cret-pw".into()),
        acl_user: Some(("bidder".into(), "acl-pw".into())),
        ..Default::default()
    });
    // requirepass via the URL.
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", server.port());
    let m = BidLockManager::new(
        Config::builder()
            .backend(Backend::Redis)
            .redis_url(url)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(m.health_check().await);
    // ACL user and password from the environment form.
    let env = HashMap::from([
        ("REDIS_HOST", "127.0.0.1".to_owned()),
        ("REDIS_PORT", server.port().to_string()),
        ("REDIS_USERNAME", "bidder".to_owned()),
        ("REDIS_PASSWORD", "acl-pw".to_owned()),
        ("USE_REDIS_LOCKS", "true".to_owned()),
    ]);
    let c = ConfigBuilder::from_lookup(|k| env.get(k).cloned())
        .unwrap()
        .build()
        .unwrap();
    let m2 = BidLockManager::new(c).await.unwrap();
    let g = m2
        .acquire(&key("acl"), &AcquireOptions::new())
        .await
        .unwrap();
    assert!(format!("{m2:?}").contains("bidder:***@"));
    drop(g);
    // A wrong password: a clear error naming the URL, never the password.
    let bad = format!("redis://:wrong-pw@127.0.0.1:{}/0", server.port());
    let err = BidLockManager::new(
        Config::builder()
            .backend(Backend::Redis)
            .redis_url(bad)
            .build()
            .unwrap(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(
        msg.contains(&format!("redis://:***@127.0.0.1:{}/0", server.port())),
        "{msg}"
    );
    assert!(msg.contains("authentication"), "{msg}");
    assert!(
        !msg.contains("wrong-pw") && !msg.contains("s3cret-pw"),
        "{msg}"
    );
    // No password at all.
    let no_auth = Config::builder()
        .backend(Backend::Redis)
        .redis_url(server.url())
        .build()
        .unwrap();
    let err = BidLockManager::new(no_auth).await.unwrap_err();
    assert!(err.is_backend(), "{err}");
    assert!(err.to_string().contains("authentication"), "{err}");
}

#[tokio::test]
async fn factory_auto_detects_and_forces() {
    let server = RedisServer::start();
    let env = |pairs: &[(&str, String)]| {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        ConfigBuilder::from_lookup(move |k| map.get(k).cloned())
            .unwrap()
            .build()
            .unwrap()
    };
    // Auto with Redis up.
    let m = BidLockManager::new(env(&[("REDIS_URL", server.url())]))
        .await
        .unwrap();
    assert_eq!(m.backend(), Backend::Redis);
    // Auto with Redis down: memory, quickly.
    let dead = format!("redis://127.0.0.1:{}/0", dead_port());
    let start = Instant::now();
    let m = BidLockManager::new(env(&[
        ("REDIS_URL", dead.clone()),
        ("USE_REDIS_LOCKS", "auto".into()),
    ]))
    .await
    .unwrap();
    assert_eq!(m.backend(), Backend::Memory);
    assert!(start.elapsed() < Duration::from_secs(3));
    // Forced Redis with Redis down: a clear error naming the URL.
    let err = BidLockManager::new(env(&[
        ("REDIS_URL", dead.clone()),
        ("USE_REDIS_LOCKS", "true".into()),
    ]))
    .await
    .unwrap_err();
    assert!(err.is_backend(), "{err}");
    assert!(err.to_string().contains(&dead), "{err}");
    // Forced memory even with Redis up.
    let m = BidLockManager::new(env(&[
        ("REDIS_URL", server.url()),
        ("USE_REDIS_LOCKS", "false".into()),
    ]))
    .await
    .unwrap();
    assert_eq!(m.backend(), Backend::Memory);
    // Components form.
    let m = BidLockManager::new(env(&[
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_PORT", server.port().to_string()),
        ("REDIS_DB", "3".into()),
    ]))
    .await
    .unwrap();
    assert_eq!(m.backend(), Backend::Redis);
    let g = m
        .acquire(&key("db3"), &AcquireOptions::new())
        .await
        .unwrap();
    let in_db0: i64 = server.cmd(&["EXISTS", "bid_lock:upwork:db3"]);
    assert_eq!(in_db0, 0, "the lock must be in db 3");
    drop(g);
}

#[tokio::test]
async fn a_key_of_another_type_is_never_overwritten() {
    let fx = Fx::new(Which::Redis).await;
    let s = fx.server();
    let _: i64 = s.cmd(&["HSET", "bid_lock:upwork:hash", "field", "value"]);
    let err = fx
        .manager
        .try_acquire(&key("hash"), &AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hash"), "{err}");
    assert!(!err.is_timeout());
    let err = fx
        .manager
        .release(&key("hash"), &"x".into())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a lock"), "{err}");
    let err = fx.manager.force_release(&key("hash")).await.unwrap_err();
    assert!(err.to_string().contains("not a lock"), "{err}");
    assert!(fx.manager.status(&key("hash")).await.is_err());
    // Listing skips it, cleanup leaves it.
    assert!(fx.manager.locks(None).await.unwrap().is_empty());
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 0);
    let v: String = s.cmd(&["HGET", "bid_lock:upwork:hash", "field"]);
    assert_eq!(v, "value");
}

#[tokio::test]
async fn cleanup_touches_only_its_own_prefix() {
    let fx = Fx::new(Which::Redis).await;
    let s = fx.server();
    for k in [
        "bid_lockx:a:b",
        "other:upwork:1",
        "bid_done:upwork:9",
        "bid_lock_fence_backup",
        "staging_lock:upwork:1",
    ] {
        let _: () = s.cmd(&["SET", k, "keep"]);
    }
    let staging = BidLockManager::new(cfg(s).prefix("staging_lock").build().unwrap())
        .await
        .unwrap();
    let gs = staging.acquire(&key("1"), &AcquireOptions::new()).await;
    assert!(
        gs.unwrap_err().is_timeout(),
        "staging_lock:upwork:1 is held by the foreign 'keep'"
    );
    for i in 0..1200 {
        let _: () = s.cmd(&[
            "SET",
            &format!("bid_lock:upwork:bulk{i}"),
            "h",
            "PX",
            "60000",
        ]);
    }
    // SCAN in batches removes all 1200, and nothing else.
    assert_eq!(fx.manager.cleanup_all().await.unwrap(), 1200);
    let left: Vec<String> = s.cmd(&["KEYS", "*"]);
    let mut left: Vec<_> = left.into_iter().filter(|k| k != "bid_lock_fence").collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "bid_done:upwork:9",
            "bid_lock_fence_backup",
            "bid_lockx:a:b",
            "other:upwork:1",
            "staging_lock:upwork:1",
            // The staging acquire found the foreign lock held: its expiring wait marker.
            "staging_lock_wait:upwork:1"
        ]
    );
}

#[tokio::test]
async fn two_instances_never_overlap_under_contention() {
    let fx = Fx::new(Which::Redis).await;
    let managers = vec![fx.manager.clone(), fx.instance().await, fx.instance().await];
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, m) in managers.into_iter().enumerate() {
        for t in 0..6 {
            let (m, log) = (m.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..15 {
                    m.with_lock(
                        &key("shared-hot"),
                        &AcquireOptions::new().timeout(Duration::from_secs(60)),
                        |lease| {
                            let log = log.clone();
                            async move {
                                let start = std::time::Instant::now();
                                tokio::time::sleep(Duration::from_micros(300)).await;
                                log.lock().unwrap().push((
                                    start,
                                    std::time::Instant::now(),
                                    lease.fencing_token(),
                                    i * 10 + t,
                                ));
                            }
                        },
                    )
                    .await
                    .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3 * 6 * 15);
    log.sort_by_key(|e| e.0);
    for w in log.windows(2) {
        assert!(w[0].1 <= w[1].0, "sections overlap");
        assert!(w[0].2 < w[1].2, "tokens must increase in holding order");
    }
}

#[tokio::test]
async fn a_server_that_is_not_redis_is_named_as_such() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // An HTTP server answers whatever it is sent with an HTTP response.
    tokio::spawn(async move {
        for _ in 0..20 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(format!("redis://127.0.0.1:{port}/0"))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let e = BidLockManager::new(cfg).await.unwrap_err();
    assert!(e.is_backend(), "{e}");
    assert!(e.to_string().contains("not in the Redis protocol"), "{e}");
}
