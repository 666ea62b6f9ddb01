//! Configuration: built in code with [`Config::builder`], or read from the environment
//! with [`Config::from_env`] (the variables of the original Python system).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::backoff::RetryPolicy;
use crate::error::ConfigError;
use crate::key::{KeySpace, DEFAULT_PREFIX};
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

/// Where one Redis server is, with credentials. Its `Debug` and `Display` never show the
/// password.
#[derive(Clone)]
pub struct RedisTarget {
    pub(crate) info: ConnectionInfo,
    display: String,
    /// Set for `redis+sentinel://` URLs: where to ask for the master.
    pub(crate) sentinel: Option<SentinelSpec>,
}

/// The sentinels to ask, and the name of the master they watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentinelSpec {
    pub(crate) sentinels: Vec<(String, u16)>,
    pub(crate) service: String,
}

impl RedisTarget {
    /// Parses a `redis://`, `rediss://` (TLS) or `redis+unix://` URL with optional
    /// `user:password@` and `/db`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidUrl`] naming the URL with its password hidden.
    pub fn from_url(url: &str) -> Result<RedisTarget, ConfigError> {
        let trimmed = url.trim();
        if let Some(rest) = trimmed.strip_prefix("redis+sentinel://") {
            return RedisTarget::from_sentinel_url(trimmed, rest);
        }
        let info = trimmed
            .into_connection_info()
            .map_err(|e| ConfigError::InvalidUrl {
                url: redact_url(trimmed),
                reason: e.to_string().replace(trimmed, "<url>"),
            })?;
        Ok(RedisTarget::from_info(info))
    }

