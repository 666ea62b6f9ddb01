//! One acquire as a state machine: HANDOVER.md's table, as the earlier design had it (Fixed)
//! or as `acquire.rs` has it now (`Design::acquire_as_implemented`; where the two differ,
//! the transitions are in `current`), or the loop before issue 20 (hole 2:
//! `Design::id_outlives_try`). Each function answers one reply or one signal; the comments
//! name the table's row, or the code.
//!
//! Timers are not modelled: a waiter may refresh, try again or give up at any moment
//! (every timing of the real timers is among them).

use crate::model::HandoverModel;
use crate::state::{HolderId, Mode, Phase, Releaser, Req, State, Token, TryAnswer};
use crate::state::{Msg, RefreshAnswer};

impl HandoverModel {
    fn today(&self) -> bool {
        self.design.id_outlives_try
    }

    /// The grant ttl of acquire `c`.
    fn grant(&self, c: usize) -> u8 {
        self.bounds.grant_ttl(c)
    }

    /// `Inner::release_detached`: a release without a caller, never of a given id.
    pub(crate) fn release_detached(&self, s: &mut State, id: HolderId) {
        if !id.is_given() {
            s.send(Req::Release {
                id,
                by: Releaser::Background,
            });
        }
    }

    /// The batch's `unclaimed` answer (a try that took the lock after its caller left):
    /// one rule in Fixed; any holder id with hole 1.
    pub(crate) fn unclaimed(&self, s: &mut State, id: HolderId) {
        if self.design.unclaimed_ignores_given_id {
            s.send(Req::Release {
                id,
                by: Releaser::Background,
            });
        } else {
            self.release_detached(s, id);
        }
    }

    /// Sends a try of acquire `c` with `id` and `mode` (`Acquiring::try_once`).
    fn send_try(&self, s: &mut State, c: usize, id: HolderId, mode: Mode) {
        let manager = self.bounds.clients[c].manager;
        // waiters_behind (`Ticket::has_company`): another acquire of this manager waits
        // for the key, in its local queue until it returns (it only sets the marker, which
        // only hole 4 and rule 3 as implemented read).
        let behind = self.scripts().marker_read()
            && s.clients.iter().enumerate().any(|(o, cl)| {
                o != c
                    && self.bounds.clients[o].manager == manager
                    && matches!(
                        cl.phase,
                        Phase::Trying { .. }
                            | Phase::Refreshing { .. }
                            | Phase::Queued
                            | Phase::Watch
                            | Phase::Leaving { .. }
                    )
            });
        s.clients[c].phase = Phase::Trying {
            id,
            mode,
            sent: s.now,
            behind,
            answer: None,
        };
        s.clients[c].noticed = false;
    }

    /// `Try { lease: fresh, queue: join }` (a given id: `queue: no`); gives up when the
    /// acquire has used all its generated ids (as at its deadline).
    pub(crate) fn try_fresh(&self, s: &mut State, c: usize) {
        let spec = self.bounds.clients[c];
        let cl = &mut s.clients[c];
        let id = match spec.given {
            Some(g) => HolderId::Given(g),
            None if cl.ids < self.bounds.fresh_ids => {
                cl.ids += 1;
                HolderId::Gen {
                    client: c as u8,
                    n: cl.ids - 1,
                }
            }
            None => {
                cl.phase = Phase::Done;
                return;
            }
        };
        let mode = match spec.given {
            Some(_) => Mode::No,
            // Today: `again: self.in_queue` picks mode '2' for any later try.
            None if self.today() && cl.in_queue => Mode::Stay,
            None => Mode::Join,
        };
        if !self.today() {
            cl.lease = None;
            cl.since = None;
            cl.noticed_since = false;
        }
        self.send_try(s, c, id, mode);
    }

    /// Told "held": the acquire returns its guard. `doubted` (`Design::notice_dates_leases`):
    /// a notice came after the moment the lease counts from, so the keeper checks it at once
    /// (`LeaseKeeper::register`).
    fn tell_held(&self, s: &mut State, c: usize, lease: (HolderId, Token, u8), doubted: bool) {
        let (id, token, deadline) = lease;
        let cl = &mut s.clients[c];
        cl.phase = Phase::Held {
            id,
            token,
            deadline,
        };
        cl.lease = None;
        cl.since = None;
        cl.in_queue = false;
        if self.design.notice_dates_leases {
            cl.noticed = doubted;
            cl.noticed_since = false;
        }
        s.ghost.max_told = s.ghost.max_told.max(token);
    }

