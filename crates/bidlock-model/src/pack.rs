//! States packed into a few dozen bytes for the explorer's breadth-first layers (a state
//! in memory is about 300 bytes; the long bounds hold millions of them at once).
//!
//! Every field is written in order, small numbers as one byte; `unpack(pack(s)) == s` for
//! every state (tested below over every state of a short exploration).

use crate::state::{
    Client, Ghost, HolderId, Lock, Mode, Msg, Phase, Redis, RefreshAnswer, Releaser, Req, State,
    TryAnswer,
};

/// Appends bytes.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn flag(&mut self, on: bool) {
        self.u8(u8::from(on));
    }

    fn u64(&mut self, mut n: u64) {
        // LEB128: the ghost sets are mostly small.
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                return self.u8(low);
            }
            self.u8(low | 0x80);
        }
    }

    fn opt(&mut self, t: Option<u8>) {
        match t {
            Some(t) => {
                self.u8(1);
                self.u8(t);
            }
            None => self.u8(0),
        }
    }

    fn id(&mut self, h: HolderId) {
        match h {
            HolderId::Gen { client, n } => {
                self.u8(0);
                self.u8(client);
                self.u8(n);
            }
            HolderId::Given(g) => {
                self.u8(1);
                self.u8(g);
            }
        }
    }

    fn opt_id(&mut self, h: Option<HolderId>) {
        self.flag(h.is_some());
        if let Some(h) = h {
            self.id(h);
        }
    }
}

/// Reads bytes back (the packer's own output: a short read is a bug, read as zeros).
struct In<'a>(&'a [u8]);