    /// A TCP target from host, port, db and optional credentials (the `REDIS_HOST` form).
    pub fn from_parts(
        host: &str,
        port: u16,
        db: i64,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<RedisTarget, ConfigError> {
        if host.is_empty() {
            return Err(ConfigError::InvalidValue {
                field: "redis host",
                reason: "empty".to_owned(),
            });
        }
        let info = (host.to_owned(), port)
            .into_connection_info()
            .map_err(|e| ConfigError::InvalidValue {
                field: "redis host",
                reason: e.to_string(),
            })?;
        let mut redis = RedisConnectionInfo::default().set_db(db);
        if let Some(u) = username {
            redis = redis.set_username(u);
        }
        if let Some(p) = password {
            redis = redis.set_password(p);
        }
        Ok(RedisTarget::from_info(info.set_redis_settings(redis)))
    }

    /// `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]`:
    /// the credentials and db are the master's.
    fn from_sentinel_url(url: &str, rest: &str) -> Result<RedisTarget, ConfigError> {
        let bad = |reason: &str| ConfigError::InvalidUrl {
            url: redact_url(url),
            reason: reason.to_owned(),
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected /service_name after the sentinel addresses"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let (host, port) = match h.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .ok()
                        .filter(|&p| p != 0)
                        .ok_or_else(|| bad("a sentinel port is not a number 1-65535"))?,
                ),
                None => (h, 26379),
            };
            if host.is_empty() {
                return Err(bad("a sentinel host is empty"));
            }
            sentinels.push((host.trim_matches(['[', ']']).to_owned(), port));
        }
        if sentinels.is_empty() {
            return Err(bad("no sentinel address"));
        }
        let mut parts = path.split('/');
        let service = parts.next().unwrap_or("").to_owned();
        if service.is_empty() {
            return Err(bad("the service (master) name is empty"));
        }
        let db = match parts.next().filter(|d| !d.is_empty()) {
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|&d| d >= 0)
                .ok_or_else(|| bad("the db is not a number >= 0"))?,
            None => 0,
        };
        let mut redis = RedisConnectionInfo::default().set_db(db);
        if let Some(u) = userinfo {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => ("", Some(u)),
            };
            if !user.is_empty() {
                redis = redis.set_username(user);
            }
            if let Some(p) = pass.filter(|p| !p.is_empty()) {
                redis = redis.set_password(p);
            }
        }
        let (host, port) = sentinels[0].clone();
        let info = (host, port)
            .into_connection_info()
            .map_err(|e| bad(&e.to_string()))?
            .set_redis_settings(redis);
        let auth = match (
            info.redis_settings().username(),
            info.redis_settings().password(),
        ) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_owned(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let hosts: Vec<String> = sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        let display = format!("redis+sentinel://{auth}{}/{service}/{db}", hosts.join(","));
        Ok(RedisTarget {
            info,
            display,
            sentinel: Some(SentinelSpec { sentinels, service }),
        })
    }

    fn from_info(info: ConnectionInfo) -> RedisTarget {
        let display = display_info(&info);
        RedisTarget {
            info,
            display,
            sentinel: None,
        }
    }

    /// Adds credentials when the URL carried none (a URL from a ConfigMap plus a password
    /// from a secret).
    fn with_default_credentials(
        self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> RedisTarget {
        let sentinel = self.sentinel.clone();
        let mut redis = self.info.redis_settings().clone();
        if redis.password().is_none() {
            if let Some(p) = password {
                redis = redis.set_password(p);
            }
        }
        if redis.username().is_none() {
            if let Some(u) = username {
                redis = redis.set_username(u);
            }
        }
        let mut t = RedisTarget::from_info(self.info.set_redis_settings(redis));
        if sentinel.is_some() {
            t.display = self.display;
            t.sentinel = sentinel;
        }
        t
    }

    /// The URL with the password replaced by `***`: safe for logs and errors.
    pub fn redacted(&self) -> &str {
        &self.display
    }

    /// The redis-rs connection settings, credentials included (for tools that talk to
    /// the same server directly, such as the benchmark's raw baseline).
    pub fn connection_info(&self) -> ConnectionInfo {
        self.info.clone()
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.info.addr(), ConnectionAddr::TcpTls { .. })
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisTarget").field(&self.display).finish()
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

fn display_info(info: &ConnectionInfo) -> String {
    let r = info.redis_settings();
    let auth = match (r.username(), r.password()) {
        (Some(u), Some(_)) => format!("{u}:***@"),
        (None, Some(_)) => ":***@".to_owned(),
        (Some(u), None) => format!("{u}@"),
        (None, None) => String::new(),
    };
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("redis://{auth}{host}:{port}/{}", r.db()),
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{auth}{host}:{port}/{}", r.db())
        }
        ConnectionAddr::Unix(path) => {
            format!("redis+unix://{auth}{}?db={}", path.display(), r.db())
        }
        other => format!("{other:?}"),
    }
}

/// Hides the password of a URL that may not even parse: `redis://u:pw@h` → `redis://u:***@h`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let shown = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // A lone userinfo is the password in redis URLs (`redis://secret@host`).
                "***".to_owned()
            };
            format!("{}{}{}", &url[..scheme_end + 3], shown, &rest[at..])
        }
        None => url.to_owned(),
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

    /// The key names in use.
    pub fn keys(&self) -> &KeySpace {
        &self.keys
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
#[derive(Debug, Clone, Default)]
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
}

/// The environment variables read by [`ConfigBuilder::from_env`].
pub const ENV_VARS: &[&str] = &[
    "USE_REDIS_LOCKS",
    "REDIS_URL",
    "REDIS_URLS",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_DB",
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "BID_LOCK_TTL",
    "BID_LOCK_PREFIX",
    "REDIS_TLS_CA_CERT",
];

