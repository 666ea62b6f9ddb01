//! Checks on what holders were told about their leases: (c) never "held" after Redis
//! stopped holding the lock for them (beyond what a stated fault allows), `lost()`
//! resolved no later than the lease's end plus a stated slack, process commands stopped
//! when their lock went, and no cancelled acquire left its lock behind.

use std::time::{Duration, Instant};

use super::checks::{
    data_loss_notice, ms, Ctx, CLOCK_SLACK, EXPIRY_SLACK, FORCED_NOTICE, LATE_DELIVERY, LOSS_SLACK,
    ORPHAN_BOUND, PROC_STOP_SLACK,
};
use super::history::{Harm, Kind, Section, Who};
use super::observer::Claim;
use super::FaultClass;

/// Why Redis stopped holding a lock for a holder that still held it, and how long the
/// holder may take to notice.
enum Cause {
    /// Its ttl ran out by the server's clock (the client's deadline must be earlier).
    Expiry(Instant),
    /// Data loss: noticed at the next renewal.
    DataLoss(String),
    /// An operator deleted it: noticed within [`FORCED_NOTICE`].
    Operator(String),
    /// Another owner of the same given holder id let go (a release, a completion, a
    /// process exit), and Redis, which holds only holder ids, applied it to this
    /// acquisition's lock: the documented limit of a holder id shared by two owners at
    /// once. Noticed at the next renewal at the latest, as data loss.
    SharedId(String),
    /// The holder's own manager was closed under it: must be marked lost first.
    OwnClose(String),
    /// Nothing the run did explains it.
    Unexplained,
}

/// When Redis stopped holding section `s`'s lock, as the observer saw it. A lock taken
/// and lost between two of the observer's readings is never seen, and the observer's
/// "gone" then belongs to an earlier acquisition of the same given holder id: the lock
/// cannot have gone before the section was told it held it.
fn gone_at(s: &Section, claim: &Claim) -> Instant {
    claim.gone_seen.max(s.acquired_at)
}

fn cause(c: &Ctx, s: &Section, claim: &Claim) -> Cause {
    let gone = gone_at(s, claim);
    // The observer's tenure of this holder id, if it is this section's: one that ended
    // before the section was told "held" belongs to an earlier acquisition of the id.
    let tenure = claim
        .tenure
        .as_ref()
        .filter(|t| t.last_seen + CLOCK_SLACK >= s.acquired_at);
    // Data loss can roll back an extend Redis had acknowledged: the key then expires at
    // its older expiry, earlier than the client was promised, and the promise that
    // holds is the data-loss one (noticed at the next renewal).
    let since = tenure.map_or(s.acquired_at, |t| t.first_seen);
    if let Some(f) = c.explain(&s.key, since, gone, &[Harm::DataLoss]) {
        return Cause::DataLoss(f.what.clone());
    }
    if let Some(f) = twin_after_harm(c, s, gone) {
        let what = format!(
            "{} (then two acquisitions shared one given holder id)",
            f.what
        );
        return match f.harm {
            Harm::DataLoss => Cause::DataLoss(what),
            _ => Cause::Operator(what),
        };
    }
    if let Some(pe) = tenure.and_then(|t| t.predicted_expiry()) {
        if pe <= gone + Duration::from_millis(2) {
            return Cause::Expiry(pe);
        }
    }
    // Redis keeps expiry in whole milliseconds (and a late reading overestimates it):
    // a lease that was itself about to end is judged as an expiry.
    if let Some(e) = claim.expires_at.filter(|e| *e <= gone + EXPIRY_SLACK) {
        return Cause::Expiry(e.min(gone));
    }
    let from = tenure.map_or(s.acquired_at, |t| t.last_seen);
    if let Some(f) = c.explain(&s.key, from, gone, &[Harm::DataLoss]) {
        return Cause::DataLoss(f.what.clone());
    }
    if let Some(f) = c.explain(&s.key, from, gone, &[Harm::Operator]) {
        return Cause::Operator(f.what.clone());
    }
    if let Some(cause) = same_id_after_harm(c, s, from, gone) {
        return cause;
    }
    if let Some(o) = other_owner_let_go(c, s, gone) {
        return Cause::SharedId(format!("{} let go of the same holder id", o.who));
    }
    if let Who::Lib { inst, .. } = s.who {
        let close = c
            .faults
            .iter()
            .find(|f| f.inst == Some(inst) && f.start <= gone && f.end >= from);
        if let Some(f) = close {
            return Cause::OwnClose(f.what.clone());
        }
    }
    Cause::Unexplained
}

