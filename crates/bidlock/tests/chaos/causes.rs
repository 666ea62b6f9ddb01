//! Why a section's lock was gone while the section still held it: its expiry, or one of
//! the stated causes of `excuses.rs`, each narrowed to what its test shows — a fault that
//! acted on that key when the observer saw the lock go, two owners of one given id that
//! held at the same time, a release of that id run late. Anything else is unexplained,
//! and a violation.

use std::time::{Duration, Instant};

use super::checks::{data_loss_notice, Ctx, CLOCK_SLACK, FORCED_NOTICE, LATE_DELIVERY};
use super::excuses::Excuse;
use super::history::{Fault, Harm, Section, Who};
use super::observer::{Claim, Tenure};

/// After a data-loss fault, the observer's first reading comes once the server is back
/// (or the port moved to the promoted replica): it reconnects within this.
const RECONNECT_SLACK: Duration = Duration::from_millis(500);
/// After an operator's command returned, the observer's next reading (1 ms apart).
const READING_SLACK: Duration = Duration::from_millis(20);

/// Why Redis stopped holding a lock for a holder that still held it.
pub enum Cause {
    /// Its ttl ran out by the server's clock (the client's deadline must be earlier).
    Expiry(Instant),
    /// A stated cause: the rule that lets it pass, and what happened.
    Stated(Excuse, String),
    /// The holder's own manager was closed under it: must be marked lost first.
    OwnClose(String),
    /// Nothing the run did explains it.
    Unexplained,
}

impl Cause {
    pub fn stated(&self) -> Option<Excuse> {
        match self {
            Cause::Stated(e, _) => Some(*e),
            _ => None,
        }
    }
}

/// How long a holder may go on claiming after a stated cause.
pub fn notice(e: Excuse, s: &Section) -> Duration {
    match e {
        Excuse::OperatorRemoved => FORCED_NOTICE,
        _ => data_loss_notice(s.ttl.max(s.renew_ttl)),
    }
}

/// The observer's tenure of section `s`'s own acquisition: its holder on its key, first
/// seen no later than it was told, still seen when it was told; or, for a section told
/// by a grant that came late, the handover that issued its token.
pub fn own_tenure<'a>(c: &'a Ctx, s: &Section) -> Option<&'a Tenure> {
    let mine = c
        .log
        .tenures
        .iter()
        .filter(|t| t.key == s.key && t.holder == s.holder);
    mine.clone()
        .filter(|t| t.first_seen <= s.acquired_at + CLOCK_SLACK)
        .filter(|t| t.last_seen + CLOCK_SLACK >= s.acquired_at)
        .max_by_key(|t| t.first_seen)
        .or_else(|| mine.clone().rfind(|t| t.granted == Some(s.token)))
}

/// A fault of `harm` that acted on `key` when a reading first showed its lock gone at
/// `gone`.
fn hit_when_gone<'a>(c: &'a Ctx, key: &str, gone: Instant, harm: Harm) -> Option<&'a Fault> {
    let after = if harm == Harm::DataLoss {
        RECONNECT_SLACK
    } else {
        READING_SLACK
    };
    c.faults
        .iter()
        .find(|f| f.harm == harm && f.touches(key) && f.hit_at(gone, CLOCK_SLACK, after))
}

/// A data-loss fault that rolled the tenure's expiry back: the observer saw the expiry
/// move back between a reading before the fault's hit and one after it.
fn rolled_back<'a>(c: &'a Ctx, s: &Section, t: &Tenure) -> Option<&'a Fault> {
    c.faults.iter().find(|f| {
        f.harm == Harm::DataLoss
            && f.touches(&s.key)
            && f.hit.is_some_and(|(a, b)| {
                s.acquired_at <= b
                    && t.expiry_drops
                        .iter()
                        .any(|(before, at, _)| *before <= b + CLOCK_SLACK && *at + CLOCK_SLACK >= a)
            })
    })
}

/// Section `s`'s lock was removed by a stated fault no later than `until`: the observer
/// saw its own tenure go while a data-loss fault or an operator's command acted on the
/// key, or the tenure's expiry rolled back in data loss before it expired; a lock taken
/// and removed between two readings (never seen) counts when such a fault acted on the
/// key between the try and the reply.
pub fn removed_by<'a>(c: &'a Ctx, s: &Section, until: Instant) -> Option<(Excuse, &'a Fault)> {
    let Some(t) = own_tenure(c, s) else {
        let window = |f: &&Fault| {
            f.touches(&s.key)
                && f.hit.is_some_and(|(a, b)| {
                    a <= s.acquired_at.min(until) + CLOCK_SLACK && b + CLOCK_SLACK >= s.called_at
                })
        };
        return c.faults.iter().filter(window).find_map(|f| match f.harm {
            Harm::DataLoss => Some((Excuse::DataLossVanished, f)),
            Harm::Operator => Some((Excuse::OperatorRemoved, f)),
            _ => None,
        });
    };
    let gone = t.gone_seen.filter(|g| *g <= until + CLOCK_SLACK)?;
    if let Some(f) = hit_when_gone(c, &s.key, gone, Harm::DataLoss) {
        return Some((Excuse::DataLossVanished, f));
    }
    if let Some(f) = hit_when_gone(c, &s.key, gone, Harm::Operator) {
        return Some((Excuse::OperatorRemoved, f));
    }
    rolled_back(c, s, t)
        .filter(|_| t.expired())
        .map(|f| (Excuse::DataLossRolledBack, f))
}

