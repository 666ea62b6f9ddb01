//! [`RedisTarget`]: where one Redis server (or one Redis Cluster) is, parsed from a URL
//! (`redis://`, `rediss://`, `redis+unix://`, `redis+sentinel://`, `redis+cluster://`,
//! `rediss+cluster://`) or from parts, shown only with its password hidden.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::ConfigError;

/// The URL schemes bidlock reads.
const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+unix",
    "unix",
    "redis+sentinel",
    "redis+cluster",
    "rediss+cluster",
];

/// What every URL error says, so a newcomer sees the forms that work.
const ACCEPTED: &str = "use redis://[user:password@]host[:port][/db], rediss:// for TLS, \
redis+sentinel://host:port[,host:port...]/service[/db], \
redis+cluster://host:port[,host:port...] (rediss+cluster:// for TLS) for a Redis Cluster, \
or redis+unix:///path (a bare host:port is not a URL)";

/// Where one Redis server is, with credentials. Its `Debug` and `Display` never show the
/// password.
#[derive(Clone)]
pub struct RedisTarget {
    pub(crate) info: ConnectionInfo,
    display: String,
    /// Set for `redis+sentinel://` URLs: where to ask for the master.
    pub(crate) sentinel: Option<SentinelSpec>,
    /// Set for `redis+cluster://` URLs: the seed nodes (`info` holds the first, with the
    /// credentials and TLS every node uses).
    pub(crate) cluster: Option<ClusterSpec>,
}

/// The seed nodes of a Redis Cluster: the client asks them for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterSpec {
    pub(crate) seeds: Vec<(String, u16)>,
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
        let invalid = |reason: String| ConfigError::InvalidUrl {
            url: redact_url(trimmed),
            reason,
        };
        let Some((scheme, _)) = trimmed.split_once("://") else {
            return Err(invalid(format!("no scheme; {ACCEPTED}")));
        };
        if !SCHEMES.contains(&scheme) {
            return Err(invalid(format!("unknown scheme {scheme:?}; {ACCEPTED}")));
        }
        if let Some(rest) = trimmed.strip_prefix("redis+sentinel://") {
            return RedisTarget::from_sentinel_url(trimmed, rest);
        }
        if scheme.ends_with("+cluster") {
            return RedisTarget::from_cluster_url(trimmed, scheme == "rediss+cluster");
        }
        let info = trimmed
            .into_connection_info()
            .map_err(|e| invalid(format!("{}; {ACCEPTED}", url_problem(trimmed, &e))))?;
        let db = info.redis_settings().db();
        if db < 0 {
            return Err(invalid(format!(
                "the database after the last / must be a whole number from 0, not {db}"
            )));
        }
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
        let sentinels = parse_hosts(hosts, 26379, "sentinel").map_err(|why| bad(&why))?;
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
        let redis = credentials(RedisConnectionInfo::default().set_db(db), userinfo);
        let (host, port) = sentinels[0].clone();
        let info = (host, port)
            .into_connection_info()
            .map_err(|e| bad(&e.to_string()))?
            .set_redis_settings(redis);
        let display = format!(
            "redis+sentinel://{}{}/{service}/{db}",
            shown_auth(info.redis_settings()),
            joined(&sentinels)
        );
        Ok(RedisTarget {
            info,
            display,
            sentinel: Some(SentinelSpec { sentinels, service }),
            cluster: None,
        })
    }

    /// `redis+cluster://[user:password@]host:port[,host:port...][/]` (`rediss+cluster://`
    /// for TLS): seed nodes of one cluster, which has only database 0.
    fn from_cluster_url(url: &str, tls: bool) -> Result<RedisTarget, ConfigError> {
        let bad = |reason: String| ConfigError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let scheme = if tls {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !matches!(path, "" | "0") {
            return Err(bad(format!(
                "a Redis Cluster has only database 0, so the URL takes no /{path}; {ACCEPTED}"
            )));
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let seeds = parse_hosts(hosts, 6379, "cluster node")
            .map_err(|why| bad(format!("{why}; {ACCEPTED}")))?;
        let redis = credentials(RedisConnectionInfo::default(), userinfo);
        let (host, port) = seeds[0].clone();
        let info = tcp_addr(host, port, tls)
            .into_connection_info()
            .map_err(|e| bad(e.to_string()))?
            .set_redis_settings(redis);
        let display = format!(
            "{scheme}://{}{}",
            shown_auth(info.redis_settings()),
            joined(&seeds)
        );
        Ok(RedisTarget {
            info,
            display,
            sentinel: None,
            cluster: Some(ClusterSpec { seeds }),
        })
    }

    /// Whether this is a Redis Cluster (`redis+cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    fn from_info(info: ConnectionInfo) -> RedisTarget {
        let display = display_info(&info);
        RedisTarget {
            info,
            display,
            sentinel: None,
            cluster: None,
        }
    }

    /// Adds credentials when the URL carried none (a URL from a ConfigMap plus a password
    /// from a secret).
    pub(crate) fn with_default_credentials(
        self,
        username: Option<&str>,
        password: Option<&str>,
    ) -> RedisTarget {
        let (sentinel, cluster) = (self.sentinel.clone(), self.cluster.clone());
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
        if sentinel.is_some() || cluster.is_some() {
            t.display = self.display;
            t.sentinel = sentinel;
            t.cluster = cluster;
        }
        t
    }

    /// The URL with the password replaced by `***`: safe for logs and errors.
    pub fn redacted(&self) -> &str {
        &self.display
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

/// `host:port[,host:port...]` (a port defaults to `default_port`; `[::1]:7000` for IPv6).
fn parse_hosts(hosts: &str, default_port: u16, what: &str) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for h in hosts.split(',').filter(|h| !h.is_empty()) {
        let bracketed = h.starts_with('[');
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) if !bracketed || host.ends_with(']') => (
                host,
                port.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("a {what} port is not a number 1-65535"))?,
            ),
            _ => (h, default_port),
        };
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return Err(format!("a {what} host is empty"));
        }
        out.push((host.to_owned(), port));
    }
    if out.is_empty() {
        return Err(format!("no {what} address"));
    }
    Ok(out)
}

