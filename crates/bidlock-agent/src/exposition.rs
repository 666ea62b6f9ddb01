//! The `/metrics` page: every lock manager's snapshot, rendered by the library
//! (`MetricsSnapshot::to_prometheus`) with an `agent` label per instance, merged into
//! one exposition, plus the agent's own bid counters.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bidlock::BidLockManager;

use crate::market::MarketStats;
use crate::outcome::Bid;

/// The agent's own counters (the library counts the locks).
#[derive(Debug, Default)]
pub(crate) struct AgentCounters {
    placed: AtomicU64,
    unrecorded: AtomicU64,
    refused: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    interrupted: AtomicU64,
    missed: AtomicU64,
}

/// A copy of [`AgentCounters`] for the summary.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct BidCounts {
    pub(crate) placed: u64,
    pub(crate) unrecorded: u64,
    pub(crate) refused: u64,
    pub(crate) skipped: u64,
    pub(crate) failed: u64,
    pub(crate) interrupted: u64,
    pub(crate) missed: u64,
}

impl AgentCounters {
    pub(crate) fn count(&self, bid: &Bid) {
        let counter = match bid {
            Bid::Placed | Bid::PlacedAfterLoss => &self.placed,
            Bid::Unrecorded(_) => &self.unrecorded,
            Bid::Refused(_) => &self.refused,
            Bid::Skipped => &self.skipped,
            Bid::Failed(_) => &self.failed,
            Bid::Interrupted => &self.interrupted,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Postings that closed before a task saw them (the task fell behind the feed).
    pub(crate) fn count_missed(&self, n: u64) {
        self.missed.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BidCounts {
        BidCounts {
            placed: self.placed.load(Relaxed),
            unrecorded: self.unrecorded.load(Relaxed),
            refused: self.refused.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            failed: self.failed.load(Relaxed),
            interrupted: self.interrupted.load(Relaxed),
            missed: self.missed.load(Relaxed),
        }
    }
}

/// The whole `/metrics` page.
pub(crate) fn render(managers: &[BidLockManager], bids: BidCounts, market: MarketStats) -> String {
    let pages = managers.iter().enumerate().map(|(i, m)| {
        let index = i.to_string();
        m.metrics()
            .to_prometheus(&m.backend().to_string(), &[("agent", &index)])
    });
    let mut out = merge(pages);
    out.push_str(&render_agent(bids, market));
    out
}

fn render_agent(b: BidCounts, market: MarketStats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP bidlock_agent_bids_total Bid attempts by outcome."
    );
    let _ = writeln!(out, "# TYPE bidlock_agent_bids_total counter");
    for (outcome, n) in [
        ("placed", b.placed),
        ("unrecorded", b.unrecorded),
        ("refused", b.refused),
        ("skipped", b.skipped),
        ("failed", b.failed),
        ("interrupted", b.interrupted),
    ] {
        let _ = writeln!(out, "bidlock_agent_bids_total{{outcome=\"{outcome}\"}} {n}");
    }
    for (name, help, n) in [
        (
            "postings_missed",
            "Postings that closed before a bidding task saw them.",
            b.missed,
        ),
        (
            "duplicate_bids",
            "Bids the marketplace took on a posting that already had one.",
            market.duplicates,
        ),
        (
            "stale_tokens_refused",
            "Bids the marketplace refused for a stale fencing token.",
            market.refused_stale,
        ),
    ] {
        let _ = writeln!(out, "# HELP bidlock_agent_{name}_total {help}");
        let _ = writeln!(out, "# TYPE bidlock_agent_{name}_total counter");
        let _ = writeln!(out, "bidlock_agent_{name}_total {n}");
    }
    out
}

/// Merges expositions of the same families into one: each family's `# HELP` and
/// `# TYPE` once, then the samples of every page (a repeated `# TYPE` is invalid).
fn merge(pages: impl IntoIterator<Item = String>) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for page in pages {
        let mut current = String::new();
        for line in page.lines().filter(|l| !l.is_empty()) {
            let comment = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "));
            if let Some(rest) = comment {
                current = rest.split(' ').next().unwrap_or_default().to_owned();
            }
            let (comments, samples) = families.entry(current.clone()).or_insert_with(|| {
                order.push(current.clone());
                Default::default()
            });
            if comment.is_none() {
                samples.push(line.to_owned());
            } else if !comments.iter().any(|c| c == line) {
                comments.push(line.to_owned());
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (comments, samples) = &families[&name];
        for line in comments.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_pages_declare_each_family_once() {
        let a = bidlock::MetricsSnapshot::default();
        let pages = ["0", "1"].map(|i| a.to_prometheus("redis", &[("agent", i)]));
        let merged = merge(pages.clone());
        assert_eq!(
            merged.matches("# TYPE bidlock_lock_attempts_total").count(),
            1
        );
        assert_eq!(
            merged.lines().count(),
            pages[0].lines().count() + pages[1].lines().filter(|l| !l.starts_with('#')).count()
        );
        let attempts: Vec<&str> = merged
            .lines()
            .filter(|l| l.starts_with("bidlock_lock_attempts_total{"))
            .collect();
        assert_eq!(attempts.len(), 2);
        assert!(attempts[1].contains("agent=\"1\""));
    }
}
