//! Fixtures shared by the integration tests: a manager on memory or on a real
//! redis-server started for the test.

#![allow(dead_code, unreachable_pub)]

pub mod checker;

use std::time::Duration;

use bidlock::{Backend, BidLockManager, Config, ConfigBuilder, RetryPolicy};
use bidlock_testkit::RedisServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Memory,
    Redis,
}

/// One test's backend. For Redis, every `instance()` is a separate manager (as separate
/// processes would be); for memory, instances share one store, as tasks of one process.
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
        _ => b.backend(Backend::Memory),
    }
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

    /// Another instance on the same backend.
    pub async fn instance(&self) -> BidLockManager {
        match self.which {
            Which::Memory => self.manager.clone(),
            Which::Redis => BidLockManager::new(self.manager.config().clone())
                .await
                .unwrap(),
        }
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
