//! The checker: from the clients' own records and the observer's readings it proves,
//! per key, (a) fencing tokens increase in holding order (and globally: a token is above
//! every token issued before its acquire began), (b) no two holders whose leases were
//! valid overlapped unless data loss or an operator explains it, and then the later
//! token is higher, (c) no client was told "held" after Redis stopped holding the lock
//! for it (`check_leases`), (d) every posting was bid at least once and twice only after
//! the caller was told (`check_bids`), and keys (`check_keys`): no orphan left behind, no
//! key without a ttl but the fencing counter. It also times loss reports and recovery.
//! Every history it lets pass beyond these is one of the rules of `excuses.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::causes;
use super::census::Census;
use super::excuses::Excuse;
use super::figures::Figures;
use super::history::{Fault, Harm, Kind, Section};
use super::monitor::Calls;
use super::observer::{Claim, ObserverLog, Tenure};
use super::round::Round;
use super::FaultClass;

/// What a round measured besides the clients' records and the observer's readings.
#[derive(Debug, Default)]
pub struct Extras {
    /// The key census at the round's end.
    pub census: Option<Census>,
    /// The script calls `MONITOR` saw (batch classes).
    pub calls: Option<Calls>,
    /// Chunks the instances' own links held back: (all, subscriber messages).
    pub link_held: (u64, u64),
}

/// Redis keeps expiry in whole milliseconds, and a reading is taken after its reply.
pub const EXPIRY_SLACK: Duration = Duration::from_millis(5);
/// `lost()` after a lease ran out: the keeper's timer plus a loaded machine.
pub const LOSS_SLACK: Duration = Duration::from_millis(250);
/// A forced release, cleanup or `release --force` must be noticed within a second
/// (issue 12, item 8).
pub const FORCED_NOTICE: Duration = Duration::from_secs(1);
/// `run` stops its command: SIGTERM, plus the command's last 50 ms tick.
pub const PROC_STOP_SLACK: Duration = Duration::from_millis(300);
/// Process stamps are wall-clock times converted to the monotonic clock; the observer
/// stamps a reading when its reply arrives.
pub const CLOCK_SLACK: Duration = Duration::from_millis(5);
/// How long a request may sit in a partition or behind proxy latency before Redis runs it
/// (the nemesis' longest delay, with room).
pub const LATE_DELIVERY: Duration = Duration::from_secs(10);
/// A cancelled acquire's own lock must be released in the background, not left for a
/// whole ttl ("no orphans").
pub const ORPHAN_BOUND: Duration = Duration::from_secs(1);

/// After Redis lost a held lock, its holder learns at its next renewal: at most ttl/3
/// later (docs/GUARANTEES.md, Exclusion), plus one retry pause.
pub fn data_loss_notice(ttl: Duration) -> Duration {
    ttl / 3 + Duration::from_millis(500)
}

/// A broken promise, with what is needed to find it in the history.
#[derive(Debug, Clone)]
pub struct Violation {
    pub check: &'static str,
    pub hint: String,
    pub key: String,
    pub at: Instant,
    pub msg: String,
    pub sections: Vec<u64>,
}

pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the checks share.
pub struct Ctx<'a> {
    pub r: &'a Round,
    pub log: &'a ObserverLog,
    pub sections: Vec<Section>,
    pub by_id: HashMap<u64, usize>,
    pub faults: Vec<Fault>,
    pub extras: &'a Extras,
    pub f: Figures,
    pub out: Vec<Violation>,
    pub excused: BTreeMap<Excuse, u64>,
    /// The observer's tenures, by lock key.
    tenures_by_key: HashMap<&'a str, Vec<&'a Tenure>>,
    /// Indices into `sections`, by lock key.
    sections_by_key: HashMap<String, Vec<usize>>,
}

impl<'a> Ctx<'a> {
    /// The observer's tenures of `key`, in the order they began.
    pub fn tenures_on(&self, key: &str) -> &[&'a Tenure] {
        self.tenures_by_key.get(key).map_or(&[], Vec::as_slice)
    }

