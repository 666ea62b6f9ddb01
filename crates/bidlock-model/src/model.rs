//! The handover protocol as one state machine for the explorer: every action that can
//! happen next (a script runs, a reply, message or request arrives or is lost, an acquire
//! is cancelled or times out, time passes, an operator acts), and what it leads to.

use crate::action::Action;
use crate::bounds::Bounds;
use crate::design::Design;
use crate::explore::{Model, Violation};
use crate::redis::Scripts;
use crate::state::{Client, Msg, Phase, Releaser, Req, State, TryAnswer};

/// The model of one design within one set of bounds.
#[derive(Debug, Clone)]
pub struct HandoverModel {
    /// Which holes are open.
    pub design: Design,
    /// The bounds.
    pub bounds: Bounds,
}

impl HandoverModel {
    /// The model of `design` within `bounds`.
    pub fn new(design: Design, bounds: Bounds) -> HandoverModel {
        HandoverModel { design, bounds }
    }

    /// The scripts of this design.
    pub fn scripts(&self) -> Scripts<'_> {
        Scripts {
            design: self.design,
            bounds: &self.bounds,
        }
    }

    fn client_actions(&self, s: &State, c: usize, out: &mut Vec<Action>) {
        let i = c as u8;
        let cancel = |batched| Action::Cancel { client: i, batched };
        let (err, can) = (s.errors_left > 0, s.cancels_left > 0);
        // The cancels bound counts deadlines too: an acquire ends early once either way.
        let deadlines = self.design.acquire_as_implemented;
        match s.clients[c].phase {
            Phase::Idle => out.push(Action::Start(i)),
            Phase::Trying { answer, .. } => {
                let took = match answer {
                    None => true,
                    Some(a) if self.design.acquire_as_implemented => Self::unclaimed_code(a),
                    Some(a) => matches!(a, TryAnswer::Acquired(_) | TryAnswer::Granted(_)),
                };
                let first = if answer.is_none() {
                    Action::Run(i)
                } else {
                    Action::Answer(i)
                };
                out.push(first);
                if err {
                    out.push(Action::Error(i));
                }
                if can {
                    out.push(cancel(false));
                    if took {
                        out.push(cancel(true));
                    }
                }
            }
            Phase::Refreshing { answer, .. } => {
                let first = if answer.is_none() {
                    Action::Run(i)
                } else {
                    Action::Answer(i)
                };
                out.push(first);
                if err {
                    out.push(Action::Error(i));
                }
                if can {
                    out.push(cancel(false));
                    if deadlines {
                        out.push(Action::Deadline(i));
                    }
                }
            }
            Phase::Queued => {
                out.extend([Action::Refresh(i), Action::TryAgain(i)]);
                if can {
                    out.push(cancel(false));
                    if deadlines {
                        out.push(Action::Deadline(i));
                    }
                }
            }
            Phase::Leaving { ran } => {
                out.push(if ran {
                    Action::Answer(i)
                } else {
                    Action::Run(i)
                });
                if err {
                    out.push(Action::Error(i));
                }
                if can {
                    out.push(cancel(false));
                }
            }
            Phase::Watch => {
                out.push(Action::TryAgain(i));
                if can {
                    out.push(cancel(false));
                }
            }
            Phase::Held { .. } => {
                out.push(Action::Release(i));
                if self.bounds.completion {
                    out.push(Action::Complete(i));
                }
                if s.clients[c].noticed {
                    out.push(Action::Check(i));
                }
            }
            Phase::Done => {}
        }
    }

    /// Every action enabled in `s`.
    pub fn actions(&self, s: &State) -> Vec<Action> {
        let mut out = Vec::new();
        for c in 0..s.clients.len() {
            self.client_actions(s, c, &mut out);
        }
        let mut last = None;
        for r in &s.pool {
            if last != Some(r) {
                out.extend([Action::RunLate(*r), Action::Lose(*r)]);
            }
            last = Some(r);
        }
        for &(manager, msg) in &s.msgs {
            let deliver = |keep| Action::Deliver { manager, msg, keep };
            out.push(deliver(false));
            // A duplicate notice only checks leases again, and a lost one makes its
            // manager check every lease it holds (what the notice does): only grants
            // are worth duplicating and losing.
            if let Msg::Grant { .. } = msg {
                if self.bounds.duplicates {
                    out.push(deliver(true));
                }
                out.push(Action::Drop { manager, msg });
            }
        }
        if let (true, Some(lock)) = (s.ops_left > 0, s.redis.lock) {
            out.extend([
                Action::OperatorRelease(lock.holder),
                Action::OperatorForce,
                Action::OperatorCleanup,
            ]);
        }
        if s.now < self.bounds.max_time {
            out.push(Action::Tick);
        }
        out
    }

    /// The state `a` leads to from `s`.
    pub fn apply(&self, s: &State, a: Action) -> State {
        let mut t = s.clone();
        let scripts = self.scripts();
        match a {
            Action::Tick => {
                t.now += 1;
                t.redis.expire(t.now);
                for cl in &mut t.clients {
                    if matches!(cl.phase, Phase::Held { deadline, .. } if deadline <= t.now) {
                        cl.phase = Phase::Done;
                    }
                }
            }
            Action::Start(c) => self.try_fresh(&mut t, c.into()),
            Action::Run(c) => self.run(&mut t, c.into()),
            Action::Answer(c) => match t.clients[usize::from(c)].phase {
                Phase::Trying {
                    answer: Some(a), ..
                } => self.on_try_answer(&mut t, c.into(), a),
                Phase::Refreshing {
                    answer: Some(a), ..
                } => self.on_refresh_answer(&mut t, c.into(), a),
                Phase::Leaving { .. } => self.left(&mut t, c.into()),
                _ => {}
            },
            Action::Error(c) => {
                t.errors_left -= 1;
                self.on_error(&mut t, c.into());
            }
            Action::Cancel { client, batched } => {
                t.cancels_left -= 1;
                self.on_cancel(&mut t, client.into(), batched);
            }
            Action::Deadline(c) => {
                t.cancels_left -= 1;
                self.on_deadline(&mut t, c.into());
            }
            Action::Refresh(c) => self.send_refresh(&mut t, c.into()),
            Action::TryAgain(c) => self.try_again(&mut t, c.into()),
            Action::Release(c) => self.release_guard(&mut t, c.into()),
            Action::Check(c) => self.check_lease(&mut t, c.into()),
            Action::Complete(c) => self.complete_guard(&mut t, c.into()),
            Action::RunLate(r) => {
                take(&mut t.pool, r);
                self.run_late(&mut t, r);
            }
            Action::Lose(r) => take(&mut t.pool, r),
            Action::Deliver { manager, msg, keep } => {
                if !keep {
                    take(&mut t.msgs, (manager, msg));
                }
                self.on_message(&mut t, manager, msg);
            }
            Action::Drop { manager, msg } => {
                take(&mut t.msgs, (manager, msg));
                // The subscriber reconnects: `Notices::all` checks every lease.
                self.on_released(&mut t, manager, None);
            }
            Action::OperatorRelease(id) => {
                t.ops_left -= 1;
                // By holder id (no lease): `tell` (`RedisStore::release`).
                if let Some(lock) = scripts.release(&mut t, id, true) {
                    t.ghost.op_removed |= crate::state::bit(lock.token);
                }
            }
            Action::OperatorForce => {
                t.ops_left -= 1;
                if let Some(lock) = scripts.force_release(&mut t) {
                    t.ghost.op_removed |= crate::state::bit(lock.token);
                }
            }
            Action::OperatorCleanup => {
                t.ops_left -= 1;
                if let Some(lock) = scripts.cleanup(&mut t) {
                    t.ghost.op_removed |= crate::state::bit(lock.token);
                }
            }
        }
        self.tidy(&mut t);
        t
    }

    /// Acquire `c`'s pending request runs at Redis.
    fn run(&self, s: &mut State, c: usize) {
        let scripts = self.scripts();
        match s.clients[c].phase {
            Phase::Trying {
                id,
                mode,
                sent,
                behind,
                answer: None,
            } => {
                let a = scripts.acquire(s, c, id, mode, behind);
                s.clients[c].phase = Phase::Trying {
                    id,
                    mode,
                    sent,
                    behind,
                    answer: Some(a),
                };
            }
            Phase::Refreshing { sent, answer: None } => {
                let Some(id) = s.clients[c].lease else { return };
                let a = scripts.refresh(s, id);
                s.clients[c].phase = Phase::Refreshing {
                    sent,
                    answer: Some(a),
                };
            }
            Phase::Leaving { ran: false } => self.run_leave(s, c),
            _ => {}
        }
    }

    /// A request no caller waits for runs at Redis.
    fn run_late(&self, s: &mut State, r: Req) {
        let scripts = self.scripts();
        match r {
            Req::Try {
                client,
                id,
                mode,
                behind,
                unclaimed,
            } => {
                let a = scripts.acquire(s, client.into(), id, mode, behind);
                let claimable = if self.design.acquire_as_implemented {
                    Self::unclaimed_code(a)
                } else {
                    matches!(a, TryAnswer::Acquired(_) | TryAnswer::Granted(_))
                };
                if unclaimed && claimable {
                    self.unclaimed(s, id);
                }
            }
            Req::Refresh { id, .. } => {
                scripts.refresh(s, id);
            }
            Req::Complete { id } => {
                // `tell`: a holder id the caller chose (complete.lua's ARGV[7]).
                scripts.complete(s, id, id.is_given());
            }
            Req::Cleanup => scripts.cleanup_rest(s),
            Req::Release { id, by } => {
                // A lease's release: `tell` for a holder id the caller chose (a background
                // release never has one, but hole 1's).
                let removed = scripts.release(s, id, id.is_given());
                if let (Some(lock), Releaser::Caller { client, token }) = (removed, by) {
                    // Another owner of the same given id held it: the README's limit.
                    let given = self.bounds.clients[usize::from(client)].given.is_some();
                    if given && lock.token != token {
                        s.ghost.limit_removed |= crate::state::bit(lock.token);
                    }
                }
            }
        }
    }

    /// The initial state: nothing called, Redis empty.
    pub fn initial(&self) -> State {
        State {
            now: 0,
            redis: Default::default(),
            clients: smallvec::smallvec![Client::IDLE; self.bounds.clients.len()],
            pool: Default::default(),
            msgs: Default::default(),
            ops_left: self.bounds.operator_actions,
            errors_left: self.bounds.unknown_outcomes,
            cancels_left: self.bounds.cancels,
            ghost: Default::default(),
        }
    }
}

