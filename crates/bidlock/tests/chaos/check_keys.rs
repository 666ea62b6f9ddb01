//! Checks on what the round left in Redis and how locks changed hands: (f) no orphans —
//! a lock a cancelled (or failed) acquire took is released in the background, not left to
//! its ttl; (g) every key a script writes has a ttl but the fencing counter, both while
//! the round runs (the handoff keys the observer reads) and in the census at its end;
//! grants are taken up only within the tenure they report. Also the evidence that a class
//! reached what it aims at: calls that rode in batches, grants that expired held back.

use std::time::Instant;

use super::causes;
use super::checks::{ms, Ctx, CLOCK_SLACK, ORPHAN_BOUND};
use super::excuses::Excuse;
use super::history::Harm;
use super::observer::Tenure;
use super::FaultClass;

/// The library instance whose manager generated `holder`, if one did.
fn instance_of(bases: &[(u8, String)], holder: &str) -> Option<u8> {
    bases.iter().find_map(|(inst, b)| {
        holder
            .strip_prefix(b.as_str())
            .is_some_and(|r| r.starts_with(':'))
            .then_some(*inst)
    })
}

/// A fault that could keep instance `inst`'s background release from reaching Redis
/// while the orphan `t` lived: its link or the server stalled, slowed, down, dropped or
/// rolled back.
fn unreachable(c: &Ctx, inst: u8, t: &Tenure) -> bool {
    let end = t.predicted_expiry().unwrap_or(t.last_seen).max(t.last_seen);
    c.faults.iter().any(|f| {
        matches!(f.harm, Harm::Benign | Harm::DataLoss)
            && f.inst.is_none()
            && f.effective
            && f.link.is_none_or(|l| l == inst)
            && !f.what.starts_with("cleanup_all with prefix")
            && f.start <= end + CLOCK_SLACK
            && f.end + CLOCK_SLACK >= t.first_seen
    })
}

/// A lock of a given holder id that no section held while it lasted: a cancelled try's
/// (left to its ttl, as a given id must be), unless a section of the id shows up in it.
fn given_unheld(c: &Ctx, t: &Tenure) -> bool {
    c.r.given.contains(&t.holder)
        && !c.sections_on(&t.key).any(|s| {
            s.holder == t.holder
                && s.acquired_at + CLOCK_SLACK >= t.first_seen
                && t.gone_seen.is_none_or(|g| s.acquired_at <= g + CLOCK_SLACK)
        })
}

/// (f): locks held by a library instance's generated holder id that no section accounts
/// for (an acquire cancelled, or failed, after its try took the lock; handovers are
/// counted in [`grants`]). Each must be released in the background within
/// [`ORPHAN_BOUND`], never left to its ttl, unless a fault kept the release from Redis.
pub fn orphans(c: &mut Ctx) {
    let bases = c.r.hist.holder_bases.lock().unwrap().clone();
    let mut found = Vec::new();
    let (mut n, mut released, mut left, mut max, mut excused) = (0, 0, 0, 0, 0);
    for t in &c.log.tenures {
        let Some(inst) = instance_of(&bases, &t.holder) else {
            if given_unheld(c, t) {
                c.f.given_orphans += 1;
            }
            continue;
        };
        if t.granted.is_some()
            || c.sections
                .iter()
                .any(|s| s.key == t.key && s.holder == t.holder)
        {
            continue;
        }
        n += 1;
        let held = t.gone_seen.unwrap_or(t.last_seen) - t.first_seen;
        max = max.max(ms(held));
        let stayed = t.expired() || t.gone_seen.is_none();
        if stayed {
            left += 1;
        } else {
            released += 1;
        }
        if !stayed && held <= ORPHAN_BOUND {
            continue;
        }
        if unreachable(c, inst, t) {
            excused += 1;
            continue;
        }
        let how = if stayed {
            "was left until its ttl ran out".to_owned()
        } else {
            format!("was released only after {} ms", ms(held))
        };
        let msg = format!(
            "{} (lib{inst}) held the lock with no client holding it and {how} (pttl {} ms at last sight)",
            t.holder, t.last_pttl_ms
        );
        found.push((t.key.clone(), t.first_seen, msg));
    }
    c.f.orphans = n;
    c.f.orphans_released = released;
    c.f.orphans_left = left;
    c.f.max_orphan_ms = max;
    for _ in 0..excused {
        c.excuse(Excuse::OrphanUnreachable);
    }
    for (key, at, msg) in found {
        c.violation(
            "(f) orphan lock",
            &key,
            at,
            msg,
            "a cancelled or failed acquire's lock was not released in the background".into(),
            vec![],
        );
    }
}

