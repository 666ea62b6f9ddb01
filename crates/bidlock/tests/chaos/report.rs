//! What a run tells people: per fault class, figures for RELIABILITY.md (through
//! `bidlock_testkit::write_report`), and for a failure the seed and the history around
//! each violation: the sections on that key, the faults and what Redis showed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::checks::{self, Violation};
use super::excuses::Excuse;
use super::figures::Figures;
use super::history::Section;
use super::observer::ObserverLog;
use super::round::Round;
use super::FaultClass;

/// Signed milliseconds since the round started.
fn rel(r: &Round, t: Instant) -> String {
    if t >= r.started {
        format!("+{}", (t - r.started).as_millis())
    } else {
        format!("-{}", (r.started - t).as_millis())
    }
}

fn opt(r: &Round, t: Option<Instant>) -> String {
    t.map_or("-".into(), |t| rel(r, t))
}

fn section_line(r: &Round, s: &Section) -> String {
    let mut line = format!(
        "    {} {:?} #{} holder {} token {} ttl {:?} renew {}: asked {}, told {} (expires {}), worked until {}, expires then {}, lost() {}, {}",
        s.who,
        s.kind,
        s.id,
        s.holder,
        s.token,
        s.ttl,
        s.renew,
        rel(r, s.called_at),
        rel(r, s.acquired_at),
        opt(r, s.expires_at_start),
        rel(r, s.work_end),
        opt(r, s.final_expires),
        opt(r, s.lost_at),
        s.ending
    );
    for (t, n) in &s.notes {
        let _ = write!(line, "\n      {} {n}", rel(r, *t));
    }
    line
}

/// The history around each violation (a few per check), times in ms from the round's start.
pub fn histories(r: &Round, log: &ObserverLog, vs: &[Violation]) -> String {
    let sections = r.hist.sections.lock().unwrap().clone();
    let faults = r.hist.faults.lock().unwrap().clone();
    let mut per_check: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = String::new();
    for v in vs {
        let n = per_check.entry(v.check).or_default();
        *n += 1;
        if *n > 3 {
            continue;
        }
        let (from, to) = (
            v.at - Duration::from_millis(1500),
            v.at + Duration::from_millis(500),
        );
        let _ = writeln!(
            out,
            "  [{}] round {} ({}), key {}, at {}: {}",
            v.check,
            r.index,
            r.class.name(),
            v.key,
            rel(r, v.at),
            v.msg
        );
        if !v.hint.is_empty() {
            let _ = writeln!(out, "    likely: {}", v.hint);
        }
        let _ = writeln!(out, "   sections:");
        for s in sections.iter().filter(|s| {
            (s.key == v.key && s.called_at <= to && s.work_end >= from)
                || v.sections.contains(&s.id)
        }) {
            let _ = writeln!(out, "{}", section_line(r, s));
        }
        let _ = writeln!(out, "   faults:");
        for f in faults.iter().filter(|f| {
            f.start <= to + Duration::from_secs(1) && f.end >= from - Duration::from_secs(2)
        }) {
            let _ = writeln!(
                out,
                "    {}..{} {} (effective: {}) {}",
                rel(r, f.start),
                rel(r, f.end),
                f.what,
                f.effective,
                f.detail
            );
        }
        for cl in log
            .claims
            .iter()
            .filter(|c| v.sections.contains(&c.section))
        {
            let _ = writeln!(out, "   observer: {} on {} still claimed \"held\" {}..{} after Redis showed it gone at {}", cl.holder, cl.key, rel(r, cl.first_claim), rel(r, cl.last_claim), rel(r, cl.gone_seen));
        }
        for g in log
            .grants
            .iter()
            .filter(|g| g.key == v.key && g.seen_at <= to && g.seen_at >= from)
        {
            let _ = writeln!(
                out,
                "   grant (waiters hash): {} token {} seen {}",
                g.holder,
                g.token,
                rel(r, g.seen_at)
            );
        }
        let _ = writeln!(out, "   Redis showed (observer):");
        for t in log
            .tenures
            .iter()
            .filter(|t| t.key == v.key && t.first_seen <= to && t.last_seen >= from)
        {
            let granted = t
                .granted
                .map_or(String::new(), |g| format!(", granted token {g}"));
            let _ = writeln!(
                out,
                "    {}..{} {} (pttl {} ms at last sight; gone seen {}{granted})",
                rel(r, t.first_seen),
                rel(r, t.last_seen),
                t.holder,
                t.last_pttl_ms,
                opt(r, t.gone_seen)
            );
        }
    }
    out
}

/// What the whole run measured, besides the classes' figures.
#[derive(Debug, Default)]
pub struct RunInfo {
    pub seed: u64,
    pub profile: String,
    pub seconds: f64,
    /// (seconds since start, RSS KiB, tokio tasks alive).
    pub samples: Vec<(f64, u64, u64)>,
    /// Violations by likely cause (the guarantee and the known hole they point at, else the
    /// check).
    pub by_hint: BTreeMap<String, usize>,
}

/// Writes one report per fault class and one for the run.
pub fn write(classes: &BTreeMap<FaultClass, (Figures, Vec<String>)>, run: &RunInfo) {
    let mut total = Figures::default();
    for (class, (f, examples)) in classes {
        total.merge(f);
        let doc = serde_json::json!({
            "fault": format!("chaos-{}", class.name()),
            "class": class.name(),
            "description": class.description(),
            "harm": class.harm_text(),
            "outcomes": f,
            "violation_examples": examples,
        });
        bidlock_testkit::write_report(&format!("chaos-{}", class.name()), &format!("{doc:#}"));
    }
    let doc = serde_json::json!({
        "fault": "chaos-run",
        "seed": run.seed,
        "profile": run.profile,
        "seconds": run.seconds,
        "rss_kib": run.samples.iter().map(|(t, kib, _)| serde_json::json!([t, kib])).collect::<Vec<_>>(),
        "tasks_alive": run.samples.iter().map(|(t, _, n)| serde_json::json!([t, n])).collect::<Vec<_>>(),
        "totals": total,
        "violations_by_likely_cause": run.by_hint,
        "excuse_rules": Excuse::ALL
            .iter()
            .map(|e| e.to_json(total.excused.get(e.name()).copied().unwrap_or(0)))
            .collect::<Vec<_>>(),
        "bounds_ms": {
            "expiry_slack": checks::ms(checks::EXPIRY_SLACK),
            "loss_slack": checks::ms(checks::LOSS_SLACK),
            "forced_notice": checks::ms(checks::FORCED_NOTICE),
            "data_loss_notice_extra": checks::ms(checks::data_loss_notice(Duration::ZERO)),
            "process_stop_slack": checks::ms(checks::PROC_STOP_SLACK),
            "clock_slack": checks::ms(checks::CLOCK_SLACK),
            "orphan_bound": checks::ms(checks::ORPHAN_BOUND),
        },
        "clients": {
            "instances": super::round::INSTANCES,
            "tasks_per_instance": super::round::TASKS_PER_INSTANCE,
            "process_drivers": super::round::PROCESS_DRIVERS,
            "hot_keys": super::round::HOT_KEYS,
            "postings_per_round": super::round::POSTINGS,
            "ttls_ms": super::clients::TTLS_MS,
        },
    });
    bidlock_testkit::write_report("chaos-run", &format!("{doc:#}"));
}
