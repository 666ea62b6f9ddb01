//! The Redis store: one lock key per posting holding the holder id with a `PX` ttl —
//! the layout of the original Python system and of redis-py's `Lock`, so all of them
//! exclude each other — and one Lua script per multi-step change.
//!
//! ## Behavior
//!
//! - Commands go over one multiplexed [`ConnectionManager`]: many tasks share one TCP
//!   connection; a dropped connection fails the commands in flight (they return
//!   [`Error::Redis`], counted in `redis_errors`, never "acquired") and is re-established
//!   in the background.
//! - Scripts run by `EVALSHA` and are loaded again on `NOSCRIPT`, so a Redis restart or a
//!   `SCRIPT FLUSH` costs one extra round trip, nothing else.
//! - One pub/sub connection per manager listens on the release channel and wakes the
//!   local waiters of the released key. While it reconnects, waiters fall back to polling
//!   with backoff; when it is back, every waiting key is re-checked.
//! - Leases are extended by a watchdog per guard (see the manager); this store only
//!   runs the holder-checked extend script.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{Client, ErrorKind, RedisError, Script};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::memory::ms;
use super::{
    completion_record, policy_can_evict, AcquireRequest, Attempt, Completed, LockInfo, LockStatus,
    Probe,
};
use crate::backoff::{Backoff, RetryPolicy};
use crate::config::{RedisTarget, SentinelSpec};
use crate::error::Error;
use crate::key::{KeySpace, LockKey};
use crate::lease::{Holder, Lease};
use crate::metrics::{Counter, Metrics};
use crate::notices::Notices;

static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/acquire.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release.lua")));
static EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/extend.lua")));
static COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/complete.lua")));
static FORCE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/force_release.lua")));
static CLEANUP: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/cleanup.lua")));
static STATUS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/status.lua")));
static LIST: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/list.lua")));

const SCAN_BATCH: usize = 500;

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
}

/// The connection to the master, swapped when Sentinel reports a new one.
pub(crate) struct Master {
    conn: RwLock<ConnectionManager>,
    client: RwLock<Client>,
}

