//! The stores that hold locks, behind one contract ([`LockStore`] and [`AdminStore`]),
//! and how a configuration becomes one. The manager talks only to the contract.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Backend, Config};
use crate::error::{ConfigError, Error};
use crate::keeper::LeaseKeeper;
use crate::metrics::Metrics;
use crate::notices::Notices;
use crate::waiters::WaitQueues;

pub(crate) mod memory;
pub(crate) mod redis;
pub(crate) mod redlock;
mod store;

pub(crate) use crate::lease::Extend;
pub(crate) use store::{
    AdminStore, Attempt, Complete, Completed, ExtendLock, LockStore, Release, Store, TryAcquire,
};

/// Whether a try joins the key's wait queue when the lock is held, so that a release
/// hands the lock straight to it (direct handoff; see [`Handoff`] and docs/HANDOVER.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queue {
    /// Do not queue (no wait, or a store without handoff).
    No,
    /// Join the queue when the lock is held, as a holder id never queued before.
    Join(Handoff),
    /// Stay queued if this holder id still is (its tenure goes on); a try that takes the
    /// lock also leaves the queue.
    Stay(Handoff),
}

impl Queue {
    /// The handoff rules of a try that queues.
    pub(crate) fn handoff(self) -> Option<Handoff> {
        match self {
            Queue::No => None,
            Queue::Join(h) | Queue::Stay(h) => Some(h),
        }
    }
}

/// How long a queued waiter's entry lives unless refreshed, and for how long a release
/// hands it the lock, for a lock of ttl `ttl`.
///
/// A handed-over lock is held for the short grant ttl until the new holder's first
/// renewal makes it the full ttl: a waiter that died or gave up just as it was granted the
/// lock blocks the posting for that short while only. The waiter counts the grant from
/// the last request of its own that found it still queued (the grant came after that), so
/// it refreshes its entry often enough that the grant is still worth having.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handoff {
    /// For how long a release hands the lock over.
    pub(crate) grant_ttl: Duration,
    /// How often a queued waiter refreshes its entry.
    pub(crate) refresh_every: Duration,
    /// How long an entry lives unrefreshed (then a release skips it).
    pub(crate) entry_ttl: Duration,
}

impl Handoff {
    /// The longest grant: long enough to cover a message and a renewal on a slow day.
    const MAX_GRANT: Duration = Duration::from_secs(2);

    pub(crate) fn for_ttl(ttl: Duration) -> Handoff {
        let grant_ttl = ttl.min(Handoff::MAX_GRANT);
        let refresh_every = grant_ttl / 4;
        Handoff {
            grant_ttl,
            refresh_every,
            entry_ttl: refresh_every * 3,
        }
    }
}

/// One held lock as listed by `locks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's Redis key (`bid_lock:{marketplace}:{posting}`).
    pub redis_key: String,
    /// The marketplace id.
    pub marketplace: String,
    /// The posting id.
    pub posting: String,
    /// The holder id stored in the lock.
    pub holder: String,
    /// Time left before the lock expires, in milliseconds (`None`: no expiry).
    pub ttl_left_ms: Option<u64>,
}

/// Everything known about one key: its lock and its completion record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LockStatus {
    /// The lock's Redis key.
    pub redis_key: String,
    /// The holder, when the lock is held.
    pub holder: Option<String>,
    /// Time left before the lock expires, in milliseconds.
    pub ttl_left_ms: Option<u64>,
    /// The completion record, when the posting was handled.
    pub done: Option<String>,
    /// Time left before the completion record expires, in milliseconds.
    pub done_ttl_left_ms: Option<u64>,
}

/// What a health probe found besides the round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Redis' `maxmemory-policy`; `None` when it could not be read (or no Redis).
    pub(crate) maxmemory_policy: Option<String>,
    /// What the Redis user may not do that bidlock needs; `None` when not Redis.
    pub(crate) permissions: Option<Permissions>,
}

