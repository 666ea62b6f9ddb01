//! One Redlock try: take the lock on every node at once, decide as soon as a majority
//! took it (or can no longer), write the token back, and let go of whatever a try that
//! did not win may hold.
//!
//! The token is the maximum over the nodes that took the lock by the decision. A node
//! that answers later may issue a greater one (its counter then already exceeds ours),
//! which changes nothing: the order argument needs only that every token is above the
//! counters of the nodes it was drawn from, and is written back to a majority before it
//! is used (see the module docs, "Fencing").

use std::time::Duration;

use tokio::time::Instant;

use super::quorum::{Answer, Fanout, Vote, Votes};
use super::sweep::settled;
use super::RedlockStore;
use crate::backend::{Attempt, LockStore, TryAcquire};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::Holder;

/// What the work a try leaves behind needs to know of it.
#[derive(Clone)]
struct Try {
    key: LockKey,
    holder: Holder,
    given: bool,
    ttl: Duration,
}

impl RedlockStore {
    pub(super) async fn take(&self, req: &TryAcquire<'_>) -> Result<Attempt, Error> {
        let start = Instant::now();
        let bound = self.node_timeout(req.ttl);
        let mut takes = Fanout::start((0..self.nodes.len()).map(|i| self.take_on(i, req)), bound);
        let mut tally = Tally::new(self.nodes.len(), self.quorum);
        while !tally.decided() {
            let Some((i, answer)) = takes.next().await else {
                break;
            };
            tally.add(i, answer);
        }
        let won = tally.won() && self.fence(&mut tally, req, start, bound).await;
        let this = Try {
            key: req.key.clone(),
            holder: req.holder.clone(),
            given: req.given,
            ttl: req.ttl,
        };
        self.after_decision(won.then(|| tally.token()), &this, takes);
        if won {
            return Ok(Attempt::Acquired {
                token: tally.token(),
            });
        }
        self.let_go(&this, &tally, bound).await;
        tally.answer(self)
    }

    /// Node `i`'s try, as a request that owns what it needs.
    fn take_on(
        &self,
        i: usize,
        req: &TryAcquire<'_>,
    ) -> impl std::future::Future<Output = Result<Attempt, Error>> + Send + 'static {
        let node = self.nodes[i].clone();
        let (key, holder, given) = (req.key.clone(), req.holder.clone(), req.given);
        let (ttl, check_done) = (req.ttl, req.check_done);
        let (waiters_behind, queue, now) = (req.waiters_behind, req.queue, req.now);
        async move {
            let req = TryAcquire {
                key: &key,
                holder: &holder,
                given,
                ttl,
                check_done,
                waiters_behind,
                queue,
                now,
            };
            node.try_acquire(&req).await
        }
    }

    /// Writes the token back to the counters of the nodes that took the lock, so any
    /// later token from them is greater; true when a majority took it and the lock is
    /// still valid now (the caller checks again against its own send time).
    async fn fence(
        &self,
        tally: &mut Tally,
        req: &TryAcquire<'_>,
        start: Instant,
        bound: Duration,
    ) -> bool {
        let token = tally.token();
        let raises = tally.took.iter().map(|&i| {
            let node = self.nodes[i].clone();
            async move { node.raise_fence(token).await.map(|()| true) }
        });
        let mut raises = Fanout::start(raises, bound);
        let mut votes = Votes::new(tally.took.len(), self.quorum);
        while votes.decided().is_none() {
            let Some((_, answer)) = raises.next().await else {
                break;
            };
            votes.add(Vote::of(&answer));
        }
        let left = req.ttl.checked_sub(start.elapsed() + self.drift(req.ttl));
        if votes.yes() >= self.quorum && left.is_some_and(|v| !v.is_zero()) {
            return true;
        }
        tally.fenced = Some(votes.yes());
        false
    }

    /// The tries still out when the try was decided run on. For a winner (`token`), a node
    /// that takes the lock late gets the token written back too, so that it carries the
    /// order like the majority that decided; and if the holder let go meanwhile (that
    /// release may have reached the node first), its late copy is let go. For a try that
    /// did not win, whatever it took is let go. Copies are let go for generated holder ids
    /// only.
    fn after_decision(&self, token: Option<u64>, this: &Try, takes: Fanout<Attempt>) {
        let (sweeper, this) = (self.sweeper.clone(), this.clone());
        let (tasks, nodes) = (self.tasks.clone(), self.nodes.clone());
        takes.finish_in_background(&self.tasks, move |node, answer| {
            let took = matches!(answer, Some(Ok(Attempt::Acquired { .. })));
            if let (Some(token), true) = (token, took) {
                let n = nodes[node].clone();
                tasks.spawn(async move {
                    let _ = n.raise_fence(token).await;
                });
            }
            if !crate::inner::lets_go_unattended(this.given) {
                return;
            }
            let release = match token {
                Some(_) => took && sweeper.was_released(&this.holder),
                None => took || may_have_taken(&answer),
            };
            if release {
                sweeper.release_later(node, &this.key, &this.holder, this.given, this.ttl);
            }
        });
    }

    /// After a try that did not win: release the nodes that took it, at once. A node
    /// whose answer is unknown may have taken it; it is released (in the background) only
    /// for a generated holder id, unique to this try: a holder id of the caller's may be
    /// another acquisition's there (never remove that).
    async fn let_go(&self, this: &Try, tally: &Tally, bound: Duration) {
        let (key, holder) = (&this.key, &this.holder);
        let mut releases = Fanout::start(
            tally.took.iter().map(|&i| self.release_on(i, key, holder)),
            bound,
        );
        while let Some((j, answer)) = releases.next().await {
            if !settled(&answer) {
                self.sweeper
                    .release_later(tally.took[j], key, holder, this.given, this.ttl);
            }
        }
        if !crate::inner::lets_go_unattended(this.given) || tally.unknown.is_empty() {
            return;
        }
        let nodes = tally.unknown.clone();
        let releases = Fanout::start(
            nodes.iter().map(|&i| self.release_on(i, key, holder)),
            bound,
        );
        let (sweeper, this) = (self.sweeper.clone(), this.clone());
        releases.finish_in_background(&self.tasks, move |j, answer| {
            if !settled(&answer) {
                sweeper.release_later(nodes[j], &this.key, &this.holder, this.given, this.ttl);
            }
        });
    }
}