/// A stated fault (data loss, an operator) acted on `key` just before `at`: what let a
/// second owner of a given id take a key the first still held, when the observer saw no
/// gap (the same id was back within a reading).
fn acted_just_before<'a>(c: &'a Ctx, key: &str, at: Instant) -> Option<&'a Fault> {
    c.faults.iter().find(|f| {
        let after = match f.harm {
            Harm::DataLoss => RECONNECT_SLACK,
            Harm::Operator => READING_SLACK,
            _ => return false,
        };
        f.touches(key)
            && f.hit
                .is_some_and(|(a, b)| a <= at + CLOCK_SLACK && at <= b + after)
    })
}

/// Another owner of `s`'s given holder id held the key at the same time as `s`, before
/// `gone`: the one that held first had its lock removed by a stated fault before the
/// other acquired (so both were told "held", one holder to Redis). The removal shows as
/// the first's tenure ending in the fault, or, when the same id was back before the next
/// reading, as the other's acquire right after the fault acted on the key.
pub fn shared_at_once<'a>(c: &'a Ctx, s: &Section, gone: Instant) -> Option<&'a Section> {
    if !s.given {
        return None;
    }
    c.sections_on(&s.key).find(|o| {
        if o.id == s.id || o.holder != s.holder || o.who == s.who {
            return false;
        }
        let o: &Section = o;
        let (first, second) = if o.acquired_at <= s.acquired_at {
            (o, s)
        } else {
            (s, o)
        };
        second.acquired_at <= gone + CLOCK_SLACK
            && second.acquired_at < c.valid_end(first)
            && (removed_by(c, first, second.acquired_at).is_some()
                || acted_just_before(c, &s.key, second.acquired_at).is_some()
                || late_release(c, first, second.acquired_at).is_some())
    })
}

/// Another owner of `s`'s given holder id released while its lease was valid, during a
/// network or server fault, and `s` acquired the id after that release was sent and lost
/// its lock (at `gone`) within [`LATE_DELIVERY`] of it: Redis ran the release late. The
/// release's reply may be lost (an error, a timeout) or arrive in time saying "released"
/// (a paused server that read the later acquisition's connection first); a `bidlock run`
/// process releases (or completes) at its command's end, whatever its exit.
pub fn late_release<'a>(c: &'a Ctx, s: &Section, gone: Instant) -> Option<&'a Section> {
    if !s.given {
        return None;
    }
    c.sections_on(&s.key).find(|o| {
        o.id != s.id
            && o.holder == s.holder
            && o.who != s.who
            && released_at_end(o)
            && valid_when_released(c, o)
            && o.work_end <= s.acquired_at + CLOCK_SLACK
            && gone <= o.work_end + LATE_DELIVERY
            && network_fault(c, o, o.work_end, gone)
    })
}

/// Whether `o` sent a release of its holder id when its work ended.
fn released_at_end(o: &Section) -> bool {
    match o.who {
        Who::Proc { .. } => o.ending.starts_with("exit"),
        _ => ["release Err", "release timed out", "release Ok(true)"]
            .iter()
            .any(|e| o.ending.starts_with(e)),
    }
}

/// Whether `o`'s lease was valid when it released. A process's lease is known only as
/// far as the observer saw it (not during a fault that stops the server), and it lasts
/// at least its first ttl from when it was told (a renewal only lengthens it).
fn valid_when_released(c: &Ctx, o: &Section) -> bool {
    let valid = match o.who {
        Who::Proc { .. } => c.valid_end(o).max(o.acquired_at + o.ttl),
        _ => c.valid_end(o),
    };
    valid + CLOCK_SLACK >= o.work_end
}

/// A fault on the network or the server (not a closed manager) between `from` and `to`
/// on a link section `o` uses.
fn network_fault(c: &Ctx, o: &Section, from: Instant, to: Instant) -> bool {
    let inst = match o.who {
        Who::Lib { inst, .. } => Some(inst),
        _ => None,
    };
    c.faults.iter().any(|f| {
        f.harm == Harm::Benign
            && f.inst.is_none()
            && f.effective
            && f.link.is_none_or(|l| Some(l) == inst)
            && f.start <= to + CLOCK_SLACK
            && f.end + CLOCK_SLACK >= from
    })
}

