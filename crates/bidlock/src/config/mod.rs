//! Configuration: built in code with [`Config::builder`], or read from the environment
//! with [`Config::from_env`] (the variables of the original Python system).

mod env;
mod target;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use env::ENV_VARS;
pub(crate) use target::tcp_addr;
pub use target::RedisTarget;
pub(crate) use target::SentinelSpec;

use crate::backoff::RetryPolicy;
use crate::error::ConfigError;
use crate::human::duration as for_people;
use crate::key::LockKey;
use crate::keyspace::{KeySpace, Layout, DEFAULT_PREFIX};
use crate::ttl::Ttl;

/// The default lock ttl, as in the original system: 300 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// How long completion records are kept by default: 7 days.
pub const DEFAULT_DONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default connect and response timeout for Redis: 5 s.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long auto-detection waits for Redis before falling back to memory: 1 s.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The Redis address tried by auto-detection when none is configured.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Which store holds the locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// Redis when it answers within the detect timeout, else in-process memory (with one
    /// WARN log saying locks are now local to this process).
    #[default]
    Auto,
    /// Redis, or an error. What production fleets should use.
    Redis,
    /// In-process memory: excludes tasks of this process only.
    Memory,
}

impl FromStr for Backend {
    type Err = String;

    /// Parses `auto`, `redis` or `memory`, and the `USE_REDIS_LOCKS` spellings
    /// (`true`/`1`/`yes`/`on` = redis, `false`/`0`/`no`/`off` = memory), case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Backend::Auto),
            "redis" | "true" | "1" | "yes" | "on" => Ok(Backend::Redis),
            "memory" | "false" | "0" | "no" | "off" => Ok(Backend::Memory),
            _ => Err("expected true, false or auto (or redis / memory)".to_owned()),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Redis => "redis",
            Backend::Memory => "memory",
        })
    }
}

/// The complete configuration of a [`BidLockManager`](crate::BidLockManager).
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) backend: Backend,
    pub(crate) redis: Vec<RedisTarget>,
    pub(crate) ttl: Duration,
    pub(crate) keys: KeySpace,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) detect_timeout: Duration,
    pub(crate) done_retention: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) drift_factor: f64,
    pub(crate) tls_ca_cert: Option<Vec<u8>>,
}

