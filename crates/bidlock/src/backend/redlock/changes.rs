//! The holder-checked changes of a held lock, each decided by majority as soon as the
//! outcome is fixed: release, extend (renewals too), the "still mine?" check and the
//! completion. Every request is bounded by the lease's per-node timeout.
//!
//! A renewal only extends the nodes that still hold the lock: it never takes a free node
//! back, so a lock released under the holder (an operator's forced release, a restart
//! that lost it) is reported lost rather than quietly re-taken.

use std::future::Future;
use std::time::Duration;

use super::quorum::{Answer, Fanout, Verdict, Vote, Votes};
use super::sweep::settled;
use super::RedlockStore;
use crate::backend::{Complete, Completed, ExtendLock, LockStore, Release};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::Holder;

/// What a vote ended with: its verdict, the requests still out, and the nodes that
/// answered with neither yes nor no before the verdict.
struct Counted<T> {
    verdict: Verdict,
    yes: usize,
    rest: Fanout<T>,
    missed: Vec<usize>,
}

impl RedlockStore {
    /// Reads `fan`'s answers until the vote is decided. `vote` turns an answer into a
    /// vote, or into an error that ends the operation at once.
    async fn count<T: Send + 'static>(
        &self,
        mut fan: Fanout<T>,
        vote: impl Fn(&Answer<T>) -> Result<Vote, Error>,
    ) -> Result<Counted<T>, Error> {
        let mut votes = Votes::new(self.nodes.len(), self.quorum);
        let mut missed = Vec::new();
        let verdict = loop {
            if let Some(v) = votes.decided() {
                break v;
            }
            let Some((i, answer)) = fan.next().await else {
                break votes.last();
            };
            let v = vote(&answer)?;
            if v == Vote::Unknown {
                missed.push(i);
            }
            votes.add(v);
        };
        Ok(Counted {
            verdict,
            yes: votes.yes(),
            rest: fan,
            missed,
        })
    }

    /// Runs `op` on every node, bounded by `bound`, and counts.
    async fn vote_on_all<T, F, Fut>(
        &self,
        bound: Duration,
        op: F,
        vote: impl Fn(&Answer<T>) -> Result<Vote, Error>,
    ) -> Result<Counted<T>, Error>
    where
        T: Send + 'static,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let fan = Fanout::start((0..self.nodes.len()).map(op), bound);
        self.count(fan, vote).await
    }

    /// The nodes a release (or completion) of `holder`'s lock of `key` did not reach get
    /// it again later, for a generated holder id (see [`super::sweep`]); `ttl` bounds how
    /// long its copies can live.
    fn sweep_missed<T: Send + 'static>(
        &self,
        key: &LockKey,
        holder: &Holder,
        given: bool,
        ttl: Duration,
        counted: Counted<T>,
    ) {
        if !crate::inner::lets_go_unattended(given) {
            return;
        }
        self.sweeper
            .note_released(holder, tokio::time::Instant::now() + ttl);
        for &i in &counted.missed {
            self.sweeper.release_later(i, key, holder, given, ttl);
        }
        let (sweeper, key, holder) = (self.sweeper.clone(), key.clone(), holder.clone());
        counted
            .rest
            .finish_in_background(&self.tasks, move |i, answer| {
                if !settled(&answer) {
                    sweeper.release_later(i, &key, &holder, given, ttl);
                }
            });
    }

    fn verdict(&self, op: &'static str, verdict: Verdict, yes: usize) -> Result<bool, Error> {
        match verdict {
            Verdict::Yes => Ok(true),
            Verdict::No => Ok(false),
            Verdict::NoQuorum => Err(self.no_quorum(op, yes)),
        }
    }

    pub(super) async fn release_by_majority(&self, req: &Release<'_>) -> Result<bool, Error> {
        let bound = req
            .ttl
            .map_or(self.response_timeout, |t| self.node_timeout(t));
        let (key, holder) = (req.key, req.holder);
        let counted = self
            .vote_on_all(
                bound,
                |i| self.release_on(i, key, holder),
                |a| Ok(Vote::of(a)),
            )
            .await?;
        let result = self.verdict("release", counted.verdict, counted.yes);
        if let Some(ttl) = req.ttl {
            self.sweep_missed(key, holder, req.given, ttl, counted);
        }
        result
    }

    pub(super) async fn extend_by_majority(&self, req: &ExtendLock<'_>) -> Result<bool, Error> {
        let (ttl, how, token) = (req.ttl, req.how, req.token);
        let extend_on = |i: usize| {
            let node = self.nodes[i].clone();
            let (key, holder) = (req.key.clone(), req.holder.clone());
            async move {
                let req = ExtendLock {
                    key: &key,
                    holder: &holder,
                    ttl,
                    how,
                    token,
                };
                node.extend(&req).await
            }
        };
        let counted = self
            .vote_on_all(self.node_timeout(ttl), extend_on, |a| Ok(Vote::of(a)))
            .await?;
        self.verdict("extend", counted.verdict, counted.yes)
    }

    pub(super) async fn held_by_majority(
        &self,
        key: &LockKey,
        holder: &Holder,
        token: u64,
    ) -> Result<bool, Error> {
        let holds_on = |i: usize| {
            let node = self.nodes[i].clone();
            let (key, holder) = (key.clone(), holder.clone());
            async move { node.holds(&key, &holder, token).await }
        };
        let counted = self
            .vote_on_all(self.response_timeout, holds_on, |a| Ok(Vote::of(a)))
            .await?;
        self.verdict("holds", counted.verdict, counted.yes)
    }

    /// A key of the wrong type on any node that answers is reported, not outvoted.
    pub(super) async fn complete_by_majority(
        &self,
        req: &Complete<'_>,
    ) -> Result<Completed, Error> {
        let (retention, may_release, given, tell) =
            (req.retention, req.may_release, req.given, req.tell);
        let complete_on = |i: usize| {
            let node = self.nodes[i].clone();
            let (key, holder, record) = (req.key.clone(), req.holder.clone(), req.record.clone());
            async move {
                let req = Complete {
                    key: &key,
                    holder: &holder,
                    record,
                    retention,
                    may_release,
                    given,
                    tell,
                    ttl: Duration::ZERO,
                };
                node.complete(&req).await
            }
        };
        let vote = |answer: &Answer<Completed>| match answer {
            Some(Ok(Completed::Released)) => Ok(Vote::Yes),
            Some(Ok(Completed::NotHeld)) => Ok(Vote::No),
            Some(Err(Error::WrongType { key, found })) => Err(Error::WrongType {
                key: key.clone(),
                found: found.clone(),
            }),
            _ => Ok(Vote::Unknown),
        };
        let counted = self
            .vote_on_all(self.node_timeout(req.ttl), complete_on, vote)
            .await?;
        let result = self
            .verdict("complete", counted.verdict, counted.yes)
            .map(|released| {
                if released {
                    Completed::Released
                } else {
                    Completed::NotHeld
                }
            });
        self.sweep_missed(req.key, req.holder, req.given, req.ttl, counted);
        result
    }
}