impl ConfigBuilder {
    /// A builder pre-filled from the environment:
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `USE_REDIS_LOCKS` | `true` = Redis or fail, `false` = memory, unset/`auto` = detect |
    /// | `REDIS_URL` | `redis://[user:password@]host[:port][/db]`, `rediss://` for TLS |
    /// | `REDIS_URLS` | several URLs, comma-separated: Redlock over independent masters |
    /// | `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB` | used when no URL is set (port 6379, db 0) |
    /// | `REDIS_USERNAME`, `REDIS_PASSWORD` | credentials (applied to a URL without its own) |
    /// | `BID_LOCK_TTL` | default lock ttl in seconds (decimals allowed), > 0 |
    /// | `BID_LOCK_PREFIX` | key prefix, default `bid_lock` |
    /// | `REDIS_TLS_CA_CERT` | PEM file of the CA that signed the server's certificate (`rediss://`) |
    ///
    /// Empty values count as unset. Later builder calls override what the environment set.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidEnv`] naming the variable whose value is malformed — never a
    /// silent default — or [`ConfigError::NotUnicode`].
    pub fn from_env() -> Result<ConfigBuilder, ConfigError> {
        let mut values = Vec::with_capacity(ENV_VARS.len());
        for &var in ENV_VARS {
            match std::env::var(var) {
                Ok(v) => values.push((var, v)),
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(ConfigError::NotUnicode {
                        var: var.to_owned(),
                    })
                }
            }
        }
        ConfigBuilder::from_lookup(|name| {
            values
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// Like [`ConfigBuilder::from_env`], reading variables through `lookup` (for tests and
    /// for configuration stored elsewhere).
    ///
    /// # Errors
    ///
    /// As [`ConfigBuilder::from_env`].
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ConfigBuilder, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let invalid = |var: &str, value: &str, reason: &str| ConfigError::InvalidEnv {
            var: var.to_owned(),
            value: redact_url(value),
            reason: reason.to_owned(),
        };
        let mut b = ConfigBuilder::default();
        if let Some(v) = get("USE_REDIS_LOCKS") {
            b.backend = Some(
                v.parse()
                    .map_err(|reason: String| invalid("USE_REDIS_LOCKS", &v, &reason))?,
            );
        }
        let username = get("REDIS_USERNAME");
        let password = get("REDIS_PASSWORD");
        // Every variable that is set is checked, even when another one takes precedence:
        // a malformed value is a misconfiguration to report, not to skip.
        let port = match get("REDIS_PORT") {
            Some(p) => Some(
                p.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| invalid("REDIS_PORT", &p, "expected a port number 1-65535"))?,
            ),
            None => None,
        };
        let db = parse_db(get("REDIS_DB"), &invalid)?;
        if let Some(urls) = get("REDIS_URLS") {
            for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                let t = RedisTarget::from_url(url)
                    .map_err(|e| invalid("REDIS_URLS", &urls, &e.to_string()))?;
                b.redis_targets.push(t);
            }
        } else if let Some(url) = get("REDIS_URL") {
            let t = RedisTarget::from_url(&url)
                .map_err(|e| invalid("REDIS_URL", &url, &e.to_string()))?;
            b.redis_targets.push(t);
        } else if get("REDIS_HOST").is_some() || port.is_some() || get("REDIS_DB").is_some() {
            // REDIS_PORT / REDIS_DB without REDIS_HOST still point at a local Redis.
            let host = get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".to_owned());
            let t = RedisTarget::from_parts(host.trim(), port.unwrap_or(6379), db, None, None)
                .map_err(|e| invalid("REDIS_HOST", &host, &e.to_string()))?;
            b.redis_targets.push(t);
        }
        b.default_username = username;
        b.default_password = password;
        if let Some(v) = get("BID_LOCK_TTL") {
            let ttl = Ttl::parse_secs(&v).map_err(|e| {
                let reason = match e {
                    ConfigError::InvalidValue { reason, .. } => reason,
                    other => other.to_string(),
                };
                invalid(
                    "BID_LOCK_TTL",
                    &v,
                    &format!("expected seconds, 0.01 to 30 days: {reason}"),
                )
            })?;
            b.ttl = Some(ttl.get());
        }
        if let Some(v) = get("REDIS_TLS_CA_CERT") {
            let path = std::path::PathBuf::from(v.trim());
            if !path.is_file() {
                return Err(invalid("REDIS_TLS_CA_CERT", &v, "no such file"));
            }
            b.tls_ca_cert_file = Some(path);
        }
        if let Some(v) = get("BID_LOCK_PREFIX") {
            KeySpace::new(v.trim()).map_err(|e| invalid("BID_LOCK_PREFIX", &v, &e.to_string()))?;
            b.prefix = Some(v.trim().to_owned());
        }
        Ok(b)
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
        let d = Config::default();
        let mut redis = self.redis_targets;
        for url in &self.redis_urls {
            redis.push(RedisTarget::from_url(url)?);
        }
        let redis = redis
            .into_iter()
            .map(|t| {
                t.with_default_credentials(
                    self.default_username.as_deref(),
                    self.default_password.as_deref(),
                )
            })
            .collect();
        // Durations are bounded above too: instants are computed from them.
        let within =
            |field: &'static str, v: Option<Duration>, default: Duration, max: Duration| {
                let v = v.unwrap_or(default);
                if v.is_zero() {
                    Err(ConfigError::InvalidValue {
                        field,
                        reason: "must be greater than zero".to_owned(),
                    })
                } else if v > max {
                    Err(ConfigError::InvalidValue {
                        field,
                        reason: format!("{v:?} is more than {max:?}"),
                    })
                } else {
                    Ok(v)
                }
            };
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let ttl = Ttl::new(self.ttl.unwrap_or(d.ttl))?.get();
        let keys = match self.prefix {
            Some(p) => KeySpace::new(&p).map_err(|e| ConfigError::InvalidValue {
                field: "prefix",
                reason: e.to_string(),
            })?,
            None => KeySpace::new(DEFAULT_PREFIX).unwrap_or_default(),
        };
        let retry = self.retry.unwrap_or(d.retry);
        if retry.initial.is_zero()
            || retry.max < retry.initial
            || retry.factor.is_nan()
            || retry.factor < 1.0
        {
            return Err(ConfigError::InvalidValue {
                field: "retry",
                reason: "need initial > 0, max >= initial and factor >= 1".to_owned(),
            });
        }
        let drift_factor = self.drift_factor.unwrap_or(d.drift_factor);
        if !(0.0..0.5).contains(&drift_factor) {
            return Err(ConfigError::InvalidValue {
                field: "drift_factor",
                reason: "must be in [0, 0.5)".to_owned(),
            });
        }
        let tls_ca_cert = match &self.tls_ca_cert_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| ConfigError::InvalidValue {
                field: "tls CA certificate",
                reason: format!("cannot read {}: {e}", path.display()),
            })?),
            None => None,
        };
        Ok(Config {
            tls_ca_cert,
            backend: self.backend.unwrap_or(d.backend),
            redis,
            ttl,
            keys,
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
            retry,
            drift_factor,
        })
    }
}

