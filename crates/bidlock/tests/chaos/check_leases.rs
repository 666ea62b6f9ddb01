//! Checks on what holders were told about their leases: (c) never "held" after Redis
//! stopped holding the lock for them (beyond what a stated cause allows, `causes.rs`),
//! `lost()` resolved no later than the lease's end plus a stated slack, and process
//! commands stopped when their lock went.

use std::time::{Duration, Instant};

use super::causes::{self, cause, gone_at, notice, Cause};
use super::checks::{ms, Ctx, CLOCK_SLACK, EXPIRY_SLACK, LOSS_SLACK, PROC_STOP_SLACK};
use super::excuses::Excuse;
use super::history::{Harm, Kind, Section, Who};

/// What the observer's claims say about section `s`: why Redis stopped holding its lock
/// while it still claimed it (the hint of the (c) check), when it did.
pub fn drop_hint(c: &Ctx, s: &Section) -> Option<String> {
    let (claim, _) = c.claim_of(s.id)?;
    let (_, hint) = allowance(&cause(c, s, claim), s);
    (!hint.is_empty()).then_some(hint)
}

/// How long a holder may go on claiming after a cause, and the hint when it does longer.
fn allowance(cause: &Cause, s: &Section) -> (Duration, String) {
    match cause {
        Cause::Expiry(_) => (
            EXPIRY_SLACK,
            "the local deadline ran past Redis' expiry".into(),
        ),
        Cause::Stated(e @ Excuse::OperatorRemoved, w) if w.contains("holder") => (
            notice(*e, s),
            format!("notices, issue 20's hole 4: {w} reached the holder only at its next renewal (nothing published)"),
        ),
        Cause::Stated(e @ Excuse::OperatorRemoved, w) => (
            notice(*e, s),
            format!("{w} is noticed only at the next renewal"),
        ),
        Cause::Stated(e, w) => (
            notice(*e, s),
            format!("{w} ({}); noticed later than ttl/3", e.name()),
        ),
        Cause::OwnClose(w) => (
            Duration::ZERO,
            format!("{w} released before marking its leases lost"),
        ),
        Cause::Unexplained if s.given => (
            Duration::ZERO,
            "no orphans, issue 20's hole 1: a given holder id's lock released in the background (a batch answered after its caller left, or another release of the id)".into(),
        ),
        Cause::Unexplained => (
            Duration::ZERO,
            "unexplained (see the grants of this key: one of an earlier tenure taken up breaks 'a grant names one tenure', issue 20)".into(),
        ),
    }
}

/// (c): the observer caught a lease claiming its lock after Redis stopped holding it.
pub fn claims(c: &mut Ctx) {
    let mut found = Vec::new();
    let mut excused = Vec::new();
    let (mut expected, mut max_expected) = (0, 0);
    let mut ids: Vec<u64> = c.log.claims.iter().map(|cl| cl.section).collect();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let (Some(s), Some((claim, last))) = (c.section(id), c.claim_of(id)) else {
            continue;
        };
        let why = cause(c, s, claim);
        let over = match why {
            Cause::Expiry(pe) => last.saturating_duration_since(pe),
            _ => last.saturating_duration_since(gone_at(s, claim)),
        };
        let (allowed, hint) = allowance(&why, s);
        let stated = why.stated();
        if over <= allowed && (stated.is_some() || matches!(why, Cause::Expiry(_))) {
            expected += u64::from(stated.is_some());
            excused.extend(stated);
            max_expected = max_expected.max(ms(over));
            continue;
        }
        let shown = claim.now_held_by.as_deref().unwrap_or("nobody");
        let msg = format!(
            "{} ({}, token {}) claimed \"held\" for {} ms after Redis showed {shown} (expires_at {:?} ahead)",
            s.who,
            s.holder,
            s.token,
            ms(over),
            claim.expires_at.map(|e| e.saturating_duration_since(claim.first_claim)),
        );
        found.push((s.key.clone(), claim.first_claim, msg, hint, vec![s.id]));
    }
    c.f.expected_claims = expected;
    c.f.max_expected_claim_ms = max_expected;
    c.f.held_after_server_end = found.len() as u64;
    for e in excused {
        c.excuse(e);
    }
    for (key, at, msg, hint, ids) in found {
        c.violation(
            "(c) held after Redis stopped holding it",
            &key,
            at,
            msg,
            hint,
            ids,
        );
    }
}

/// When the lease of a library section ended while the section ran, how long `lost()`
/// may take to say so, the hint, and the stated cause that ended it (if one did).
type LeaseEnd = (Instant, Duration, String, Option<Excuse>);

