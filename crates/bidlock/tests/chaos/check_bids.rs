//! (d) Exactly once, or told: every posting was bid at least once (the calm sweep makes
//! sure someone tried); a posting was bid twice only after the earlier bidder was told
//! its completion was not recorded, or after Redis lost the record; a bid that ran is
//! recorded whenever Redis could be reached (a lapsed lease is no excuse); and no
//! posting says "already handled" before anyone bid on it.

use std::collections::HashMap;

use super::checks::Ctx;
use super::history::{BidRun, Harm, Verdict};

fn already_done(b: &BidRun) -> bool {
    matches!(&b.verdict, Verdict::NotRun { why } if why.contains("already handled") || why == "exit 76")
}

/// The bid ran past its lease (the lease ran out or was lost before the closure
/// returned): another instance could take the lock and bid before this bid's record
/// existed. Only fencing protects that second bid; it is counted, not forbidden.
fn outlived(c: &Ctx, a: &BidRun) -> bool {
    let (Some(id), Some(ran)) = (a.section, a.ran) else {
        return false;
    };
    c.section(id).is_some_and(|s| c.valid_end(s) < ran.1)
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
                    let hint = "hole 4: the record is dropped when the lease lapsed".to_owned();
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

/// `b` bid after `a` had: allowed when `a` was told its record is missing, when `a`
/// outlived its lease and `b` began before `a`'s record existed, or when Redis lost the
/// record in between.
fn twice(c: &mut Ctx, key: &str, a: &BidRun, b: &BidRun) {
    let (Some(ra), Some(rb)) = (a.ran, b.ran) else {
        return;
    };
    if matches!(
        a.verdict,
        Verdict::Unrecorded { .. } | Verdict::PlacedAfterLoss
    ) {
        c.f.ran_twice_told += 1;
    } else if outlived(c, a) && rb.0 <= a.returned_at {
        c.f.ran_twice_after_lapse += 1;
    } else if c.explain(key, ra.1, rb.0, &[Harm::DataLoss]).is_some() {
        c.f.ran_twice_after_data_loss += 1;
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
            "hole 3: another prefix's cleanup deleted this prefix's completion records".into()
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
