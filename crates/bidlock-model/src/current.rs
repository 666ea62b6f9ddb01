//! The acquire as implemented now (`Design::acquire_as_implemented`): the transitions of
//! `acquire.rs` and `acquire/wait.rs` that differ from the earlier table, each commented
//! with the function it mirrors. (The others are shared, in `client`.)
//!
//! - A failed try (`attempt`, `Err(e)` with time left: `retry_later`) lets its lease go in
//!   the background (`drop(leave)`) and waits (`Step::Watch`); a try cut at the deadline
//!   is the same, ending the acquire: one of the cancels (`Action::Cancel`).
//! - A failed refresh (`refresh`, `Err(e)`) keeps the tenure: still queued as far as it
//!   knows, it refreshes again after a backoff step; the refresh may still run.
//! - At its deadline a queued waiter (`wait_queued`, or `refresh` cut by `timeout_at`)
//!   takes its place out of the queue, or hands on a grant, before it returns
//!   (`Acquiring::leave`: `release_lease`, bounded; if that fails or is dropped, the
//!   tenure's `ReleaseOnDrop` does it in the background).
//! - A batched try whose caller left is let go when it took the lock, was granted it or
//!   only queued (`calls.rs`'s `unclaimed`: codes 1, 4 and 5).

use crate::model::HandoverModel;
use crate::state::{Phase, Releaser, Req, State, TryAnswer};

impl HandoverModel {
    /// The request of acquire `c` fails (a lost reply, a timeout, a dropped connection):
    /// an unknown outcome, the request may still run.
    pub(crate) fn on_error_now(&self, s: &mut State, c: usize) {
        let cl = s.clients[c];
        match cl.phase {
            Phase::Trying {
                id,
                mode,
                behind,
                answer,
                ..
            } => {
                if answer.is_none() {
                    s.send(Req::Try {
                        client: c as u8,
                        id,
                        mode,
                        behind,
                        unclaimed: false,
                    });
                }
                // `attempt`: `drop(leave)` (the try's lease, or the tenure's), then
                // `expect_grants(None)`, `retry_later(e)?` and `Step::Watch`.
                self.release_detached(s, id);
                self.watch(s, c);
            }
            Phase::Refreshing { answer, .. } => {
                let Some(id) = cl.lease else { return };
                if answer.is_none() {
                    s.send(Req::Refresh {
                        client: c as u8,
                        id,
                    });
                }
                // `refresh`: `retry_later(e)?`, `Step::Queued(tenure)` with its `since`.
                let cl = &mut s.clients[c];
                cl.phase = Phase::Queued;
                cl.noticed = false;
            }
            Phase::Leaving { ran } => self.leave_failed(s, c, ran),
            _ => {}
        }
    }

    /// Acquire `c`'s future is dropped at its current await (a try cut at the deadline is
    /// the same): everything it holds is let go in the background. `batched`: its try rode
    /// in a batch, whose answer then goes to `unclaimed`.
    pub(crate) fn on_cancel_now(&self, s: &mut State, c: usize, batched: bool) {
        let cl = s.clients[c];
        match cl.phase {
            Phase::Trying {
                id,
                mode,
                behind,
                answer,
                ..
            } => {
                match answer {
                    None => s.send(Req::Try {
                        client: c as u8,
                        id,
                        mode,
                        behind,
                        unclaimed: batched,
                    }),
                    Some(a) if batched && Self::unclaimed_code(a) => self.unclaimed(s, id),
                    Some(_) => {}
                }
                // The try's (or the tenure's) `ReleaseOnDrop`.
                self.release_detached(s, id);
            }
            Phase::Refreshing { answer, .. } => {
                if let (None, Some(id)) = (answer, cl.lease) {
                    s.send(Req::Refresh {
                        client: c as u8,
                        id,
                    });
                }
                self.leave_queued(s, c);
            }
            Phase::Queued | Phase::Watch => self.leave_queued(s, c),
            Phase::Leaving { ran } => return self.leave_failed(s, c, ran),
            Phase::Idle | Phase::Held { .. } | Phase::Done => return,
        }
        s.clients[c].phase = Phase::Done;
    }

    /// The answers the batch's `unclaimed` lets go (`calls.rs`: `matches!(answer.0, 1 | 4
    /// | 5)`): taken, granted, or held by another with this id queued.
    pub(crate) fn unclaimed_code(a: TryAnswer) -> bool {
        matches!(
            a,
            TryAnswer::Acquired(_) | TryAnswer::Granted(_) | TryAnswer::Held { queued: true }
        )
    }

    /// Queued acquire `c` reaches its deadline (`wait_queued`'s `now >= deadline`, or its
    /// refresh cut by `timeout_at(self.deadline, refresh)`): `self.leave(tenure).await`.
    pub(crate) fn on_deadline(&self, s: &mut State, c: usize) {
        let cl = s.clients[c];
        let Some(id) = cl.lease else { return };
        match cl.phase {
            Phase::Refreshing { answer: None, .. } => s.send(Req::Refresh {
                client: c as u8,
                id,
            }),
            Phase::Refreshing { .. } | Phase::Queued => {}
            _ => return,
        }
        let cl = &mut s.clients[c];
        cl.phase = Phase::Leaving { ran: false };
        cl.noticed = false;
    }

    /// `Acquiring::leave`: its `release_lease` runs at Redis (`release.lua` for the
    /// tenure's generated id: no `tell`).
    pub(crate) fn run_leave(&self, s: &mut State, c: usize) {
        if let (Phase::Leaving { ran: false }, Some(id)) = (s.clients[c].phase, s.clients[c].lease)
        {
            self.scripts().release(s, id, false);
            s.clients[c].phase = Phase::Leaving { ran: true };
        }
    }

    /// `Acquiring::leave` answered (`leave.disarm()`): the acquire returns NotAcquired.
    pub(crate) fn left(&self, s: &mut State, c: usize) {
        if let Phase::Leaving { ran: true } = s.clients[c].phase {
            s.clients[c].phase = Phase::Done;
        }
    }

    /// `Acquiring::leave` failed, timed out or was dropped: its release may still run, and
    /// the tenure's `ReleaseOnDrop` sends another in the background.
    fn leave_failed(&self, s: &mut State, c: usize, ran: bool) {
        if let Some(id) = s.clients[c].lease {
            if !ran {
                s.send(Req::Release {
                    id,
                    by: Releaser::Background,
                });
            }
            self.release_detached(s, id);
        }
        s.clients[c].phase = Phase::Done;
    }

    /// `Step::Watch` after a try that holds nothing any more: no tenure, no request.
    fn watch(&self, s: &mut State, c: usize) {
        let cl = &mut s.clients[c];
        cl.phase = Phase::Watch;
        cl.lease = None;
        cl.since = None;
        cl.noticed = false;
        cl.noticed_since = false;
    }
}