fn lease_end(c: &Ctx, s: &Section) -> Option<LeaseEnd> {
    let lapse = s.final_expires.filter(|e| *e < s.work_end);
    let drop = c
        .claim_of(s.id)
        .map(|(cl, _)| (gone_at(s, cl), cause(c, s, cl)));
    match (lapse, drop) {
        (Some(e), Some((g, _))) if e <= g => Some((e, LOSS_SLACK, "lease ran out".into(), None)),
        (_, Some((g, why))) => {
            let (allowed, hint) = allowance(&why, s);
            Some((g, allowed.max(LOSS_SLACK), hint, why.stated()))
        }
        (Some(e), None) => {
            let shorter = s.notes.iter().any(|(_, n)| n.starts_with("extend shorter"));
            let raced_close = matches!(s.who, Who::Lib { inst, .. } if c.faults.iter().any(|f| f.inst == Some(inst) && f.start <= s.acquired_at && f.end >= s.called_at));
            let hint = if raced_close {
                "an acquire that raced close() returned a guard its manager no longer keeps (no renewal, lost() never resolves)".into()
            } else if shorter {
                "extend(shorter) leaves the lease keeper on the old schedule".into()
            } else {
                String::new()
            };
            Some((e, LOSS_SLACK, hint, None))
        }
        (None, None) => None,
    }
}

/// After a stated cause removed `s`'s lock, another owner of its given holder id took the
/// key before the loss was due to be noticed: `s`'s renewal finds its id in Redis and
/// keeps the other's lock (one holder to Redis), so it cannot tell the loss.
fn retaken_by_same_id(c: &Ctx, s: &Section, end: Instant, due: Instant) -> bool {
    s.given
        && c.sections_on(&s.key).any(|o| {
            o.id != s.id
                && o.holder == s.holder
                && o.who != s.who
                && o.acquired_at >= end
                && o.acquired_at <= due
        })
}

/// `lost()` must resolve no later than the lease's end plus a slack; sections that kept
/// working after their lease ended are counted (by design for bids, which do not watch).
pub fn loss_reports(c: &mut Ctx) {
    let mut found = Vec::new();
    let (mut max_delay, mut max_past, mut kept, mut bids_past, mut hidden) = (0, 0, 0, 0, 0);
    for s in c
        .sections
        .iter()
        .filter(|s| s.kind != Kind::Proc && !Ctx::expired_at_start(s))
    {
        let Some((end, allowed, hint, stated)) = lease_end(c, s) else {
            continue;
        };
        if let Some(l) = s.lost_at {
            max_delay = max_delay.max(ms(l.saturating_duration_since(end)));
        }
        let past = s.work_end.saturating_duration_since(end);
        max_past = max_past.max(ms(past));
        if past > allowed {
            if s.kind == Kind::Bid {
                bids_past += 1;
            } else {
                kept += 1;
            }
        }
        let due = end + allowed;
        if s.work_end > due
            && s.lost_at.is_none_or(|l| l > due)
            && stated.is_some()
            && retaken_by_same_id(c, s, end, due)
        {
            hidden += 1;
        } else if s.work_end > due && s.lost_at.is_none_or(|l| l > due) {
            let when = s
                .lost_at
                .map_or("never (while the section ran)".to_owned(), |l| {
                    format!("{} ms after", ms(l - end))
                });
            let msg = format!(
                "{}'s lease (ttl {:?}, token {}) ended; lost() resolved {when} (allowed {} ms)",
                s.who,
                s.ttl,
                s.token,
                ms(allowed)
            );
            found.push((s.key.clone(), end, msg, hint, vec![s.id]));
        }
    }
    c.f.max_loss_report_delay_ms = max_delay;
    c.f.max_work_past_lease_ms = max_past;
    c.f.kept_working_after_lease = kept;
    c.f.bids_past_lease = bids_past;
    c.f.late_loss_reports = found.len() as u64;
    c.f.loss_hidden_by_shared_id = hidden;
    for _ in 0..hidden {
        c.excuse(Excuse::LossHiddenBySharedId);
    }
    for (key, at, msg, hint, ids) in found {
        c.violation("(e) loss reported late", &key, at, msg, hint, ids);
    }
}

