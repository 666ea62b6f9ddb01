//! Who takes the locks in a benchmark: bidlock itself, or a raw redis-rs client doing
//! what a hand-written lock does (`SET NX PX`, compare-and-delete), polling or spinning
//! while the lock is busy. One interface, so every workload runs the same loop for both.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, LockGuard, LockKey};

use crate::exit::{self, CliError};
use crate::Global;

/// The compare-and-delete every raw Redis lock uses to release.
const RAW_RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// What a raw client does while the lock is busy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawWait {
    /// Sleep this long, then try again (what most hand-written locks do).
    Poll(Duration),
    /// Try again at once, burning a core (the fastest a polling client can hand over).
    Spin,
}

impl RawWait {
    pub(crate) fn label(self) -> String {
        match self {
            RawWait::Poll(d) => format!("poll {} us", d.as_micros()),
            RawWait::Spin => "spin".to_owned(),
        }
    }
}

/// A raw redis-rs lock client on one multiplexed connection.
#[derive(Clone)]
pub(crate) struct RawClient {
    conn: redis::aio::MultiplexedConnection,
    release: Arc<redis::Script>,
    wait: RawWait,
    /// Requests sent (each `SET` try and each release is one round trip).
    calls: Arc<AtomicU64>,
}

/// One benchmark key: bidlock's and the raw client's name for it.
#[derive(Clone)]
pub(crate) struct BenchKey {
    pub(crate) lock: LockKey,
    raw: String,
}

impl BenchKey {
    pub(crate) fn new(posting: String) -> Result<BenchKey, CliError> {
        let raw = format!("bid_lock:raw:{posting}");
        Ok(BenchKey {
            lock: LockKey::new("bench", posting)?,
            raw,
        })
    }
}

/// A held lock of either kind.
pub(crate) enum Held {
    Lib(LockGuard),
    Raw { key: String, token: String },
}

/// bidlock or the raw baseline.
#[derive(Clone)]
pub(crate) enum Contender {
    Lib(BidLockManager),
    Raw(RawClient),
}

impl Contender {
    /// Takes `key` for `worker`; with `wait`, waits up to `limit` while it is busy.
    pub(crate) async fn take(
        &self,
        key: &BenchKey,
        worker: u32,
        wait: Option<Duration>,
    ) -> Option<Held> {
        match self {
            Contender::Lib(m) => {
                let opts = match wait {
                    Some(limit) => AcquireOptions::new().timeout(limit),
                    None => AcquireOptions::new().no_wait(),
                };
                m.acquire(&key.lock, &opts).await.ok().map(Held::Lib)
            }
            Contender::Raw(raw) => raw.take(key, worker, wait).await,
        }
    }

    /// Round trips to the backend so far (bidlock counts its own: `backend_calls`).
    pub(crate) fn round_trips(&self) -> u64 {
        match self {
            Contender::Lib(m) => m.metrics().backend_calls,
            Contender::Raw(raw) => raw.calls.load(Relaxed),
        }
    }

    /// How many of an uncontended pair's two operations run as a script: bidlock's
    /// acquire and release both do; the raw client's `SET NX PX` does not.
    pub(crate) fn scripted_per_pair(&self) -> f64 {
        match self {
            Contender::Lib(_) => 2.0,
            Contender::Raw(_) => 1.0,
        }
    }

    /// Releases; `true` when the lock was still held.
    pub(crate) async fn put(&self, held: Held) -> bool {
        match (self, held) {
            (_, Held::Lib(g)) => matches!(g.release().await, Ok(true)),
            (Contender::Raw(raw), Held::Raw { key, token }) => raw.put(&key, &token).await,
            (Contender::Lib(_), Held::Raw { .. }) => false,
        }
    }
}

impl RawClient {
    /// Connects to the same server, with the same credentials and db, as the manager.
    pub(crate) async fn connect(g: &Global, wait: RawWait) -> Result<RawClient, CliError> {
        let conn = raw_connection(g).await?;
        Ok(RawClient {
            conn,
            release: Arc::new(redis::Script::new(RAW_RELEASE)),
            wait,
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    async fn take(&self, key: &BenchKey, worker: u32, wait: Option<Duration>) -> Option<Held> {
        let token = format!("raw-{worker}-{:08x}", rand::random::<u32>());
        let deadline = wait.map(|w| Instant::now() + w);
        let mut conn = self.conn.clone();
        loop {
            self.calls.fetch_add(1, Relaxed);
            let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&key.raw)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(30_000)
                .query_async(&mut conn)
                .await;
            if matches!(set, Ok(Some(_))) {
                return Some(Held::Raw {
                    key: key.raw.clone(),
                    token,
                });
            }
            match deadline {
                Some(d) if Instant::now() < d => match self.wait {
                    RawWait::Poll(p) => tokio::time::sleep(p).await,
                    RawWait::Spin => tokio::task::yield_now().await,
                },
                _ => return None,
            }
        }
    }

    async fn put(&self, key: &str, token: &str) -> bool {
        let mut conn = self.conn.clone();
        self.calls.fetch_add(1, Relaxed);
        let del: redis::RedisResult<i64> = self
            .release
            .key(key)
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        matches!(del, Ok(1))
    }
}

/// A plain connection to the configured Redis: the same server, credentials and db as
/// the manager, read from the URL given (`--redis-url`, `REDIS_URL`, `REDIS_URLS`, or
/// `REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`), never from the redacted form.
pub(crate) async fn raw_connection(
    g: &Global,
) -> Result<redis::aio::MultiplexedConnection, CliError> {
    // The library checks the configuration first: what it refuses is refused here too.
    let cfg = g.config(true)?.build()?;
    let target = match cfg.redis_targets().first() {
        Some(t) => t.clone(),
        None => bidlock::RedisTarget::from_url(bidlock::DEFAULT_REDIS_URL)?,
    };
    let unavailable =
        |e: redis::RedisError| CliError::new(exit::UNAVAILABLE, format!("{target}: {e}"));
    let client = redis::Client::open(raw_info(g).map_err(unavailable)?).map_err(unavailable)?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(unavailable)
}

/// The redis-rs settings of the first configured server: its URL as given, with
/// `REDIS_USERNAME` / `REDIS_PASSWORD` for a URL without its own (the library's rule).
fn raw_info(g: &Global) -> redis::RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let url = match g.redis_url.first() {
        Some(u) => u.clone(),
        None => match (env("REDIS_URLS"), env("REDIS_URL")) {
            (Some(urls), _) => urls.split(',').next().unwrap_or_default().trim().to_owned(),
            (None, Some(url)) => url,
            (None, None)
                if env("REDIS_HOST").is_some()
                    || env("REDIS_PORT").is_some()
                    || env("REDIS_DB").is_some() =>
            {
                format!(
                    "redis://{}:{}/{}",
                    env("REDIS_HOST")
                        .unwrap_or_else(|| "127.0.0.1".to_owned())
                        .trim(),
                    env("REDIS_PORT")
                        .unwrap_or_else(|| "6379".to_owned())
                        .trim(),
                    env("REDIS_DB").unwrap_or_else(|| "0".to_owned()).trim(),
                )
            }
            (None, None) => bidlock::DEFAULT_REDIS_URL.to_owned(),
        },
    };
    let info = url.as_str().into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if settings.username().is_none() {
        if let Some(u) = env("REDIS_USERNAME") {
            settings = settings.set_username(u);
        }
    }
    if settings.password().is_none() {
        if let Some(p) = env("REDIS_PASSWORD") {
            settings = settings.set_password(p);
        }
    }
    Ok(info.set_redis_settings(settings))
}
