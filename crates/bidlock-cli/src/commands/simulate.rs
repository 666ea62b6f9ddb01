//! `bidlock simulate`: agents race for postings and bid through `bid_once` with fencing
//! tokens into a ledger that counts duplicates and refuses stale tokens.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, BidOutcome, FencingToken, Histogram, LockKey};
use clap::Args;
use serde::Serialize;

use crate::exit::{self, CliError};
use crate::output::{print, print_json};
use crate::Global;

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
    #[arg(long, default_value = "30", value_parser = crate::seconds, value_name = "S")]
    wait: Duration,
    /// Milliseconds a bid takes (simulated work under the lock).
    #[arg(long, default_value_t = 0.0)]
    bid_ms: f64,
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
    // A demo runs on memory unless a backend or a Redis was asked for.
    let redis_configured = ["REDIS_URL", "REDIS_URLS", "REDIS_HOST", "USE_REDIS_LOCKS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    let mut builder = g.config(false)?.done_retention(Duration::from_secs(600));
    if g.backend.is_none() && g.redis_url.is_empty() && !redis_configured {
        builder = builder.backend(bidlock::Backend::Memory);
    }
    let config = builder.build()?;
    let first = BidLockManager::new(config.clone()).await.map_err(|e| {
        CliError::new(
            if e.is_invalid_input() {
                exit::USAGE
            } else {
                exit::UNAVAILABLE
            },
            e.to_string(),
        )
    })?;
    let backend = first.backend();
    // Separate managers stand for separate instances (Redis); memory is one process.
    let instances = if backend == bidlock::Backend::Redis {
        args.agents.div_ceil(8)
    } else {
        1
    };
    let mut managers = vec![first];
    for _ in 1..instances {
        managers.push(BidLockManager::new(config.clone()).await?);
    }
    let run = format!("{:08x}", rand::random::<u32>());
    let ledger = Arc::new(Ledger::default());
    let counts = Arc::new(Counts::default());
    let handover = Arc::new(Histogram::new());
    let bid_time = Duration::from_secs_f64(args.bid_ms.max(0.0) / 1000.0);
    let total = u64::from(args.agents) * u64::from(args.postings);
    let bar = progress(total, g.json);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for agent in 0..args.agents {
        let m = managers[(agent % instances) as usize].clone();
        let (ledger, counts, handover, run) = (
            ledger.clone(),
            counts.clone(),
            handover.clone(),
            run.clone(),
        );
        let opts = AcquireOptions::new().timeout(args.wait);
        let postings = args.postings;
        tasks.push(tokio::spawn(async move {
            for p in 0..postings {
                // Every agent sees the same postings in the same order, as a fleet
                // polling one marketplace does: maximal contention.
                let key = match LockKey::new("simulate", format!("{run}-{p}")) {
                    Ok(k) => k,
                    Err(_) => continue,
                };
                let t0 = Instant::now();
                let outcome = m
                    .bid_once(&key, &opts, |lease| {
                        let ledger = ledger.clone();
                        async move {
                            // Check, then act: the race the lock exists to prevent.
                            if ledger.has_bid(p) {
                                return Ok(false);
                            }
                            if !bid_time.is_zero() {
                                tokio::time::sleep(bid_time).await;
                            } else {
                                tokio::task::yield_now().await;
                            }
                            if ledger.place(p, agent, lease.fencing_token()) {
                                Ok(true)
                            } else {
                                Err("stale fencing token refused")
                            }
                        }
                    })
                    .await;
                match outcome {
                    Ok(BidOutcome::Placed(true)) => {
                        counts.bids.fetch_add(1, Relaxed);
                    }
                    Ok(BidOutcome::Unrecorded { value, .. }) => {
                        if value {
                            counts.bids.fetch_add(1, Relaxed);
                        }
                        counts.errors.fetch_add(1, Relaxed);
                    }
                    Ok(BidOutcome::Placed(false) | BidOutcome::Failed(_)) => {}
                    Err(e) if e.is_already_done() => {
                        counts.done.fetch_add(1, Relaxed);
                        if let Some(at) = ledger.bid_at(p) {
                            if at > t0 {
                                handover.record(at.elapsed());
                            }
                        }
                    }
                    Err(e) if e.is_timeout() => {
                        counts.timeouts.fetch_add(1, Relaxed);
                    }
                    Err(_) => {
                        counts.errors.fetch_add(1, Relaxed);
                    }
                }
                counts.progress.fetch_add(1, Relaxed);
            }
        }));
    }
    let ticker = {
        let counts = counts.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut last_line = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let done = counts.progress.load(Relaxed);
                match &bar {
                    Some(b) => b.set_position(done),
                    None if last_line.elapsed() >= Duration::from_secs(2) => {
                        eprintln!("simulate: {done}/{total} agent-postings");
                        last_line = Instant::now();
                    }
                    None => {}
                }
            }
        })
    };
    for t in tasks {
        if t.await.is_err() {
            counts.errors.fetch_add(1, Relaxed);
        }
    }
    ticker.abort();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut conflicts = 0;
    let mut attempts = 0;
    for m in &managers {
        let s = m.metrics();
        conflicts += s.lock_conflicts;
        attempts += s.lock_attempts;
    }
    let report = Report {
        backend: backend.to_string(),
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
    };
    for m in &managers {
        m.close().await;
    }
    if g.json {
        print_json(&report);
    } else {
        print(&format!(
            "bidlock simulate: {} agents x {} postings on {}\n\
             bids placed           {}\n\
             duplicates            {}\n\
             stale-token refusals  {}\n\
             already done (skips)  {}\n\
             conflicts             {}\n\
             timeouts              {}\n\
             errors                {}\n\
             elapsed               {:.2} s ({:.0} postings/s, {:.0} acquires/s)\n\
             handover p50 / p99    {} us / {} us ({} samples: bid recorded -> next agent told)\n",
            report.agents,
            report.postings,
            report.backend,
            report.bids,
            report.duplicates,
            report.stale_token_refusals,
            report.already_done,
            report.conflicts,
            report.timeouts,
            report.errors,
            report.elapsed_s,
            report.postings_per_sec,
            report.acquires_per_sec,
            report.handover_p50_us,
            report.handover_p99_us,
            report.handover_samples,
        ));
    }
    Ok(if report.duplicates > 0 || report.errors > 0 {
        exit::FAILURE
    } else {
        exit::OK
    })
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