    /// The sections on `key`.
    pub fn sections_on<'s>(&'s self, key: &str) -> impl Iterator<Item = &'s Section> + Clone {
        self.sections_by_key
            .get(key)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|i| &self.sections[*i])
    }

    /// A history passed by rule `e`.
    pub fn excuse(&mut self, e: Excuse) {
        *self.excused.entry(e).or_default() += 1;
    }

    pub fn violation(
        &mut self,
        check: &'static str,
        key: &str,
        at: Instant,
        msg: String,
        hint: String,
        sections: Vec<u64>,
    ) {
        self.f.violations += 1;
        self.out.push(Violation {
            check,
            hint,
            key: key.to_owned(),
            at,
            msg,
            sections,
        });
    }

    pub fn section(&self, id: u64) -> Option<&Section> {
        self.by_id.get(&id).map(|i| &self.sections[*i])
    }

    /// A fault of one of `harms` on `key` that overlaps `[from, to]` (give or take the
    /// time a reading takes). For hints only: what excuses a history is `causes.rs`.
    pub fn explain(&self, key: &str, from: Instant, to: Instant, harms: &[Harm]) -> Option<&Fault> {
        self.faults.iter().find(|f| {
            harms.contains(&f.harm)
                && f.touches(key)
                && f.start <= to + CLOCK_SLACK
                && f.end + CLOCK_SLACK >= from
        })
    }

    /// The observer's claims for one section, merged: the first (which says why Redis
    /// stopped holding the lock) and when the last one ended. A lease can claim, stop
    /// being judged while a caller with the same given id holds the key, and claim
    /// again: that is still the first loss.
    pub fn claim_of(&self, section: u64) -> Option<(&Claim, Instant)> {
        let mut mine: Vec<&Claim> = self
            .log
            .claims
            .iter()
            .filter(|c| c.section == section)
            .collect();
        mine.sort_by_key(|c| c.first_claim);
        let last = mine.iter().map(|c| c.last_claim).max()?;
        Some((mine[0], last))
    }

    /// The observer's tenure of this section's lock: same key and holder, first seen no
    /// later than the section's start and still going then. A holder id given by callers
    /// may be shared: when another section of that holder started in the same tenure,
    /// the tenure is ambiguous and not used.
    pub fn tenure(&self, s: &Section) -> Option<&'a Tenure> {
        let limit = s.acquired_at + CLOCK_SLACK;
        let t = *self
            .tenures_on(&s.key)
            .iter()
            .filter(|t| t.holder == s.holder && t.first_seen <= limit)
            .max_by_key(|t| t.first_seen)?;
        if t.last_seen + CLOCK_SLACK < s.acquired_at && s.kind != Kind::Proc {
            return None;
        }
        let shared = self.sections_on(&s.key).any(|o| {
            o.id != s.id
                && o.holder == s.holder
                && o.acquired_at + CLOCK_SLACK >= t.first_seen
                && o.acquired_at <= t.last_seen + CLOCK_SLACK
                && !self.in_later_tenure(o, t)
        });
        (!shared).then_some(t)
    }

    /// Whether the observer saw section `o`'s lock as a tenure of its own that began after
    /// `t` ended (the key was seen free between them): then `o` does not share `t`, even
    /// when it was told "held" within the slack of `t`'s end.
    fn in_later_tenure(&self, o: &Section, t: &Tenure) -> bool {
        self.tenures_on(&o.key).iter().any(|t2| {
            t2.holder == o.holder
                && t2.first_seen > t.last_seen
                && t.gone_seen.is_some_and(|g| g <= t2.first_seen)
                && t2.first_seen <= o.acquired_at + CLOCK_SLACK
        })
    }

    /// When the section began holding, for ordering: the observer's first sight of a
    /// process's lock (its command may start late, after a freeze), else the moment the
    /// client was told.
    pub fn order_at(&self, s: &Section) -> Instant {
        match (s.kind == Kind::Proc).then(|| self.tenure(s)).flatten() {
            Some(t) => t.first_seen.min(s.acquired_at),
            None => s.acquired_at,
        }
    }

    /// Until when the section was entitled to believe it held the lock.
    pub fn valid_end(&self, s: &Section) -> Instant {
        match (s.kind == Kind::Proc).then(|| self.tenure(s)).flatten() {
            Some(t) => s.work_end.min(t.last_seen).max(s.acquired_at),
            None => s.valid_end(),
        }
    }

    /// Sections whose lease was already over when the client was told "held" (checked
    /// on their own; they would blur the ordering checks).
    pub fn expired_at_start(s: &Section) -> bool {
        s.expires_at_start.is_some_and(|e| e <= s.acquired_at)
    }
}

