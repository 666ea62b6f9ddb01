//! What operators and monitoring read and do over every node: status, lists, the census,
//! forced releases, cleanups, health. These wait for every node (within the response
//! timeout) and report what the nodes agree on; only the health check is decided by the
//! first majority.

use std::collections::HashMap;

use super::quorum::{Fanout, Vote, Votes};
use super::RedlockStore;
use crate::backend::{policy_can_evict, AdminStore, LockInfo, LockStatus, Permissions, Probe};
use crate::error::Error;
use crate::key::LockKey;
use crate::stats::Census;

impl RedlockStore {
    pub(super) async fn force_release_everywhere(&self, key: &LockKey) -> Result<bool, Error> {
        let r = self
            .on_all(self.response_timeout, |n| n.force_release(key))
            .await;
        first_error(&r)?;
        Ok(r.iter().any(|x| matches!(x, Some(Ok(true)))))
    }

    /// Deleted from every node, or an error: an acquire treats a record on any node as
    /// "done", so a record left on a node that did not answer would still stop every bid.
    pub(super) async fn clear_done_everywhere(&self, key: &LockKey) -> Result<bool, Error> {
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
    pub(super) async fn agreed_status(&self, key: &LockKey) -> Result<LockStatus, Error> {
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
    pub(super) async fn agreed_list(
        &self,
        marketplace: Option<&str>,
    ) -> Result<Vec<LockInfo>, Error> {
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

    pub(super) async fn cleanup_everywhere(&self) -> Result<u64, Error> {
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
    pub(super) async fn agreed_census(&self) -> Result<Census, Error> {
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

    /// Up when a majority answers: decided as soon as that is known either way.
    pub(super) async fn ping_majority(&self) -> Result<(), Error> {
        let pings = self.nodes.iter().map(|n| {
            let n = n.clone();
            async move { n.ping().await.map(|()| true) }
        });
        let mut pings = Fanout::start(pings, self.response_timeout);
        let mut votes = Votes::new(self.nodes.len(), self.quorum);
        while votes.decided().is_none() {
            let Some((_, answer)) = pings.next().await else {
                break;
            };
            votes.add(Vote::of(&answer));
        }
        if votes.yes() >= self.quorum {
            Ok(())
        } else {
            Err(self.no_quorum("ping", votes.yes()))
        }
    }

    /// The policy shown is an evicting one if any node has one, `noeviction` when every
    /// node says so, else unknown.
    pub(super) async fn probe_all(&self) -> Probe {
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