/// Handovers: how grants ended (taken up, handed on, expired unclaimed), a grant taken up
/// after the tenure it reports had ended, and handoff keys seen without a ttl.
pub fn grants(c: &mut Ctx) {
    let mut found = Vec::new();
    let (mut grants, mut taken, mut expired, mut handed_on) = (0, 0, 0, 0);
    for t in c.log.tenures.iter().filter(|t| t.granted.is_some()) {
        grants += 1;
        let during = |at: Instant| {
            at + CLOCK_SLACK >= t.first_seen && t.gone_seen.is_none_or(|g| at <= g + CLOCK_SLACK)
        };
        if c.sections
            .iter()
            .any(|s| s.key == t.key && s.holder == t.holder && during(s.acquired_at))
        {
            taken += 1;
        } else if t.expired() {
            expired += 1;
        } else {
            handed_on += 1;
        }
    }
    for s in &c.sections {
        let stale = c.tenures_on(&s.key).iter().find(|t| {
            t.holder == s.holder
                && t.granted == Some(s.token)
                && t.gone_seen.is_some_and(|g| g + CLOCK_SLACK < s.acquired_at)
        });
        // An operator or data loss that ended the tenure first is that cause's history
        // (told after removal: its notice is checked with the claims).
        if let Some(t) = stale.filter(|_| causes::removed_by(c, s, s.acquired_at).is_none()) {
            let msg = format!(
                "{} was told \"held\" with token {} at {} ms after the tenure that grant reported had ended ({} ms earlier)",
                s.who,
                s.token,
                ms(s.acquired_at - c.r.started),
                ms(s.acquired_at - t.gone_seen.unwrap_or(s.acquired_at))
            );
            let hint = "grants, issue 20's hole 2: a grant of an earlier tenure taken up after the waiter queued again with the same holder id".to_owned();
            found.push((s.key.clone(), s.acquired_at, msg, hint, vec![s.id]));
        }
    }
    for (name, at) in &c.log.no_ttl {
        let msg = format!("{name} existed without a ttl");
        let hint =
            "every key expires, issue 20's hole 3: the waiters hash written again after its last waiter was handed the lock"
                .to_owned();
        found.push((name.clone(), *at, msg, hint, vec![]));
    }
    c.f.grants = grants;
    c.f.grants_taken = taken;
    c.f.grants_expired_unclaimed = expired;
    c.f.grants_handed_on = handed_on;
    c.f.handoff_keys_without_ttl = c.log.no_ttl.len() as u64;
    for (key, at, msg, hint, ids) in found {
        let check = if ids.is_empty() {
            "(g) handoff key without a ttl"
        } else {
            "(c) a grant taken up after its tenure"
        };
        c.violation(check, &key, at, msg, hint, ids);
    }
}

/// (g): the census at the round's end: no key without a ttl but the fencing counter.
pub fn census(c: &mut Ctx) {
    let Some(census) = c.extras.census.clone() else {
        return;
    };
    let at = Instant::now();
    if let Some(e) = &census.failed {
        let msg = format!("the keyspace could not be read: {e}");
        c.violation("(g) key census", "-", at, msg, String::new(), vec![]);
        return;
    }
    c.f.census_keys = census.kinds.values().sum();
    c.f.census_without_ttl = census.without_ttl.len() as u64;
    c.f.census_locks_left = census.locks.len() as u64;
    for (name, kind) in census.without_ttl {
        let msg = format!("{name} ({kind}) has no ttl at the end of the round");
        let hint = if matches!(kind, "waiters" | "queue") {
            "every key expires, issue 20's hole 3: the waiters hash written again after its last waiter was handed the lock"
                .into()
        } else {
            String::new()
        };
        c.violation("(g) key without a ttl", &name, at, msg, hint, vec![]);
    }
}

/// What shows the class reached its target: calls that rode in batches, messages a
/// subscriber link held back, cancelled acquires with a given id, operator releases.
pub fn evidence(c: &mut Ctx) {
    if let Some(calls) = c.extras.calls {
        c.f.acquire_calls_lone = calls.acquire_lone;
        c.f.acquire_calls_batched = calls.acquire_batched;
        c.f.acquire_items_batched = calls.acquire_batched_items;
        c.f.release_calls_batched = calls.release_batched;
        c.f.release_items_batched = calls.release_batched_items;
        if c.r.class == FaultClass::BatchLatency && calls.acquire_batched == 0 {
            let at = c.r.stop_at;
            let msg = format!("no acquire rode in a batch: {calls:?}");
            c.violation("nemesis", "-", at, msg, String::new(), vec![]);
        }
    }
    (c.f.link_chunks_held, c.f.subscriber_chunks_held) = c.extras.link_held;
    c.f.cancelled_given_acquires = c.r.hist.get("acquire.cancelled_given");
    c.f.operator_releases_by_holder = c
        .faults
        .iter()
        .filter(|f| f.effective && f.harm == Harm::Operator && f.what.contains("holder"))
        .count() as u64;
}
