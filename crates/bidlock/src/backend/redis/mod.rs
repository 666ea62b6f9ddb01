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
mod admin;
mod batch;
mod calls;
mod client;
mod cluster;
mod conn;
mod handoff;
mod lock;
mod protocol;
mod scan;
pub(crate) mod scripts;
mod sentinel;
mod shards;
mod stats;
mod subscriber;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use client::RedisSettings;
use client::{connect_checked, describe, make_client, Master};
use cluster::ClusterLink;
use conn::Conn;
use scripts::FENCE_FLOOR;
use sentinel::{Confirmation, Failover};
use subscriber::Subscriber;

use super::TryAcquire;
use crate::config::RedisTarget;
use crate::error::Error;
use crate::keyspace::{KeySpace, Layout};
use crate::metrics::{Counter, Metrics};
use crate::notices::Notices;

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
            failover: self
                .failover
                .as_ref()
                .map(|f| (f.clone(), self.background.clone())),
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
        let moved = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
        if moved {
            self.look_for_a_new_master();
        }
        if let Some(refused) = acl::refusal(op, &e) {
            tracing::warn!(target: "bidlock::redis", op, key, error = %refused, "Redis refused a permission");
            return Error::Redis {
                op,
                url: self.target.redacted().to_owned(),
                source: Box::new(refused),
            };
        }
        if e.code() == Some("WRONGTYPE") {
            // The scripts check their keys before writing; this is a key they could not
            // name (a command outside them, or another kind of value appearing mid-way).
            return Error::WrongType {
                key: key.to_owned(),
                found: "holds another kind of Redis value than bidlock writes there (it, or another key of its posting)".to_owned(),
            };
        }
        tracing::debug!(target: "bidlock::redis", op, key, error = %e, "redis command failed");
        Error::Redis {
            op,
            url: self.target.redacted().to_owned(),
            source: Box::new(e),
        }
    }

    /// Through Sentinel, a background check (at most one per 200 ms) that follows the
    /// master if the sentinels name another. Nothing without Sentinel.
    fn look_for_a_new_master(&self) {
        if let (Some(f), Link::Single(master)) = (&self.failover, &self.link) {
            f.check(master, &self.notices, &self.background);
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

    /// The error for a lock taken or renewed on a master the sentinels no longer name: it
    /// does not count (retried on the new master until the acquire's deadline, or the
    /// lease's).
    fn moved_away(&self, lock: &str) -> Error {
        self.metrics.count(Counter::RedisErrors, None);
        Error::Unavailable {
            url: self.target.redacted().to_owned(),
            reason: format!(
                "{lock} was written on a master the sentinels no longer name; following the new one"
            ),
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
    fn held_on_cluster(&self, req: &TryAcquire<'_>, holder: &str) -> Result<(), Error> {
        let Some(c) = self.cluster() else {
            return Ok(());
        };
        if holder == req.holder.as_str() && !req.given {
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
