//! `bidlock stats`: the fleet's picture as Redis holds it (the library's
//! `BidLockManager::stats`), once or refreshed every few seconds.

use std::io::IsTerminal;
use std::time::Duration;

use bidlock::{BidLockManager, FleetStats, Topology};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, CliError};
use crate::output::{grouped, print, print_json, table};
use crate::Global;

/// The shortest refresh interval: a SCAN of every lock more often than this is load on
/// Redis for no one's benefit.
const MIN_WATCH: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Refresh every S seconds (at least 0.1) until Ctrl-C: in place on a terminal,
    /// one snapshot after another otherwise (with --json, one JSON line each).
    #[arg(long, value_name = "S", value_parser = watch_interval, allow_negative_numbers = true)]
    watch: Option<Duration>,
    /// With --watch, stop after N snapshots.
    #[arg(long, value_name = "N", requires = "watch",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

fn watch_interval(s: &str) -> Result<Duration, String> {
    let d = crate::seconds(s)?;
    if d < MIN_WATCH {
        return Err(format!("{s:?} is too short; refresh at most every 0.1 s"));
    }
    Ok(d)
}

pub(crate) async fn stats(g: &Global, args: StatsArgs) -> Result<u8, CliError> {
    let m = g.manager(true).await?;
    let Some(every) = args.watch else {
        let s = m.stats().await?;
        if g.json {
            print_json(&s)?;
        } else {
            print(&render(&m, &s))?;
        }
        return Ok(exit::OK);
    };
    let result = watch(g, &m, every, args.count).await;
    m.close().await;
    result
}

/// Refreshes until Ctrl-C / SIGTERM or `count` snapshots. A failed read is reported and
/// the watch goes on: Redis blinking should not end a dashboard.
async fn watch(
    g: &Global,
    m: &BidLockManager,
    every: Duration,
    count: Option<u64>,
) -> Result<u8, CliError> {
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return Err(CliError::new(
                exit::FAILURE,
                "cannot install signal handlers",
            ))
        }
    };
    let in_place = !g.json && std::io::stdout().is_terminal();
    let mut shown = 0u64;
    loop {
        // A signal ends the watch at once, even in the middle of a read.
        let read = tokio::select! {
            r = m.stats() => r,
            _ = int.recv() => return Ok(exit::OK),
            _ = term.recv() => return Ok(exit::OK),
        };
        match read {
            Ok(s) if g.json => print(&format!("{}\n", one_line(&s)?))?,
            Ok(s) => {
                let mut text = render(m, &s);
                if in_place {
                    // Home and clear, then the snapshot: refreshed in place.
                    text = format!(
                        "\x1b[H\x1b[2J{text}\nrefreshed every {} (Ctrl-C to stop)\n",
                        crate::output::human_duration(every)
                    );
                } else {
                    text.push('\n');
                }
                print(&text)?;
            }
            Err(e) => eprintln!("bidlock: stats failed: {e}; trying again"),
        }
        shown += 1;
        if count.is_some_and(|n| shown >= n) {
            return Ok(exit::OK);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = int.recv() => return Ok(exit::OK),
            _ = term.recv() => return Ok(exit::OK),
        }
    }
}

fn one_line(s: &FleetStats) -> Result<String, CliError> {
    serde_json::to_string(s)
        .map_err(|e| CliError::new(exit::FAILURE, format!("cannot encode JSON: {e}")))
}

/// The human form: totals, then a table per marketplace.
fn render(m: &BidLockManager, s: &FleetStats) -> String {
    let fence = match (s.fence, m.topology()) {
        (Some(f), _) => f.to_string(),
        // Each posting's counter lives in its own slot: there is no one fence to show.
        (None, Topology::Cluster { .. }) => "- (one counter per posting on a cluster)".to_owned(),
        (None, _) => "- (none issued)".to_owned(),
    };
    let mut out = format!(
        "fleet on {} ({}), prefix {}\n\
         locks held     {}\n\
         waiting        {} (postings with waiters)\n\
         done records   {}\n\
         fencing token  {fence}\n\
         handoff keys   {} (wait markers, queues, waiters' entries; each expires by itself)\n",
        m.location(),
        m.topology(),
        m.config().key_prefix(),
        grouped(s.locks),
        grouped(s.waiting),
        grouped(s.done_records),
        grouped(s.handoff_keys),
    );
    if !s.by_marketplace.is_empty() {
        let rows: Vec<Vec<String>> = s
            .by_marketplace
            .iter()
            .map(|(name, c)| {
                vec![
                    name.clone(),
                    grouped(c.locks),
                    grouped(c.waiting),
                    grouped(c.done_records),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["MARKETPLACE", "LOCKS", "WAITING", "DONE"], &rows));
    }
    out
}
