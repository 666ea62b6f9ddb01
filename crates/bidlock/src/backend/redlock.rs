//! Redlock: one lock held on a majority of N independent Redis masters (N >= 3), each
//! node with the same keys and scripts as the single-node store.
//!
//! ## Behavior
//!
//! - Acquire runs on every node at once, each bounded by a short per-node timeout. The
//!   lock is held when a majority took it and `ttl - elapsed - drift` is still positive
//!   (drift = ttl x factor + 2 ms); the lease is valid for that remainder. Otherwise it is
//!   released everywhere at once.
//! - Extend, release and completion need the same majority.
//! - Fencing: the token is the maximum of the per-node tokens, written back to the
//!   quorum's counters before it is used. Any later holder's quorum shares a node with
//!   this one, whose counter is already at least this token, so tokens increase in
//!   holding order per key while a majority of nodes keeps its data.
//! - A majority down or unreachable fails closed: [`Error::NoQuorum`], never "acquired".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::join_all;
use tokio::time::Instant;

use super::redis::{RedisSettings, RedisStore};
use super::{
    policy_can_evict, AcquireRequest, Attempt, Completed, LockInfo, LockStatus, Permissions, Probe,
    Store, Topology,
};
use crate::config::RedisTarget;
use crate::error::Error;
use crate::key::LockKey;
use crate::keyspace::KeySpace;
use crate::lease::{Extend, Holder, Lease, Validity};
use crate::metrics::Metrics;
use crate::notices::Notices;
use crate::stats::Census;

pub(crate) struct RedlockStore {
    nodes: Vec<RedisStore>,
    quorum: usize,
    drift_factor: f64,
    response_timeout: Duration,
}

impl std::fmt::Debug for RedlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedlockStore")
            .field("nodes", &self.nodes)
            .field("quorum", &self.quorum)
            .finish_non_exhaustive()
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
            nodes.push(
                RedisStore::connect(
                    t,
                    keys.clone(),
                    &lazy,
                    notices.clone(),
                    metrics.clone(),
                    None,
                )
                .await?,
            );
        }
        let store = RedlockStore {
            nodes,
            quorum,
            drift_factor,
            response_timeout: settings.response_timeout,
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

    async fn on_all<'a, T, F, Fut>(&'a self, bound: Duration, f: F) -> Vec<Option<Result<T, Error>>>
    where
        F: Fn(&'a RedisStore) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        join_all(self.nodes.iter().map(|n| {
            let fut = f(n);
            async move { tokio::time::timeout(bound, fut).await.ok() }
        }))
        .await
    }

    /// Writes `token` back to the counters of the nodes that issued tokens, so any later
    /// token from them is greater. Returns how many took it.
    async fn raise_fence(&self, took: &[usize], token: u64, bound: Duration) -> usize {
        join_all(
            took.iter()
                .map(|&i| tokio::time::timeout(bound, self.nodes[i].raise_fence(token))),
        )
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(()))))
        .count()
    }

    /// After a try that did not win: release this try's copies at once. A node that took
    /// it holds our acquisition. A node whose answer is unknown may have taken it; it is
    /// released only for a generated holder id (unique to this try): a holder id of the
    /// caller's may be another acquisition's there (never remove that).
    async fn let_go(&self, req: &AcquireRequest<'_>, tally: &Tally) {
        let mut nodes = tally.took.clone();
        if !req.lease.holder_given() {
            nodes.extend(&tally.unknown);
        }
        let holder = req.holder();
        let releases = nodes.iter().map(|&i| {
            tokio::time::timeout(
                self.response_timeout,
                self.nodes[i].release(req.key, holder, None),
            )
        });
        let _ = join_all(releases).await;
    }

    async fn majority(
        &self,
        op: &'static str,
        results: Vec<Option<Result<bool, Error>>>,
    ) -> Result<bool, Error> {
        let yes = results
            .iter()
            .filter(|r| matches!(r, Some(Ok(true))))
            .count();
        let answered = results.iter().filter(|r| matches!(r, Some(Ok(_)))).count();
        if yes >= self.quorum {
            Ok(true)
        } else if answered >= self.quorum {
            Ok(false)
        } else {
            Err(self.no_quorum(op, yes))
        }
    }
}