impl Master {
    fn conn(&self) -> ConnectionManager {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn client(&self) -> Client {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Finding the master through Sentinel, and following it when it moves.
pub(crate) struct Failover {
    spec: SentinelSpec,
    target: RedisTarget,
    tls_ca_cert: Option<Vec<u8>>,
    cfg: ConnectionManagerConfig,
    connect_timeout: Duration,
    current: Mutex<Option<(String, u16)>>,
    resolving: AtomicBool,
}

impl Failover {
    /// Asks the sentinels, in turn, where the master is.
    async fn resolve(&self) -> Result<(String, u16), String> {
        let mut last = String::from("no sentinel answered");
        for (host, port) in &self.spec.sentinels {
            let asked = tokio::time::timeout(self.connect_timeout, async {
                let client = Client::open((host.clone(), *port))?;
                let mut c = client.get_multiplexed_async_connection().await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.spec.service)
                    .query_async::<Option<(String, String)>>(&mut c)
                    .await
            })
            .await;
            match asked {
                Ok(Ok(Some((h, p)))) => match p.parse::<u16>() {
                    Ok(p) => return Ok((h, p)),
                    Err(_) => last = format!("sentinel {host}:{port} gave a bad port {p:?}"),
                },
                Ok(Ok(None)) => {
                    last = format!(
                        "sentinel {host}:{port} knows no master named {:?}",
                        self.spec.service
                    )
                }
                Ok(Err(e)) => last = format!("sentinel {host}:{port}: {e}"),
                Err(_) => last = format!("sentinel {host}:{port}: no answer"),
            }
        }
        Err(last)
    }

    fn info_for(&self, (host, port): &(String, u16)) -> redis::ConnectionInfo {
        let addr = if self.target.is_tls() {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        };
        self.target.info.clone().set_addr(addr)
    }

    /// After an error that may mean a failover: ask again, and move to the new master if
    /// it changed. At most one at a time.
    fn check(self: &Arc<Self>, master: &Arc<Master>, notices: &Arc<Notices>) {
        if self.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, master, notices) = (self.clone(), master.clone(), notices.clone());
        tokio::spawn(async move {
            if let Ok(addr) = this.resolve().await {
                let changed = {
                    let mut cur = this.current.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = cur.as_ref() != Some(&addr);
                    *cur = Some(addr.clone());
                    changed
                };
                if changed {
                    let info = this.info_for(&addr);
                    if let Ok(client) =
                        make_client(info, this.target.is_tls(), this.tls_ca_cert.as_ref())
                    {
                        if let Ok(conn) = ConnectionManager::new_lazy_with_config(
                            client.clone(),
                            this.cfg.clone(),
                        ) {
                            *master.conn.write().unwrap_or_else(|e| e.into_inner()) = conn;
                            *master.client.write().unwrap_or_else(|e| e.into_inner()) = client;
                            tracing::warn!(target: "bidlock::redis", url = this.target.redacted(), master = %format!("{}:{}", addr.0, addr.1), "Sentinel reports a new master; following it");
                            notices.all();
                        }
                    }
                }
            }
            // Rate limit: one look every 200 ms at most.
            tokio::time::sleep(Duration::from_millis(200)).await;
            this.resolving.store(false, Ordering::Release);
        });
    }
}

fn make_client(
    info: redis::ConnectionInfo,
    tls: bool,
    ca: Option<&Vec<u8>>,
) -> Result<Client, RedisError> {
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

pub(crate) struct RedisStore {
    master: Arc<Master>,
    failover: Option<Arc<Failover>>,
    target: RedisTarget,
    keys: KeySpace,
    fence_key: String,
    channel: String,
    metrics: Arc<Metrics>,
    notices: Arc<Notices>,
    subscriber: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(s) = &self.subscriber {
            s.abort();
        }
    }
}

/// Describes a connect error for an operator, without secrets.
fn describe(e: &RedisError) -> String {
    match e.kind() {
        ErrorKind::AuthenticationFailed => {
            "authentication failed (check the password and user)".to_owned()
        }
        _ if e.to_string().contains("NOAUTH") => {
            "authentication required: the server has a password and none was given".to_owned()
        }
        _ if e.is_connection_refusal() => "connection refused".to_owned(),
        _ if e.is_timeout() => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

impl RedisStore {
    /// Connects (bounded by the connect timeout), checks the server answers, and starts
    /// the release subscriber.
    pub(crate) async fn connect(
        target: RedisTarget,
        keys: KeySpace,
        settings: &RedisSettings,
        notices: Arc<Notices>,
        metrics: Arc<Metrics>,
    ) -> Result<RedisStore, Error> {
        let unavailable = |reason: String| Error::Unavailable {
            url: target.redacted().to_owned(),
            reason,
        };
        if target.is_tls() {
            // rustls needs one process-wide crypto provider; keep the application's if it
            // installed one, else use ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let failover = target.sentinel.clone().map(|spec| {
            Arc::new(Failover {
                spec,
                target: target.clone(),
                tls_ca_cert: settings.tls_ca_cert.clone(),
                cfg: cfg.clone(),
                connect_timeout: settings.connect_timeout,
                current: Mutex::new(None),
                resolving: AtomicBool::new(false),
            })
        });
        let info = match &failover {
            Some(f) => {
                let addr = f.resolve().await.map_err(unavailable)?;
                *f.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
                f.info_for(&addr)
            }
            None => target.info.clone(),
        };
        let client = make_client(info, target.is_tls(), settings.tls_ca_cert.as_ref())
            .map_err(|e| unavailable(describe(&e)))?;
        let conn = if settings.lazy {
            ConnectionManager::new_lazy_with_config(client.clone(), cfg)
                .map_err(|e| unavailable(describe(&e)))?
        } else {
            let conn = tokio::time::timeout(
                settings.connect_timeout + Duration::from_millis(100),
                ConnectionManager::new_with_config(client.clone(), cfg),
            )
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", settings.connect_timeout)))?
            .map_err(|e| unavailable(describe(&e)))?;
            // The handshake succeeds without credentials on a server that requires them;
            // ask once so a missing password is a clear error now, not on the first acquire.
            let mut probe = conn.clone();
            let pong: Result<String, RedisError> = redis::cmd("PING").query_async(&mut probe).await;
            if let Err(e) = pong {
                return Err(unavailable(describe(&e)));
            }
            warn_if_evicting(&mut probe, target.redacted()).await;
            conn
        };
        let master = Arc::new(Master {
            conn: RwLock::new(conn),
            client: RwLock::new(client),
        });
        let channel = keys.release_channel();
        let subscriber = if settings.subscribe {
            let (ready_tx, ready_rx) = oneshot::channel();
            let task = tokio::spawn(run_subscriber(
                master.clone(),
                channel.clone(),
                keys.clone(),
                notices.clone(),
                settings.connect_timeout,
                target.redacted().to_owned(),
                ready_tx,
            ));
            // Waiting for the first subscription closes the window in which an early
            // waiter could miss a release; if it takes too long, polling covers it. A
            // lazily connected node (Redlock) may be down: do not wait long for it.
            let wait = if settings.lazy {
                settings.connect_timeout.min(Duration::from_millis(300))
            } else {
                settings.connect_timeout
            };
            if tokio::time::timeout(wait, ready_rx).await.is_err() {
                tracing::warn!(target: "bidlock::redis", url = target.redacted(), "release subscriber not ready; waiters will poll until it is");
            }
            Some(task)
        } else {
            None
        };
        Ok(RedisStore {
            master,
            failover,
            fence_key: keys.fence_key(),
            channel,
            keys,
            target,
            metrics,
            notices,
            subscriber,
        })
    }

    pub(crate) fn location(&self) -> &str {
        self.target.redacted()
    }

    fn call(&self) -> ConnectionManager {
        self.metrics.count(Counter::BackendCalls, None);
        self.master.conn()
    }

    fn err(&self, op: &'static str, key: &str, e: RedisError) -> Error {
        self.metrics.count(Counter::RedisErrors, None);
        if let Some(f) = &self.failover {
            let moved = e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
                || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
            if moved {
                f.check(&self.master, &self.notices);
            }
        }
        if e.code() == Some("WRONGTYPE") {
            return Error::WrongType {
                key: key.to_owned(),
                found: "non-string value".to_owned(),
            };
        }
        tracing::debug!(target: "bidlock::redis", op, key, error = %e, "redis command failed");
        Error::Redis {
            op,
            url: self.target.redacted().to_owned(),
            source: e,
        }
    }

    pub(crate) async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        let lock = self.keys.lock_key(req.key);
        let done = self.keys.done_key(req.key);
        let wait = self.keys.wait_key(req.key);
        let mut inv = ACQUIRE.prepare_invoke();
        inv.key(&lock)
            .key(&self.fence_key)
            .key(&done)
            .key(&wait)
            .arg(req.holder().as_str())
            .arg(ms(req.ttl).max(1))
            .arg(if req.check_done { "1" } else { "0" })
            .arg(if req.waiters_behind { "1" } else { "0" });
        let (code, n, text): (i64, i64, Vec<u8>) = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("acquire", &lock, e))?;
        match code {
            1 => Ok(Attempt::Acquired {
                token: u64::try_from(n).unwrap_or(0),
            }),
            0 => Ok(Attempt::Held {
                holder: Some(String::from_utf8_lossy(&text).into_owned()),
                ttl_left: u64::try_from(n).ok().map(Duration::from_millis),
            }),
            2 => Ok(Attempt::Done),
            _ => {
                self.metrics.count(Counter::RedisErrors, None);
                Err(Error::WrongType {
                    key: lock,
                    found: String::from_utf8_lossy(&text).into_owned(),
                })
            }
        }
    }

