//! The invariants (issue 20, HANDOVER.md "What the model checks"), each with a stable name.
//!
//! A lease is *excused* when an operator removed its lock (the README's limit: the notice
//! is in flight; at quiescence it must have arrived) or another owner of the same given
//! id released it (the README's limit on shared given ids). A background release is never
//! an excuse.

use crate::explore::Violation;
use crate::show::{id as show_id, lock as show_lock};
use crate::state::{HolderId, Phase, State, Token};

/// At most one acquire told "held" with a still-valid lease (two owners of one given id
/// at the same time are the README's limit).
pub const ONE_HOLDER: &str = "one_holder";
/// Every still-valid lease is the lock Redis shows: its holder id and tenure (a stronger
/// form of `one_holder`: it also catches a lock deleted under its holder).
pub const HELD_IS_SHOWN: &str = "held_is_shown";
/// An acquire told "held" is, at that instant, the holder Redis shows (same tenure), with
/// an expiry not before its lease's deadline.
pub const TOLD_HELD_IS_SHOWN: &str = "told_held_is_shown";
/// Tokens increase in the order acquires are told "held".
pub const TOKEN_ORDER: &str = "token_order";
/// No key without a ttl but the counter (checked in every state, not only at quiescence).
pub const EVERY_KEY_HAS_A_TTL: &str = "every_key_has_a_ttl";
/// At quiescence (nothing in flight), no still-valid lease whose lock an operator removed.
pub const OPERATOR_REMOVAL_REACHES_THE_HOLDER: &str = "operator_removal_reaches_the_holder";
/// An acquire that checks the completion record (every acquire, with completion in the
/// bounds) is never told "held" with a lock taken after the record was written: "later
/// acquirers get `AlreadyDone`" (DESIGN.md, exactly-once bids).
pub const DONE_IS_FINAL: &str = "done_is_final";
/// The model's own bound: tokens fit the ghost sets.
pub const MODEL_BOUND: &str = "model_bound";

fn broken(out: &mut Vec<Violation>, invariant: &'static str, detail: String) {
    if !out.iter().any(|v| v.invariant == invariant) {
        out.push(Violation { invariant, detail });
    }
}

/// The acquires told "held" whose lease is still valid: (acquire, id, token).
fn holders(s: &State) -> impl Iterator<Item = (usize, HolderId, Token)> + '_ {
    s.clients
        .iter()
        .enumerate()
        .filter_map(move |(c, cl)| match cl.phase {
            Phase::Held {
                id,
                token,
                deadline,
            } if deadline > s.now => Some((c, id, token)),
            _ => None,
        })
}

/// The invariants of one state.
pub fn check_state(s: &State, out: &mut Vec<Violation>) {
    if s.redis.counter >= 63 {
        broken(
            out,
            MODEL_BOUND,
            "more than 62 tokens: raise the ghost sets".into(),
        );
    }
    let r = &s.redis;
    if !r.queue.is_empty() && r.queue_ttl.is_none() {
        broken(out, EVERY_KEY_HAS_A_TTL, "the queue key has no ttl".into());
    }
    if (!r.waiters.is_empty() || r.last_grant.is_some()) && r.waiters_ttl.is_none() {
        broken(
            out,
            EVERY_KEY_HAS_A_TTL,
            "the waiters key has no ttl".into(),
        );
    }
    let valid: Vec<_> = holders(s)
        .filter(|(_, _, t)| !s.ghost.excused(*t))
        .collect();
    for (i, &(c, id, token)) in valid.iter().enumerate() {
        for &(d, other, t2) in &valid[i + 1..] {
            let one_given_id = id == other && id.is_given();
            if !one_given_id {
                broken(
                    out,
                    ONE_HOLDER,
                    format!("c{c} (token {token}) and c{d} (token {t2}) both hold the lock"),
                );
            }
        }
        let shown = r.lock.is_some_and(|l| l.holder == id && l.token == token);
        if !shown {
            broken(
                out,
                HELD_IS_SHOWN,
                format!(
                    "c{c} holds token {token} but Redis shows {}",
                    show_lock(r.lock)
                ),
            );
        }
    }
    if s.quiescent() {
        if let Some((c, _, token)) =
            holders(s).find(|(_, _, t)| s.ghost.op_removed & crate::state::bit(*t) != 0)
        {
            broken(out,
                OPERATOR_REMOVAL_REACHES_THE_HOLDER,
                format!("nothing in flight, and c{c} still holds token {token}, whose lock an operator removed"),
            );
        }
    }
}

/// The invariants of one step: what an acquire is told, at the instant it is told.
/// `checks_done(c)`: whether acquire `c` checks the completion record.
pub fn check_step(
    from: &State,
    to: &State,
    checks_done: impl Fn(usize) -> bool,
    out: &mut Vec<Violation>,
) {
    for (c, cl) in to.clients.iter().enumerate() {
        let Phase::Held {
            id,
            token,
            deadline,
        } = cl.phase
        else {
            continue;
        };
        if matches!(from.clients[c].phase, Phase::Held { .. }) {
            continue;
        }
        let after_done = to.ghost.done_at.filter(|d| token > *d);
        if let (Some(done_at), true) = (after_done, checks_done(c)) {
            broken(
                out,
                DONE_IS_FINAL,
                format!(
                    "c{c} told held as {} with token {token}, issued after the completion \
                     record (written when the counter was {done_at})",
                    show_id(id)
                ),
            );
        }
        if to.ghost.excused(token) {
            continue;
        }
        let lock = to.redis.lock;
        let shown =
            lock.is_some_and(|l| l.holder == id && l.token == token && l.expires >= deadline);
        if !shown {
            broken(
                out,
                TOLD_HELD_IS_SHOWN,
                format!(
                    "c{c} told held as {} with token {token} until {deadline}, but Redis shows {}",
                    show_id(id),
                    show_lock(lock)
                ),
            );
        }
        if token <= from.ghost.max_told {
            broken(
                out,
                TOKEN_ORDER,
                format!(
                    "c{c} told held with token {token} after an acquire was told {}",
                    from.ghost.max_told
                ),
            );
        }
    }
}