#[async_trait]
impl Store for RedlockStore {
    fn name(&self) -> &'static str {
        "redlock"
    }

    fn location(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Store::location).collect();
        format!("redlock[{}]", urls.join(","))
    }

    fn topology(&self) -> Topology {
        Topology::Redlock {
            nodes: self.nodes.len(),
        }
    }

    /// The ttl less the clock-drift allowance, from the moment the request was sent (the
    /// time the request took is not subtracted again: the caller counts from the send).
    fn validity(&self, ttl: Duration, _renew: bool) -> Validity {
        Validity::For(ttl.saturating_sub(self.drift(ttl)))
    }

    async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        let start = Instant::now();
        let bound = self.node_timeout(req.ttl);
        let mut tally = Tally::of(self.on_all(bound, |n| n.try_acquire(req)).await);
        if tally.took.len() >= self.quorum && !tally.done && tally.wrong_type.is_none() {
            let token = tally.tokens.iter().copied().max().unwrap_or(0);
            let raised = self.raise_fence(&tally.took, token, bound).await;
            // Still valid now? (The caller checks again against its own send time.)
            let left = req.ttl.checked_sub(start.elapsed() + self.drift(req.ttl));
            if raised >= self.quorum && left.is_some_and(|v| !v.is_zero()) {
                return Ok(Attempt::Acquired { token });
            }
            tally.fenced = Some(raised);
        }
        self.let_go(req, &tally).await;
        tally.answer(self)
    }

    async fn release(
        &self,
        key: &LockKey,
        holder: &Holder,
        _lease: Option<&Lease>,
    ) -> Result<bool, Error> {
        let r = self
            .on_all(self.response_timeout, |n| n.release(key, holder, None))
            .await;
        self.majority("release", r).await
    }

    async fn extend(&self, lease: &Lease, ttl: Duration, how: Extend) -> Result<bool, Error> {
        let r = self
            .on_all(self.node_timeout(ttl), |n| n.extend(lease, ttl, how))
            .await;
        self.majority("extend", r).await
    }

    /// Whether a majority still has `lease`'s holder in the lock.
    async fn holds(&self, lease: &Lease) -> Result<bool, Error> {
        let r = self.on_all(self.response_timeout, |n| n.holds(lease)).await;
        self.majority("holds", r).await
    }

    /// Recorded once a majority wrote the record; released when a majority released.
    async fn complete(&self, lease: &Lease, retention: Duration) -> Result<Completed, Error> {
        let r = self
            .on_all(self.response_timeout, |n| n.complete(lease, retention))
            .await;
        first_error(&r)?;
        let answers: Vec<Completed> = r.into_iter().flatten().filter_map(Result::ok).collect();
        if answers.len() < self.quorum {
            return Err(self.no_quorum("complete", answers.len()));
        }
        let released = answers
            .iter()
            .filter(|c| **c == Completed::Released)
            .count();
        Ok(if released >= self.quorum {
            Completed::Released
        } else {
            Completed::NotHeld
        })
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let r = self
            .on_all(self.response_timeout, |n| n.force_release(key))
            .await;
        first_error(&r)?;
        Ok(r.iter().any(|x| matches!(x, Some(Ok(true)))))
    }

    /// Deleted from every node, or an error: an acquire treats a record on any node as
    /// "done", so a record left on a node that did not answer would still stop every bid.
    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        let r = self
            .on_all(self.response_timeout, |n| n.clear_done(key))
            .await;
        let answered = r.iter().filter(|x| matches!(x, Some(Ok(_)))).count();
        if answered < self.nodes.len() {
            return Err(Error::NoQuorum {
                op: "clear_done",
                ok: answered,
                needed: self.nodes.len(),
                total: self.nodes.len(),
            });
        }
        Ok(r.iter().any(|x| matches!(x, Some(Ok(true)))))
    }

    /// The holder seen on a majority of nodes; a completion record seen on any.
    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        let r = self.on_all(self.response_timeout, |n| n.status(key)).await;
        first_error(&r)?;
        let ok: Vec<LockStatus> = r.into_iter().flatten().filter_map(Result::ok).collect();
        if ok.len() < self.quorum {
            return Err(self.no_quorum("status", ok.len()));
        }
        let mut counts: HashMap<Option<String>, usize> = HashMap::new();
        for s in &ok {
            *counts.entry(s.holder.clone()).or_default() += 1;
        }
        let holder = counts
            .into_iter()
            .find(|(h, c)| h.is_some() && *c >= self.quorum)
            .and_then(|(h, _)| h);
        let ttl = holder.as_ref().and_then(|h| {
            ok.iter()
                .filter(|s| s.holder.as_ref() == Some(h))
                .filter_map(|s| s.ttl_left_ms)
                .min()
        });
        let done = ok.iter().find(|s| s.done.is_some());
        Ok(LockStatus {
            redis_key: ok[0].redis_key.clone(),
            holder,
            ttl_left_ms: ttl,
            done: done.and_then(|d| d.done.clone()),
            done_ttl_left_ms: done.and_then(|d| d.done_ttl_left_ms),
        })
    }

    /// Locks held by the same holder on a majority of nodes.
    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        let r = self
            .on_all(self.response_timeout, |n| n.list(marketplace))
            .await;
        let lists: Vec<Vec<LockInfo>> = r.into_iter().flatten().filter_map(Result::ok).collect();
        if lists.len() < self.quorum {
            return Err(self.no_quorum("list", lists.len()));
        }
        let mut seen: HashMap<(String, String), (usize, LockInfo)> = HashMap::new();
        for info in lists.into_iter().flatten() {
            let e = seen
                .entry((info.redis_key.clone(), info.holder.clone()))
                .or_insert((0, info.clone()));
            e.0 += 1;
            e.1.ttl_left_ms = e.1.ttl_left_ms.min(info.ttl_left_ms);
        }
        let mut out: Vec<LockInfo> = seen
            .into_values()
            .filter(|(c, _)| *c >= self.quorum)
            .map(|(_, i)| i)
            .collect();
        out.sort_by(|a, b| a.redis_key.cmp(&b.redis_key));
        Ok(out)
    }

    async fn cleanup_all(&self) -> Result<u64, Error> {
        let r = self
            .on_all(self.response_timeout * 10, |n| n.cleanup_all())
            .await;
        first_error(&r)?;
        Ok(r.into_iter()
            .flatten()
            .filter_map(Result::ok)
            .max()
            .unwrap_or(0))
    }

    /// Reads every node at once and needs a majority to answer; the picture is what they
    /// agree on ([`Census::agreed`]): a lock held by the same holder on a majority, a
    /// waiter or a completion record on any answering node, the highest counter.
    async fn census(&self) -> Result<Census, Error> {
        let r = self
            .on_all(self.response_timeout * 10, |n| n.census())
            .await;
        first_error(&r)?;
        let views: Vec<Census> = r.into_iter().flatten().filter_map(Result::ok).collect();
        if views.len() < self.quorum {
            return Err(self.no_quorum("stats", views.len()));
        }
        Ok(Census::agreed(views, self.quorum))
    }

    async fn ping(&self) -> Result<(), Error> {
        let r = self.on_all(self.response_timeout, |n| n.ping()).await;
        let ok = r.iter().filter(|x| matches!(x, Some(Ok(())))).count();
        if ok >= self.quorum {
            Ok(())
        } else {
            Err(self.no_quorum("ping", ok))
        }
    }

    /// The policy shown is an evicting one if any node has one, `noeviction` when every
    /// node says so, else unknown.
    async fn probe(&self) -> Probe {
        let r = self
            .on_all(
                self.response_timeout,
                |n| async move { Ok(n.probe().await) },
            )
            .await;
        let probes: Vec<Probe> = r
            .into_iter()
            .filter_map(|p| p.and_then(Result::ok))
            .collect();
        let policies: Vec<Option<String>> = probes
            .iter()
            .map(|p| p.maxmemory_policy.clone())
            .chain(std::iter::repeat_n(None, self.nodes.len() - probes.len()))
            .collect();
        let evicting = policies
            .iter()
            .flatten()
            .find(|p| policy_can_evict(p))
            .cloned();
        let all_known = policies.iter().all(Option::is_some);
        Probe {
            maxmemory_policy: evicting.or_else(|| all_known.then(|| "noeviction".to_owned())),
            permissions: Permissions::combine(probes.into_iter().filter_map(|p| p.permissions)),
        }
    }

    async fn close(&self) {
        for n in &self.nodes {
            n.close().await;
        }
    }
}

