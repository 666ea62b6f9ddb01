//! `bidlock bench`: the workloads users feel, each printing one JSON line. Redis runs also
//! time the same loop done by a raw redis-rs client (in the same process, against the same
//! server) and report bidlock / raw.

mod contender;
mod footprint;
mod hot_key;
mod stats;
mod summary;
mod uncontended;

use std::time::Duration;

use bidlock::{BidLockManager, Topology};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::exit::{self, CliError};
use crate::output::print;
use crate::Global;
use contender::{commands_processed, Contender, RawClient, RawWait};
use stats::{merge, ratio};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// W tasks, each acquire (no wait) + release on its own fresh key.
    Uncontended {
        #[command(flatten)]
        common: Common,
    },
    /// W tasks fight for one key, hold it H µs (a real blocking sleep), release, ask again.
    HotKey {
        #[command(flatten)]
        common: Common,
        /// Microseconds of work under the lock.
        #[arg(long, default_value_t = 1000, value_parser = microseconds,
              allow_negative_numbers = true)]
        hold_us: u64,
        /// Run the workers in this many processes (W each), as a fleet contends; the
        /// figures cover all of them (no raw baseline then).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        processes: u32,
        /// (Internal) contend on this posting as one process of a `--processes` run and
        /// print its sections.
        #[arg(long, hide = true, value_name = "POSTING")]
        child_of: Option<String>,
    },
    /// Memory per held lock: acquire N locks, keep them, measure RSS.
    Footprint {
        /// How many locks to hold.
        #[arg(long, default_value_t = 200_000)]
        locks: u32,
    },
}

#[derive(Debug, Args)]
pub(crate) struct Common {
    /// Concurrent tasks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) workers: u32,
    /// Seconds per measured run.
    #[arg(long, default_value = "5", value_parser = crate::seconds, allow_negative_numbers = true)]
    pub(crate) duration: Duration,
    /// Skip the raw redis-rs baseline.
    #[arg(long)]
    no_baseline: bool,
}

fn microseconds(s: &str) -> Result<u64, String> {
    match s.trim().parse::<i128>() {
        Ok(us) if us < 0 => Err(format!("{s:?} must be zero or more microseconds")),
        Ok(us) => u64::try_from(us).map_err(|_| format!("{s:?} is too many microseconds")),
        Err(_) => Err(format!("{s:?} is not a whole number of microseconds")),
    }
}

pub(crate) async fn bench(g: &Global, args: BenchArgs) -> Result<u8, CliError> {
    let m = g.manager(false).await?;
    let topology = m.topology();
    // The raw baseline talks to one server: only a single Redis has one to compare.
    let baseline = topology == Topology::Single;
    let line = match args.workload {
        Workload::Uncontended { common } => {
            uncontended(g, &m, &common, baseline && !common.no_baseline).await?
        }
        Workload::HotKey {
            common,
            hold_us,
            child_of: Some(posting),
            ..
        } => {
            let lib = Contender::Lib(m.clone());
            let (sections, timeouts) =
                hot_key::sections(&lib, &common, hold_us, &posting, "").await?;
            json!({ "sections": sections, "timeouts": timeouts, "backend_calls": m.metrics().backend_calls })
        }
        Workload::HotKey {
            common,
            hold_us,
            processes,
            child_of: None,
        } if processes > 1 => {
            if topology == Topology::Memory {
                return Err(CliError::usage(
                    "--processes needs a shared backend (Redis): memory locks are per process",
                ));
            }
            let mut out = json!({ "workload": "hot-key", "backend": topology.name(), "workers": common.workers * processes, "hold_us": hold_us, "duration_s": common.duration.as_secs_f64() });
            let before = commands_processed(g).await.ok();
            let figures = hot_key::across_processes(g, processes, &common, hold_us).await?;
            merge(&mut out, &figures, "");
            if let (Some(before), Ok(after)) = (before, commands_processed(g).await) {
                let cs = figures["cs"].as_f64().unwrap_or(0.0).max(1.0);
                out["redis_server_calls_per_cs"] = json!(after.saturating_sub(before) as f64 / cs);
            }
            out
        }
        Workload::HotKey {
            common, hold_us, ..
        } => hot_key(g, &m, &common, hold_us, baseline, !common.no_baseline).await?,
        Workload::Footprint { locks } => footprint::run(&m, locks).await?,
    };
    m.close().await;
    print(&format!(
        "{}\n",
        serde_json::to_string(&line)
            .map_err(|e| CliError::new(exit::FAILURE, format!("cannot encode JSON: {e}")))?
    ))?;
    // The JSON line is for machines (full precision); people get the gist on stderr.
    if !g.json {
        if let Some(text) = summary::line(&line) {
            eprintln!("{text}");
        }
    }
    Ok(exit::OK)
}

async fn uncontended(
    g: &Global,
    m: &BidLockManager,
    c: &Common,
    baseline: bool,
) -> Result<Value, CliError> {
    let lib = uncontended::run(&Contender::Lib(m.clone()), c, "bidlock").await;
    let mut out = json!({ "workload": "uncontended", "backend": m.topology().name(), "workers": c.workers, "duration_s": c.duration.as_secs_f64() });
    merge(&mut out, &lib, "");
    if baseline {
        let raw = Contender::Raw(RawClient::connect(g, RawWait::Poll(Duration::ZERO)).await?);
        let raw = uncontended::run(&raw, c, "raw redis-rs").await;
        merge(&mut out, &raw, "raw_");
        out["ratio"] = ratio(&lib["pairs_per_sec"], &raw["pairs_per_sec"]);
    }
    Ok(out)
}

async fn hot_key(
    g: &Global,
    m: &BidLockManager,
    c: &Common,
    hold_us: u64,
    redis: bool,
    baseline: bool,
) -> Result<Value, CliError> {
    let before = if redis {
        Some(commands_processed(g).await?)
    } else {
        None
    };
    let lib = hot_key::run(&Contender::Lib(m.clone()), c, hold_us, "bidlock").await?;
    let mut out = json!({ "workload": "hot-key", "backend": m.topology().name(), "workers": c.workers, "hold_us": hold_us, "duration_s": c.duration.as_secs_f64() });
    merge(&mut out, &lib, "");
    let Some(before) = before else {
        return Ok(out);
    };
    let after = commands_processed(g).await?;
    let cs = lib["cs"].as_f64().unwrap_or(0.0).max(1.0);
    out["redis_cmds_per_cs"] = json!(m.metrics().backend_calls as f64 / cs);
    out["redis_server_calls_per_cs"] = json!(after.saturating_sub(before) as f64 / cs);
    if baseline {
        let poll = RawWait::Poll(Duration::from_micros(1000));
        let raw = Contender::Raw(RawClient::connect(g, poll).await?);
        let raw =
            hot_key::run(&raw, c, hold_us, &format!("raw redis-rs, {}", poll.label())).await?;
        merge(&mut out, &raw, "raw_");
        out["raw_poll_us"] = json!(1000);
        out["ratio"] = ratio(&lib["cs_per_sec"], &raw["cs_per_sec"]);
        // The fastest a polling client can hand over: retry at once, burning a core.
        let spin = Contender::Raw(RawClient::connect(g, RawWait::Spin).await?);
        let spin = hot_key::run(&spin, c, hold_us, "raw redis-rs, spin").await?;
        merge(&mut out, &spin, "spin_");
    }
    Ok(out)
}