impl Default for Config {
    /// `Backend::Auto`, Redis at 127.0.0.1:6379 if it answers, ttl 300 s.
    fn default() -> Self {
        Config {
            backend: Backend::Auto,
            redis: Vec::new(),
            ttl: DEFAULT_TTL,
            keys: KeySpace::default(),
            connect_timeout: DEFAULT_IO_TIMEOUT,
            response_timeout: DEFAULT_IO_TIMEOUT,
            detect_timeout: DEFAULT_DETECT_TIMEOUT,
            done_retention: DEFAULT_DONE_RETENTION,
            retry: RetryPolicy::default(),
            drift_factor: 0.01,
            tls_ca_cert: None,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Reads the environment (see [`ConfigBuilder::from_env`]) and builds.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first malformed variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        ConfigBuilder::from_env()?.build()
    }

    /// The backend asked for.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The configured Redis servers (more than one means Redlock).
    pub fn redis_targets(&self) -> &[RedisTarget] {
        &self.redis
    }

    /// The default lock ttl.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The key prefix in use (`bid_lock` unless configured).
    pub fn key_prefix(&self) -> &str {
        self.keys.prefix()
    }

    /// The Redis key of `key`'s lock under this configuration (what
    /// [`LockInfo::redis_key`](crate::LockInfo::redis_key) reports), for messages and
    /// for looking at the lock with redis-cli. The layout is docs/REDIS.md's.
    pub fn redis_key(&self, key: &LockKey) -> String {
        self.keys.lock_key(key)
    }

    /// The Redis key of `key`'s completion record (what
    /// [`BidLockManager::bid_once`](crate::BidLockManager::bid_once) and
    /// [`LockGuard::complete`](crate::LockGuard::complete) write) under this
    /// configuration.
    pub fn done_redis_key(&self, key: &LockKey) -> String {
        self.keys.done_key(key)
    }

    /// How long completion records are kept.
    pub fn done_retention(&self) -> Duration {
        self.done_retention
    }

    /// Timeout for connecting to Redis.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Timeout for one Redis command.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The waiting schedule.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// Redis to use: configured, or the default address for auto-detection.
    pub(crate) fn redis_or_default(&self) -> Result<Vec<RedisTarget>, ConfigError> {
        if self.redis.is_empty() {
            Ok(vec![RedisTarget::from_url(DEFAULT_REDIS_URL)?])
        } else {
            Ok(self.redis.clone())
        }
    }
}

/// Builds a [`Config`]; every value is checked in [`ConfigBuilder::build`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bidlock::{Backend, Config};
/// let config = Config::builder()
///     .backend(Backend::Memory)
///     .ttl(Duration::from_secs(180))
///     .build()?;
/// assert_eq!(config.ttl(), Duration::from_secs(180));
/// # Ok::<(), bidlock::ConfigError>(())
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct ConfigBuilder {
    backend: Option<Backend>,
    redis_urls: Vec<String>,
    redis_targets: Vec<RedisTarget>,
    default_username: Option<String>,
    default_password: Option<String>,
    ttl: Option<Duration>,
    prefix: Option<String>,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    detect_timeout: Option<Duration>,
    done_retention: Option<Duration>,
    retry: Option<RetryPolicy>,
    drift_factor: Option<f64>,
    tls_ca_cert_file: Option<std::path::PathBuf>,
    without_default_redis: bool,
}

/// Shows URLs with their password hidden, and never the password: a builder is what a
/// program may log while it sets up.
impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self
            .redis_urls
            .iter()
            .map(|u| target::redact_url(u))
            .collect();
        f.debug_struct("ConfigBuilder")
            .field("backend", &self.backend)
            .field("redis_urls", &urls)
            .field("redis_targets", &self.redis_targets)
            .field("default_username", &self.default_username)
            .field(
                "default_password",
                &self.default_password.as_ref().map(|_| "***"),
            )
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("detect_timeout", &self.detect_timeout)
            .field("done_retention", &self.done_retention)
            .field("retry", &self.retry)
            .field("drift_factor", &self.drift_factor)
            .field("tls_ca_cert_file", &self.tls_ca_cert_file)
            .field("without_default_redis", &self.without_default_redis)
            .finish()
    }
}

impl ConfigBuilder {
    /// The backend asked for so far (by [`backend`](Self::backend) or
    /// `USE_REDIS_LOCKS`): `Auto` when nothing chose one.
    pub fn requested_backend(&self) -> Backend {
        self.backend.unwrap_or_default()
    }

    /// Whether a Redis address was configured (a URL, URLs, or `REDIS_HOST` / `REDIS_PORT`
    /// / `REDIS_DB`), as opposed to auto-detection's default address.
    pub fn redis_configured(&self) -> bool {
        !self.redis_urls.is_empty() || !self.redis_targets.is_empty()
    }

    /// For programs that must never write into a Redis they merely happen to find (a
    /// demo, a simulation, a self-check): with [`Backend::Auto`] and no Redis address
    /// configured, use memory instead of trying `127.0.0.1:6379`. `Auto` with a
    /// configured address keeps its rule (that Redis when it answers, else memory);
    /// `Redis` and `Memory` are kept. Applied in [`ConfigBuilder::build`], whatever the
    /// order of the calls.
    ///
    /// # Examples
    ///
    /// ```
    /// use bidlock::{Backend, Config};
    /// let demo = Config::builder().without_default_redis().build()?;
    /// assert_eq!(demo.backend(), Backend::Memory);
    /// let configured = Config::builder()
    ///     .without_default_redis()
    ///     .redis_url("redis://10.0.0.5:6379/0")
    ///     .build()?;
    /// assert_eq!(configured.backend(), Backend::Auto);
    /// # Ok::<(), bidlock::ConfigError>(())
    /// ```
    pub fn without_default_redis(mut self) -> Self {
        self.without_default_redis = true;
        self
    }

