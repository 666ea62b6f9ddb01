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
//! - One pub/sub connection per store listens on the release channel ([`subscriber`]):
//!   a release wakes the local waiters of the key, and a lease held on it is checked at
//!   once. While it reconnects, waiters fall back to polling with backoff; when it is
//!   back, every waiting key and held lease is looked at again.
//! - With a `redis+sentinel://` URL, the master is found through the sentinels and
//!   followed when an error suggests it moved ([`sentinel`]).
//! - With a `redis+cluster://` URL, the same scripts and operations run over a cluster
//!   connection ([`conn`], [`cluster`]): the names of a posting share a hash slot
//!   ([`Layout::Cluster`]), releases are announced by `SPUBLISH` on the posting's own
//!   channel, and a manager listens only to the channels it has waiters for ([`shards`]);
//!   `locks` and `cleanup` scan every master.
//! - Leases are renewed by the manager's keeper; this store only runs the holder-checked
//!   extend script.

mod acl;
mod batch;
mod calls;
mod client;
mod cluster;
mod conn;
mod handoff;
mod scan;
pub(crate) mod scripts;
mod sentinel;
mod shards;
mod stats;
mod subscriber;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use client::RedisSettings;
use client::{connect_checked, describe, make_client, maxmemory_policy, Master};
use cluster::ClusterLink;
use conn::Conn;
use scripts::{COMPLETE, EXTEND, FENCE_FLOOR, FORCE_RELEASE, RENEW, STATUS};
use sentinel::{Confirmation, Failover};
use subscriber::Subscriber;

use super::memory::ms;
use super::{
    completion_record, AcquireRequest, Attempt, ClusterProbe, Completed, Handoff, LockInfo,
    LockStatus, Permissions, Probe, Store, Topology, Waiting,
};
use crate::config::RedisTarget;
use crate::error::Error;
use crate::key::LockKey;
use crate::keyspace::{KeySpace, Layout};
use crate::lease::{Extend, Holder, Lease, Validity};
use crate::metrics::{Counter, Metrics};
use crate::notices::Notices;
use crate::stats::Census;

/// The store's background tasks (the subscriber, Sentinel checks): tracked, so `close()`
/// stops them and waits for them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Background {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Background {
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    async fn stop(&self, within: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(within, self.tasks.wait()).await;
    }
}

/// A server that refused the URL's database number (`SELECT` answers "DB index is out of
/// range" in Redis 7, "invalid DB index" before): bad input, not an outage.
fn refused_database(target: &RedisTarget, reason: &str) -> Option<Error> {
    if !(reason.contains("DB index is out of range") || reason.contains("invalid DB index")) {
        return None;
    }
    let db = target.info.redis_settings().db();
    Some(Error::Config(crate::error::ConfigError::InvalidUrl {
        url: target.redacted().to_owned(),
        reason: format!(
            "the server has no database {db} (it numbers its databases from 0 to its \
             `databases` setting minus one: 0 to 15 by default)"
        ),
    }))
}

/// How long a cluster keeps a posting's fencing counter beyond the lock's ttl. Without the
/// counter, tokens still increase by the server clock; the counter covers a clock that
/// steps back by up to this much.
pub(super) const FENCE_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Where the commands go.
enum Link {
    /// One server, swapped when Sentinel reports a new master.
    Single(Arc<Master>),
    /// A cluster: redis-rs routes each command to the node of its slot.
    Cluster(ClusterLink),
}

pub(crate) struct RedisStore {
    link: Link,
    failover: Option<Arc<Failover>>,
    target: RedisTarget,
    keys: KeySpace,
    /// `PUBLISH` to the prefix's channel, or `SPUBLISH` to the posting's on a cluster.
    publish: &'static str,
    /// This manager's grant channel, when releases may hand it locks (single Redis and
    /// Sentinel; not Redlock, whose nodes could each hand the lock to a different waiter,
    /// nor a cluster, whose plain messages would reach every node).
    grants: Option<String>,
    /// Concurrent acquires and releases grouped into one script call each (one server;
    /// none on a cluster).
    batches: Option<calls::Batches>,
    metrics: Arc<Metrics>,
    notices: Arc<Notices>,
    background: Background,
    response_timeout: Duration,
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
        self.background.stop.cancel();
    }
}

