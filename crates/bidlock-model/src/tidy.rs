//! Reductions: after every step, what can no longer change anything is dropped, so that
//! states that differ only in dead weight are one state. Each rule says why it loses no
//! violation.
//!
//! The argument they share: the invariants are *monotone in holders*. A release notice
//! can only end a lease (the keeper's check) or mark a waiter for a check; a client told
//! "held" can do all a finished client can (nothing) and more. So a run in which a notice
//! is never delivered breaks every invariant the same run with the notice breaks.

use crate::model::HandoverModel;
use crate::state::{Client, HolderId, Msg, Phase, Req, State};

impl HandoverModel {
    /// Whether acquire `c` may still use generated id `id` (its queued tenure, or a try
    /// out with it): once it stops, it never uses that id again (a fresh id per tenure;
    /// today's lease, once dropped, is never taken up again either).
    fn uses(&self, s: &State, id: HolderId) -> bool {
        let HolderId::Gen { client, .. } = id else {
            return true;
        };
        let cl = &s.clients[usize::from(client)];
        cl.lease == Some(id) || matches!(cl.phase, Phase::Trying { id: t, .. } if t == id)
    }

    /// Whether a release notice for manager `m` can still change anything: it checks the
    /// leases of `m` and (with `recheck_after_notice`) marks `m`'s acquires that wait for
    /// a reply or a grant. For an idle, watching or finished acquire it does nothing now
    /// (a watching one sends a new request before it can hold), and delivered later it
    /// could only end a lease, which never breaks an invariant. (A notice to an acquire
    /// that waits is kept even when it changes nothing, so that paths show it arrive.)
    fn notice_matters(&self, s: &State, m: u8) -> bool {
        s.clients.iter().enumerate().any(|(c, cl)| {
            self.bounds.clients[c].manager == m
                && matches!(
                    cl.phase,
                    Phase::Held { .. }
                        | Phase::Trying { .. }
                        | Phase::Refreshing { .. }
                        | Phase::Queued
                )
        })
    }

    /// Whether a request no caller waits for can still change anything.
    fn request_matters(&self, s: &State, r: &Req) -> bool {
        let try_out = |id| {
            s.pool
                .iter()
                .any(|p| matches!(*p, Req::Try { id: t, .. } if t == id))
        };
        match *r {
            // A release of a generated id that holds nothing, is not queued and can hold
            // nothing later (no try of it is out, its acquire moved on) is a no-op
            // whenever it runs.
            Req::Release { id, .. } if !id.is_given() => {
                s.redis.lock.is_some_and(|l| l.holder == id)
                    || s.redis.queue.contains(&id)
                    || self.uses(s, id)
                    || try_out(id)
            }
            // A refresh writes only the entry of a queued id (refresh.lua step 4): of an
            // id not queued, that no try of it can queue again, it is a no-op.
            Req::Refresh { id, .. } => {
                s.redis.queue.contains(&id) || self.uses(s, id) || try_out(id)
            }
            _ => true,
        }
    }

    /// Drops what can no longer change anything, and resets finished acquires.
    pub(crate) fn tidy(&self, s: &mut State) {
        for cl in &mut s.clients {
            if cl.phase == Phase::Done {
                *cl = Client {
                    phase: Phase::Done,
                    ..Client::IDLE
                };
            }
        }
        // A grant for an id its acquire no longer uses is never taken up: the library
        // drops it (no waiter is queued as that id), now or whenever it arrives.
        // (Each kept list is built from the whole state before it is replaced: dropping one
        // request may not change whether another matters.)
        s.msgs = s
            .msgs
            .iter()
            .filter(|&&(m, msg)| match msg {
                Msg::Grant { id, .. } => self.uses(s, id),
                Msg::Released { .. } => self.notice_matters(s, m),
            })
            .copied()
            .collect();
        s.pool = s
            .pool
            .iter()
            .filter(|r| self.request_matters(s, r))
            .copied()
            .collect();
    }
}
