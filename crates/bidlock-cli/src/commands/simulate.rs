//! `bidlock simulate`: agents race for postings and bid through `bid_once` with fencing
//! tokens into a ledger that counts duplicates and refuses stale tokens.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, BidOutcome, FencingToken, LockKey};
use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;

use crate::exit::{self, CliError};
use crate::latency::Latencies;
use crate::output::{grouped, human_duration, human_number, print, print_json};
use crate::Global;

/// The marketplace every simulated posting is in.
const MARKETPLACE: &str = "simulate";

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Number of agents (concurrent tasks; with Redis each group of 8 has its own
    /// manager, as separate instances would).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    agents: u32,
    /// Number of postings.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    postings: u32,
    /// Seconds an agent waits for a busy posting.
    #[arg(long, default_value = "30", value_parser = crate::seconds, value_name = "S",
          allow_negative_numbers = true)]
    wait: Duration,
    /// Milliseconds a bid takes (simulated work under the lock).
    #[arg(long, default_value = "0", value_parser = milliseconds, value_name = "MS",
          allow_negative_numbers = true)]
    bid_ms: Duration,
    /// Keep the run's completion records in Redis (10 minutes) instead of deleting them
    /// at the end.
    #[arg(long)]
    keep: bool,
}

fn milliseconds(s: &str) -> Result<Duration, String> {
    const ACCEPTED: &str = "expected milliseconds from 0, decimals allowed";
    let ms: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{ACCEPTED}: {s:?} is not a number"))?;
    if !ms.is_finite() {
        return Err(format!("{ACCEPTED}: {s:?} is not a finite number"));
    }
    if ms < 0.0 {
        return Err(format!("{ACCEPTED}: {s} is negative"));
    }
    crate::seconds(&(ms / 1000.0).to_string())
}

/// The marketplace side: records bids, counts duplicates, refuses stale tokens.
#[derive(Default)]
struct Ledger {
    bids: Mutex<HashMap<u32, (u32, FencingToken, Instant)>>,
    highest: Mutex<HashMap<u32, u64>>,
    duplicates: AtomicU64,
    stale: AtomicU64,
}

impl Ledger {
    fn has_bid(&self, posting: u32) -> bool {
        self.bids
            .lock()
            .map(|b| b.contains_key(&posting))
            .unwrap_or(true)
    }

    fn bid_at(&self, posting: u32) -> Option<Instant> {
        self.bids.lock().ok()?.get(&posting).map(|b| b.2)
    }

    /// Places a bid; false when refused for a stale token.
    fn place(&self, posting: u32, agent: u32, token: FencingToken) -> bool {
        {
            let Ok(mut highest) = self.highest.lock() else {
                return false;
            };
            let h = highest.entry(posting).or_insert(0);
            if token.get() < *h {
                self.stale.fetch_add(1, Relaxed);
                return false;
            }
            *h = token.get();
        }
        if let Ok(mut bids) = self.bids.lock() {
            if bids
                .insert(posting, (agent, token, Instant::now()))
                .is_some()
            {
                self.duplicates.fetch_add(1, Relaxed);
            }
        }
        true
    }
}

#[derive(Debug, Default, Serialize)]
struct Report {
    backend: String,
    agents: u32,
    postings: u32,
    bids: u64,
    duplicates: u64,
    stale_token_refusals: u64,
    already_done: u64,
    conflicts: u64,
    timeouts: u64,
    errors: u64,
    elapsed_s: f64,
    postings_per_sec: f64,
    acquires_per_sec: f64,
    handover_p50_us: u64,
    handover_p99_us: u64,
    handover_samples: u64,
    /// What became of the run's completion records.
    records: Records,
}

#[derive(Default)]
struct Counts {
    bids: AtomicU64,
    done: AtomicU64,
    timeouts: AtomicU64,
    errors: AtomicU64,
    progress: AtomicU64,
}

pub(crate) async fn simulate(g: &Global, args: SimulateArgs) -> Result<u8, CliError> {
    let managers = managers(g, args.agents).await?;
    let shared = Shared {
        run: format!("{:08x}", rand::random::<u32>()),
        ..Shared::default()
    };
    let shared = Arc::new(shared);
    let total = u64::from(args.agents) * u64::from(args.postings);
    let bar = progress(total, g.json);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.agents)
        .map(|agent| {
            let m = managers[agent as usize % managers.len()].clone();
            tokio::spawn(run_agent(
                m,
                shared.clone(),
                agent,
                args.postings,
                args.wait,
                args.bid_ms,
            ))
        })
        .collect();
    let ticker = tokio::spawn(tick(shared.clone(), bar.clone(), total));
    for t in tasks {
        if t.await.is_err() {
            shared.counts.errors.fetch_add(1, Relaxed);
        }
    }
    ticker.abort();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut report = report(&managers, &shared, &args, start.elapsed().as_secs_f64());
    report.records = records(&managers[0], &shared.run, args.postings, args.keep).await?;
    for m in &managers {
        m.close().await;
    }
    if g.json {
        print_json(&report)?;
    } else {
        print(&render(&report))?;
    }
    Ok(if report.duplicates > 0 || report.errors > 0 {
        exit::FAILURE
    } else {
        exit::OK
    })
}