impl RedisStore {
    /// Connects (bounded by the connect timeout; Sentinel: to the master the sentinels
    /// name; a cluster: through its seeds), checks the server answers, and starts the
    /// release subscriber.
    pub(crate) async fn connect(
        target: RedisTarget,
        keys: KeySpace,
        settings: &RedisSettings,
        notices: Arc<Notices>,
        metrics: Arc<Metrics>,
        grants: Option<String>,
    ) -> Result<RedisStore, Error> {
        if target.is_cluster() {
            let store = cluster::connect_store(target, keys, settings, notices, metrics).await?;
            store.require_permissions().await?;
            return Ok(store);
        }
        let unavailable = |reason: String| Error::Unavailable {
            url: target.redacted().to_owned(),
            reason,
        };
        let failover = target
            .sentinel
            .clone()
            .map(|spec| Arc::new(Failover::new(spec, &target, settings)));
        let info = match &failover {
            Some(f) => f.locate().await.map_err(unavailable)?,
            None => target.info.clone(),
        };
        let client = make_client(info, target.is_tls(), settings.tls_ca_cert.as_ref())
            .map_err(|e| unavailable(describe(&e)))?;
        let conn = if settings.lazy {
            ConnectionManager::new_lazy_with_config(client.clone(), settings.manager_config())
                .map_err(|e| unavailable(describe(&e)))?
        } else {
            let mut conn = connect_checked(&client, settings, target.redacted())
                .await
                .map_err(|reason| {
                    refused_database(&target, &reason).unwrap_or_else(|| unavailable(reason))
                })?;
            cluster::refuse_cluster_node(&mut conn, &target).await?;
            acl::require_server(&mut conn, &keys, grants.as_deref(), &target).await?;
            conn
        };
        let master = Arc::new(Master::new(conn, client));
        let keys = keys.with_layout(Layout::Classic);
        let store = RedisStore {
            batches: Some(calls::Batches::new(
                master.clone(),
                metrics.clone(),
                keys.clone(),
                grants.clone(),
                notices.clone(),
            )),
            link: Link::Single(master),
            failover,
            publish: "PUBLISH",
            grants,
            keys,
            target,
            metrics,
            notices,
            background: Background::default(),
            response_timeout: settings.response_timeout,
        };
        if settings.subscribe {
            store.start_subscriber(settings).await;
        }
        Ok(store)
    }

