//! [`RedisTarget`]: where one Redis server is, parsed from a URL (`redis://`,
//! `rediss://`, `redis+unix://`, `redis+sentinel://`) or from parts, shown only with its
//! password hidden.

use std::fmt;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::ConfigError;

/// The URL schemes bidlock reads.
const SCHEMES: &[&str] = &["redis", "rediss", "redis+unix", "unix", "redis+sentinel"];

/// What every URL error says, so a newcomer sees the forms that work.
const ACCEPTED: &str = "use redis://[user:password@]host[:port][/db], rediss:// for TLS, \
redis+sentinel://host:port[,host:port...]/service[/db], or redis+unix:///path \
(a bare host:port is not a URL)";

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
        let info = trimmed.into_connection_info().map_err(|e| {
            let why = e.to_string().replace(trimmed, "<url>");
            invalid(format!("{why} (a port is a number 1-65535); {ACCEPTED}"))
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
    pub(crate) fn with_default_credentials(
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
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://p@h"), "redis://***@h");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("garbage"), "garbage");
        assert_eq!(redact_url("redis://u:p@ss@h/0"), "redis://u:***@h/0");
    }
}
