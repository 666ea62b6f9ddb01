//! Connections to one Redis server: the client (TCP keepalive, TLS with rustls and an
//! optional private CA), the first connection with its checks, the swappable master
//! connection, and connect errors worded for an operator.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{Client, ErrorKind, RedisError, ServerErrorKind};

use crate::backend::policy_can_evict;

/// Connection settings for one Redis server.
#[derive(Debug, Clone)]
pub(crate) struct RedisSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    /// Whether to run a release subscriber (Redlock runs one per node too).
    pub(crate) subscribe: bool,
    /// Connect on first use instead of now (Redlock: a node down at start must not stop
    /// the others).
    pub(crate) lazy: bool,
    /// A PEM CA to trust for TLS.
    pub(crate) tls_ca_cert: Option<Vec<u8>>,
    /// Cluster: how long a posting nobody tried is still listened to (longer than a
    /// waiter can go without trying: see `shards`).
    pub(crate) wait_linger: Duration,
}

impl RedisSettings {
    /// How the connection manager behaves: bounded connects and commands, a short
    /// reconnect backoff.
    pub(crate) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
    }
}

/// The connection to the master, swapped when Sentinel reports a new one.
pub(crate) struct Master {
    conn: RwLock<ConnectionManager>,
    client: RwLock<Client>,
    /// Told on every swap, so the release subscriber moves at once instead of at its
    /// next reconnect attempt (up to its 2 s backoff later).
    moved: tokio::sync::Notify,
}

impl Master {
    pub(crate) fn new(conn: ConnectionManager, client: Client) -> Master {
        Master {
            conn: RwLock::new(conn),
            client: RwLock::new(client),
            moved: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Points every later command (and the subscriber's next connect) at a new server.
    pub(crate) fn replace(&self, conn: ConnectionManager, client: Client) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        // One listener (the store's subscriber); a swap while it is busy connecting is
        // kept as a permit and seen at its next wait.
        self.moved.notify_one();
    }

    /// Resolves at the next swap (or at once if one happened since the last call).
    pub(crate) async fn moved(&self) {
        self.moved.notified().await;
    }
}

/// A client with TCP keepalive, and TLS trusting `ca` when given.
pub(crate) fn make_client(
    info: redis::ConnectionInfo,
    tls: bool,
    ca: Option<&Vec<u8>>,
) -> Result<Client, RedisError> {
    if tls {
        // rustls needs one process-wide crypto provider; keep the application's if it
        // installed one, else use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let info = info.set_tcp_settings(
        TcpSettings::default()
            .set_nodelay(true)
            .set_keepalive(keepalive),
    );
    match (ca, tls) {
        (Some(ca), true) => Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => Client::open(info),
    }
}

/// Describes a connect error for an operator, without secrets.
pub(crate) fn describe(e: &RedisError) -> String {
    match e.kind() {
        ErrorKind::AuthenticationFailed => {
            "authentication failed (check the password and user)".to_owned()
        }
        _ if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
            || e.to_string().contains("no permissions to") =>
        {
            format!(
                "Redis refused a permission (NOPERM): {}; deploy/redis/bidlock.acl lists what \
                 bidlock needs",
                e.detail().unwrap_or("the user may not run a command bidlock needs")
            )
        }
        _ if e.to_string().contains("NOAUTH") => {
            "authentication required: the server has a password and none was given".to_owned()
        }
        ErrorKind::Parse => {
            "the server answered, but not in the Redis protocol: is this port another service (an HTTP server, say)?"
                .to_owned()
        }
        _ if e.is_connection_refusal() => "connection refused".to_owned(),
        _ if e.is_timeout() => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// Opens the first connection, bounded by the connect timeout, and checks it: the
/// handshake succeeds without credentials on a server that requires them, so a PING makes
/// a missing password a clear error now rather than on the first acquire. Warns once when
/// the server may evict locks. Errors are worded for an operator.
pub(crate) async fn connect_checked(
    client: &Client,
    settings: &RedisSettings,
    url: &str,
) -> Result<ConnectionManager, String> {
    let conn = tokio::time::timeout(
        settings.connect_timeout + Duration::from_millis(100),
        ConnectionManager::new_with_config(client.clone(), settings.manager_config()),
    )
    .await
    .map_err(|_| {
        format!(
            "no answer within {}",
            crate::human::duration(settings.connect_timeout)
        )
    })?
    .map_err(|e| describe(&e))?;
    let mut probe = conn.clone();
    let pong: Result<String, RedisError> = redis::cmd("PING").query_async(&mut probe).await;
    pong.map_err(|e| describe(&e))?;
    warn_if_evicting(maxmemory_policy(&mut probe).await, url);
    Ok(conn)
}

/// Redis' `maxmemory-policy`, from `INFO memory` (which the least-privilege ACL grants:
/// `CONFIG GET` would also read every password in the configuration), else from `CONFIG
/// GET` (a server that renames `INFO`); `None` when neither may be read.
pub(crate) async fn maxmemory_policy(conn: &mut (impl ConnectionLike + Send)) -> Option<String> {
    let info: Result<String, RedisError> = redis::cmd("INFO").arg("memory").query_async(conn).await;
    if let Some(policy) = info.ok().as_deref().and_then(policy_in_info) {
        return Some(policy);
    }
    let reply: Result<Vec<String>, RedisError> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    reply.ok().and_then(|v| v.into_iter().nth(1))
}

/// `maxmemory_policy` from an `INFO memory` reply.
pub(crate) fn policy_in_info(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))
        .map(|v| v.trim().to_owned())
}

/// Warns once (at connect) when Redis may evict locks and completion records.
pub(crate) fn warn_if_evicting(policy: Option<String>, url: &str) {
    match policy {
        Some(policy) if policy_can_evict(&policy) => {
            tracing::warn!(target: "bidlock::redis", url, %policy,
                "Redis may evict keys under memory pressure (maxmemory-policy {policy}): a lock or completion record can vanish while held; set maxmemory-policy noeviction");
        }
        Some(_) => {}
        None => {
            tracing::debug!(target: "bidlock::redis", url, "maxmemory-policy unknown (INFO and CONFIG GET refused)");
        }
    }
}
