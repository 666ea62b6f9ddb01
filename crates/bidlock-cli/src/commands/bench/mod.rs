//! `bidlock bench`: the workloads users feel, each printing one JSON line. Redis runs also
//! time the same loop done by a raw redis-rs client (in the same process, against the same
//! server) and report bidlock / raw.

mod contender;
mod footprint;
mod hot_key;
mod stats;
mod uncontended;

use std::time::Duration;

use bidlock::{BidLockManager, Topology};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::exit::{self, CliError};
use crate::output::print;
use crate::Global;
use contender::{commands_processed, Contender, RawClient, RawWait};
use stats::{merge, ratio, round2};

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
        #[arg(long, default_value_t = 1000)]
        hold_us: u64,
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
    #[arg(long, default_value = "5", value_parser = crate::seconds)]
    pub(crate) duration: Duration,
    /// Skip the raw redis-rs baseline.
    #[arg(long)]
    no_baseline: bool,
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
        Workload::HotKey { common, hold_us } => {
            hot_key(g, &m, &common, hold_us, baseline, !common.no_baseline).await?
        }
        Workload::Footprint { locks } => footprint::run(&m, locks).await?,
    };
    m.close().await;
    print(&format!(
        "{}\n",
        serde_json::to_string(&line)
            .map_err(|e| CliError::new(exit::FAILURE, format!("cannot encode JSON: {e}")))?
    ))?;
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
    out["redis_cmds_per_cs"] = json!(round2(m.metrics().backend_calls as f64 / cs));
    out["redis_server_calls_per_cs"] = json!(round2(after.saturating_sub(before) as f64 / cs));
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