/// What a check of the Redis user's permissions found (see `backend/redis/acl.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Permissions {
    /// What the user may not do that bidlock needs (empty: it may do everything).
    Checked(Vec<Missing>),
    /// The check could not run (before Redis 7, say): why.
    Unchecked(String),
}

impl Permissions {
    /// Several nodes' answers as one (Redlock): everything any node lacks; unchecked only
    /// when no node could be checked; `None` when there is no answer at all.
    pub(crate) fn combine(all: impl IntoIterator<Item = Permissions>) -> Option<Permissions> {
        let mut out: Option<Permissions> = None;
        for p in all {
            out = Some(match (out, p) {
                (None | Some(Permissions::Unchecked(_)), Permissions::Checked(m)) => {
                    Permissions::Checked(m)
                }
                (Some(Permissions::Checked(mut have)), Permissions::Checked(m)) => {
                    have.extend(
                        m.into_iter()
                            .filter(|x| !have.contains(x))
                            .collect::<Vec<_>>(),
                    );
                    Permissions::Checked(have)
                }
                (Some(kept @ Permissions::Checked(_)), Permissions::Unchecked(_)) => kept,
                (None | Some(Permissions::Unchecked(_)), why @ Permissions::Unchecked(_)) => why,
            });
        }
        out
    }
}

/// One permission the Redis user lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing {
    /// A command, key pattern or channel, and what bidlock uses it for.
    pub(crate) what: String,
    /// Whether taking, holding and releasing locks needs it (else only operator commands:
    /// `locks`, `cleanup`, `stats`, `health`).
    pub(crate) lock_path: bool,
}

/// What a health probe found about a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClusterProbe {
    /// `cluster_state` (`ok` or `fail`) as a node reports it; `None` when unknown.
    pub(crate) state: Option<String>,
    /// How many masters serve slots; `None` when unknown.
    pub(crate) masters: Option<usize>,
}

/// Whether a `maxmemory-policy` lets Redis evict keys that have a ttl (locks, records).
pub(crate) fn policy_can_evict(policy: &str) -> bool {
    policy != "noeviction"
}

/// The completion record's value: `"{token} {holder}"` (one format for every store).
pub(crate) fn completion_record(
    token: crate::lease::FencingToken,
    holder: &crate::lease::Holder,
) -> String {
    format!("{token} {holder}")
}

/// The shape of the deployment that holds the locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// This process's memory.
    Memory,
    /// One Redis server.
    Single,
    /// One Redis master, found (and followed through failovers) through Sentinel.
    Sentinel,
    /// Redlock: a majority of independent masters.
    Redlock {
        /// How many masters.
        nodes: usize,
    },
    /// A Redis Cluster: each posting's lock lives on the master of its hash slot.
    Cluster {
        /// How many masters served slots when last looked at (at connect, or by the last
        /// `health`, `locks` or `cleanup`).
        masters: usize,
    },
}

impl Topology {
    /// The kind of store, as metrics label it: `memory`, `redis` (one server, Sentinel or
    /// a cluster) or `redlock`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Topology::Memory => "memory",
            Topology::Single | Topology::Sentinel | Topology::Cluster { .. } => "redis",
            Topology::Redlock { .. } => "redlock",
        }
    }

    /// A short name: `memory`, `redis`, `sentinel`, `redlock` or `cluster`.
    pub fn name(&self) -> &'static str {
        match self {
            Topology::Memory => "memory",
            Topology::Single => "redis",
            Topology::Sentinel => "sentinel",
            Topology::Redlock { .. } => "redlock",
            Topology::Cluster { .. } => "cluster",
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Memory => f.write_str("memory"),
            Topology::Single => f.write_str("redis"),
            Topology::Sentinel => f.write_str("sentinel"),
            Topology::Redlock { nodes } => write!(f, "redlock ({nodes} nodes)"),
            Topology::Cluster { masters } => write!(f, "cluster ({masters} masters)"),
        }
    }
}