    /// Starts the subscriber and waits for its first subscription: that closes the window
    /// in which an early waiter could miss a release. If it takes too long, polling covers
    /// it. A lazily connected node (Redlock) may be down: do not wait long for it.
    async fn start_subscriber(&self, settings: &RedisSettings) {
        let Link::Single(master) = &self.link else {
            return;
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let subscriber = Subscriber {
            master: master.clone(),
            channel: self.keys.release_channel(),
            grants: self.grants.clone(),
            keys: self.keys.clone(),
            notices: self.notices.clone(),
            connect_timeout: settings.connect_timeout,
            url: self.target.redacted().to_owned(),
        };
        self.background.spawn(subscriber.run(ready_tx));
        let wait = if settings.lazy {
            settings.connect_timeout.min(Duration::from_millis(300))
        } else {
            settings.connect_timeout
        };
        if tokio::time::timeout(wait, ready_rx).await.is_err() {
            tracing::warn!(target: "bidlock::redis", url = self.target.redacted(), "release subscriber not ready; waiters will poll until it is");
        }
    }

    fn call(&self) -> Conn {
        self.metrics.count(Counter::BackendCalls, None);
        match &self.link {
            Link::Single(master) => Conn::Single(master.conn()),
            Link::Cluster(c) => Conn::Cluster(c.conn.clone()),
        }
    }

    fn cluster(&self) -> Option<&ClusterLink> {
        match &self.link {
            Link::Cluster(c) => Some(c),
            Link::Single(_) => None,
        }
    }

    fn err(&self, op: &'static str, key: &str, e: RedisError) -> Error {
        self.metrics.count(Counter::RedisErrors, None);
        if let (Some(f), Link::Single(master)) = (&self.failover, &self.link) {
            let moved = e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_unrecoverable_error()
                || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
            if moved {
                f.check(master, &self.notices, &self.background);
            }
        }
        if let Some(refused) = acl::refusal(op, &e) {
            tracing::warn!(target: "bidlock::redis", op, key, error = %refused, "Redis refused a permission");
            return Error::Redis {
                op,
                url: self.target.redacted().to_owned(),
                source: refused,
            };
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

    /// Through Sentinel, an extend counts only if the sentinels still name the master it
    /// went to (see [`sentinel`]); on another master's word it is a loss, and this store
    /// follows the new master. Without Sentinel there is nothing to confirm.
    async fn confirm_master(&self, lock: &str) -> Result<bool, Error> {
        let (Some(f), Link::Single(master)) = (&self.failover, &self.link) else {
            return Ok(true);
        };
        match f.confirm().await {
            Ok(Confirmation::Confirmed) => Ok(true),
            Ok(Confirmation::Moved) => {
                tracing::warn!(target: "bidlock::redis", url = self.target.redacted(), key = lock,
                    "the sentinels name another master: a lock renewed on the old one no longer counts");
                f.check(master, &self.notices, &self.background);
                Ok(false)
            }
            Err(why) => {
                self.metrics.count(Counter::RedisErrors, None);
                Err(Error::Unavailable {
                    url: self.target.redacted().to_owned(),
                    reason: format!("the renewal of {lock} went through, but no sentinel confirmed the master: {why}"),
                })
            }
        }
    }

    /// Raises the fencing counter to at least `token` (Redlock write-back).
    pub(crate) async fn raise_fence(&self, token: u64) -> Result<(), Error> {
        let fence = self.keys.fence_key();
        let mut inv = FENCE_FLOOR.prepare_invoke();
        inv.key(&fence).arg(token);
        let _: u64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("raise_fence", &fence, e))?;
        Ok(())
    }

    /// A try found the lock held. On a cluster, its waiters need the posting's channel;
    /// and a lock held by this very try means redis-rs sent the script twice (it re-sends
    /// a command whose connection dropped) and the first run took it: that outcome is
    /// unknown to the caller, so it is an error, and the lock is released in the background.
    fn held_on_cluster(&self, req: &AcquireRequest<'_>, holder: &str) -> Result<(), Error> {
        let Some(c) = self.cluster() else {
            return Ok(());
        };
        if holder == req.holder().as_str() && !req.lease.holder_given() {
            let e = RedisError::from((
                ErrorKind::Io,
                "the acquire reached the cluster twice (a retried request); outcome unknown",
            ));
            return Err(self.err("acquire", &self.keys.lock_key(req.key), e));
        }
        c.shards.waiting(req.key);
        Ok(())
    }
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn location(&self) -> String {
        self.target.redacted().to_owned()
    }

    fn topology(&self) -> Topology {
        if let Some(c) = self.cluster() {
            Topology::Cluster {
                masters: c.master_count(),
            }
        } else if self.failover.is_some() {
            Topology::Sentinel
        } else {
            Topology::Single
        }
    }

    fn validity(&self, ttl: Duration, _renew: bool) -> Validity {
        Validity::For(ttl)
    }

    fn takes_handoffs(&self) -> bool {
        self.grants.is_some()
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        self.take(req).await
    }

    async fn refresh(&self, lease: &Lease, handoff: Handoff) -> Result<Waiting, Error> {
        self.stay_queued(lease, handoff).await
    }

    async fn release(
        &self,
        key: &LockKey,
        holder: &Holder,
        lease: Option<&Lease>,
    ) -> Result<bool, Error> {
        // Only a lease's own release of a generated holder id can go unannounced when
        // nobody waits: no one else can hold a lock under that id.
        let tell = lease.is_none_or(Lease::holder_given);
        self.let_go(key, holder, tell).await
    }

    async fn extend(&self, lease: &Lease, ttl: Duration, how: Extend) -> Result<bool, Error> {
        let lock = self.keys.lock_key(lease.key());
        let script = match how {
            Extend::Exact => &EXTEND,
            Extend::Renew => &RENEW,
        };
        let mut inv = script.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(lease.key()))
            .key(self.keys.waiters_key(lease.key()))
            .arg(lease.holder().as_str())
            .arg(ms(ttl).max(1));
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("extend", &lock, e))?;
        if n != 1 {
            return Ok(false);
        }
        self.confirm_master(&lock).await
    }

