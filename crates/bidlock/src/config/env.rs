//! Reading the configuration from the environment: the variables of the original Python
//! system, each checked and named in any error (never a silent default).

use super::target::{redact_url, RedisTarget};
use super::ConfigBuilder;
use crate::error::ConfigError;
use crate::keyspace::KeySpace;
use crate::ttl::Ttl;

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
    /// | `REDIS_URL` | one server: `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS); Sentinel: `redis+sentinel://[user:password@]h1:26379,h2:26379/service[/db]`; a Redis Cluster: `redis+cluster://[user:password@]h1:7000,h2:7001` (`rediss+cluster://` for TLS), its seed nodes comma-separated, database 0 only |
    /// | `REDIS_URLS` | three or more URLs, comma-separated: Redlock over independent masters (not a cluster URL) |
    /// | `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB` | used when no URL is set (port 6379, db 0) |
    /// | `REDIS_USERNAME`, `REDIS_PASSWORD` | credentials (applied to a URL without its own) |
    /// | `BID_LOCK_TTL` | default lock ttl in seconds (decimals allowed), > 0 |
    /// | `BID_LOCK_PREFIX` | key prefix, default `bid_lock` |
    /// | `REDIS_TLS_CA_CERT` | PEM file of the CA that signed the server's certificate (`rediss://`) |
    ///
    /// Empty values count as unset. Later builder calls override what the environment set.
    ///
    /// A `redis+cluster://` URL selects the cluster key layout (docs/REDIS.md). It
    /// names one whole cluster, so it cannot be combined with other URLs; whether the
    /// servers are what the URL says (cluster nodes, or a single server for `redis://`) is
    /// checked at connect, and a URL of the wrong kind is refused with the one to use.
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::config::{Backend, Config, ConfigBuilder};
    use crate::error::ConfigError;

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
        assert_eq!(c.key_prefix(), "bid_lock");
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
}
