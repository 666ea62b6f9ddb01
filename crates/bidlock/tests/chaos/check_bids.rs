//! (d) Exactly once, or told: every posting was bid at least once (the calm sweep makes
//! sure someone tried); a posting was bid twice only after the earlier bidder was told
//! its completion was not recorded, or after Redis lost the record; a bid that ran is
//! recorded whenever Redis could be reached (a lapsed lease is no excuse); and no
//! posting says "already handled" before anyone bid on it.

use std::collections::HashMap;
use std::time::Instant;

use super::checks::Ctx;
use super::excuses::Excuse;
use super::history::{BidRun, Harm, Verdict};

fn already_done(b: &BidRun) -> bool {
    matches!(&b.verdict, Verdict::NotRun { why } if why.contains("already handled") || why == "exit 76")
}

/// A data-loss fault acted on Redis between `from` and `to`: a completion record written
/// before it may be gone after it.
fn data_lost_between(c: &Ctx, key: &str, from: Instant, to: Instant) -> bool {
    c.faults.iter().any(|f| {
        f.harm == Harm::DataLoss
            && f.touches(key)
            && f.hit.is_some_and(|(a, b)| b >= from && a <= to)
    })
}

pub fn bids(c: &mut Ctx) {
    let bids = c.r.hist.bids.lock().unwrap().clone();
    let mut by_key: HashMap<String, Vec<BidRun>> = HashMap::new();
    for b in bids {
        by_key.entry(b.key.clone()).or_default().push(b);
    }
    c.f.postings = c.r.postings.len() as u64;
    for key in c.r.postings.iter().map(|k| c.r.redis_key(k)) {
        let runs = by_key.remove(&key).unwrap_or_default();
        posting(c, &key, &runs);
    }
}

fn posting(c: &mut Ctx, key: &str, runs: &[BidRun]) {
    verdicts(c, key, runs);
    let mut ok: Vec<&BidRun> = runs.iter().filter(|b| b.ran.is_some_and(|r| r.2)).collect();
    ok.sort_by_key(|b| b.ran.map(|r| r.0));
    if ok.is_empty() {
        c.f.never_ran += 1;
        let told: Vec<String> = runs
            .iter()
            .filter(|b| b.who == super::history::Who::Sweep)
            .map(|b| format!("{:?}", b.verdict))
            .collect();
        let (at, msg) = (
            c.r.stop_at,
            format!("no bid on this posting succeeded; the sweep was told {told:?}"),
        );
        c.violation("(d) posting never bid", key, at, msg, String::new(), vec![]);
    }
    for w in ok.windows(2) {
        twice(c, key, w[0], w[1]);
    }
    for b in runs.iter().filter(|b| already_done(b)) {
        let earlier = ok
            .iter()
            .any(|a| a.ran.is_some_and(|r| r.0 < b.returned_at));
        if !earlier {
            c.f.phantom_records += 1;
            let msg = format!(
                "{} was told the posting was already handled, but no bid on it had succeeded",
                b.who
            );
            c.violation(
                "(d) record without a bid",
                key,
                b.returned_at,
                msg,
                String::new(),
                vec![],
            );
        }
    }
}

/// What the callers were told; a bid that ran and succeeded must be recorded unless
/// Redis could not be reached (a lost lock is no excuse).
fn verdicts(c: &mut Ctx, key: &str, runs: &[BidRun]) {
    for b in runs {
        match &b.verdict {
            Verdict::Placed | Verdict::PlacedAfterLoss => c.f.bids_placed += 1,
            Verdict::Unrecorded { lost, error } => {
                c.f.bids_unrecorded += 1;
                if *lost {
                    c.f.records_dropped_after_placed += 1;
                    let msg = format!(
                        "{}'s bid ran and succeeded, but its completion was not recorded: {error}",
                        b.who
                    );
                    let hint =
                        "exactly once, issue 12's hole 4: the record is dropped when the lease lapsed".to_owned();
                    c.violation(
                        "(d) placed bid not recorded",
                        key,
                        b.returned_at,
                        msg,
                        hint,
                        b.section.into_iter().collect(),
                    );
                }
            }
            Verdict::Failed | Verdict::NotRun { .. } => {}
        }
    }
}

/// `b` bid after `a` had: allowed when `a` was told (its record is missing, or its lease
/// lapsed), or when Redis lost its data between `a`'s end and `b`'s start (a stated rule:
/// the record can go with the data).
fn twice(c: &mut Ctx, key: &str, a: &BidRun, b: &BidRun) {
    let (Some(ra), Some(rb)) = (a.ran, b.ran) else {
        return;
    };
    if matches!(
        a.verdict,
        Verdict::Unrecorded { .. } | Verdict::PlacedAfterLoss
    ) {
        c.f.ran_twice_told += 1;
    } else if data_lost_between(c, key, ra.1, rb.0) {
        c.f.ran_twice_after_data_loss += 1;
        c.excuse(Excuse::RecordLostWithData);
    } else {
        c.f.ran_twice_untold += 1;
        let msg = format!(
            "{} bid after {} had bid (and was told {:?})",
            b.who, a.who, a.verdict
        );
        let foreign = c
            .faults
            .iter()
            .any(|f| f.effective && f.what.contains("prefix") && f.start <= rb.0 && f.end >= ra.1);
        let hint = if foreign {
            "prefixes, issue 12's hole 3: another prefix's cleanup deleted this prefix's completion records"
                .into()
        } else {
            String::new()
        };
        let ids = a.section.into_iter().chain(b.section).collect();
        c.violation(
            "(d) bid twice without being told",
            key,
            rb.0,
            msg,
            hint,
            ids,
        );
    }
}