/// What the nodes answered to one try.
#[derive(Default)]
struct Tally {
    tokens: Vec<u64>,
    /// Nodes that took the lock for this try.
    took: Vec<usize>,
    /// Nodes whose answer is unknown (error or timeout): they may have taken it.
    unknown: Vec<usize>,
    held: Option<(Option<String>, Option<Duration>)>,
    done: bool,
    wrong_type: Option<Error>,
    /// How many nodes took the fencing write-back, when a majority took the lock.
    fenced: Option<usize>,
}

impl Tally {
    fn of(results: Vec<Option<Result<Attempt, Error>>>) -> Tally {
        let mut t = Tally::default();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Some(Ok(Attempt::Acquired { token })) => {
                    t.tokens.push(token);
                    t.took.push(i);
                }
                Some(Ok(Attempt::Held {
                    holder, ttl_left, ..
                })) => t.held = Some((holder, ttl_left)),
                Some(Ok(Attempt::Done)) => t.done = true,
                Some(Err(e @ Error::WrongType { .. })) => t.wrong_type = Some(e),
                // Nodes never queue (no handoff in Redlock), so never grant.
                Some(Ok(Attempt::Granted { .. })) | Some(Err(_)) | None => t.unknown.push(i),
            }
        }
        t
    }

    /// The answer to a try that did not win.
    fn answer(self, store: &RedlockStore) -> Result<Attempt, Error> {
        if let Some(e) = self.wrong_type {
            return Err(e);
        }
        if self.done {
            return Ok(Attempt::Done);
        }
        if let Some((holder, ttl_left)) = self.held {
            return Ok(Attempt::Held {
                holder,
                ttl_left,
                queued: false,
            });
        }
        Err(store.no_quorum("acquire", self.fenced.unwrap_or(self.took.len())))
    }
}

/// A key of the wrong type on any node is reported, not outvoted.
fn first_error<T>(results: &[Option<Result<T, Error>>]) -> Result<(), Error> {
    for r in results.iter().flatten() {
        if let Err(Error::WrongType { key, found }) = r {
            return Err(Error::WrongType {
                key: key.clone(),
                found: found.clone(),
            });
        }
    }
    Ok(())
}