    /// `take_up`: a confirmed lease becomes a guard, unless its deadline has passed (then
    /// it is released in the background, and the acquire tries again: at once in the
    /// earlier design, from `Watch` now and before issue 20).
    fn take_up(&self, s: &mut State, c: usize, lease: (HolderId, Token, u8), doubted: bool) {
        let (id, _, deadline) = lease;
        if deadline > s.now {
            return self.tell_held(s, c, lease, doubted);
        }
        self.release_detached(s, id);
        let cl = &mut s.clients[c];
        cl.lease = None;
        cl.since = None;
        cl.in_queue = false;
        cl.noticed = false;
        cl.noticed_since = false;
        if self.today() || self.design.acquire_as_implemented {
            // Ok(None) / Step::Watch: back to waiting, then a try with a new lease.
            cl.phase = Phase::Watch;
        } else {
            self.try_fresh(s, c);
        }
    }

    /// A grant (message, `Granted` answer) for `id`: held until `since + grant ttl`
    /// (`take_grant`: the lease is confirmed from `since`).
    fn accept_grant(&self, s: &mut State, c: usize, id: HolderId, token: Token) {
        let doubted = s.clients[c].noticed_since;
        match s.clients[c].since {
            Some(since) => self.take_up(s, c, (id, token, since + self.grant(c)), doubted),
            // Today's accept_grant without `queued`: the lease is dropped, unreleased.
            None => {
                let cl = &mut s.clients[c];
                cl.lease = None;
                cl.phase = Phase::Watch;
            }
        }
    }

    /// A request that found the tenure queued answered: the tenure is `Queued`, and its
    /// grant counts from that request's send (`Step::Queued`, `tenure.since = sent`).
    fn queued_since(&self, s: &mut State, c: usize, sent: u8) {
        let cl = &mut s.clients[c];
        cl.since = Some(sent);
        cl.phase = Phase::Queued;
        if self.design.notice_dates_leases {
            // A notice since the send is one since `since`; the send's own flag is done.
            cl.noticed_since = cl.noticed;
            cl.noticed = false;
        }
    }

    /// The answer of acquire `c`'s try reaches it.
    pub(crate) fn on_try_answer(&self, s: &mut State, c: usize, a: TryAnswer) {
        let Phase::Trying { id, mode, sent, .. } = s.clients[c].phase else {
            return;
        };
        let ttl = self.bounds.clients[c].ttl;
        match a {
            // Acquired(t) -> Held, or Try{fresh} when the reply came after the ttl.
            // (acquire.rs `Attempt::Acquired`: confirmed from `tried_at`, the send.)
            TryAnswer::Acquired(t) => {
                s.clients[c].since = None;
                s.clients[c].in_queue = false;
                let doubted = s.clients[c].noticed;
                self.take_up(s, c, (id, t, sent + ttl), doubted);
            }
            // Granted(t) -> Held via grant, counted from the since of the last Queued.
            TryAnswer::Granted(t) => self.accept_grant(s, c, id, t),
            // Held(queued) -> Queued { lease, since: sent }.
            TryAnswer::Held { queued: true } => {
                let cl = &mut s.clients[c];
                cl.lease = Some(id);
                cl.in_queue = self.today();
                self.queued_since(s, c, sent);
            }
            // Done -> finish: AlreadyDone (a queued id is taken out in the background).
            TryAnswer::Done => {
                let queued = if self.today() {
                    s.clients[c].in_queue
                } else {
                    mode == Mode::Stay
                };
                if queued {
                    self.release_detached(s, id);
                }
                s.clients[c].phase = Phase::Done;
            }
            // Held(not queued): stay -> Try{fresh, join} at once; no handoff -> Watch.
            TryAnswer::Held { queued: false } => {
                if mode == Mode::Stay && !self.today() {
                    return self.try_fresh(s, c);
                }
                let cl = &mut s.clients[c];
                // Today keeps the lease (a given id) for the next try.
                cl.lease = self.today().then_some(id);
                cl.phase = Phase::Watch;
                if self.design.notice_dates_leases {
                    cl.noticed = false;
                }
            }
        }
    }