/// Applies `user:password` (or a lone password) from a URL's userinfo.
fn credentials(mut redis: RedisConnectionInfo, userinfo: Option<&str>) -> RedisConnectionInfo {
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
    redis
}

fn joined(hosts: &[(String, u16)]) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        })
        .collect();
    hosts.join(",")
}

/// `user:***@`, `:***@`, `user@` or nothing: credentials as they may be shown.
fn shown_auth(r: &RedisConnectionInfo) -> String {
    match (r.username(), r.password()) {
        (Some(u), Some(_)) => format!("{u}:***@"),
        (None, Some(_)) => ":***@".to_owned(),
        (Some(u), None) => format!("{u}@"),
        (None, None) => String::new(),
    }
}

fn display_info(info: &ConnectionInfo) -> String {
    let r = info.redis_settings();
    let auth = shown_auth(r);
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

/// Why redis-rs refused a URL, in bidlock's words: never its type names, and a hint
/// only where it fits.
fn url_problem(url: &str, e: &redis::RedisError) -> String {
    let text = e.to_string();
    if text.starts_with("Invalid database number") {
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        let db = path.split(['?', '#']).next().unwrap_or(path);
        format!("the database after the last / must be a whole number from 0, not {db:?}")
    } else if text.starts_with("Redis URL did not parse") {
        "it does not parse as a URL (is the port a number 1-65535? are special characters \
         in the password %-encoded?)"
            .to_owned()
    } else if text.starts_with("Missing hostname") {
        "it names no host".to_owned()
    } else {
        // "description - Kind: detail": keep the words, drop the kind.
        let description = text.split(" - ").next().unwrap_or(&text);
        match e.detail() {
            Some(detail) => format!("{description}: {detail}"),
            None => description.to_owned(),
        }
        .replace(url, "<url>")
    }
}

/// Hides the password of a URL that may not even parse: `redis://u:pw@h` → `redis://u:***@h`.
/// The userinfo ends at the *last* `@`, with or without a scheme: a password may hold
/// `@`, `/`, `?` or `#` that nobody percent-encoded, and `u:pw@host` (no scheme) or a
/// `REDIS_URLS` list must not show theirs either. Hiding too much is the safe side.
pub(crate) fn redact_url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    match rest.rfind('@') {
        Some(at) => {
            let shown = match rest[..at].split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                // A lone userinfo is the password in redis URLs (`redis://secret@host`).
                None => "***".to_owned(),
            };
            format!("{head}{shown}{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// The address of one server: TLS (verified) or plain TCP.
pub(crate) fn tcp_addr(host: String, port: u16, tls: bool) -> ConnectionAddr {
    if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cluster_urls() {
        let t = RedisTarget::from_url("redis+cluster://u:s3cret@10.0.0.1:7000,h2:7001,h3").unwrap();
        let spec = t.cluster.clone().unwrap();
        assert_eq!(
            spec.seeds,
            vec![
                ("10.0.0.1".to_owned(), 7000),
                ("h2".to_owned(), 7001),
                ("h3".to_owned(), 6379)
            ]
        );
        assert!(t.is_cluster() && !t.is_tls());
        assert_eq!(t.info.redis_settings().password(), Some("s3cret"));
        assert_eq!(t.info.redis_settings().username(), Some("u"));
        assert_eq!(
            t.redacted(),
            "redis+cluster://u:***@10.0.0.1:7000,h2:7001,h3:6379"
        );
        assert!(!format!("{t:?} {t}").contains("s3cret"));
        let t = RedisTarget::from_url("rediss+cluster://:pw@[::1]:7000/").unwrap();
        assert!(t.is_tls() && t.is_cluster());
        assert_eq!(t.redacted(), "rediss+cluster://:***@[::1]:7000");
        let t = RedisTarget::from_url("redis+cluster://127.0.0.1:7000/0").unwrap();
        assert_eq!(t.cluster.unwrap().seeds.len(), 1);
        // Credentials from the environment reach the cluster and stay hidden.
        let t = RedisTarget::from_url("redis+cluster://h:7000")
            .unwrap()
            .with_default_credentials(None, Some("envpw"));
        assert!(t.is_cluster());
        assert_eq!(t.info.redis_settings().password(), Some("envpw"));
        assert!(!format!("{t:?} {t}").contains("envpw"));
        for (bad, why) in [
            ("redis+cluster://", "no cluster node address"),
            ("redis+cluster://h:0", "port is not a number"),
            ("redis+cluster://h:x,h2:1", "port is not a number"),
            ("redis+cluster://:pw@h:7000/2", "only database 0"),
            ("redis+cluster://u:pw@,:7000", "host is empty"),
        ] {
            let e = RedisTarget::from_url(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("redis+cluster://host:port"), "{bad}: {e}");
            assert!(!e.contains(":pw@"), "{bad}: {e}");
        }
        assert!(!RedisTarget::from_url("redis://h:1").unwrap().is_cluster());
    }

    #[test]
    fn url_errors_name_the_accepted_forms() {
        for bad in [
            "localhost:6379",
            "http://h:1",
            "redis://h:port",
            "redis://h:70000",
        ] {
            let e = RedisTarget::from_url(bad).unwrap_err().to_string();
            assert!(e.contains("redis://[user:password@]host"), "{bad}: {e}");
        }
        let e = RedisTarget::from_url("localhost:6379")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no scheme"), "{e}");
        let e = RedisTarget::from_url("http://u:pw@h:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"http\"") && !e.contains(":pw@"), "{e}");
        // The database and the port each get their own sentence, without redis-rs's
        // type names.
        for (bad, says) in [
            (
                "redis://h:1/abc",
                "must be a whole number from 0, not \"abc\"",
            ),
            ("redis://h:1/-1", "must be a whole number from 0, not -1"),
            ("redis://h:port/0", "is the port a number 1-65535?"),
        ] {
            let e = RedisTarget::from_url(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("InvalidClientConfig"), "{bad}: {e}");
        }
        let e = RedisTarget::from_url("redis://h:1/abc")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("1-65535"), "{e}");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://p@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("garbage"), "garbage");
        assert_eq!(redact_url("redis://u:p@ss@h/0"), "redis://u:***@h/0");
        assert_eq!(redact_url("u:pw@h:1"), "u:***@h:1");
        assert_eq!(redact_url("redis://u:p/w?x#@h/0"), "redis://u:***@h/0");
        let two = redact_url("redis://:a1@h1,redis://:b2@h2");
        assert!(!two.contains("a1") && !two.contains("b2"), "{two}");
    }
}
