//! Redlock: one lock held on a majority of N independent Redis masters (N >= 3), each
//! node with the same keys and scripts as the single-node store.
//!
//! ## Behavior
//!
//! - Every lock operation goes to all nodes at once, each request bounded by a short
//!   per-node timeout (`min(response timeout, ttl/10)`), and is decided as soon as its
//!   outcome is fixed: a majority of successes, or enough definite answers that no
//!   majority is possible ([`quorum`]). A paused or slow minority costs no time; what
//!   was sent to it still runs there, in order, when it answers.
//! - Acquire ([`take`]): the lock is held when a majority took it and
//!   `ttl - elapsed - drift` is still positive (drift = ttl x factor + 2 ms); the lease
//!   is valid for that remainder. A try that did not win lets go of every node that took
//!   it; with a generated holder id also of nodes whose answer is unknown or comes late.
//!   A completion record on a node that answers before the decision stops the try; one
//!   on a node that answers later is not waited for: a completion counts only once a
//!   majority has its record, and those nodes refuse the lock, so no majority can take it.
//!   With a holder id of the caller's, a node that had not answered by the decision keeps
//!   what the try took there until its ttl.
//! - Extend, release and completion need the same majority ([`changes`]). A renewal never
//!   takes a free node back: a lock released by an operator must be noticed, not
//!   re-taken. A release or completion of a generated holder id that missed nodes is sent
//!   to them again until they answer or the lock's ttl has passed ([`sweep`]), so the
//!   next holder can take every node once a partition heals. A holder id of the caller's
//!   is never released in the background: its copies expire after their ttl.
//! - A majority down or unreachable fails closed: [`Error::NoQuorum`], never "acquired".
//!
//! ## Fencing
//!
//! The token is the maximum of the per-node tokens of the nodes that took the lock by the
//! decision, written back to the counters of a majority of them before it is used; a node
//! that takes the lock after the decision gets the token written back when its answer
//! arrives. Any later holder's majority shares a node with the deciding one; if the shared
//! node kept its data, its counter is at least the earlier token and the later token is
//! greater. So **tokens of a key increase in holding order as long as, between two
//! holders, a node the earlier token was written back to, and that the later acquire
//! reached, keeps its data** (it is not restarted, or restarts with AOF `appendfsync
//! always`). A node that took the earlier lock late is such a node once the write-back
//! landed; a later acquire that reaches it before then (a window of one round trip after
//! its late answer) finds only its own, lower, token there. Every node keeping its data is enough, since two majorities
//! always share a node; a majority keeping its data is not, since the shared node may be
//! the one that lost it. When it did, the later token is still above the clocks (µs) of
//! its own majority's nodes, so it is lower than the earlier one only if that one came
//! (directly, or through a counter it was written back to) from a node's clock that ran
//! further ahead of all of those than the time between the two acquires, and by at most
//! that lead (`tests/redlock_tokens.rs` runs the case with a clock a minute ahead: the
//! second token was 59 s lower).
//!
//! Why no stronger promise: a later holder that reaches only the node that lost its data
//! and a node that never saw the earlier token has nothing that tells it that token; its
//! view is the same as if the earlier holder had never been. Keeping order when just a
//! majority keeps its data would mean refusing such a try: counting a node that may have
//! lost its data (any restart: Redis' `run_id` read inside the scripts) as down until it
//! is brought up to date from a majority. That resync is itself safe only under a timing
//! bound (a node can acknowledge a token and restart before the token is used) or with a
//! third round trip per acquire, and it turns one restart plus one slow node into no
//! quorum. AOF `appendfsync always` on every node gives the stronger promise without that
//! cost.

mod admin;
mod changes;
mod quorum;
mod sweep;
mod take;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::redis::{RedisSettings, RedisStore};
use super::{
    AdminStore, Attempt, Complete, Completed, ExtendLock, LockInfo, LockStatus, LockStore, Probe,
    Release, Topology, TryAcquire,
};
use crate::config::RedisTarget;
use crate::error::Error;
use crate::key::LockKey;
use crate::keyspace::KeySpace;
use crate::lease::Holder;
use crate::metrics::Metrics;
use crate::notices::Notices;
use crate::stats::Census;
use sweep::Sweeper;

/// The store's background work (requests still out after a decision, the release
/// sweepers): tracked, stopped by `close()` or when the store is dropped.
#[derive(Default, Clone)]
pub(super) struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub(super) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }
}

pub(crate) struct RedlockStore {
    nodes: Vec<Arc<RedisStore>>,
    quorum: usize,
    drift_factor: f64,
    response_timeout: Duration,
    sweeper: Arc<Sweeper>,
    tasks: Tasks,
}

impl std::fmt::Debug for RedlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedlockStore")
            .field("nodes", &self.nodes)
            .field("quorum", &self.quorum)
            .finish_non_exhaustive()
    }
}

impl Drop for RedlockStore {
    fn drop(&mut self) {
        self.tasks.stop.cancel();
    }
}