impl In<'_> {
    fn u8(&mut self) -> u8 {
        let Some((b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        *b
    }

    fn flag(&mut self) -> bool {
        self.u8() != 0
    }

    fn u64(&mut self) -> u64 {
        let (mut n, mut shift) = (0u64, 0);
        loop {
            let b = self.u8();
            n |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 || shift >= 64 {
                return n;
            }
        }
    }

    fn opt(&mut self) -> Option<u8> {
        self.flag().then(|| self.u8())
    }

    fn id(&mut self) -> HolderId {
        match self.u8() {
            0 => HolderId::Gen {
                client: self.u8(),
                n: self.u8(),
            },
            _ => HolderId::Given(self.u8()),
        }
    }

    fn opt_id(&mut self) -> Option<HolderId> {
        self.flag().then(|| self.id())
    }
}

fn mode(m: Mode) -> u8 {
    match m {
        Mode::No => 0,
        Mode::Join => 1,
        Mode::Stay => 2,
    }
}

fn mode_of(b: u8) -> Mode {
    match b {
        0 => Mode::No,
        1 => Mode::Join,
        _ => Mode::Stay,
    }
}

fn try_answer(o: &mut Out, a: Option<TryAnswer>) {
    let (tag, n) = match a {
        None => (0, 0),
        Some(TryAnswer::Acquired(t)) => (1, t),
        Some(TryAnswer::Granted(t)) => (2, t),
        Some(TryAnswer::Held { queued }) => (3, u8::from(queued)),
        Some(TryAnswer::Done) => (4, 0),
    };
    o.u8(tag);
    o.u8(n);
}

fn try_answer_of(i: &mut In) -> Option<TryAnswer> {
    let (tag, n) = (i.u8(), i.u8());
    match tag {
        1 => Some(TryAnswer::Acquired(n)),
        2 => Some(TryAnswer::Granted(n)),
        3 => Some(TryAnswer::Held { queued: n != 0 }),
        4 => Some(TryAnswer::Done),
        _ => None,
    }
}

fn refresh_answer(o: &mut Out, a: Option<RefreshAnswer>) {
    let (tag, n) = match a {
        None => (0, 0),
        Some(RefreshAnswer::Queued) => (1, 0),
        Some(RefreshAnswer::Granted(t)) => (2, t),
        Some(RefreshAnswer::Free) => (3, 0),
        Some(RefreshAnswer::Gone) => (4, 0),
    };
    o.u8(tag);
    o.u8(n);
}

fn refresh_answer_of(i: &mut In) -> Option<RefreshAnswer> {
    let (tag, n) = (i.u8(), i.u8());
    match tag {
        1 => Some(RefreshAnswer::Queued),
        2 => Some(RefreshAnswer::Granted(n)),
        3 => Some(RefreshAnswer::Free),
        4 => Some(RefreshAnswer::Gone),
        _ => None,
    }
}

fn phase(o: &mut Out, p: Phase) {
    match p {
        Phase::Idle => o.u8(0),
        Phase::Trying {
            id,
            mode: m,
            sent,
            behind,
            answer,
        } => {
            o.u8(1);
            o.id(id);
            o.u8(mode(m));
            o.u8(sent);
            o.flag(behind);
            try_answer(o, answer);
        }
        Phase::Refreshing { sent, answer } => {
            o.u8(2);
            o.u8(sent);
            refresh_answer(o, answer);
        }
        Phase::Queued => o.u8(3),
        Phase::Watch => o.u8(4),
        Phase::Held {
            id,
            token,
            deadline,
        } => {
            o.u8(5);
            o.id(id);
            o.u8(token);
            o.u8(deadline);
        }
        Phase::Done => o.u8(6),
        Phase::Leaving { ran } => {
            o.u8(7);
            o.flag(ran);
        }
    }
}

fn phase_of(i: &mut In) -> Phase {
    match i.u8() {
        1 => Phase::Trying {
            id: i.id(),
            mode: mode_of(i.u8()),
            sent: i.u8(),
            behind: i.flag(),
            answer: try_answer_of(i),
        },
        2 => Phase::Refreshing {
            sent: i.u8(),
            answer: refresh_answer_of(i),
        },
        3 => Phase::Queued,
        4 => Phase::Watch,
        5 => Phase::Held {
            id: i.id(),
            token: i.u8(),
            deadline: i.u8(),
        },
        6 => Phase::Done,
        7 => Phase::Leaving { ran: i.flag() },
        _ => Phase::Idle,
    }
}

fn req(o: &mut Out, r: Req) {
    match r {
        Req::Try {
            client,
            id,
            mode: m,
            behind,
            unclaimed,
        } => {
            o.u8(0);
            o.u8(client);
            o.id(id);
            o.u8(mode(m));
            o.flag(behind);
            o.flag(unclaimed);
        }
        Req::Refresh { client, id } => {
            o.u8(1);
            o.u8(client);
            o.id(id);
        }
        Req::Release { id, by } => {
            o.u8(2);
            o.id(id);
            match by {
                Releaser::Caller { client, token } => {
                    o.u8(1);
                    o.u8(client);
                    o.u8(token);
                }
                Releaser::Background => o.u8(0),
            }
        }
        Req::Complete { id } => {
            o.u8(3);
            o.id(id);
        }
        Req::Cleanup => o.u8(4),
    }
}

fn req_of(i: &mut In) -> Req {
    match i.u8() {
        0 => Req::Try {
            client: i.u8(),
            id: i.id(),
            mode: mode_of(i.u8()),
            behind: i.flag(),
            unclaimed: i.flag(),
        },
        1 => Req::Refresh {
            client: i.u8(),
            id: i.id(),
        },
        2 => {
            let id = i.id();
            let by = match i.u8() {
                1 => Releaser::Caller {
                    client: i.u8(),
                    token: i.u8(),
                },
                _ => Releaser::Background,
            };
            Req::Release { id, by }
        }
        3 => Req::Complete { id: i.id() },
        _ => Req::Cleanup,
    }
}

fn redis(o: &mut Out, r: &Redis) {
    o.flag(r.lock.is_some());
    if let Some(l) = r.lock {
        o.id(l.holder);
        o.u8(l.expires);
        o.u8(l.token);
    }
    o.opt(r.marker);
    o.u8(r.queue.len() as u8);
    r.queue.iter().for_each(|h| o.id(*h));
    o.opt(r.queue_ttl);
    o.u8(r.waiters.len() as u8);
    for (h, d) in &r.waiters {
        o.id(*h);
        o.u8(*d);
    }
    o.opt_id(r.last_grant.map(|g| g.0));
    o.u8(r.last_grant.map_or(0, |g| g.1));
    o.opt(r.waiters_ttl);
    o.u8(r.counter);
    o.flag(r.done);
}

fn redis_of(i: &mut In) -> Redis {
    let lock = i.flag().then(|| Lock {
        holder: i.id(),
        expires: i.u8(),
        token: i.u8(),
    });
    let marker = i.opt();
    let queue = (0..i.u8()).map(|_| i.id()).collect();
    let queue_ttl = i.opt();
    let waiters = (0..i.u8()).map(|_| (i.id(), i.u8())).collect();
    let last_id = i.opt_id();
    let last_token = i.u8();
    Redis {
        lock,
        marker,
        queue,
        queue_ttl,
        waiters,
        last_grant: last_id.map(|h| (h, last_token)),
        waiters_ttl: i.opt(),
        counter: i.u8(),
        done: i.flag(),
    }
}

/// Appends `s`, packed, to `out`.
pub fn pack(s: &State, out: &mut Vec<u8>) {
    let o = &mut Out(out);
    for b in [s.now, s.ops_left, s.errors_left, s.cancels_left] {
        o.u8(b);
    }
    o.u8(s.ghost.max_told);
    o.u64(s.ghost.op_removed);
    o.u64(s.ghost.limit_removed);
    o.opt(s.ghost.done_at);
    redis(o, &s.redis);
    o.u8(s.clients.len() as u8);
    for c in &s.clients {
        phase(o, c.phase);
        o.opt_id(c.lease);
        o.opt(c.since);
        o.flag(c.in_queue);
        o.u8(c.ids);
        o.flag(c.noticed);
        o.flag(c.noticed_since);
    }
    o.u8(s.pool.len() as u8);
    s.pool.iter().for_each(|r| req(o, *r));
    o.u8(s.msgs.len() as u8);
    for (m, msg) in &s.msgs {
        o.u8(*m);
        match *msg {
            Msg::Released { handed_to } => {
                o.u8(0);
                o.opt_id(handed_to);
            }
            Msg::Grant { id, token } => {
                o.u8(1);
                o.id(id);
                o.u8(token);
            }
        }
    }
}

/// The state `pack` wrote to `bytes`.
pub fn unpack(bytes: &[u8]) -> State {
    let i = &mut In(bytes);
    let (now, ops_left, errors_left, cancels_left) = (i.u8(), i.u8(), i.u8(), i.u8());
    let ghost = Ghost {
        max_told: i.u8(),
        op_removed: i.u64(),
        limit_removed: i.u64(),
        done_at: i.opt(),
    };
    let redis = redis_of(i);
    let clients = (0..i.u8())
        .map(|_| Client {
            phase: phase_of(i),
            lease: i.opt_id(),
            since: i.opt(),
            in_queue: i.flag(),
            ids: i.u8(),
            noticed: i.flag(),
            noticed_since: i.flag(),
        })
        .collect();
    let pool = (0..i.u8()).map(|_| req_of(i)).collect();
    let msgs = (0..i.u8())
        .map(|_| {
            let m = i.u8();
            let msg = match i.u8() {
                0 => Msg::Released {
                    handed_to: i.opt_id(),
                },
                _ => Msg::Grant {
                    id: i.id(),
                    token: i.u8(),
                },
            };
            (m, msg)
        })
        .collect();
    State {
        now,
        redis,
        clients,
        pool,
        msgs,
        ops_left,
        errors_left,
        cancels_left,
        ghost,
    }
}

#[cfg(test)]
mod tests {
    use super::{pack, unpack};
    use crate::explore::{explore, Limits, Model, Violation};
    use crate::{Action, Bounds, Design, HandoverModel};

    /// The model, checking in every state that it packs and unpacks to itself.
    struct RoundTrip(HandoverModel);

    impl Model for RoundTrip {
        type State = crate::state::State;
        type Action = Action;

        fn init(&self) -> Vec<Self::State> {
            self.0.init()
        }

        fn successors(&self, s: &Self::State, out: &mut Vec<(Action, Self::State)>) {
            self.0.successors(s, out);
        }

        fn check_state(&self, s: &Self::State, out: &mut Vec<Violation>) {
            let mut bytes = Vec::new();
            pack(s, &mut bytes);
            if unpack(&bytes) != *s {
                out.push(Violation {
                    invariant: "round trip",
                    detail: format!("{s:?}"),
                });
            }
        }

        fn check_step(&self, _: &Self::State, _: &Action, _: &Self::State, _: &mut Vec<Violation>) {
        }

        fn show(&self, s: &Self::State) -> String {
            self.0.show(s)
        }

        fn pack(&self, s: &Self::State, out: &mut Vec<u8>) {
            pack(s, out);
        }

        fn unpack(&self, bytes: &[u8]) -> Self::State {
            unpack(bytes)
        }
    }

    #[test]
    fn every_state_packs_and_unpacks_to_itself() {
        // Every kind of field: lost replies (abandoned tries and refreshes), batched
        // cancels, operators (named notices, noticed waiters), completion, today's marker
        // and queue flag.
        let runs = [
            (Design::AMENDED_REFINED, Bounds::faults(1, 1, 0, 0)),
            (Design::AMENDED_REFINED, Bounds::given_ids(1, 1, 0)),
            (Design::AMENDED_REFINED, Bounds::operator(1, 1)),
            (Design::TODAY, Bounds::completion(1)),
            // Today's: leaving at the deadline, the marker, cleanup in two steps, dated
            // notices.
            (Design::CURRENT, Bounds::faults(1, 1, 1, 0)),
            (Design::CURRENT, Bounds::operator(1, 1)),
            (Design::CURRENT, Bounds::completion(1)),
            (Design::TODAY, Bounds::operator(2, 1)),
        ];
        for (design, bounds) in runs {
            let model = RoundTrip(HandoverModel::new(design, bounds));
            let out = explore(&model, Limits::ALL);
            assert!(
                out.violations.is_empty(),
                "{:?}",
                out.violations[0].violation
            );
            assert!(out.states > 1000);
        }
    }
}