    pub(crate) async fn release(&self, key: &LockKey, holder: &Holder) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        let mut inv = RELEASE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(key))
            .arg(holder.as_str())
            .arg(&self.channel);
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("release", &lock, e))?;
        // Waiters, here and in other processes alike, learn of the release from Redis'
        // message. Waking local waiters first would let one process keep a hot lock
        // among its own tasks while others starve (seen in the soak test).
        Ok(n >= 1)
    }

    pub(crate) async fn extend(
        &self,
        key: &LockKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        let mut inv = EXTEND.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(key))
            .arg(holder.as_str())
            .arg(ms(ttl).max(1));
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("extend", &lock, e))?;
        Ok(n == 1)
    }

    pub(crate) async fn holds(&self, lease: &Lease) -> Result<bool, Error> {
        let lock = self.keys.lock_key(lease.key());
        let holder: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&lock)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("holds", &lock, e))?;
        Ok(holder.as_deref() == Some(lease.holder().as_str().as_bytes()))
    }

    pub(crate) async fn complete(
        &self,
        lease: &Lease,
        retention: Duration,
    ) -> Result<Completed, Error> {
        let lock = self.keys.lock_key(lease.key());
        let done = self.keys.done_key(lease.key());
        let mut inv = COMPLETE.prepare_invoke();
        inv.key(&lock)
            .key(&done)
            .key(self.keys.wait_key(lease.key()))
            .arg(lease.holder().as_str())
            .arg(completion_record(lease))
            .arg(ms(retention).max(1))
            .arg(&self.channel);
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("complete", &lock, e))?;
        Ok(if n == 1 {
            Completed::Released
        } else {
            Completed::NotHeld
        })
    }

    pub(crate) async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        let mut inv = FORCE_RELEASE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(key))
            .arg(&self.channel);
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("force_release", &lock, e))?;
        Ok(n == 1)
    }

    pub(crate) async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        let done = self.keys.done_key(key);
        let n: i64 = redis::cmd("DEL")
            .arg(&done)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("clear_done", &done, e))?;
        Ok(n == 1)
    }

    pub(crate) async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        let lock = self.keys.lock_key(key);
        let done = self.keys.done_key(key);
        let mut inv = STATUS.prepare_invoke();
        inv.key(&lock).key(&done);
        let (kind, holder, pttl, record, done_pttl): (String, Vec<u8>, i64, Vec<u8>, i64) = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("status", &lock, e))?;
        if kind != "string" && kind != "none" {
            return Err(Error::WrongType {
                key: lock,
                found: kind,
            });
        }
        let held = kind == "string";
        let has_done = !record.is_empty();
        Ok(LockStatus {
            redis_key: lock,
            holder: held.then(|| String::from_utf8_lossy(&holder).into_owned()),
            ttl_left_ms: if held { u64::try_from(pttl).ok() } else { None },
            done: has_done.then(|| String::from_utf8_lossy(&record).into_owned()),
            done_ttl_left_ms: if has_done {
                u64::try_from(done_pttl).ok()
            } else {
                None
            },
        })
    }

    async fn scan_batches(
        &self,
        pattern: &str,
        mut each: impl AsyncFnMut(Vec<String>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut self.call())
                .await
                .map_err(|e| self.err("scan", pattern, e))?;
            if !batch.is_empty() {
                each(batch).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    pub(crate) async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        let pattern = self.keys.scan_pattern(marketplace);
        let mut out = Vec::new();
        self.scan_batches(&pattern, async |batch: Vec<String>| {
            let mut inv = LIST.prepare_invoke();
            for k in &batch {
                inv.key(k);
            }
            let flat: Vec<redis::Value> = inv
                .invoke_async(&mut self.call())
                .await
                .map_err(|e| self.err("list", &pattern, e))?;
            for (k, chunk) in batch.iter().zip(flat.chunks(3)) {
                let [kind, holder, pttl] = chunk else {
                    continue;
                };
                let kind: String = redis::from_redis_value_ref(kind).unwrap_or_default();
                if kind != "string" {
                    continue;
                }
                let Some(parsed) = self.keys.parse_lock_key(k) else {
                    continue;
                };
                let holder: Vec<u8> = redis::from_redis_value_ref(holder).unwrap_or_default();
                let pttl: i64 = redis::from_redis_value_ref(pttl).unwrap_or(-2);
                if pttl == -2 {
                    continue;
                }
                out.push(LockInfo {
                    redis_key: k.clone(),
                    marketplace: parsed.marketplace().to_owned(),
                    posting: parsed.posting().to_owned(),
                    holder: String::from_utf8_lossy(&holder).into_owned(),
                    ttl_left_ms: u64::try_from(pttl).ok(),
                });
            }
            Ok(())
        })
        .await?;
        out.sort_by(|a, b| a.redis_key.cmp(&b.redis_key));
        Ok(out)
    }

    pub(crate) async fn cleanup_all(&self) -> Result<u64, Error> {
        let pattern = self.keys.scan_pattern(None);
        let mut removed = 0u64;
        self.scan_batches(&pattern, async |batch: Vec<String>| {
            let mut inv = CLEANUP.prepare_invoke();
            for k in &batch {
                inv.key(k);
            }
            inv.arg(&self.channel);
            let n: u64 = inv
                .invoke_async(&mut self.call())
                .await
                .map_err(|e| self.err("cleanup", &pattern, e))?;
            removed += n;
            Ok(())
        })
        .await?;
        Ok(removed)
    }

    /// Raises the fencing counter to at least `token` (Redlock write-back).
    pub(crate) async fn raise_fence(&self, token: u64) -> Result<(), Error> {
        let mut inv = super::redlock::FENCE_FLOOR.prepare_invoke();
        inv.key(&self.fence_key).arg(token);
        let _: u64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("raise_fence", &self.fence_key, e))?;
        Ok(())
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("ping", "", e))?;
        Ok(())
    }

    /// The eviction policy (`None` when `CONFIG GET` is refused, as on many managed
    /// services).
    pub(crate) async fn probe(&self) -> Probe {
        Probe {
            maxmemory_policy: maxmemory_policy(&mut self.call()).await,
        }
    }

    pub(crate) async fn close(&self) {
        if let Some(s) = &self.subscriber {
            s.abort();
        }
    }
}

