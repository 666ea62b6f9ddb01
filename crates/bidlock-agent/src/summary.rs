//! The line the agent prints when it stops: what it did, and the duplicates it must
//! never have.

use std::time::Duration;

use bidlock::BidLockManager;
use serde::Serialize;

use crate::args::Args;
use crate::exposition::BidCounts;
use crate::market::MarketStats;

/// What one run did.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    backend: String,
    instances: u16,
    tasks: u16,
    seconds: f64,
    bids: BidCounts,
    marketplace: MarketStats,
}

impl Summary {
    pub(crate) fn new(
        args: &Args,
        managers: &[BidLockManager],
        ran: Duration,
        bids: BidCounts,
        marketplace: MarketStats,
    ) -> Summary {
        Summary {
            backend: managers
                .first()
                .map(|m| m.backend().to_string())
                .unwrap_or_default(),
            instances: args.instances,
            tasks: args.tasks,
            seconds: (ran.as_secs_f64() * 10.0).round() / 10.0,
            bids,
            marketplace,
        }
    }

    pub(crate) fn duplicates(&self) -> u64 {
        self.marketplace.duplicates
    }

    pub(crate) fn print(&self, json: bool) {
        if json {
            match serde_json::to_string(self) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("bidlock-agent: cannot write the summary: {e}"),
            }
            return;
        }
        let (b, m) = (&self.bids, &self.marketplace);
        println!(
            "agent: {} instances x {} tasks on {} for {} s: {} bids placed on {} postings \
             ({} published), {} skipped (already done / lock busy), {} refused by the \
             marketplace ({} stale tokens, {} busy, {} closed), {} unrecorded, {} lock \
             errors, {} interrupted by the stop, {} duplicates",
            self.instances,
            self.tasks,
            self.backend,
            self.seconds,
            m.accepted,
            m.postings_bid,
            m.published,
            b.skipped,
            b.refused,
            m.refused_stale,
            m.refused_busy,
            m.refused_closed,
            b.unrecorded,
            b.failed,
            b.interrupted,
            m.duplicates
        );
    }
}
