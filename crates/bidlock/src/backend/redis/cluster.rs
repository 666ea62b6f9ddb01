//! A Redis Cluster: connecting through the seed nodes (redis-rs `cluster-async` discovers
//! the rest and follows `MOVED`/`ASK`, failovers and slot migrations), the masters that
//! `locks` and `cleanup` scan, the cluster's state for `health`, and the clear errors for
//! a URL of the wrong kind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{Client, ConnectionAddr, FromRedisValue, PushInfo, RedisResult, Value};
use tokio::sync::mpsc;

use super::client::{describe, policy_in_info, warn_if_evicting, RedisSettings};
use super::shards::Shards;
use super::{Background, Link, RedisStore};
use crate::backend::policy_can_evict;
use crate::config::RedisTarget;
use crate::error::{ConfigError, Error};
use crate::keyspace::{KeySpace, Layout};
use crate::metrics::Metrics;
use crate::notices::Notices;

/// One master: `(host, port)` as the cluster announces it.
pub(crate) type Node = (String, u16);

/// The store's link to a cluster.
pub(crate) struct ClusterLink {
    pub(crate) conn: ClusterConnection,
    /// Sharded pub/sub: which release channels this manager listens to.
    pub(crate) shards: Arc<Shards>,
    /// How many masters serve slots, as last seen (for `topology()`).
    masters: AtomicUsize,
}

impl ClusterLink {
    pub(crate) fn new(conn: ClusterConnection, shards: Arc<Shards>) -> ClusterLink {
        ClusterLink {
            conn,
            shards,
            masters: AtomicUsize::new(0),
        }
    }

    /// The masters that serve slots now (`CLUSTER SLOTS` from any node).
    pub(crate) async fn masters(&self) -> RedisResult<Vec<Node>> {
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.conn.clone())
            .await?;
        let masters = parse_masters(&reply);
        self.masters.store(masters.len(), Ordering::Relaxed);
        Ok(masters)
    }

    /// The master count last seen.
    pub(crate) fn master_count(&self) -> usize {
        self.masters.load(Ordering::Relaxed)
    }

    /// Runs `cmd` on one node.
    pub(crate) async fn on_node<T: FromRedisValue>(
        &self,
        (host, port): &Node,
        cmd: redis::Cmd,
    ) -> RedisResult<T> {
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let v = self.conn.clone().route_command(cmd, route).await?;
        Ok(redis::from_redis_value(v)?)
    }

    /// The cluster's state as its masters report it: `fail` if any master says so,
    /// `unreachable` if one does not answer (its slots are not served: a failover has not
    /// finished, or the shard is down), `ok` only if every master answers `ok`. Asking one
    /// node, which might be the dead one or a node that has not noticed yet, could say
    /// `ok` (or nothing) for a cluster that fails.
    pub(crate) async fn state(&self, masters: &[Node]) -> Option<String> {
        if masters.is_empty() {
            return None;
        }
        let mut state = "ok";
        for m in masters {
            let info: RedisResult<String> = self
                .on_node(m, redis::cmd("CLUSTER").arg("INFO").clone())
                .await;
            let reported = info.ok().and_then(|i| {
                i.lines()
                    .find_map(|l| l.strip_prefix("cluster_state:"))
                    .map(|s| s.trim().to_owned())
            });
            match reported.as_deref() {
                Some("ok") => {}
                Some(_) => return Some("fail".to_owned()),
                None => state = "unreachable",
            }
        }
        Some(state.to_owned())
    }

    /// The masters' `maxmemory-policy` (`INFO memory`, else `CONFIG GET`): an evicting one
    /// if any master evicts, `None` if any master refuses both.
    pub(crate) async fn maxmemory_policy(&self, masters: &[Node]) -> Option<String> {
        let mut policy = None;
        for m in masters {
            let info: RedisResult<String> = self
                .on_node(m, redis::cmd("INFO").arg("memory").clone())
                .await;
            let from_info = info.ok().as_deref().and_then(policy_in_info);
            let p = match from_info {
                Some(p) => p,
                None => {
                    // A map in RESP3, which the cluster connection speaks (for its pushes).
                    let reply: RedisResult<std::collections::HashMap<String, String>> = self
                        .on_node(
                            m,
                            redis::cmd("CONFIG")
                                .arg("GET")
                                .arg("maxmemory-policy")
                                .clone(),
                        )
                        .await;
                    reply.ok()?.remove("maxmemory-policy")?
                }
            };
            if policy.is_none() || policy_can_evict(&p) {
                policy = Some(p);
            }
        }
        policy
    }
}

