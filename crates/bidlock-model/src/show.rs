//! Counterexamples in a readable form: an action per line, then the state it led to
//! (Redis's keys, each acquire, what is in flight).
//!
//! Holder ids read `c0#1` (acquire c0's second generated id) and `G0` (given id 0).

use std::fmt::{self, Write as _};

use crate::action::Action;
use crate::state::{HolderId, Lock, Mode, Msg, Phase, Releaser, Req, State};

/// A holder id, short.
pub fn id(h: HolderId) -> String {
    match h {
        HolderId::Gen { client, n } => format!("c{client}#{n}"),
        HolderId::Given(g) => format!("G{g}"),
    }
}

/// The lock key, short: `c1#0 tok 3 exp 3`, or `no lock`.
pub fn lock(l: Option<Lock>) -> String {
    l.map_or("no lock".into(), |l| {
        format!("{} tok {} exp {}", id(l.holder), l.token, l.expires)
    })
}

fn ttl(t: Option<u8>) -> String {
    t.map_or("NO TTL".into(), |t| format!("exp {t}"))
}

fn req(r: &Req) -> String {
    match *r {
        Req::Try {
            client,
            id: h,
            mode,
            unclaimed,
            ..
        } => format!(
            "try c{client} {} {mode:?}{}",
            id(h),
            if unclaimed {
                " (batched, caller gone)"
            } else {
                ""
            }
        ),
        Req::Refresh { client, id: h } => format!("refresh c{client} {}", id(h)),
        Req::Complete { id: h } => format!("complete {}", id(h)),
        Req::Cleanup => "cleanup's DEL of marker, queue and waiters".into(),
        Req::Release { id: h, by } => match by {
            Releaser::Caller { client, token } => {
                format!("release {} by c{client} (token {token})", id(h))
            }
            Releaser::Background => format!("release {} in the background", id(h)),
        },
    }
}

fn msg(m: u8, x: Msg) -> String {
    match x {
        Msg::Released { handed_to: None } => format!("released->m{m}"),
        Msg::Released { handed_to: Some(h) } => format!("released (to {})->m{m}", id(h)),
        Msg::Grant { id: h, token } => format!("grant {} tok {token}->m{m}", id(h)),
    }
}

fn phase(p: Phase, lease: Option<HolderId>, since: Option<u8>) -> String {
    let queued = || {
        format!(
            "{} since {}",
            lease.map_or("-".into(), id),
            since.map_or("-".into(), |t| t.to_string())
        )
    };
    match p {
        Phase::Idle => "Idle".into(),
        Phase::Trying {
            id: h,
            mode,
            sent,
            answer,
            ..
        } => {
            let m = match mode {
                Mode::No => "no",
                Mode::Join => "join",
                Mode::Stay => "stay",
            };
            let a = answer.map_or(String::new(), |a| format!(" -> {a:?}"));
            format!("Try({} {m} sent {sent}{a})", id(h))
        }
        Phase::Refreshing { sent, answer } => {
            let a = answer.map_or(String::new(), |a| format!(" -> {a:?}"));
            format!("Refresh({} sent {sent}{a})", queued())
        }
        Phase::Queued => format!("Queued({})", queued()),
        Phase::Watch => "Watch".into(),
        Phase::Held {
            id: h,
            token,
            deadline,
        } => format!("HELD({} tok {token} until {deadline})", id(h)),
        Phase::Done => "Done".into(),
        Phase::Leaving { ran } => format!(
            "Leaving({}{})",
            lease.map_or("-".into(), id),
            if ran { " -> ran" } else { "" }
        ),
    }
}

/// One state on one line.
pub fn state(s: &State) -> String {
    let r = &s.redis;
    let mut out = format!("t={} | lock ", s.now);
    match r.lock {
        Some(_) => out.push_str(&lock(r.lock)),
        None => out.push('-'),
    }
    if let Some(m) = r.marker {
        let _ = write!(out, " | marker exp {m}");
    }
    if !r.queue.is_empty() {
        let q: Vec<String> = r.queue.iter().map(|h| id(*h)).collect();
        let _ = write!(out, " | queue [{}] {}", q.join(" "), ttl(r.queue_ttl));
    }
    if !r.waiters.is_empty() || r.last_grant.is_some() {
        let mut w: Vec<String> = r
            .waiters
            .iter()
            .map(|(h, d)| format!("{}:{d}", id(*h)))
            .collect();
        if let Some((h, t)) = r.last_grant {
            w.push(format!("''={} {t}", id(h)));
        }
        let _ = write!(out, " | waiters {{{}}} {}", w.join(" "), ttl(r.waiters_ttl));
    }
    let _ = write!(out, " | counter {}", r.counter);
    if r.done {
        out.push_str(" | DONE record");
    }
    out.push_str("\n      ");
    let clients: Vec<String> = s
        .clients
        .iter()
        .enumerate()
        .map(|(c, cl)| {
            let noticed = if cl.noticed { " (noticed)" } else { "" };
            let since = if cl.noticed_since {
                " (noticed since)"
            } else {
                ""
            };
            format!(
                "c{c} {}{noticed}{since}",
                phase(cl.phase, cl.lease, cl.since)
            )
        })
        .collect();
    out.push_str(&clients.join(", "));
    if !s.pool.is_empty() {
        let p: Vec<String> = s.pool.iter().map(req).collect();
        let _ = write!(out, "\n      in flight: {}", p.join(", "));
    }
    if !s.msgs.is_empty() {
        let m: Vec<String> = s.msgs.iter().map(|(to, x)| msg(*to, *x)).collect();
        let _ = write!(out, "\n      messages: {}", m.join(", "));
    }
    out
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        action(self, f)
    }
}

/// One action.
pub fn action(a: &Action, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match *a {
        Action::Tick => write!(f, "one tick passes"),
        Action::Start(c) => write!(f, "c{c}: acquire called, first try sent"),
        Action::Run(c) => write!(f, "c{c}: its request runs at Redis"),
        Action::Answer(c) => write!(f, "c{c}: the reply arrives"),
        Action::Error(c) => write!(f, "c{c}: the request fails (unknown outcome)"),
        Action::Cancel { client, batched } => write!(
            f,
            "c{client}: cancelled{}",
            if batched {
                " (its try rode in a batch)"
            } else {
                ""
            }
        ),
        Action::Deadline(c) => write!(f, "c{c}: its deadline passes (it leaves the queue)"),
        Action::Refresh(c) => write!(f, "c{c}: refresh sent"),
        Action::TryAgain(c) => write!(f, "c{c}: tries again"),
        Action::Release(c) => write!(f, "c{c}: releases its guard"),
        Action::Check(c) => write!(f, "c{c}: the keeper checks its lease (a notice came)"),
        Action::Complete(c) => write!(f, "c{c}: completes the posting"),
        Action::RunLate(r) => write!(f, "runs at Redis: {}", req(&r)),
        Action::Lose(r) => write!(f, "lost on the way: {}", req(&r)),
        Action::Deliver {
            manager,
            msg: x,
            keep,
        } => write!(
            f,
            "delivered{}: {}",
            if keep { " (a duplicate stays)" } else { "" },
            msg(manager, x)
        ),
        Action::Drop { manager, msg: x } => {
            write!(f, "lost, m{manager} reconnects: {}", msg(manager, x))
        }
        Action::OperatorRelease(h) => write!(f, "operator: release --holder {}", id(h)),
        Action::OperatorForce => write!(f, "operator: release --force"),
        Action::OperatorCleanup => write!(f, "operator: cleanup --yes"),
    }
}