/// Removes one copy of `x` from the sorted `v`.
fn take<T: Ord, const N: usize>(v: &mut crate::state::Few<T, N>, x: T)
where
    [T; N]: smallvec::Array<Item = T>,
{
    if let Ok(i) = v.binary_search(&x) {
        v.remove(i);
    }
}

impl Model for HandoverModel {
    type State = State;
    type Action = Action;

    fn init(&self) -> Vec<State> {
        vec![self.initial()]
    }

    fn successors(&self, s: &State, out: &mut Vec<(Action, State)>) {
        for a in self.actions(s) {
            out.push((a, self.apply(s, a)));
        }
    }

    fn check_state(&self, s: &State, out: &mut Vec<Violation>) {
        crate::invariants::check_state(s, out);
    }

    fn check_step(&self, from: &State, _: &Action, to: &State, out: &mut Vec<Violation>) {
        let checks_done = |c: usize| self.bounds.clients[c].checks_done;
        crate::invariants::check_step(from, to, checks_done, out);
    }

    fn show(&self, s: &State) -> String {
        crate::show::state(s)
    }

    fn pack(&self, s: &State, out: &mut Vec<u8>) {
        crate::pack::pack(s, out);
    }

    fn unpack(&self, bytes: &[u8]) -> State {
        crate::pack::unpack(bytes)
    }
}
