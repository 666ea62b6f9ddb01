//! Connecting (docs/REDIS.md, "Configuration"): the factory picks the backend the
//! configuration asks for (auto: Redis if reachable, else memory with one WARN), connects
//! with a user and password, never shows the password, and names what it found when the
//! server is not Redis.
//!
//! - `factory_auto_detects_and_forces`: auto, forced Redis and forced memory, with Redis
//!   up, down and configured in each way the environment allows.
//! - `health_check_is_false_after_a_fallback_to_memory`: a fallback is not "healthy Redis".
//! - `password_and_acl_user`, `passwords_never_reach_logs_errors_or_debug`: ACL users and
//!   passwords work and never appear in logs, errors or `Debug` output.
//! - `a_server_that_is_not_redis_is_named_as_such`: a port that answers something else.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, ConfigBuilder, LockKey};
use bidlock_testkit::{dead_port, RedisServer, ServerOptions};

use common::key;

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    let start = tokio::time::Instant::now();
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
async fn health_check_is_false_after_a_fallback_to_memory() {
    let dead = bidlock_testkit::dead_port();
    let cfg = Config::builder()
        .backend(Backend::Auto)
        .redis_url(format!("redis://127.0.0.1:{dead}/0"))
        .detect_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let m = BidLockManager::new(cfg).await.unwrap();
    assert_eq!(m.backend(), Backend::Memory);
    assert!(m.is_fallback());
    assert!(!m.health_check().await);
    let explicit = BidLockManager::new(Config::builder().backend(Backend::Memory).build().unwrap())
        .await
        .unwrap();
    assert!(explicit.health_check().await);
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

#[test]
fn passwords_never_reach_logs_errors_or_debug() {
    let server = RedisServer::start_with(ServerOptions {
        password: Some("pa55-secret-word".into()),
        ..Default::default()
    });
    let good = format!("redis://:pa55-secret-word@127.0.0.1:{}/0", server.port());
    let bad = format!("redis://:wrong-secret-word@127.0.0.1:{}/0", server.port());
    // One thread: the subscriber below is this thread's default, so every task the
    // library spawns must run here for its logs to be captured (other tests of this
    // binary run on other threads at the same time).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Capture everything the library logs at the most verbose level.
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let buf = buf.clone();
        move || LogWriter(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(writer)
        .finish();
    let text = tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let mut seen = String::new();
            let m = common::redis_manager(&good).await;
            let g = m
                .acquire(&LockKey::new("sec", "pw").unwrap(), &AcquireOptions::new())
                .await
                .unwrap();
            seen.push_str(&format!("{m:?} {:?} {g:?}", m.config()));
            g.release().await.unwrap();
            let cfg = Config::builder()
                .backend(Backend::Redis)
                .redis_url(&bad)
                .build()
                .unwrap();
            let e = BidLockManager::new(cfg).await.unwrap_err();
            seen.push_str(&format!("{e} {e:?}"));
            let cfg = Config::builder()
                .backend(Backend::Auto)
                .redis_url(&bad)
                .build()
                .unwrap();
            let m2 = BidLockManager::new(cfg).await.unwrap();
            seen.push_str(&format!("{m2:?}"));
            seen
        })
    });
    let logs = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    let all = format!("{text}\n{logs}");
    assert!(
        logs.contains("bid lock manager ready"),
        "logs were not captured"
    );
    assert!(all.contains(":***@"), "{all}");
    assert!(!all.contains("pa55-secret-word"), "{all}");
    assert!(!all.contains("wrong-secret-word"), "{all}");
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