/// The given-id causes for a lock gone at `gone`: two owners at once, or a late release.
pub fn shared_id(c: &Ctx, s: &Section, gone: Instant) -> Option<(Excuse, String)> {
    if let Some(o) = shared_at_once(c, s, gone) {
        return Some((
            Excuse::SharedIdAtOnce,
            format!("{} held the same given id at the same time", o.who),
        ));
    }
    late_release(c, s, gone).map(|o| {
        (
            Excuse::SharedIdLateRelease,
            format!("{}'s release of the same id ({}) ran late", o.who, o.ending),
        )
    })
}

/// When Redis stopped holding section `s`'s lock, as the observer saw it. A lock taken
/// and lost between two of the observer's readings is never seen, and the observer's
/// "gone" then belongs to an earlier acquisition of the same given holder id: the lock
/// cannot have gone before the section was told it held it.
pub fn gone_at(s: &Section, claim: &Claim) -> Instant {
    claim.gone_seen.max(s.acquired_at)
}

/// Why the lock the observer caught section `s` claiming was gone.
pub fn cause(c: &Ctx, s: &Section, claim: &Claim) -> Cause {
    let gone = gone_at(s, claim);
    // The observer's tenure of this holder id, if it is this section's: one that ended
    // before the section was told "held" belongs to an earlier acquisition of the id.
    let tenure = claim
        .tenure
        .as_ref()
        .filter(|t| t.last_seen + CLOCK_SLACK >= s.acquired_at);
    // A lock two owners of one given id hold expires or goes by the other's doing.
    if let Some(o) = shared_at_once(c, s, gone) {
        let what = format!("{} held the same given id at the same time", o.who);
        return Cause::Stated(Excuse::SharedIdAtOnce, what);
    }
    if let Some(f) = tenure.and_then(|t| rolled_back(c, s, t).filter(|_| t.expired())) {
        return Cause::Stated(Excuse::DataLossRolledBack, f.what.clone());
    }
    if let Some(pe) = tenure.and_then(Tenure::predicted_expiry) {
        if pe <= gone + Duration::from_millis(2) {
            return Cause::Expiry(pe);
        }
    }
    // Redis keeps expiry in whole milliseconds (and a late reading overestimates it):
    // a lease that was itself about to end is judged as an expiry.
    if let Some(e) = claim
        .expires_at
        .filter(|e| *e <= gone + super::checks::EXPIRY_SLACK)
    {
        return Cause::Expiry(e.min(gone));
    }
    if let Some((e, f)) = removed_by(c, s, gone) {
        return Cause::Stated(e, f.what.clone());
    }
    if tenure.is_some() {
        for harm in [Harm::DataLoss, Harm::Operator] {
            if let Some(f) = hit_when_gone(c, &s.key, gone, harm) {
                let e = match harm {
                    Harm::DataLoss => Excuse::DataLossVanished,
                    _ => Excuse::OperatorRemoved,
                };
                return Cause::Stated(e, f.what.clone());
            }
        }
    }
    if let Some((e, what)) = late_release(c, s, gone).map(|o| {
        (
            Excuse::SharedIdLateRelease,
            format!("{}'s release of the same id ({}) ran late", o.who, o.ending),
        )
    }) {
        return Cause::Stated(e, what);
    }
    if let Who::Lib { inst, .. } = s.who {
        let from = tenure.map_or(s.acquired_at, |t| t.last_seen);
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

/// Section `a`'s lock went for a stated cause no later than `before` (another holder may
/// then rightly start before `a` learns).
pub fn dropped_for_stated_cause(c: &Ctx, a: &Section, before: Instant) -> Option<Excuse> {
    if let Some((e, _)) = removed_by(c, a, before) {
        return Some(e);
    }
    // Another owner of `a`'s given id took the key while `a` held it, after a stated
    // fault: one holder to Redis, whatever the observer saw.
    if shared_at_once(c, a, before).is_some() {
        return Some(Excuse::SharedIdAtOnce);
    }
    let gone = own_tenure(c, a)
        .and_then(|t| t.gone_seen)
        .filter(|g| *g <= before + CLOCK_SLACK)?;
    shared_id(c, a, gone).map(|(e, _)| e)
}

/// `b` was told "held" after `a` with a lower token, and that is Redis' order: `b`'s try
/// took the lock first, a stated cause removed it before `b`'s reply arrived, and `a`
/// held the lock in Redis after `b`'s try was sent.
pub fn told_after_removal(c: &Ctx, a: &Section, b: &Section) -> bool {
    if b.token >= a.token {
        return false;
    }
    let a_held_after = c.tenures_on(&a.key).iter().any(|t| {
        t.holder == a.holder
            && t.first_seen + CLOCK_SLACK >= b.called_at
            && t.first_seen <= c.valid_end(a) + CLOCK_SLACK
    });
    a_held_after && dropped_for_stated_cause(c, b, b.acquired_at).is_some()
}