/// Another section with the same given holder id held the same key at the same time as
/// `s` (up to `until`), after data loss or an operator's release deleted one of them:
/// from then on an extend or release by either acts on the other's lock too, and no
/// library can tell them apart by holder id. The fault that let them coexist, if any.
fn twin_after_harm<'a>(
    c: &'a Ctx,
    s: &Section,
    until: Instant,
) -> Option<&'a super::history::Fault> {
    if !s.given {
        return None;
    }
    let twin = c.sections.iter().find(|o| {
        o.id != s.id
            && o.key == s.key
            && o.holder == s.holder
            && o.acquired_at < until
            && o.work_end > s.acquired_at
    })?;
    let from = s.acquired_at.min(twin.acquired_at);
    let since = from.checked_sub(Duration::from_secs(2)).unwrap_or(from);
    c.explain(
        &s.key,
        since,
        s.acquired_at.max(twin.acquired_at),
        &[Harm::DataLoss, Harm::Operator],
    )
}

/// A section of another owner (another library instance or process) with the same given
/// holder id that let go explicitly (release, completion, exit) before `gone`, within the
/// time a delayed request may take to arrive: its request, delivered now, removes
/// whichever acquisition of that id holds the key. bidlock itself never lets go of a
/// given id in the background (dropped guards and cancelled acquires leave it to expire),
/// so a drop with no such explicit let-go stays a hole-5 violation.
pub fn other_owner_let_go<'a>(c: &'a Ctx, s: &Section, gone: Instant) -> Option<&'a Section> {
    if !s.given {
        return None;
    }
    let window = s
        .called_at
        .checked_sub(LATE_DELIVERY)
        .unwrap_or(s.called_at);
    c.sections.iter().find(|o| {
        o.id != s.id
            && o.key == s.key
            && o.holder == s.holder
            && o.who != s.who
            && o.work_end >= window
            && o.work_end <= gone + CLOCK_SLACK
            && ["release", "complete", "closure", "exit"]
                .iter()
                .any(|e| o.ending.starts_with(e))
    })
}

/// Another acquisition with the same given holder id let go just then, and its own lock
/// had vanished in data loss or an operator's release it had not noticed yet: its
/// release removed this one's lock, which no library can tell apart by holder id. That
/// is the fault's doing.
fn same_id_after_harm(c: &Ctx, s: &Section, from: Instant, gone: Instant) -> Option<Cause> {
    if !s.given {
        return None;
    }
    let window = from.checked_sub(Duration::from_secs(1)).unwrap_or(from);
    c.sections
        .iter()
        .filter(|o| o.id != s.id && o.key == s.key && o.holder == s.holder)
        .filter(|o| o.work_end >= window && o.work_end <= gone + CLOCK_SLACK)
        .find_map(|o| {
            let f = c.explain(
                &s.key,
                o.acquired_at,
                o.work_end,
                &[Harm::DataLoss, Harm::Operator],
            )?;
            let what = format!(
                "{} (then {} released with the same holder id)",
                f.what, o.who
            );
            Some(match f.harm {
                Harm::DataLoss => Cause::DataLoss(what),
                _ => Cause::Operator(what),
            })
        })
}

/// What the observer's claims say about section `s`: why Redis stopped holding its lock
/// while it still claimed it (the hint of the (c) check), when it did.
pub fn drop_hint(c: &Ctx, s: &Section) -> Option<String> {
    let (claim, _) = c.claim_of(s.id)?;
    let (_, hint) = allowance(&cause(c, s, claim), s);
    (!hint.is_empty()).then_some(hint)
}

/// Why Redis stopped holding section `s`'s lock while it still claimed it, when the
/// observer caught that, and whether the cause is one the README names as unsafe (data
/// loss) or an operator's release: then other holders may rightly overlap it.
pub fn inherent_drop(c: &Ctx, s: &Section) -> bool {
    c.claim_of(s.id).is_some_and(|(claim, _)| {
        matches!(
            cause(c, s, claim),
            Cause::DataLoss(_) | Cause::Operator(_) | Cause::SharedId(_)
        )
    })
}