/// A store, and what the manager needs to go with it.
pub(crate) struct Connected {
    pub(crate) store: Box<dyn Store>,
    /// The local wait queues the store signals (shared by every manager of an in-process
    /// store, one per manager otherwise).
    pub(crate) queues: Arc<WaitQueues>,
    /// The backend in use (never `Auto`).
    pub(crate) backend: Backend,
    /// `Backend::Auto` found no Redis and fell back to memory.
    pub(crate) fallback: bool,
    /// What the store tells the manager, to be attached to it once it is assembled.
    pub(crate) notices: Option<Arc<Notices>>,
}

/// The in-process store of `config`'s prefix, telling `keeper` of removals.
pub(crate) fn memory(config: &Config, keeper: &Arc<LeaseKeeper>) -> Connected {
    let store = memory::MemoryStore::shared(config.keys.clone());
    let notices = Arc::new(Notices::new(store.queues(), keeper.clone()));
    store.subscribe(&notices);
    Connected {
        queues: store.queues(),
        store: Box::new(store),
        backend: Backend::Memory,
        fallback: false,
        notices: Some(notices),
    }
}

/// Builds the store `config` asks for. With [`Backend::Auto`], Redis when it answers
/// within the detect timeout, else memory (one WARN log).
///
/// `uid` names the manager: releases hand locks to its waiters on a channel of its own.
pub(crate) async fn connect(
    config: &Config,
    uid: &str,
    keeper: &Arc<LeaseKeeper>,
    metrics: &Arc<Metrics>,
) -> Result<Connected, Error> {
    let timeout = match config.backend {
        Backend::Memory => return Ok(memory(config, keeper)),
        Backend::Redis => config.connect_timeout,
        Backend::Auto => config.detect_timeout,
    };
    let queues = Arc::new(WaitQueues::default());
    let notices = Arc::new(Notices::new(queues.clone(), keeper.clone()));
    match connect_redis(config, uid, timeout, notices.clone(), metrics).await {
        Ok(store) => Ok(Connected {
            store,
            queues,
            backend: Backend::Redis,
            fallback: false,
            notices: Some(notices),
        }),
        Err(e) if config.backend == Backend::Auto && e.is_backend() => {
            tracing::warn!(target: "bidlock::manager", error = %e,
                "Redis is not reachable; using in-memory locks, which exclude only tasks of this process");
            Ok(Connected {
                fallback: true,
                ..memory(config, keeper)
            })
        }
        Err(e) => Err(e),
    }
}

/// One Redis (or Sentinel) target, or Redlock over three or more.
async fn connect_redis(
    config: &Config,
    uid: &str,
    connect_timeout: Duration,
    notices: Arc<Notices>,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Store>, Error> {
    let mut targets = config.redis_or_default()?;
    let settings = redis::RedisSettings {
        connect_timeout,
        response_timeout: config.response_timeout,
        subscribe: true,
        lazy: false,
        tls_ca_cert: config.tls_ca_cert.clone(),
        // A waiter tries at least every longest backoff step (plus a round trip); the
        // next in line takes over within another.
        wait_linger: config
            .retry
            .max
            .saturating_add(config.response_timeout)
            .saturating_mul(2),
    };
    if targets.len() > 1 {
        if targets.len() < 3 {
            return Err(ConfigError::InvalidValue {
                field: "redis urls",
                reason: format!(
                    "Redlock needs at least 3 independent masters, {} given",
                    targets.len()
                ),
            }
            .into());
        }
        let store = redlock::RedlockStore::connect(
            targets,
            config.keys.clone(),
            &settings,
            notices,
            metrics.clone(),
            config.drift_factor,
        )
        .await?;
        return Ok(Box::new(store));
    }
    let target = targets.remove(0);
    let store = redis::RedisStore::connect(
        target,
        config.keys.clone(),
        &settings,
        notices,
        metrics.clone(),
        Some(config.keys.grant_channel(uid)),
    )
    .await?;
    Ok(Box::new(store))
}