impl RedlockStore {
    /// Connects to every node (lazily: a node down at start joins when it comes back) and
    /// requires a majority to answer now.
    pub(crate) async fn connect(
        targets: Vec<RedisTarget>,
        keys: KeySpace,
        settings: &RedisSettings,
        notices: Arc<Notices>,
        metrics: Arc<Metrics>,
        drift_factor: f64,
    ) -> Result<RedlockStore, Error> {
        let total = targets.len();
        let quorum = total / 2 + 1;
        let lazy = RedisSettings {
            lazy: true,
            ..settings.clone()
        };
        let mut nodes = Vec::with_capacity(total);
        for t in targets {
            let node = RedisStore::connect(
                t,
                keys.clone(),
                &lazy,
                notices.clone(),
                metrics.clone(),
                None,
            )
            .await?;
            nodes.push(Arc::new(node));
        }
        let tasks = Tasks::default();
        let sweep_bound = settings.response_timeout.min(Duration::from_secs(2));
        let sweeper = Sweeper::start(&nodes, sweep_bound, &tasks);
        let store = RedlockStore {
            nodes,
            quorum,
            drift_factor,
            response_timeout: settings.response_timeout,
            sweeper: Arc::new(sweeper),
            tasks,
        };
        let pings = join_all(
            store
                .nodes
                .iter()
                .map(|n| tokio::time::timeout(settings.connect_timeout, n.ping())),
        )
        .await;
        let ok = pings.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        if ok < quorum {
            return Err(Error::Unavailable {
                url: store.location(),
                reason: format!("only {ok} of {total} Redlock nodes answered, {quorum} needed"),
            });
        }
        Ok(store)
    }

    fn drift(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.drift_factor) + Duration::from_millis(2)
    }

    /// Per-node bound for one request: far below the ttl, so one slow node cannot eat
    /// the lease.
    fn node_timeout(&self, ttl: Duration) -> Duration {
        self.response_timeout
            .min(ttl / 10)
            .max(Duration::from_millis(5))
    }

    fn no_quorum(&self, op: &'static str, ok: usize) -> Error {
        Error::NoQuorum {
            op,
            ok,
            needed: self.quorum,
            total: self.nodes.len(),
        }
    }

    /// Node `i`'s release of `key` by `holder`, as a request that owns what it needs.
    fn release_on(
        &self,
        i: usize,
        key: &LockKey,
        holder: &Holder,
    ) -> impl Future<Output = Result<bool, Error>> + Send + 'static {
        let (node, key, holder) = (self.nodes[i].clone(), key.clone(), holder.clone());
        async move {
            let req = Release {
                key: &key,
                holder: &holder,
                given: true,
                tell: false,
                ttl: None,
            };
            node.release(&req).await
        }
    }

    /// Runs `f` on every node at once, each bounded by `bound`, and waits for all (the
    /// reads and operator commands, which need every node's view).
    async fn on_all<'a, T, F, Fut>(&'a self, bound: Duration, f: F) -> Vec<Option<Result<T, Error>>>
    where
        F: Fn(&'a RedisStore) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        join_all(self.nodes.iter().map(|n| {
            let fut = f(n.as_ref());
            async move { tokio::time::timeout(bound, fut).await.ok() }
        }))
        .await
    }
}

#[async_trait]
impl LockStore for RedlockStore {
    /// The ttl less the clock-drift allowance, from the moment the request was sent (the
    /// time the request took is not subtracted again: the caller counts from the send).
    fn validity(&self, ttl: Duration) -> Duration {
        ttl.saturating_sub(self.drift(ttl))
    }

    async fn try_acquire(&self, req: &TryAcquire<'_>) -> Result<Attempt, Error> {
        self.take(req).await
    }

    async fn release(&self, req: &Release<'_>) -> Result<bool, Error> {
        self.release_by_majority(req).await
    }

    async fn extend(&self, req: &ExtendLock<'_>) -> Result<bool, Error> {
        self.extend_by_majority(req).await
    }

    /// Whether a majority still has `holder` in the lock.
    async fn holds(&self, key: &LockKey, holder: &Holder, token: u64) -> Result<bool, Error> {
        self.held_by_majority(key, holder, token).await
    }

    /// Recorded once a majority wrote the record; released when a majority released.
    async fn complete(&self, req: &Complete<'_>) -> Result<Completed, Error> {
        self.complete_by_majority(req).await
    }
}

#[async_trait]
impl AdminStore for RedlockStore {
    fn location(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.location()).collect();
        format!("redlock[{}]", urls.join(","))
    }

    fn topology(&self) -> Topology {
        Topology::Redlock {
            nodes: self.nodes.len(),
        }
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        self.force_release_everywhere(key).await
    }

    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        self.clear_done_everywhere(key).await
    }

    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        self.agreed_status(key).await
    }

    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        self.agreed_list(marketplace).await
    }

    async fn cleanup_all(&self) -> Result<u64, Error> {
        self.cleanup_everywhere().await
    }

    async fn census(&self) -> Result<Census, Error> {
        self.agreed_census().await
    }

    async fn ping(&self) -> Result<(), Error> {
        self.ping_majority().await
    }

    async fn probe(&self) -> Probe {
        self.probe_all().await
    }

    /// Stops the background work (missed releases not yet answered are left to expire),
    /// then each node's.
    async fn close(&self) {
        self.tasks.stop.cancel();
        self.tasks.tracker.close();
        let _ = tokio::time::timeout(self.response_timeout, self.tasks.tracker.wait()).await;
        for n in &self.nodes {
            n.close().await;
        }
    }
}
