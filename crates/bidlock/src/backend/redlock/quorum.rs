//! Deciding by majority without waiting for the slowest node: every node's request runs
//! at once, and the answers are read as they arrive ([`Fanout`]), a node that has not
//! answered by the operation's per-node bound counting as unknown; an operation stops
//! reading as soon as its outcome is fixed ([`Votes`]).
//!
//! The requests still out when an operation is decided are either dropped or run to their
//! end in a background task ([`Fanout::finish_in_background`]), as the operation needs.
//! Dropping one does not take it back from its node: every request is polled once as it
//! is created, and redis-rs hands a command to the connection's writer on its first poll,
//! so it runs there when the node answers, in order with the commands sent on that
//! connection before and after. A command still queued behind a full batch of the node's
//! own (see `backend::redis::batch`) is the exception: dropped there, it is never sent;
//! so is the second half of a script call that met `NOSCRIPT` (a node restarted or
//! flushed): the first half ran nothing, and the reload and retry are never sent. An
//! acquire dropped after its batch went out is let go by the batch's "unclaimed" path
//! (the manager's background-release rule), which is why a try keeps its requests to the
//! end rather than dropping them at the bound.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt as _;
use tokio::time::Sleep;

use super::Tasks;
use crate::error::Error;

/// One node's answer: `None` when it did not answer within the operation's bound.
pub(super) type Answer<T> = Option<Result<T, Error>>;

type Call<T> = BoxFuture<'static, (usize, Result<T, Error>)>;

/// The requests of one operation, one per node, answered in arrival order.
pub(super) struct Fanout<T> {
    calls: FuturesUnordered<Call<T>>,
    /// Answers (or "no answer in time") to hand out next.
    ready: VecDeque<(usize, Answer<T>)>,
    /// Which nodes are in `ready` or were handed out.
    reported: Vec<bool>,
    /// When a node that has not answered counts as unknown.
    deadline: Pin<Box<Sleep>>,
    timed_out: bool,
    /// Answers that came after their node was reported unknown.
    late: Vec<(usize, Result<T, Error>)>,
}

impl<T: Send + 'static> Fanout<T> {
    /// Starts `calls` (node `i`'s request is `calls[i]`): each is polled once now, so its
    /// command is on its way. A node counts as unknown once `bound` has passed.
    pub(super) fn start<F>(calls: impl IntoIterator<Item = F>, bound: Duration) -> Fanout<T>
    where
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let mut fan = Fanout {
            calls: FuturesUnordered::new(),
            ready: VecDeque::new(),
            reported: Vec::new(),
            deadline: Box::pin(tokio::time::sleep(bound)),
            timed_out: false,
            late: Vec::new(),
        };
        let mut cx = Context::from_waker(Waker::noop());
        for (i, call) in calls.into_iter().enumerate() {
            fan.reported.push(false);
            let mut call: Call<T> = async move { (i, call.await) }.boxed();
            match call.as_mut().poll(&mut cx) {
                Poll::Ready((i, answer)) => fan.report(i, Some(answer)),
                Poll::Pending => fan.calls.push(call),
            }
        }
        fan
    }

    fn report(&mut self, i: usize, answer: Answer<T>) {
        self.reported[i] = true;
        self.ready.push_back((i, answer));
    }

    /// The next answer, or `(i, None)` for a node still silent at the bound; `None` once
    /// every node was reported.
    pub(super) async fn next(&mut self) -> Option<(usize, Answer<T>)> {
        loop {
            if let Some(next) = self.ready.pop_front() {
                return Some(next);
            }
            if self.reported.iter().all(|r| *r) {
                return None;
            }
            tokio::select! {
                biased;
                Some((i, answer)) = self.calls.next(), if !self.calls.is_empty() => {
                    if self.reported[i] {
                        self.late.push((i, answer));
                    } else {
                        self.report(i, Some(answer));
                    }
                }
                () = &mut self.deadline, if !self.timed_out => {
                    self.timed_out = true;
                    for i in 0..self.reported.len() {
                        if !self.reported[i] {
                            self.report(i, None);
                        }
                    }
                }
                else => return None,
            }
        }
    }

    /// Runs the requests still out to their end (redis-rs' response timeout bounds each)
    /// in a task of `tasks`, and hands `then` every answer the caller did not read: those
    /// already in, late ones, and those still to come.
    pub(super) fn finish_in_background(
        self,
        tasks: &Tasks,
        mut then: impl FnMut(usize, Answer<T>) + Send + 'static,
    ) {
        let Fanout {
            mut calls,
            ready,
            late,
            ..
        } = self;
        for (i, answer) in ready {
            // A node reported silent is still running: its answer comes below.
            if answer.is_some() {
                then(i, answer);
            }
        }
        for (i, answer) in late {
            then(i, Some(answer));
        }
        if calls.is_empty() {
            return;
        }
        tasks.spawn(async move {
            while let Some((i, answer)) = calls.next().await {
                then(i, Some(answer));
            }
        });
    }
}

