//! Fixtures shared by the integration tests: a manager on memory or on a real
//! redis-server started for the test.

#![allow(dead_code, unreachable_pub)]

pub mod acl_users;
pub mod checker;
pub mod runtimes;

use std::time::Duration;

use bidlock::{
    AcquireOptions, Backend, BidLockManager, Config, ConfigBuilder, LockKey, RetryPolicy,
};
use bidlock_testkit::RedisServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Memory,
    Redis,
}

/// One test's backend. Every `instance()` is a separate manager, as separate processes
/// would be; in memory they share the store of the test's own prefix.
pub struct Fx {
    pub which: Which,
    pub server: Option<RedisServer>,
    pub manager: BidLockManager,
}

pub fn base_config(which: Which, server: Option<&RedisServer>) -> ConfigBuilder {
    let b = Config::builder()
        .response_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2));
    match (which, server) {
        (Which::Redis, Some(s)) => b.backend(Backend::Redis).redis_url(s.url_with_auth()),
        // The in-memory store is shared per prefix by the whole process (as one Redis is
        // by its clients): a prefix of its own keeps each test apart from the others.
        _ => b.backend(Backend::Memory).prefix(unique_prefix()),
    }
}

/// Log lines captured on the current thread (the runtime of a `#[tokio::test]`).
pub struct Logs {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.text().contains(needle)
    }
}

struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures DEBUG and above from bidlock on this thread until the result is dropped.
pub fn capture_logs() -> Logs {
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || SharedBuf(writer.clone()))
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    Logs {
        buf,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

/// A key prefix no other test of this process uses.
pub fn unique_prefix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("t{}", N.fetch_add(1, Ordering::Relaxed))
}

impl Fx {
    pub async fn new(which: Which) -> Fx {
        Fx::with(which, |b| b).await
    }

    pub async fn with(which: Which, f: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Fx {
        let server = (which == Which::Redis).then(RedisServer::start);
        let config = f(base_config(which, server.as_ref())).build().unwrap();
        let manager = BidLockManager::new(config).await.unwrap();
        assert_eq!(
            manager.backend(),
            if which == Which::Redis {
                Backend::Redis
            } else {
                Backend::Memory
            }
        );
        Fx {
            which,
            server,
            manager,
        }
    }

    /// Another instance on the same backend: a manager of its own (in memory it shares
    /// the store of the prefix, as another instance shares Redis).
    pub async fn instance(&self) -> BidLockManager {
        BidLockManager::new(self.manager.config().clone())
            .await
            .unwrap()
    }

    /// The lock's Redis key (the prefix differs per test in memory).
    pub fn lock_key(&self, key: &bidlock::LockKey) -> String {
        bidlock_testkit::keys::Names::classic(self.manager.config().key_prefix()).lock(key)
    }

    pub fn server(&self) -> &RedisServer {
        self.server.as_ref().unwrap()
    }

    pub fn is_redis(&self) -> bool {
        self.which == Which::Redis
    }
}

/// Acquires `key`, retrying while the backend is unavailable (a server or node coming
/// back, a failover), for at most `limit`. Any other error fails the test.
pub async fn acquire_eventually(
    m: &BidLockManager,
    key: &bidlock::LockKey,
    opts: &bidlock::AcquireOptions,
    limit: Duration,
) -> bidlock::LockGuard {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match m.acquire(key, opts).await {
            Ok(g) => return g,
            Err(e) if e.is_backend() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("not acquired within {limit:?}: {e}"),
        }
    }
}

/// A retry policy so slow that only a release signal can explain a quick handover.
pub fn no_polling() -> RetryPolicy {
    RetryPolicy::new(Duration::from_secs(30), 1.0, Duration::from_secs(30))
}

/// Generates `memory` and `redis` variants of each async test function
/// `async fn name(fx: Fx)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Fx::new(super::common::Which::Memory).await).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Fx::new(super::common::Which::Redis).await).await
                }
            )*
        }
    };
}

/// A posting of the `upwork` marketplace.
pub fn key(p: &str) -> LockKey {
    LockKey::new("upwork", p).unwrap()
}

/// The configuration of a manager on the Redis at `url`, defaults otherwise.
pub fn redis_config(url: &str) -> ConfigBuilder {
    Config::builder().backend(Backend::Redis).redis_url(url)
}

/// A manager on the Redis at `url` with the default settings.
pub async fn redis_manager(url: &str) -> BidLockManager {
    BidLockManager::new(redis_config(url).build().unwrap())
        .await
        .unwrap()
}

/// A manager on the Redis at `url` that gives up on a reply after `response_timeout`
/// (and on connecting after 2 s).
pub async fn redis_manager_with_timeout(url: &str, response_timeout: Duration) -> BidLockManager {
    let cfg = redis_config(url)
        .response_timeout(response_timeout)
        .connect_timeout(Duration::from_secs(2));
    BidLockManager::new(cfg.build().unwrap()).await.unwrap()
}

/// Polls `f` every 2 ms until it is true, for at most `limit`.
pub async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A manager on the Redis at `url` whose waiters never poll (response timeout 5 s): only
/// a grant, a release message or a queue refresh moves a waiter on, so only those can
/// explain a quick handover.
pub async fn no_polling_manager(url: &str) -> BidLockManager {
    let cfg = Config::builder()
        .backend(Backend::Redis)
        .redis_url(url)
        .response_timeout(Duration::from_secs(5))
        .retry(no_polling())
        .build()
        .unwrap();
    BidLockManager::new(cfg).await.unwrap()
}

/// The configuration of a test's manager on `server` (`base_config` for Redis).
pub fn server_config(server: &RedisServer) -> ConfigBuilder {
    base_config(Which::Redis, Some(server))
}

/// A memory manager's configuration with the prefix `prefix`.
pub fn memory_config(prefix: &str) -> Config {
    Config::builder()
        .backend(Backend::Memory)
        .prefix(prefix)
        .build()
        .unwrap()
}

/// Acquire options that wait up to `t`.
pub fn wait_for(t: Duration) -> AcquireOptions {
    AcquireOptions::new().timeout(t)
}

/// Acquires and releases `k`; returns the token it was given.
pub async fn token_of(m: &BidLockManager, k: &LockKey) -> u64 {
    let g = m.acquire(k, &AcquireOptions::new()).await.unwrap();
    let t = g.fencing_token().get();
    assert!(g.release().await.unwrap());
    t
}

/// The Redis names of the `upwork` posting `p` under the default prefix: its lock, its
/// handoff queue and its waiters' hash.
pub fn lock_of(p: &str) -> String {
    format!("bid_lock:upwork:{p}")
}

pub fn queue_of(p: &str) -> String {
    format!("bid_lock_queue:upwork:{p}")
}

pub fn waiters_of(p: &str) -> String {
    format!("bid_lock_waiters:upwork:{p}")
}

/// How many waiters are queued in Redis for the `upwork` posting `p`.
pub fn queue_len(s: &RedisServer, p: &str) -> i64 {
    let q = queue_of(p);
    match s.cmd::<String>(&["TYPE", &q]).as_str() {
        "zset" => s.cmd(&["ZCARD", &q]),
        // Absent, or junk of another type: nobody is queued.
        _ => 0,
    }
}

/// The holder id Redis shows for the `upwork` posting `p`.
pub fn holder_in_redis(s: &RedisServer, p: &str) -> Option<String> {
    s.cmd(&["GET", &lock_of(p)])
}

/// The marketplace id rule, restated independently of the implementation (for the
/// property tests).
pub fn valid_marketplace(m: &str) -> bool {
    (1..=64).contains(&m.len())
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}