/// Runs every check over a finished round.
pub fn check(
    r: &Round,
    log: &ObserverLog,
    extras: &Extras,
    healed_at: Instant,
) -> (Figures, Vec<Violation>) {
    let sections = r.hist.sections.lock().unwrap().clone();
    let by_id = sections
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let faults = r.hist.faults.lock().unwrap().clone();
    let mut tenures_by_key: HashMap<&str, Vec<&Tenure>> = HashMap::new();
    for t in &log.tenures {
        tenures_by_key.entry(t.key.as_str()).or_default().push(t);
    }
    for v in tenures_by_key.values_mut() {
        v.sort_by_key(|t| t.first_seen);
    }
    let mut sections_by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, s) in sections.iter().enumerate() {
        sections_by_key.entry(s.key.clone()).or_default().push(i);
    }
    let mut c = Ctx {
        r,
        log,
        sections,
        by_id,
        faults,
        extras,
        f: Figures::default(),
        out: Vec::new(),
        excused: BTreeMap::new(),
        tenures_by_key,
        sections_by_key,
    };
    counts(&mut c, healed_at);
    expired_at_acquire(&mut c);
    tokens_per_key(&mut c);
    tokens_global(&mut c);
    overlaps(&mut c);
    super::check_leases::claims(&mut c);
    super::check_leases::removals(&mut c);
    super::check_leases::loss_reports(&mut c);
    super::check_leases::process_ticks(&mut c);
    super::check_keys::orphans(&mut c);
    super::check_keys::grants(&mut c);
    super::check_keys::census(&mut c);
    super::check_keys::evidence(&mut c);
    super::check_bids::bids(&mut c);
    nemesis(&mut c);
    c.f.excused = c
        .excused
        .iter()
        .map(|(e, n)| (e.name().to_owned(), *n))
        .collect();
    (c.f, c.out)
}

fn counts(c: &mut Ctx, healed_at: Instant) {
    let h = &c.r.hist;
    c.f.rounds = 1;
    c.f.seconds = c.r.stop_at.duration_since(c.r.started).as_secs_f64();
    c.f.sections = c.sections.len() as u64;
    c.f.process_sections = c.sections.iter().filter(|s| s.kind == Kind::Proc).count() as u64;
    c.f.bid_sections = c.sections.iter().filter(|s| s.kind == Kind::Bid).count() as u64;
    c.f.acquires_ok = h.get("acquire.ok");
    c.f.not_acquired = h.get("acquire.not_acquired")
        + h.get("try_acquire.not_acquired")
        + h.get("bid.not_acquired")
        + h.get("proc.exit.75");
    c.f.cancelled_acquires = h.get("acquire.cancelled");
    c.f.errors = h.get("errors");
    c.f.lost_reported = c
        .sections
        .iter()
        .filter(|s| s.lost_at.is_some() || s.lost_flag_at_end)
        .count() as u64;
    c.f.observer_polls = c.log.polls;
    c.f.observer_max_gap_us = c.log.max_gap_us;
    let mut rec: Option<u64> = None;
    for f in c.faults.iter().filter(|f| f.effective && f.inst.is_none()) {
        let first = c
            .sections
            .iter()
            .filter(|s| s.acquired_at >= f.end)
            .map(|s| s.acquired_at)
            .min();
        if let Some(first) = first {
            rec = rec.max(Some(ms(first - f.end)));
        }
    }
    c.f.recovery_ms_max = rec;
    if !c.sections.iter().any(|s| s.acquired_at >= healed_at) {
        let at = healed_at;
        c.violation(
            "recovery",
            "-",
            at,
            "no lock was acquired after the faults healed".into(),
            String::new(),
            vec![],
        );
    }
}