/// Section `s` was told "held" for a lock that Redis had already let go of, for a cause
/// the README names (another owner of its given holder id, data loss, an operator): the
/// observer never saw it hold, so its place in the order of replies says nothing about
/// Redis' order, which its token gives.
pub fn never_seen_holding(c: &Ctx, s: &Section) -> bool {
    let by_claim = c.claim_of(s.id).is_some_and(|(claim, _)| {
        claim.gone_seen <= s.acquired_at + CLOCK_SLACK
            && matches!(
                cause(c, s, claim),
                Cause::DataLoss(_) | Cause::Operator(_) | Cause::SharedId(_)
            )
    });
    // Lost in the same instant it was told, before the observer could ask it.
    let at_once = s.lost_at.is_some_and(|l| l <= s.acquired_at + CLOCK_SLACK)
        && (c
            .explain(
                &s.key,
                s.called_at,
                s.acquired_at,
                &[Harm::DataLoss, Harm::Operator],
            )
            .is_some()
            || other_owner_let_go(c, s, s.acquired_at).is_some());
    by_claim || at_once
}

/// How long a holder may go on claiming after a cause, and the hint when it does longer.
fn allowance(cause: &Cause, s: &Section) -> (Duration, String) {
    match cause {
        Cause::Expiry(_) => (
            EXPIRY_SLACK,
            "the local deadline ran past Redis' expiry".into(),
        ),
        Cause::DataLoss(w) => (
            data_loss_notice(s.ttl),
            format!("noticed later than ttl/3 after {w}"),
        ),
        Cause::Operator(w) => (
            FORCED_NOTICE,
            format!("hole 8: {w} is noticed only at the next renewal"),
        ),
        Cause::SharedId(w) => (
            data_loss_notice(s.ttl),
            format!("shared given holder id (documented): {w}; noticed later than ttl/3"),
        ),
        Cause::OwnClose(w) => (
            Duration::ZERO,
            format!("hole 6: {w} released before marking its leases lost"),
        ),
        Cause::Unexplained if s.given => (
            Duration::ZERO,
            "hole 5: another acquisition with the same given holder id released or completed (a background release, or one whose lease had lapsed)".into(),
        ),
        Cause::Unexplained => (Duration::ZERO, String::new()),
    }
}