/// Redis' `maxmemory-policy`, or `None` when it cannot be read.
async fn maxmemory_policy(conn: &mut ConnectionManager) -> Option<String> {
    let reply: Result<Vec<String>, RedisError> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    reply.ok().and_then(|v| v.into_iter().nth(1))
}

/// Warns once (at connect) when Redis may evict locks and completion records.
async fn warn_if_evicting(conn: &mut ConnectionManager, url: &str) {
    match maxmemory_policy(conn).await {
        Some(policy) if policy_can_evict(&policy) => {
            tracing::warn!(target: "bidlock::redis", url, %policy,
                "Redis may evict keys under memory pressure (maxmemory-policy {policy}): a lock or completion record can vanish while held; set maxmemory-policy noeviction");
        }
        Some(_) => {}
        None => {
            tracing::debug!(target: "bidlock::redis", url, "maxmemory-policy unknown (CONFIG GET refused)");
        }
    }
}

/// Listens for release messages, wakes local waiters and has held leases of the key
/// checked; reconnects with backoff.
async fn run_subscriber(
    master: Arc<Master>,
    channel: String,
    keys: KeySpace,
    notices: Arc<Notices>,
    connect_timeout: Duration,
    url: String,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let policy = RetryPolicy::new(Duration::from_millis(100), 2.0, Duration::from_secs(2));
    let mut backoff = Backoff::new(policy);
    loop {
        let client = master.client();
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, RedisError>(ps)
        })
        .await;
        match connected {
            Ok(Ok(ps)) => {
                tracing::debug!(target: "bidlock::redis", url, channel, "release subscriber connected");
                backoff = Backoff::new(policy);
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                // Releases may have happened while we were away.
                notices.all();
                let mut stream = ps.into_on_message();
                while let Some(msg) = stream.next().await {
                    if let Ok(payload) = msg.get_payload::<String>() {
                        if let Some(key) = keys.parse_lock_key(&payload) {
                            notices.released(&key);
                        }
                    }
                }
                tracing::debug!(target: "bidlock::redis", url, "release subscriber disconnected; waiters poll until it is back");
                notices.all();
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "bidlock::redis", url, error = %e, "release subscriber could not connect");
            }
            Err(_) => {
                tracing::debug!(target: "bidlock::redis", url, "release subscriber connect timed out");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