/// A cluster: connects through the seeds, checks that it answers and which masters
/// serve slots, and starts listening for pushes (sharded release messages).
pub(super) async fn connect_store(
    target: RedisTarget,
    keys: KeySpace,
    settings: &RedisSettings,
    notices: Arc<Notices>,
    metrics: Arc<Metrics>,
) -> Result<RedisStore, Error> {
    let (conn, pushes) = connect(&target, settings).await?;
    let keys = keys.with_layout(Layout::Cluster);
    let (shards, requests) = Shards::new(keys.clone(), notices.clone(), settings.wait_linger);
    let link = ClusterLink::new(conn.clone(), shards.clone());
    let masters = link.masters().await.map_err(|e| Error::Unavailable {
        url: target.redacted().to_owned(),
        reason: describe(&e),
    })?;
    if let Some(policy) = link.maxmemory_policy(&masters).await {
        warn_if_evicting(Some(policy), target.redacted());
    }
    let store = RedisStore {
        link: Link::Cluster(link),
        failover: None,
        publish: "SPUBLISH",
        grants: None,
        batches: None,
        keys,
        target,
        metrics,
        notices,
        background: Background::default(),
        response_timeout: settings.response_timeout,
    };
    if settings.subscribe {
        store.background.spawn(shards.clone().run_pushes(pushes));
        store
            .background
            .spawn(shards.run_subscriptions(conn, requests, settings.response_timeout));
    }
    tracing::debug!(target: "bidlock::redis", url = store.target.redacted(), masters = masters.len(), "connected to the cluster");
    Ok(store)
}

/// The masters in a `CLUSTER SLOTS` reply: the first node of every slot range.
fn parse_masters(reply: &Value) -> Vec<Node> {
    let Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let mut out: Vec<Node> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let Some(Value::Array(node)) = parts.get(2) else {
            continue;
        };
        let host: Option<String> = node
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok());
        let port: Option<u16> = node
            .get(1)
            .and_then(|v| redis::from_redis_value_ref(v).ok());
        if let (Some(h), Some(p)) = (host, port) {
            if !out.contains(&(h.clone(), p)) {
                out.push((h, p));
            }
        }
    }
    out.sort();
    out
}

/// Connects to the cluster through its seeds, bounded by the connect timeout. Pushes
/// (sharded messages, unsubscribes by the server, disconnections) go to the returned
/// receiver. A seed that is a single server, not a cluster node, is named in the error.
pub(crate) async fn connect(
    target: &RedisTarget,
    settings: &RedisSettings,
) -> Result<(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>), crate::Error> {
    let unavailable = |reason: String| crate::Error::Unavailable {
        url: target.redacted().to_owned(),
        reason,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let client = builder(target, settings)
        .push_sender(tx)
        .build()
        .map_err(|e| unavailable(describe(&e)))?;
    let connected = tokio::time::timeout(
        settings.connect_timeout + Duration::from_millis(100),
        client.get_async_connection(),
    )
    .await;
    let reason = match connected {
        Ok(Ok(conn)) => return Ok((conn, rx)),
        Ok(Err(e)) => describe(&e),
        Err(_) => format!(
            "no answer within {}",
            crate::human::duration(settings.connect_timeout)
        ),
    };
    if let Some(seed) = single_server_seed(target, settings).await {
        return Err(ConfigError::InvalidUrl {
            url: target.redacted().to_owned(),
            reason: format!(
                "{seed} is a single Redis server, not a Redis Cluster node (cluster_enabled:0); \
                 use redis://{seed} for a single server"
            ),
        }
        .into());
    }
    Err(unavailable(reason))
}

fn builder(target: &RedisTarget, settings: &RedisSettings) -> ClusterClientBuilder {
    if target.is_tls() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let mut b = ClusterClientBuilder::new(seed_infos(target))
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(settings.connect_timeout)
        .response_timeout(settings.response_timeout)
        .tcp_settings(
            TcpSettings::default()
                .set_nodelay(true)
                .set_keepalive(keepalive),
        )
        // Redirections and `TRYAGAIN` during a migration are retried at once or after a
        // short pause, never after redis-rs' default of over a second.
        .retries(6)
        .min_retry_wait(5)
        .max_retry_wait(300)
        .retry_wait_formula(10, 2);
    if let (true, Some(ca)) = (target.is_tls(), &settings.tls_ca_cert) {
        b = b.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        });
    }
    b
}