/// A `bidlock run` must stop its command once its lock is gone (a frozen holder thaws
/// into a lost lock: its late ticks are counted, and only fencing protects them).
pub fn process_ticks(c: &mut Ctx) {
    let mut found = Vec::new();
    let mut excused = Vec::new();
    for s in c.sections.iter().filter(|s| s.kind == Kind::Proc) {
        let Some(t) = c.tenure(s) else { continue };
        let Some(gone) = t.gone_seen else { continue };
        let past = s.work_end.saturating_duration_since(gone);
        let (allowed, hint, stated) = if frozen(c, s, gone) {
            (Duration::MAX, String::new(), Some(Excuse::FrozenProcess))
        } else if t.expired() {
            (LOSS_SLACK, String::new(), None)
        } else if let Some((e, f)) = causes::removed_by(c, s, gone) {
            let hint = format!("{} ({}) not noticed in time", f.what, e.name());
            (notice(e, s), hint, Some(e))
        } else if let Some((e, what)) = causes::shared_id(c, s, gone) {
            (notice(e, s), what, Some(e))
        } else {
            let hint = if s.given {
                "no orphans, issue 20's hole 1: a given holder id's lock released in the background"
                    .into()
            } else {
                String::new()
            };
            (LOSS_SLACK, hint, None)
        };
        if past <= allowed.saturating_add(PROC_STOP_SLACK) {
            excused.extend(stated.filter(|_| past > LOSS_SLACK + PROC_STOP_SLACK));
            continue;
        }
        // As for a library lease (`loss_reports`): after a stated loss, another owner of
        // the same given id took the key before the run was due to notice; its renewals
        // find the id and keep that lock (exclusion.rs in bidlock-cli's tests, seed
        // 4146042333).
        if stated.is_some() && retaken_by_same_id(c, s, gone, gone + allowed) {
            excused.push(Excuse::LossHiddenBySharedId);
            continue;
        }
        let msg = format!(
            "{}'s command (token {}) worked {} ms after its lock was gone (allowed {} ms)",
            s.who,
            s.token,
            ms(past),
            ms(allowed + PROC_STOP_SLACK)
        );
        found.push((s.key.clone(), gone, msg, hint, vec![s.id]));
    }
    c.f.loss_hidden_by_shared_id += excused
        .iter()
        .filter(|e| **e == Excuse::LossHiddenBySharedId)
        .count() as u64;
    c.f.frozen_late_ticks = excused
        .iter()
        .filter(|e| **e == Excuse::FrozenProcess)
        .count() as u64;
    c.f.kept_working_after_lease += found.len() as u64;
    for e in excused {
        c.excuse(e);
    }
    for (key, at, msg, hint, ids) in found {
        c.violation(
            "(e) process kept working without its lock",
            &key,
            at,
            msg,
            hint,
            ids,
        );
    }
}

/// The nemesis froze this very process while it held its lock.
fn frozen(c: &Ctx, s: &Section, gone: Instant) -> bool {
    let Who::Proc { n } = s.who else {
        return false;
    };
    c.faults.iter().any(|f| {
        f.harm == Harm::Freeze && f.proc_n == Some(n) && f.start <= gone && f.end >= s.acquired_at
    })
}

/// (c): Redis stopped holding a section's lock, while the section still held it validly,
/// for no stated cause and not by its ttl: whoever removed it broke the lock, even when
/// the holder learned at once (a background release of a given holder id is one).
pub fn removals(c: &mut Ctx) {
    let mut found = Vec::new();
    let mut excused = Vec::new();
    for s in c
        .sections
        .iter()
        .filter(|s| s.kind != Kind::Proc && !Ctx::expired_at_start(s))
    {
        let Some(t) = causes::own_tenure(c, s) else {
            continue;
        };
        let Some(gone) = t.gone_seen else { continue };
        if t.expired() || gone + CLOCK_SLACK >= c.valid_end(s) || gone < s.acquired_at {
            continue;
        }
        if let Some(e) = causes::dropped_for_stated_cause(c, s, gone) {
            excused.push(e);
            continue;
        }
        let closed = matches!(s.who, Who::Lib { inst, .. } if c.faults.iter().any(|f| f.inst == Some(inst) && f.start <= gone + CLOCK_SLACK && f.end + CLOCK_SLACK >= gone));
        if closed {
            continue;
        }
        let by = t.gone_seen.and_then(|g| {
            c.log
                .tenures
                .iter()
                .find(|n| n.key == s.key && n.first_seen == g)
                .map(|n| n.holder.clone())
        });
        let msg = format!(
            "{} ({}, token {}) held validly until +{} ms, but Redis showed its lock gone at +{} ms (then {})",
            s.who,
            s.holder,
            s.token,
            ms(c.valid_end(s) - c.r.started),
            ms(gone - c.r.started),
            by.as_deref().unwrap_or("free")
        );
        let hint = if s.given {
            "no orphans, issue 20's hole 1: a given holder id's lock released in the background (a batch answered after its caller left)".to_owned()
        } else {
            String::new()
        };
        found.push((s.key.clone(), gone, msg, hint, vec![s.id]));
    }
    c.f.removed_under_holder = found.len() as u64;
    for e in excused {
        c.excuse(e);
    }
    for (key, at, msg, hint, ids) in found {
        c.violation(
            "(c) lock removed under its holder",
            &key,
            at,
            msg,
            hint,
            ids,
        );
    }
}