/// What every agent of the run shares: the run's id (in its posting ids), the ledger,
/// the counts and the handover times.
#[derive(Default)]
struct Shared {
    run: String,
    ledger: Ledger,
    counts: Counts,
    handover: Latencies,
}

/// The run's managers: on memory (unless a backend or a Redis was asked for) one; on
/// Redis one per group of 8 agents, standing for separate instances.
async fn managers(g: &Global, agents: u32) -> Result<Vec<BidLockManager>, CliError> {
    // Redis only when one is configured (`Global::config`): a demo never writes into a
    // Redis it merely happens to find.
    let config = g
        .config(false)?
        .done_retention(Duration::from_secs(600))
        .build()?;
    let first = BidLockManager::new(config.clone()).await?;
    let instances = if first.backend() == bidlock::Backend::Redis {
        agents.div_ceil(8)
    } else {
        1
    };
    let mut managers = vec![first];
    for _ in 1..instances {
        managers.push(BidLockManager::new(config.clone()).await?);
    }
    Ok(managers)
}

/// One agent: every posting in the same order as every other agent, as a fleet polling
/// one marketplace does (maximal contention), each through `bid_once`.
async fn run_agent(
    m: BidLockManager,
    shared: Arc<Shared>,
    agent: u32,
    postings: u32,
    wait: Duration,
    bid_time: Duration,
) {
    let opts = AcquireOptions::new().timeout(wait);
    for p in 0..postings {
        let Ok(key) = LockKey::new(MARKETPLACE, format!("{}-{p}", shared.run)) else {
            continue;
        };
        let t0 = Instant::now();
        let outcome = m
            .bid_once(&key, &opts, |lease| {
                bid(&shared.ledger, p, agent, lease.fencing_token(), bid_time)
            })
            .await;
        tally(&shared, p, t0, outcome);
        shared.counts.progress.fetch_add(1, Relaxed);
    }
}

/// The bid: check, then act (the race the lock exists to prevent); the ledger refuses a
/// stale token.
async fn bid(
    ledger: &Ledger,
    p: u32,
    agent: u32,
    token: FencingToken,
    bid_time: Duration,
) -> Result<bool, &'static str> {
    if ledger.has_bid(p) {
        return Ok(false);
    }
    if bid_time.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(bid_time).await;
    }
    if ledger.place(p, agent, token) {
        Ok(true)
    } else {
        Err("stale fencing token refused")
    }
}

/// Counts one `bid_once` outcome; a posting found done records how long after the bid
/// this agent was told.
fn tally(
    shared: &Shared,
    p: u32,
    t0: Instant,
    outcome: Result<BidOutcome<bool, &'static str>, bidlock::Error>,
) {
    let counts = &shared.counts;
    match outcome {
        Ok(BidOutcome::Placed(true) | BidOutcome::PlacedAfterLoss(true)) => {
            counts.bids.fetch_add(1, Relaxed);
        }
        Ok(BidOutcome::Unrecorded { value, .. }) => {
            if value {
                counts.bids.fetch_add(1, Relaxed);
            }
            counts.errors.fetch_add(1, Relaxed);
        }
        Ok(
            BidOutcome::Placed(false) | BidOutcome::PlacedAfterLoss(false) | BidOutcome::Failed(_),
        ) => {}
        Err(e) if e.is_already_done() => {
            counts.done.fetch_add(1, Relaxed);
            if let Some(at) = shared.ledger.bid_at(p).filter(|at| *at > t0) {
                shared.handover.record(at.elapsed());
            }
        }
        Err(e) if e.is_not_acquired() => {
            counts.timeouts.fetch_add(1, Relaxed);
        }
        Err(_) => {
            counts.errors.fetch_add(1, Relaxed);
        }
    }
}

/// Progress: a bar on a terminal, a line every 2 s otherwise (until aborted).
async fn tick(shared: Arc<Shared>, bar: Option<indicatif::ProgressBar>, total: u64) {
    let mut last_line = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let done = shared.counts.progress.load(Relaxed);
        match &bar {
            Some(b) => b.set_position(done),
            None if last_line.elapsed() >= Duration::from_secs(2) => {
                eprintln!("simulate: {done}/{total} agent-postings");
                last_line = Instant::now();
            }
            None => {}
        }
    }
}