    async fn holds(&self, lease: &Lease) -> Result<bool, Error> {
        let lock = self.keys.lock_key(lease.key());
        let holder: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&lock)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("holds", &lock, e))?;
        Ok(holder.as_deref() == Some(lease.holder().as_str().as_bytes()))
    }

    async fn complete(&self, lease: &Lease, retention: Duration) -> Result<Completed, Error> {
        let lock = self.keys.lock_key(lease.key());
        let done = self.keys.done_key(lease.key());
        let mut inv = COMPLETE.prepare_invoke();
        inv.key(&lock)
            .key(&done)
            .key(self.keys.wait_key(lease.key()))
            .arg(lease.holder().as_str())
            .arg(completion_record(lease))
            .arg(ms(retention).max(1))
            .arg(self.keys.release_channel_of(lease.key()))
            .arg(self.publish)
            .arg(if lease.owns_its_id() { "1" } else { "0" })
            .arg(if lease.holder_given() { "1" } else { "0" });
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

    async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        let mut inv = FORCE_RELEASE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(key))
            .arg(self.keys.release_channel_of(key))
            .arg(self.publish);
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("force_release", &lock, e))?;
        Ok(n == 1)
    }

    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        let done = self.keys.done_key(key);
        let n: i64 = redis::cmd("DEL")
            .arg(&done)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("clear_done", &done, e))?;
        Ok(n == 1)
    }

    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
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

    async fn ping(&self) -> Result<(), Error> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("ping", "", e))?;
        Ok(())
    }

    /// The eviction policy (`None` when neither `INFO` nor `CONFIG GET` may be read); on a
    /// cluster, an evicting one if any master evicts. The permissions bidlock needs that
    /// the Redis user lacks (on a cluster, on any master).
    async fn probe(&self) -> Probe {
        let (maxmemory_policy, permissions) = match self.cluster() {
            None => {
                let db = self.target.info.redis_settings().db();
                let grants = self.grants.as_deref();
                let mut conn = self.call();
                let permissions = acl::check_server(&mut conn, &self.keys, grants, db).await;
                (maxmemory_policy(&mut conn).await, permissions)
            }
            Some(c) => match c.masters().await {
                Ok(m) => (
                    c.maxmemory_policy(&m).await,
                    acl::check_cluster(c, &m, &self.keys).await,
                ),
                Err(e) => (None, Permissions::Unchecked(describe(&e))),
            },
        };
        Probe {
            maxmemory_policy,
            permissions: Some(permissions),
        }
    }

    async fn cluster_probe(&self) -> Option<ClusterProbe> {
        let c = self.cluster()?;
        let masters = c.masters().await.ok();
        Some(ClusterProbe {
            state: match &masters {
                Some(m) => c.state(m).await,
                None => None,
            },
            masters: masters.map(|m| m.len()),
        })
    }

    async fn close(&self) {
        self.background.stop(self.response_timeout).await;
    }

    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        self.list_locks(marketplace).await
    }

    async fn cleanup_all(&self) -> Result<u64, Error> {
        self.delete_locks().await
    }

    async fn census(&self) -> Result<Census, Error> {
        self.take_census().await
    }
}