/// Whether a try's answer leaves open that it took the lock there.
fn may_have_taken(answer: &Answer<Attempt>) -> bool {
    match answer {
        Some(Ok(Attempt::Acquired { .. } | Attempt::Granted { .. })) | None => true,
        Some(Ok(Attempt::Held { .. } | Attempt::Done)) => false,
        Some(Err(e)) => !matches!(e, Error::WrongType { .. }),
    }
}

/// What the nodes answered to one try, so far.
#[derive(Default)]
struct Tally {
    total: usize,
    quorum: usize,
    answered: usize,
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
    fn new(total: usize, quorum: usize) -> Tally {
        Tally {
            total,
            quorum,
            ..Tally::default()
        }
    }

    fn add(&mut self, i: usize, answer: Answer<Attempt>) {
        self.answered += 1;
        match answer {
            Some(Ok(Attempt::Acquired { token })) => {
                self.tokens.push(token);
                self.took.push(i);
            }
            Some(Ok(Attempt::Held {
                holder, ttl_left, ..
            })) => self.held = Some((holder, ttl_left)),
            Some(Ok(Attempt::Done)) => self.done = true,
            Some(Err(e @ Error::WrongType { .. })) => self.wrong_type = Some(e),
            // Nodes never queue (no handoff in Redlock), so never grant.
            Some(Ok(Attempt::Granted { .. })) | Some(Err(_)) | None => self.unknown.push(i),
        }
    }

    /// A majority took the lock, and no node reported a record or a key of another type.
    fn won(&self) -> bool {
        self.took.len() >= self.quorum && !self.done && self.wrong_type.is_none()
    }

    /// The try can no longer win.
    fn lost(&self) -> bool {
        let pending = self.total.saturating_sub(self.answered);
        self.done || self.wrong_type.is_some() || self.took.len() + pending < self.quorum
    }

    fn decided(&self) -> bool {
        self.won() || self.lost()
    }

    fn token(&self) -> u64 {
        self.tokens.iter().copied().max().unwrap_or(0)
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