fn expired_at_acquire(c: &mut Ctx) {
    let bad: Vec<(String, Instant, u64, String)> = c
        .sections
        .iter()
        .filter(|s| Ctx::expired_at_start(s))
        .map(|s| {
            (
                s.key.clone(),
                s.acquired_at,
                s.id,
                format!(
                    "{} was told \"held\" with a lease that had ended {:?} before (ttl {:?})",
                    s.who,
                    s.acquired_at - s.expires_at_start.unwrap_or(s.acquired_at),
                    s.ttl
                ),
            )
        })
        .collect();
    c.f.expired_at_acquire = bad.len() as u64;
    for (key, at, id, msg) in bad {
        c.violation(
            "acquire returned an expired lease",
            &key,
            at,
            msg,
            "lease deadlines, issue 12's hole 7: an acquire whose reply came after its ttl".into(),
            vec![id],
        );
    }
}

/// Sections of each key in holding order (expired-at-acquire ones left out).
fn by_key(c: &Ctx) -> HashMap<String, Vec<(Instant, usize)>> {
    let mut m: HashMap<String, Vec<(Instant, usize)>> = HashMap::new();
    for (i, s) in c
        .sections
        .iter()
        .enumerate()
        .filter(|(_, s)| !Ctx::expired_at_start(s))
    {
        m.entry(s.key.clone()).or_default().push((c.order_at(s), i));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn tokens_per_key(c: &mut Ctx) {
    let mut found = Vec::new();
    let mut reorders = 0;
    for (key, v) in by_key(c) {
        for w in v.windows(2) {
            let (a, b) = (&c.sections[w[0].1], &c.sections[w[1].1]);
            // Told after `a`, but held (for an instant) before it on Redis.
            let reordered = causes::told_after_removal(c, a, b);
            reorders += u64::from(reordered);
            if b.token <= a.token && !reordered {
                let cause = c
                    .explain(&key, w[0].0, w[1].0, &[Harm::DataLoss])
                    .map(|f| f.what.clone());
                let hint = cause
                    .map(|w| format!("the counter was rolled back ({w})"))
                    .or_else(|| super::check_leases::drop_hint(c, b))
                    .or_else(|| super::check_leases::drop_hint(c, a))
                    .unwrap_or_default();
                let msg = format!(
                    "{} got token {} after {} had {} on the same key",
                    b.who, b.token, a.who, a.token
                );
                found.push((key.clone(), w[1].0, msg, hint, vec![a.id, b.id]));
            }
        }
    }
    c.f.token_order_violations = found.len() as u64;
    for _ in 0..reorders {
        c.excuse(Excuse::ToldAfterRemoval);
    }
    for (key, at, msg, hint, ids) in found {
        c.violation("(a) token order per key", &key, at, msg, hint, ids);
    }
}

fn tokens_global(c: &mut Ctx) {
    let mut order: Vec<usize> = (0..c.sections.len())
        .filter(|i| !Ctx::expired_at_start(&c.sections[*i]))
        .collect();
    order.sort_by_key(|i| c.sections[*i].acquired_at);
    // Running maximum of the tokens told so far, with the section that had it.
    let mut best: Vec<(u64, usize)> = Vec::with_capacity(order.len());
    for &i in &order {
        let prev = best.last().copied().unwrap_or((0, i));
        best.push(if c.sections[i].token > prev.0 {
            (c.sections[i].token, i)
        } else {
            prev
        });
    }
    let mut found = Vec::new();
    for &j in &order {
        let s = &c.sections[j];
        let n = order.partition_point(|i| c.sections[*i].acquired_at < s.called_at);
        let Some(&(max, i)) = n.checked_sub(1).and_then(|k| best.get(k)) else {
            continue;
        };
        if s.token <= max {
            let a = &c.sections[i];
            let msg = format!(
                "{} asked after {} had been told token {max} (key {}), and got {}",
                s.who, a.who, a.key, s.token
            );
            let cause = c
                .explain(&s.key, a.acquired_at, s.acquired_at, &[Harm::DataLoss])
                .map(|f| f.what.clone());
            found.push((
                s.key.clone(),
                s.acquired_at,
                msg,
                cause.map_or(String::new(), |w| {
                    format!("the counter was rolled back ({w})")
                }),
                vec![a.id, s.id],
            ));
        }
    }
    c.f.global_token_violations = found.len() as u64;
    for (key, at, msg, hint, ids) in found {
        c.violation(
            "(a) token above all earlier tokens",
            &key,
            at,
            msg,
            hint,
            ids,
        );
    }
}

fn overlaps(c: &mut Ctx) {
    let mut found = Vec::new();
    let mut excused = Vec::new();
    for (key, v) in by_key(c) {
        for (j, &(_, bj)) in v.iter().enumerate() {
            let b = &c.sections[bj];
            for &(a_at, ai) in &v[..j] {
                let a = &c.sections[ai];
                let tol = if a.kind == Kind::Proc || b.kind == Kind::Proc {
                    CLOCK_SLACK
                } else {
                    Duration::ZERO
                };
                if c.valid_end(a) <= b.acquired_at + tol {
                    continue;
                }
                // `a`'s lock went for a stated cause before `b` got it, or `b` was told
                // after `a` but held before it in Redis and lost that lock to a stated
                // cause: the overlap is that cause's (its notice is checked in (c)).
                let stated = causes::dropped_for_stated_cause(c, a, b.acquired_at).or_else(|| {
                    causes::told_after_removal(c, a, b).then_some(Excuse::ToldAfterRemoval)
                });
                if let Some(e) = stated {
                    excused.push(e);
                    continue;
                }
                let msg = format!("{} (token {}) still held validly until +{} ms when {} (token {}) was told \"held\"", a.who, a.token, ms(c.valid_end(a) - b.acquired_at), b.who, b.token);
                let hint = super::check_leases::drop_hint(c, a)
                    .or_else(|| {
                        a.given
                            .then(|| "no orphans, issue 20's hole 1: a background release of a given holder id".into())
                    })
                    .or_else(|| {
                        c.explain(&key, a_at, b.acquired_at, &[Harm::Benign, Harm::Freeze])
                            .map(|f| format!("during {}", f.what))
                    })
                    .unwrap_or_default();
                found.push((key.clone(), b.acquired_at, msg, hint, vec![a.id, b.id]));
            }
        }
    }
    c.f.expected_overlaps = excused.len() as u64;
    c.f.unsafe_overlaps = found.len() as u64;
    for e in excused {
        c.excuse(e);
    }
    for (key, at, msg, hint, ids) in found {
        c.violation("(b) overlapping valid leases", &key, at, msg, hint, ids);
    }
}

fn nemesis(c: &mut Ctx) {
    let class_faults: Vec<&Fault> = c.faults.iter().filter(|f| f.inst.is_none()).collect();
    c.f.faults_injected = c.faults.len() as u64;
    c.f.faults_effective = c.faults.iter().filter(|f| f.effective).count() as u64;
    let effective = class_faults.iter().any(|f| f.effective);
    if c.r.class != FaultClass::Calm && !effective {
        let detail: Vec<String> = class_faults
            .iter()
            .map(|f| format!("{}: {}", f.what, f.detail))
            .collect();
        let at = c.r.stop_at;
        c.violation(
            "nemesis",
            "-",
            at,
            format!("no {} fault took effect: {detail:?}", c.r.class.name()),
            String::new(),
            vec![],
        );
    }
}