/// The run's report (without its records' fate, which comes after).
fn report(
    managers: &[BidLockManager],
    shared: &Shared,
    args: &SimulateArgs,
    elapsed: f64,
) -> Report {
    let (mut conflicts, mut attempts) = (0, 0);
    for m in managers {
        let s = m.metrics();
        conflicts += s.lock_conflicts;
        attempts += s.lock_attempts;
    }
    let (counts, ledger, handover) = (&shared.counts, &shared.ledger, &shared.handover);
    Report {
        backend: managers[0].backend().to_string(),
        agents: args.agents,
        postings: args.postings,
        bids: counts.bids.load(Relaxed),
        duplicates: ledger.duplicates.load(Relaxed),
        stale_token_refusals: ledger.stale.load(Relaxed),
        already_done: counts.done.load(Relaxed),
        conflicts,
        timeouts: counts.timeouts.load(Relaxed),
        errors: counts.errors.load(Relaxed),
        elapsed_s: elapsed,
        postings_per_sec: f64::from(args.postings) / elapsed,
        acquires_per_sec: attempts as f64 / elapsed,
        handover_p50_us: handover.quantile_us(0.5),
        handover_p99_us: handover.quantile_us(0.99),
        handover_samples: handover.count(),
        ..Report::default()
    }
}

/// The run's completion records (`{done prefix}:simulate:{run}-*`) at the end: deleted
/// from Redis unless kept; in memory they go with the process.
#[derive(Debug, Default, Serialize)]
struct Records {
    /// `deleted`, `kept` (10 minutes) or `memory`.
    fate: &'static str,
    /// Their names.
    pattern: String,
    /// How many were deleted.
    deleted: u64,
}

async fn records(
    m: &BidLockManager,
    run: &str,
    postings: u32,
    keep: bool,
) -> Result<Records, CliError> {
    let pattern = m
        .config()
        .done_redis_key(&LockKey::new(MARKETPLACE, format!("{run}-*"))?);
    let fate = match (m.backend(), keep) {
        (bidlock::Backend::Memory, _) => "memory",
        (_, true) => "kept",
        (_, false) => "deleted",
    };
    let mut out = Records {
        fate,
        pattern,
        deleted: 0,
    };
    if fate != "deleted" {
        return Ok(out);
    }
    // Through the library, which knows where records live (every node for Redlock), a
    // few at a time: one DEL per posting at most.
    let keys = (0..postings).filter_map(|p| LockKey::new(MARKETPLACE, format!("{run}-{p}")).ok());
    let mut deletes = futures_util::stream::iter(keys)
        .map(|key| async move { m.clear_done(&key).await })
        .buffer_unordered(64);
    while let Some(deleted) = deletes.next().await {
        match deleted {
            Ok(true) => out.deleted += 1,
            Ok(false) => {}
            Err(e) => {
                eprintln!(
                    "bidlock: could not delete the run's completion records ({e}); {} expire in 10 minutes",
                    out.pattern
                );
                out.fate = "partly deleted";
                break;
            }
        }
    }
    Ok(out)
}

/// The report for people: counts grouped, durations and rates rounded.
fn render(r: &Report) -> String {
    let us = |us: u64| human_duration(Duration::from_micros(us));
    let records = match r.records.fate {
        "memory" => "in this process's memory, gone when it exits".to_owned(),
        "kept" => format!("kept {} for 10 minutes (--keep)", r.records.pattern),
        _ => format!(
            "{} deleted ({}; --keep keeps them)",
            grouped(r.records.deleted),
            r.records.pattern
        ),
    };
    format!(
        "bidlock simulate: {} agents x {} postings on {}\n\
         bids placed           {}\n\
         duplicates            {}\n\
         stale-token refusals  {}\n\
         already done (skips)  {}\n\
         conflicts             {}\n\
         timeouts              {}\n\
         errors                {}\n\
         elapsed               {} ({} postings/s, {} acquires/s)\n\
         handover p50 / p99    {} / {} ({} samples: bid recorded -> next agent told)\n\
         completion records    {records}\n",
        grouped(r.agents.into()),
        grouped(r.postings.into()),
        r.backend,
        grouped(r.bids),
        grouped(r.duplicates),
        grouped(r.stale_token_refusals),
        grouped(r.already_done),
        grouped(r.conflicts),
        grouped(r.timeouts),
        grouped(r.errors),
        human_duration(Duration::from_secs_f64(r.elapsed_s)),
        human_number(r.postings_per_sec),
        human_number(r.acquires_per_sec),
        us(r.handover_p50_us),
        us(r.handover_p99_us),
        grouped(r.handover_samples),
    )
}

fn progress(total: u64, json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {bar:40} {pos}/{len} agent-postings {per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}