/// One node's answer to a holder-checked change, as a vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vote {
    /// Done on this node.
    Yes,
    /// Definitely not done on this node (not held by this holder).
    No,
    /// An error or no answer in time: it may or may not have been done.
    Unknown,
}

impl Vote {
    /// `Ok(true)` is yes, `Ok(false)` no, anything else unknown.
    pub(super) fn of(answer: &Answer<bool>) -> Vote {
        match answer {
            Some(Ok(true)) => Vote::Yes,
            Some(Ok(false)) => Vote::No,
            _ => Vote::Unknown,
        }
    }
}

/// The outcome of a majority vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A majority said yes.
    Yes,
    /// A majority answered, and no majority said yes.
    No,
    /// Fewer than a majority answered at all: unknown.
    NoQuorum,
}

/// The count of a vote over `total` nodes, `quorum` of which decide.
#[derive(Debug, Clone, Copy)]
pub(super) struct Votes {
    total: usize,
    quorum: usize,
    yes: usize,
    no: usize,
    unknown: usize,
}

impl Votes {
    pub(super) fn new(total: usize, quorum: usize) -> Votes {
        Votes {
            total,
            quorum,
            yes: 0,
            no: 0,
            unknown: 0,
        }
    }

    pub(super) fn add(&mut self, vote: Vote) {
        match vote {
            Vote::Yes => self.yes += 1,
            Vote::No => self.no += 1,
            Vote::Unknown => self.unknown += 1,
        }
    }

    pub(super) fn yes(&self) -> usize {
        self.yes
    }

    fn pending(&self) -> usize {
        self.total.saturating_sub(self.yes + self.no + self.unknown)
    }

    /// The verdict once no answer still out can change it: the one that waiting for every
    /// node would give.
    pub(super) fn decided(&self) -> Option<Verdict> {
        let pending = self.pending();
        let answered = self.yes + self.no;
        if self.yes >= self.quorum {
            Some(Verdict::Yes)
        } else if self.yes + pending >= self.quorum {
            None
        } else if answered >= self.quorum {
            Some(Verdict::No)
        } else if answered + pending < self.quorum {
            Some(Verdict::NoQuorum)
        } else {
            None
        }
    }

    /// The verdict with every answer in (a node that never answered is unknown).
    pub(super) fn last(&self) -> Verdict {
        let mut all = *self;
        all.unknown += all.pending();
        all.decided().unwrap_or(Verdict::NoQuorum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(total: usize, votes: &[Vote]) -> Votes {
        let mut v = Votes::new(total, total / 2 + 1);
        votes.iter().for_each(|&x| v.add(x));
        v
    }

    /// Every way the missing answers could go.
    fn outcomes(total: usize, votes: &[Vote]) -> Vec<Verdict> {
        let missing = total - votes.len();
        let mut out = Vec::new();
        for mut n in 0..3usize.pow(missing as u32) {
            let mut all = votes.to_vec();
            for _ in 0..missing {
                all.push([Vote::Yes, Vote::No, Vote::Unknown][n % 3]);
                n /= 3;
            }
            out.push(count(total, &all).last());
        }
        out
    }

    #[test]
    fn a_vote_is_decided_exactly_when_no_missing_answer_can_change_it() {
        let kinds = [Vote::Yes, Vote::No, Vote::Unknown];
        for total in 3..=5usize {
            for answered in 0..=total {
                for mut n in 0..3usize.pow(answered as u32) {
                    let mut votes = Vec::new();
                    for _ in 0..answered {
                        votes.push(kinds[n % 3]);
                        n /= 3;
                    }
                    let all = outcomes(total, &votes);
                    let fixed = all.iter().all(|v| *v == all[0]);
                    let decided = count(total, &votes).decided();
                    assert_eq!(decided.is_some(), fixed, "{total} nodes, {votes:?}");
                    if let Some(d) = decided {
                        assert_eq!(d, all[0], "{total} nodes, {votes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn one_paused_node_of_three_never_holds_up_two_alike_answers() {
        use Vote::*;
        assert_eq!(count(3, &[Yes, Yes]).decided(), Some(Verdict::Yes));
        assert_eq!(count(3, &[No, No]).decided(), Some(Verdict::No));
        assert_eq!(
            count(3, &[Unknown, Unknown]).decided(),
            Some(Verdict::NoQuorum)
        );
        assert_eq!(count(3, &[Yes, No]).decided(), None);
    }
}
