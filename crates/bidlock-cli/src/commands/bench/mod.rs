//! `bidlock bench`: the workloads users feel, each printing one JSON line. Redis runs also
//! time the same loop done by a raw redis-rs client (in the same process, against the same
//! server) and report bidlock / raw, with what each cost the client and the server per
//! operation.

mod contender;
mod cost;
mod footprint;
mod hot_key;
mod scale;
mod scale_child;
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
use contender::{raw_connection, Contender, RawClient, RawWait};
use cost::{Meter, Probes};
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
    /// What holding many leases costs as their number grows: N leases (renewal on) per
    /// manager, M managers as processes on one Redis; client CPU and memory per lease,
    /// renewals per round trip, Redis commands per second and memory per lock.
    Scale(scale::ScaleArgs),
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
    /// Also read these Redis servers' CPU and script calls around each measured run
    /// (for example a cluster's masters); repeat for each.
    #[arg(long = "server-stats", value_name = "URL")]
    server_stats: Vec<String>,
    /// Run the raw baseline before bidlock, not after (scripts/bench.sh alternates, so
    /// neither always runs second on a machine the first has warmed).
    #[arg(long)]
    baseline_first: bool,
}

impl Common {
    /// The untimed run before each measured one: a tenth of it, at most 0.3 s.
    pub(crate) fn warmup(&self) -> Duration {
        (self.duration / 10).min(Duration::from_millis(300))
    }
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
    // The raw baseline and the server's figures talk to one server: only a single Redis
    // has them.
    let single = topology == Topology::Single;
    let line = match args.workload {
        Workload::Uncontended { common } => uncontended(g, &m, &common, single).await?,
        Workload::HotKey {
            common,
            hold_us,
            child_of: Some(posting),
            ..
        } => {
            let lib = Contender::Lib(m.clone());
            let shape = (common.workers, common.duration);
            let (sections, timeouts) =
                hot_key::sections(&lib, shape, hold_us, &posting, "").await?;
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
            across_processes(g, &m, &common, hold_us, processes).await?
        }
        Workload::HotKey {
            common, hold_us, ..
        } => hot_key(g, &m, &common, hold_us, single).await?,
        Workload::Footprint { locks } => footprint::run(&m, locks).await?,
        Workload::Scale(a) => scale::run(g, &m, &a).await?,
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

/// Connections for the servers' counters: the manager's own server on a single Redis,
/// and the nodes named by `--server-stats`.
async fn probes(g: &Global, single: bool, c: &Common) -> Result<Probes, CliError> {
    let mut p = Probes::default();
    if single {
        p.main = Some(raw_connection(g).await?);
    }
    for url in &c.server_stats {
        p.nodes.push((url.clone(), cost::node(url).await?));
    }
    Ok(p)
}

async fn uncontended(
    g: &Global,
    m: &BidLockManager,
    c: &Common,
    single: bool,
) -> Result<Value, CliError> {
    let mut out = json!({ "workload": "uncontended", "backend": m.topology().name(), "workers": c.workers, "duration_s": c.duration.as_secs_f64() });
    let lib = Contender::Lib(m.clone());
    let raw = if single && !c.no_baseline {
        Some(Contender::Raw(
            RawClient::connect(g, RawWait::Poll(Duration::ZERO)).await?,
        ))
    } else {
        None
    };
    let mut runs: Vec<(&str, &Contender, &str)> = vec![("", &lib, "bidlock")];
    if let Some(raw) = &raw {
        runs.push(("raw_", raw, "raw redis-rs"));
    }
    if c.baseline_first {
        runs.reverse();
    }
    out["order"] = json!(runs.iter().map(|r| r.2).collect::<Vec<_>>());
    for (prefix, who, label) in runs {
        let figures = uncontended::measured(who, c, label, probes(g, single, c).await?).await?;
        merge(&mut out, &figures, prefix);
    }
    if raw.is_some() {
        out["ratio"] = ratio(&out["pairs_per_sec"], &out["raw_pairs_per_sec"]);
    }
    Ok(out)
}

async fn hot_key(
    g: &Global,
    m: &BidLockManager,
    c: &Common,
    hold_us: u64,
    single: bool,
) -> Result<Value, CliError> {
    let mut out = json!({ "workload": "hot-key", "backend": m.topology().name(), "workers": c.workers, "hold_us": hold_us, "duration_s": c.duration.as_secs_f64() });
    let lib = Contender::Lib(m.clone());
    let mut runs: Vec<(String, Contender, String)> = vec![("".into(), lib, "bidlock".into())];
    if single && !c.no_baseline {
        // A polling raw client, and the fastest a polling client can hand over: retry at
        // once, burning a core.
        let poll = RawWait::Poll(Duration::from_micros(1000));
        for (prefix, wait) in [("raw_", poll), ("spin_", RawWait::Spin)] {
            let who = Contender::Raw(RawClient::connect(g, wait).await?);
            runs.push((
                prefix.into(),
                who,
                format!("raw redis-rs, {}", wait.label()),
            ));
        }
        out["raw_poll_us"] = json!(1000);
    }
    if c.baseline_first {
        runs.reverse();
    }
    out["order"] = json!(runs.iter().map(|r| r.2.clone()).collect::<Vec<_>>());
    for (prefix, who, label) in &runs {
        let figures =
            hot_key::measured(who, c, hold_us, label, probes(g, single, c).await?).await?;
        merge(&mut out, &figures, prefix);
    }
    if out.get("raw_cs_per_sec").is_some() {
        out["ratio"] = ratio(&out["cs_per_sec"], &out["raw_cs_per_sec"]);
    }
    Ok(out)
}

/// The hot key contended by `processes` children; the server's figures for all of them.
async fn across_processes(
    g: &Global,
    m: &BidLockManager,
    c: &Common,
    hold_us: u64,
    processes: u32,
) -> Result<Value, CliError> {
    let single = m.topology() == Topology::Single;
    let mut out = json!({ "workload": "hot-key", "backend": m.topology().name(), "workers": c.workers * processes, "hold_us": hold_us, "duration_s": c.duration.as_secs_f64() });
    let meter = Meter::start(probes(g, single, c).await?).await?;
    let figures = hot_key::across_processes(g, processes, c, hold_us).await?;
    merge(&mut out, &figures, "");
    let cs = figures["cs"].as_f64().unwrap_or(0.0);
    let mut cost = meter.finish(cs, "cs").await?;
    if let Some(o) = cost.as_object_mut() {
        // This process only waited: the children's CPU is theirs, not measured here.
        o.retain(|k, _| k.starts_with("server_") || k.starts_with("script_"));
    }
    merge(&mut out, &cost, "");
    Ok(out)
}