    /// Which backend to use.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// One Redis URL (replaces any configured before). Parsed in [`ConfigBuilder::build`].
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_targets.clear();
        self.redis_urls = vec![url.into()];
        self
    }

    /// Several Redis URLs: independent masters for Redlock (or one, as `redis_url`).
    pub fn redis_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.redis_targets.clear();
        self.redis_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// The default ttl of a lock (> 0). A held lease is renewed every ttl/3.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The key prefix (default `bid_lock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Timeout for connecting to Redis (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Timeout for one Redis command (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// How long `Backend::Auto` waits for Redis before using memory (default 1 s).
    pub fn detect_timeout(mut self, timeout: Duration) -> Self {
        self.detect_timeout = Some(timeout);
        self
    }

    /// How long completion records are kept (default 7 days).
    pub fn done_retention(mut self, retention: Duration) -> Self {
        self.done_retention = Some(retention);
        self
    }

    /// The waiting schedule (default 50 ms, ×1.5, 1 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Redlock clock-drift allowance as a fraction of the ttl (default 0.01; 2 ms are
    /// always added).
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = Some(factor);
        self
    }

    /// Trust this CA (a PEM file) for `rediss://` servers instead of the system's
    /// roots: for a Redis with a certificate from a private CA.
    pub fn tls_ca_cert_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_cert_file = Some(path.into());
        self
    }

    /// Checks every value and builds the configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidUrl`] for a URL that does not parse,
    /// [`ConfigError::InvalidValue`] for an out-of-range duration or prefix, and
    /// [`ConfigError::NoRedisConfigured`] is never returned here (auto-detection and
    /// `Backend::Redis` fall back to `127.0.0.1:6379`).
    pub fn build(self) -> Result<Config, ConfigError> {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let d = Config::default();
        let redis = self.targets()?;
        let cluster = redis.iter().any(RedisTarget::is_cluster);
        let retry = self.retry.unwrap_or(d.retry);
        check_retry(&retry)?;
        let drift_factor = self.drift_factor.unwrap_or(d.drift_factor);
        if !(0.0..0.5).contains(&drift_factor) {
            return Err(invalid("drift_factor", "must be in [0, 0.5)"));
        }
        let mut backend = self.backend.unwrap_or(d.backend);
        if self.without_default_redis && backend == Backend::Auto && redis.is_empty() {
            backend = Backend::Memory;
        }
        Ok(Config {
            tls_ca_cert: self.tls_ca_cert_file.as_deref().map(read_ca).transpose()?,
            backend,
            ttl: Ttl::new(self.ttl.unwrap_or(d.ttl))?.get(),
            keys: keyspace(self.prefix.as_deref(), cluster)?,
            connect_timeout: within(
                "connect_timeout",
                self.connect_timeout,
                d.connect_timeout,
                DAY,
            )?,
            response_timeout: within(
                "response_timeout",
                self.response_timeout,
                d.response_timeout,
                DAY,
            )?,
            detect_timeout: within("detect_timeout", self.detect_timeout, d.detect_timeout, DAY)?,
            done_retention: within(
                "done_retention",
                self.done_retention,
                d.done_retention,
                DAY * 3650,
            )?,
            redis,
            retry,
            drift_factor,
        })
    }

    /// The Redis targets (given, then parsed from URLs), with the default credentials
    /// where a target has none; a cluster URL stands alone.
    fn targets(&self) -> Result<Vec<RedisTarget>, ConfigError> {
        let mut redis = self.redis_targets.clone();
        for url in &self.redis_urls {
            redis.push(RedisTarget::from_url(url)?);
        }
        let (user, password) = (
            self.default_username.as_deref(),
            self.default_password.as_deref(),
        );
        let redis: Vec<RedisTarget> = redis
            .into_iter()
            .map(|t| t.with_default_credentials(user, password))
            .collect();
        if redis.len() > 1 && redis.iter().any(RedisTarget::is_cluster) {
            return Err(invalid(
                "redis urls",
                "a redis+cluster:// URL names one whole cluster (list its seed nodes in that \
                 one URL, comma-separated) and cannot be combined with other URLs: Redlock \
                 needs independent masters",
            ));
        }
        Ok(redis)
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        field,
        reason: reason.into(),
    }
}