fn parse_db(
    v: Option<String>,
    invalid: &impl Fn(&str, &str, &str) -> ConfigError,
) -> Result<i64, ConfigError> {
    match v {
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|&d| d >= 0)
            .ok_or_else(|| invalid("REDIS_DB", &v, "expected a database number >= 0")),
        None => Ok(0),
    }
}

/// Parses a duration given in seconds (decimals allowed), as the CLI and `BID_LOCK_TTL` do.
///
/// # Errors
///
/// A message saying what was expected.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} must be zero or more seconds"));
    }
    if secs > 30.0 * 24.0 * 3600.0 {
        return Err(format!("{s:?} is more than 30 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConfigBuilder::from_lookup(|k| map.get(k).cloned())?.build()
    }

    #[test]
    fn empty_env_is_auto_with_defaults() {
        let c = env(&[]).unwrap();
        assert_eq!(c.backend(), Backend::Auto);
        assert_eq!(c.ttl(), Duration::from_secs(300));
        assert!(c.redis_targets().is_empty());
        assert_eq!(c.keys().prefix(), "bid_lock");
    }

    #[test]
    fn url_and_components() {
        let c = env(&[
            ("REDIS_URL", "redis://user:s3cret@h1:6380/2"),
            ("USE_REDIS_LOCKS", "true"),
        ])
        .unwrap();
        assert_eq!(c.backend(), Backend::Redis);
        let t = &c.redis_targets()[0];
        assert_eq!(t.redacted(), "redis://user:***@h1:6380/2");
        assert!(!format!("{t:?} {t} {c:?}").contains("s3cret"));
        assert_eq!(t.info.redis_settings().password(), Some("s3cret"));

        let c = env(&[
            ("REDIS_HOST", "h2"),
            ("REDIS_PORT", "7000"),
            ("REDIS_DB", "3"),
            ("REDIS_PASSWORD", "pw"),
            ("REDIS_USERNAME", "u"),
            ("BID_LOCK_TTL", "1.5"),
            ("USE_REDIS_LOCKS", "false"),
        ])
        .unwrap();
        assert_eq!(c.backend(), Backend::Memory);
        assert_eq!(c.redis_targets()[0].redacted(), "redis://u:***@h2:7000/3");
        assert_eq!(c.ttl(), Duration::from_millis(1500));

        let c = env(&[("REDIS_URL", "rediss://h3:6390"), ("REDIS_PASSWORD", "pw")]).unwrap();
        assert!(c.redis_targets()[0].is_tls());
        assert_eq!(c.redis_targets()[0].redacted(), "rediss://:***@h3:6390/0");

        let c = env(&[("REDIS_URLS", "redis://a:1, redis://b:2,redis://c:3")]).unwrap();
        assert_eq!(c.redis_targets().len(), 3);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (var, val) in [
            ("USE_REDIS_LOCKS", "maybe"),
            ("REDIS_PORT", "http"),
            ("REDIS_PORT", "0"),
            ("REDIS_PORT", "70000"),
            ("REDIS_DB", "-1"),
            ("REDIS_DB", "x"),
            ("BID_LOCK_TTL", "0"),
            ("BID_LOCK_TTL", "-5"),
            ("BID_LOCK_TTL", "five"),
            ("BID_LOCK_TTL", "NaN"),
            ("BID_LOCK_PREFIX", "a:b"),
            ("REDIS_URL", "http://user:pw@host"),
            ("REDIS_URL", "not a url"),
        ] {
            let mut pairs = vec![(var, val)];
            if var == "REDIS_PORT" || var == "REDIS_DB" {
                pairs.push(("REDIS_HOST", "h"));
            }
            let err = env(&pairs).expect_err(var);
            let msg = err.to_string();
            assert!(msg.contains(var), "{msg}");
            assert!(!msg.contains(":pw@"), "{msg}");
        }
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

    #[test]
    fn sentinel_urls() {
        let t = RedisTarget::from_url("redis+sentinel://:pw@10.0.0.1:26379,h2:26380/mymaster/2")
            .unwrap();
        let spec = t.sentinel.clone().unwrap();
        assert_eq!(spec.service, "mymaster");
        assert_eq!(
            spec.sentinels,
            vec![("10.0.0.1".to_owned(), 26379), ("h2".to_owned(), 26380)]
        );
        assert_eq!(t.info.redis_settings().db(), 2);
        assert_eq!(
            t.redacted(),
            "redis+sentinel://:***@10.0.0.1:26379,h2:26380/mymaster/2"
        );
        assert!(!format!("{t:?}").contains("pw@"));
        let t = RedisTarget::from_url("redis+sentinel://h1/svc").unwrap();
        assert_eq!(
            t.sentinel.unwrap().sentinels,
            vec![("h1".to_owned(), 26379)]
        );
        for bad in [
            "redis+sentinel://h1:26379",
            "redis+sentinel:///svc",
            "redis+sentinel://h1:0/svc",
            "redis+sentinel://h1/svc/x",
        ] {
            assert!(RedisTarget::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://p@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("garbage"), "garbage");
        assert_eq!(redact_url("redis://u:p@ss@h/0"), "redis://u:***@h/0");
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_seconds("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("abc").is_err());
        assert!(parse_seconds("inf").is_err());
    }
}