/// Every seed with the URL's credentials and TLS.
fn seed_infos(target: &RedisTarget) -> Vec<redis::ConnectionInfo> {
    let seeds = target.cluster.as_ref().map(|c| c.seeds.clone());
    seeds
        .unwrap_or_default()
        .into_iter()
        .map(|(host, port)| {
            let addr = crate::config::tcp_addr(host, port, target.is_tls());
            target.info.clone().set_addr(addr)
        })
        .collect()
}

/// The first seed that answers and says it is not a cluster node.
async fn single_server_seed(target: &RedisTarget, settings: &RedisSettings) -> Option<String> {
    for info in seed_infos(target) {
        let name = match info.addr() {
            ConnectionAddr::Tcp(h, p)
            | ConnectionAddr::TcpTls {
                host: h, port: p, ..
            } => {
                format!("{h}:{p}")
            }
            _ => continue,
        };
        let asked = tokio::time::timeout(settings.connect_timeout, async {
            let client = Client::open(info)?;
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("INFO")
                .arg("cluster")
                .query_async::<String>(&mut c)
                .await
        })
        .await;
        if let Ok(Ok(info)) = asked {
            if cluster_enabled(&info) == Some(false) {
                return Some(name);
            }
        }
    }
    None
}

/// A `redis://` URL names one server; a cluster node spreads keys over slots that the
/// single-server layout (and its prefix-wide counter) cannot use. Refuses it, naming the
/// `redis+cluster://` URL to use instead. A server that refuses `INFO` is let through.
pub(crate) async fn refuse_cluster_node(
    conn: &mut redis::aio::ConnectionManager,
    target: &RedisTarget,
) -> Result<(), crate::Error> {
    let info: RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(conn).await;
    if info.ok().as_deref().and_then(cluster_enabled) != Some(true) {
        return Ok(());
    }
    let (scheme, node) = match target.info.addr() {
        ConnectionAddr::Tcp(h, p) => ("redis+cluster", format!("{h}:{p}")),
        ConnectionAddr::TcpTls { host, port, .. } => ("rediss+cluster", format!("{host}:{port}")),
        _ => ("redis+cluster", "host:port".to_owned()),
    };
    Err(ConfigError::InvalidUrl {
        url: target.redacted().to_owned(),
        reason: format!(
            "the server is a Redis Cluster node (cluster_enabled:1), which a single-server URL \
             cannot use (the keys of one posting must share a hash slot); use {scheme}://{node} \
             (add more nodes comma-separated)"
        ),
    }
    .into())
}

/// `cluster_enabled` from `INFO cluster`.
pub(crate) fn cluster_enabled(info: &str) -> Option<bool> {
    info.lines()
        .find_map(|l| l.strip_prefix("cluster_enabled:"))
        .map(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_the_first_node_of_each_range() {
        let node = |p: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, m: i64, r: i64| {
            Value::Array(vec![Value::Int(a), Value::Int(b), node(m), node(r)])
        };
        let reply = Value::Array(vec![
            range(0, 10, 7001, 7004),
            range(11, 20, 7002, 7005),
            range(21, 30, 7001, 7004),
        ]);
        assert_eq!(
            parse_masters(&reply),
            vec![
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002)
            ]
        );
        assert_eq!(
            cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"),
            Some(true)
        );
        assert_eq!(cluster_enabled("cluster_enabled:0"), Some(false));
        assert_eq!(cluster_enabled(""), None);
    }
}