/// A duration setting (or its default): more than zero and at most `max` (instants are
/// computed from it).
fn within(
    field: &'static str,
    v: Option<Duration>,
    default: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if v.is_zero() {
        Err(invalid(field, "must be greater than zero"))
    } else if v > max {
        Err(invalid(
            field,
            format!("{} is more than {}", for_people(v), for_people(max)),
        ))
    } else {
        Ok(v)
    }
}

fn check_retry(retry: &RetryPolicy) -> Result<(), ConfigError> {
    if retry.initial.is_zero()
        || retry.max < retry.initial
        || retry.factor.is_nan()
        || retry.factor < 1.0
    {
        return Err(invalid(
            "retry",
            "need initial > 0, max >= initial and factor >= 1",
        ));
    }
    Ok(())
}

/// The key names: the prefix given (or the original system's), laid out so that a
/// cluster finds every name of a posting in one hash slot.
fn keyspace(prefix: Option<&str>, cluster: bool) -> Result<KeySpace, ConfigError> {
    let keys = match prefix {
        Some(p) => KeySpace::new(p).map_err(|e| invalid("prefix", e.to_string()))?,
        None => KeySpace::new(DEFAULT_PREFIX).unwrap_or_default(),
    };
    Ok(keys.with_layout(if cluster {
        Layout::Cluster
    } else {
        Layout::Classic
    }))
}

fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        invalid(
            "tls CA certificate",
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_selects_the_cluster_layout() {
        let c = Config::builder()
            .redis_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
            .prefix("p")
            .build()
            .unwrap();
        assert_eq!(c.keys.layout(), Layout::Cluster);
        assert_eq!(c.keys.prefix(), "p");
        let c = Config::builder()
            .redis_url("redis://127.0.0.1:7000")
            .build()
            .unwrap();
        assert_eq!(c.keys.layout(), Layout::Classic);
        let e = Config::builder()
            .redis_urls([
                "redis+cluster://:pw@127.0.0.1:7000",
                "redis://a:1",
                "redis://b:1",
            ])
            .build()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot be combined") && !e.contains(":pw@"),
            "{e}"
        );
    }

    #[test]
    fn without_default_redis_keeps_away_from_an_unconfigured_redis() {
        let b = || Config::builder().without_default_redis();
        assert_eq!(b().build().unwrap().backend(), Backend::Memory);
        assert_eq!(
            b().backend(Backend::Auto).build().unwrap().backend(),
            Backend::Memory
        );
        assert_eq!(
            b().backend(Backend::Redis).build().unwrap().backend(),
            Backend::Redis
        );
        let configured = b().redis_url("redis://127.0.0.1:7000").build().unwrap();
        assert_eq!(configured.backend(), Backend::Auto);
        // Without it, Auto stays Auto (the library's rule: the default address if it
        // answers).
        assert_eq!(Config::builder().build().unwrap().backend(), Backend::Auto);
    }

    #[test]
    fn builder_rejects_out_of_range() {
        assert!(Config::builder().ttl(Duration::ZERO).build().is_err());
        assert!(Config::builder().prefix("x*").build().is_err());
        assert!(Config::builder().redis_url("nope://").build().is_err());
        assert!(Config::builder()
            .retry(RetryPolicy::new(
                Duration::ZERO,
                1.5,
                Duration::from_secs(1)
            ))
            .build()
            .is_err());
    }
}