    /// The answer of acquire `c`'s refresh reaches it.
    pub(crate) fn on_refresh_answer(&self, s: &mut State, c: usize, a: RefreshAnswer) {
        let (Phase::Refreshing { sent, .. }, Some(id)) = (s.clients[c].phase, s.clients[c].lease)
        else {
            return;
        };
        match a {
            // refresh -> Queued: Queued { lease, since: sent }.
            RefreshAnswer::Queued => self.queued_since(s, c, sent),
            // refresh -> Granted(t): Held via grant, from the old since.
            RefreshAnswer::Granted(t) => self.accept_grant(s, c, id, t),
            // refresh -> Free: Try { lease, stay }.
            RefreshAnswer::Free => self.send_try(s, c, id, Mode::Stay),
            // refresh -> Gone: Try { fresh, join }. Today: `queued = None; may_try`,
            // and the next try keeps the lease, with mode '2' (in_queue is still set).
            RefreshAnswer::Gone if self.today() => {
                s.clients[c].since = None;
                s.clients[c].lease = None;
                self.send_try(s, c, id, Mode::Stay);
            }
            RefreshAnswer::Gone => self.try_fresh(s, c),
        }
    }

    /// A grant message for `id` reaches manager `m`: the acquire queued as `id` takes it.
    pub(crate) fn on_grant(&self, s: &mut State, m: u8, id: HolderId, token: Token) {
        let waiting = (0..s.clients.len()).find(|&c| {
            self.bounds.clients[c].manager == m
                && s.clients[c].phase == Phase::Queued
                && s.clients[c].lease == Some(id)
        });
        if let Some(c) = waiting {
            self.accept_grant(s, c, id, token);
        }
    }

    /// A release message (or a reconnect) reaches manager `m`: the keeper checks every
    /// lease it holds on the key (a lease whose lock is not its holder id's is lost).
    /// With `notice_dates_leases`, the keeper notes the time, which its acquires that wait
    /// compare with when their lease counts from; with `recheck_after_notice`, its
    /// acquires that wait for a reply or a grant note it (but not the waiter that a notice
    /// names as the new holder: its own handover).
    pub(crate) fn on_released(&self, s: &mut State, m: u8, handed_to: Option<HolderId>) {
        for c in 0..s.clients.len() {
            if self.bounds.clients[c].manager != m {
                continue;
            }
            let cl = s.clients[c];
            let own = handed_to.is_some()
                && match cl.phase {
                    Phase::Trying { id, .. } => Some(id) == handed_to,
                    _ => cl.lease == handed_to,
                };
            let waits = matches!(
                cl.phase,
                Phase::Trying { .. } | Phase::Refreshing { .. } | Phase::Queued
            );
            if matches!(cl.phase, Phase::Held { .. }) {
                self.check_lease(s, c);
            } else if waits && self.design.notice_dates_leases {
                // `LeaseKeeper::check`: `noticed[key] = now`, after the send of a request
                // in flight and after the tenure's `since`.
                let cl = &mut s.clients[c];
                cl.noticed |= cl.phase != Phase::Queued;
                cl.noticed_since |= cl.since.is_some();
            } else if waits && self.design.recheck_after_notice && !own {
                s.clients[c].noticed = true;
            }
        }
    }

    /// The keeper checks acquire `c`'s lease: lost unless Redis shows its holder id.
    pub(crate) fn check_lease(&self, s: &mut State, c: usize) {
        if let Phase::Held { id, .. } = s.clients[c].phase {
            s.clients[c].noticed = false;
            if s.redis.lock.map(|l| l.holder) != Some(id) {
                s.clients[c].phase = Phase::Done;
            }
        }
    }