/// (c): the observer caught a lease claiming its lock after Redis stopped holding it.
pub fn claims(c: &mut Ctx) {
    let mut found = Vec::new();
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
        let inherent = matches!(
            why,
            Cause::DataLoss(_) | Cause::Operator(_) | Cause::SharedId(_)
        );
        if over <= allowed && (inherent || matches!(why, Cause::Expiry(_))) {
            expected += u64::from(inherent);
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

/// When the lease of a library section ended while the section ran, and how long
/// `lost()` may take to say so.
fn lease_end(c: &Ctx, s: &Section) -> Option<(Instant, Duration, String)> {
    let lapse = s.final_expires.filter(|e| *e < s.work_end);
    let drop = c
        .claim_of(s.id)
        .map(|(cl, _)| (gone_at(s, cl), cause(c, s, cl)));
    match (lapse, drop) {
        (Some(e), Some((g, _))) if e <= g => Some((e, LOSS_SLACK, "lease ran out".into())),
        (_, Some((g, why))) => {
            let (allowed, hint) = allowance(&why, s);
            Some((g, allowed.max(LOSS_SLACK), hint))
        }
        (Some(e), None) => {
            let shorter = s.notes.iter().any(|(_, n)| n.starts_with("extend shorter"));
            let raced_close = matches!(s.who, Who::Lib { inst, .. } if c.faults.iter().any(|f| f.inst == Some(inst) && f.start <= s.acquired_at && f.end >= s.called_at));
            let hint = if raced_close {
                "an acquire that raced close() returned a guard its manager no longer keeps (no renewal, lost() never resolves)".into()
            } else if shorter {
                "hole 2: extend(shorter) leaves the lease keeper on the old schedule".into()
            } else {
                String::new()
            };
            Some((e, LOSS_SLACK, hint))
        }
        (None, None) => None,
    }
}

/// Another acquisition with the same given holder id took the key again before the loss
/// was due to be noticed: a check that compares holder ids (all Redis holds) then finds
/// "our" id and cannot tell the loss. Counted, not a violation: given ids shared by two
/// owners are documented as unable to tell their acquisitions apart.
fn retaken_by_same_id(c: &Ctx, s: &Section, end: Instant, due: Instant) -> bool {
    s.given
        && c.sections.iter().any(|o| {
            o.id != s.id
                && o.key == s.key
                && o.holder == s.holder
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
        let Some((end, allowed, hint)) = lease_end(c, s) else {
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
    for (key, at, msg, hint, ids) in found {
        c.violation("(e) loss reported late", &key, at, msg, hint, ids);
    }
}

/// A `bidlock run` must stop its command once its lock is gone (a frozen holder thaws
/// into a lost lock: its late ticks are counted, and only fencing protects them).
pub fn process_ticks(c: &mut Ctx) {
    let mut found = Vec::new();
    let mut frozen = 0;
    for s in c.sections.iter().filter(|s| s.kind == Kind::Proc) {
        let Some(t) = c.tenure(s) else { continue };
        let Some(gone) = t.gone_seen else { continue };
        let from = t.last_seen;
        let expired = t
            .predicted_expiry()
            .is_some_and(|pe| pe <= gone + Duration::from_millis(2));
        let allowed = if c
            .explain(&s.key, s.acquired_at, gone, &[Harm::Freeze])
            .is_some()
        {
            None
        } else if expired {
            Some((LOSS_SLACK, String::new()))
        } else if let Some(f) = c.explain(&s.key, from, gone, &[Harm::DataLoss]) {
            Some((data_loss_notice(s.ttl), format!("after {}", f.what)))
        } else if let Some(f) = c.explain(&s.key, from, gone, &[Harm::Operator]) {
            Some((
                FORCED_NOTICE,
                format!("hole 8: {} is noticed only at the next renewal", f.what),
            ))
        } else if let Some(o) = other_owner_let_go(c, s, gone) {
            Some((
                data_loss_notice(s.ttl),
                format!(
                    "shared given holder id (documented): {} let go of it",
                    o.who
                ),
            ))
        } else {
            Some((
                LOSS_SLACK,
                if s.given {
                    "hole 5: shared given holder id".into()
                } else {
                    String::new()
                },
            ))
        };
        let past = s.work_end.saturating_duration_since(gone);
        match allowed {
            None if past > PROC_STOP_SLACK => frozen += 1,
            Some((a, hint)) if past > a + PROC_STOP_SLACK => {
                let msg = format!(
                    "{}'s command (token {}) worked {} ms after its lock was gone (allowed {} ms)",
                    s.who,
                    s.token,
                    ms(past),
                    ms(a + PROC_STOP_SLACK)
                );
                found.push((s.key.clone(), gone, msg, hint, vec![s.id]));
            }
            _ => {}
        }
    }
    c.f.frozen_late_ticks = frozen;
    c.f.kept_working_after_lease += found.len() as u64;
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

/// Locks held in Redis by a library instance's generated holder id that no section
/// accounts for: an acquire cancelled mid-flight whose lock stayed.
pub fn orphans(c: &mut Ctx) {
    let bases = c.r.hist.holder_bases.lock().unwrap().clone();
    let quiet = matches!(
        c.r.class,
        FaultClass::Calm | FaultClass::ForcedRelease | FaultClass::HolderFreeze
    );
    let mut found = Vec::new();
    let (mut n, mut max) = (0, 0);
    for t in &c.log.tenures {
        let generated = bases.iter().any(|b| {
            t.holder
                .strip_prefix(b.as_str())
                .is_some_and(|r| r.starts_with(':'))
        });
        if !generated
            || c.sections
                .iter()
                .any(|s| s.key == t.key && s.holder == t.holder)
        {
            continue;
        }
        n += 1;
        let held = t.last_seen - t.first_seen;
        max = max.max(ms(held));
        let restored = c
            .explain(&t.key, t.first_seen, t.last_seen, &[Harm::DataLoss])
            .is_some();
        if quiet && !restored && held > ORPHAN_BOUND {
            let msg = format!(
                "{} held the lock for {} ms with no client holding it",
                t.holder,
                ms(held)
            );
            found.push((t.key.clone(), t.first_seen, msg));
        }
    }
    c.f.orphans = n;
    c.f.max_orphan_ms = max;
    for (key, at, msg) in found {
        c.violation(
            "(f) orphan lock",
            &key,
            at,
            msg,
            "a cancelled acquire's lock was not released in the background".into(),
            vec![],
        );
    }
}