    /// The request of acquire `c` fails with an unknown outcome (a lost reply, a timeout);
    /// a request not yet run stays in flight and may still run.
    pub(crate) fn on_error(&self, s: &mut State, c: usize) {
        if self.design.acquire_as_implemented {
            return self.on_error_now(s, c);
        }
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
                // ReleaseOnDrop: the try's lease is released in the background.
                self.release_detached(s, id);
            }
            Phase::Refreshing { answer, .. } => {
                let Some(id) = cl.lease else { return };
                if answer.is_none() {
                    s.send(Req::Refresh {
                        client: c as u8,
                        id,
                    });
                }
                // Fixed: the tenure is let go; today: Acquiring's drop, when in_queue.
                if !self.today() || cl.in_queue {
                    self.release_detached(s, id);
                }
            }
            _ => return,
        }
        if self.today() {
            // Today an error ends the acquire.
            s.clients[c].phase = Phase::Done;
        } else {
            // error -> unknown: released in the background, retried with a fresh id.
            self.try_fresh(s, c);
        }
    }

    /// Acquire `c` is cancelled (or reaches its deadline) at its current await.
    /// `batched`: its try rode in a batch (an answer that took the lock is unclaimed).
    pub(crate) fn on_cancel(&self, s: &mut State, c: usize, batched: bool) {
        if self.design.acquire_as_implemented {
            return self.on_cancel_now(s, c, batched);
        }
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
                    Some(TryAnswer::Acquired(_) | TryAnswer::Granted(_)) if batched => {
                        self.unclaimed(s, id)
                    }
                    Some(_) => {}
                }
                // ReleaseOnDrop (the lease is out of `Acquiring` while the try runs).
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
            Phase::Idle | Phase::Held { .. } | Phase::Leaving { .. } | Phase::Done => return,
        }
        s.clients[c].phase = Phase::Done;
    }

    /// `Acquiring`'s drop: a queued id is released in the background (it hands on a
    /// grant that came meanwhile, else leaves the queue).
    pub(crate) fn leave_queued(&self, s: &mut State, c: usize) {
        let cl = s.clients[c];
        if let Some(id) = cl.lease {
            if !self.today() || cl.in_queue {
                self.release_detached(s, id);
            }
        }
    }

    /// A waiting acquire tries again: `Queued` -> `Try { lease, stay }`, `Watch` -> a try
    /// (today: with the lease kept, if any).
    pub(crate) fn try_again(&self, s: &mut State, c: usize) {
        let cl = s.clients[c];
        match (cl.phase, cl.lease) {
            (Phase::Queued, Some(id)) => self.send_try(s, c, id, Mode::Stay),
            (Phase::Watch, Some(id)) if self.today() => {
                let mode = match self.bounds.clients[c].given {
                    Some(_) => Mode::No,
                    None if cl.in_queue => Mode::Stay,
                    None => Mode::Join,
                };
                s.clients[c].lease = None;
                self.send_try(s, c, id, mode);
            }
            (Phase::Watch, _) => self.try_fresh(s, c),
            _ => {}
        }
    }

    /// A queued acquire refreshes its entry.
    pub(crate) fn send_refresh(&self, s: &mut State, c: usize) {
        if s.clients[c].phase == Phase::Queued {
            s.clients[c].phase = Phase::Refreshing {
                sent: s.now,
                answer: None,
            };
            s.clients[c].noticed = false;
        }
    }

    /// The holder releases its guard (`LockGuard::release`).
    pub(crate) fn release_guard(&self, s: &mut State, c: usize) {
        if let Phase::Held { id, token, .. } = s.clients[c].phase {
            s.send(Req::Release {
                id,
                by: Releaser::Caller {
                    client: c as u8,
                    token,
                },
            });
            s.clients[c].phase = Phase::Done;
        }
    }

    /// The holder completes the posting (`LockGuard::complete`: the record, and the lock
    /// deleted if it is still its own).
    pub(crate) fn complete_guard(&self, s: &mut State, c: usize) {
        if let Phase::Held { id, .. } = s.clients[c].phase {
            s.send(Req::Complete { id });
            s.clients[c].phase = Phase::Done;
        }
    }

    /// Delivers `msg` to manager `m`.
    pub(crate) fn on_message(&self, s: &mut State, m: u8, msg: Msg) {
        match msg {
            Msg::Released { handed_to } => self.on_released(s, m, handed_to),
            Msg::Grant { id, token } => self.on_grant(s, m, id, token),
        }
    }
}
