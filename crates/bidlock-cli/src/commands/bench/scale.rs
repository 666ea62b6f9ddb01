//! The scale workload: what holding many leases costs, and how it grows. M managers (each
//! its own process, so each has its own runtime, connections and lease keeper, as a fleet
//! does) take N leases each on one Redis (ttl `--ttl`, renewal on) and hold them. While
//! all are held, this process measures a window on the server (commands, CPU, script
//! calls) and each manager measures itself (CPU, renewals, round trips, RSS).
//!
//! The window opens once every manager holds its leases and lasts a little longer than a
//! third of the ttl, so every lease is renewed about once inside it (a renewal is due a
//! third of the way through its validity). Figures are per renewal, per lease and per
//! second of the window.
//!
//! Protocol with the children (stdio): a child prints one JSON line when it holds its
//! leases, reads `go` (window opens), reads `stop` (window closes), releases every lease
//! and prints its figures as a second line.

use std::time::{Duration, Instant};

use bidlock::{BidLockManager, Topology};
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::contender::raw_connection;
use super::cost::ServerStats;
use super::scale_child;
use crate::exit::{self, CliError};
use crate::Global;

/// The longest a child may take to take its leases, or to release them and report.
const CHILD_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Leases each manager takes and holds (renewal on).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    leases: u32,
    /// Managers, each in a process of its own, all on the one Redis (a fleet).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    managers: u32,
    /// Lease ttl in seconds: each lease is renewed a third of the way through it.
    #[arg(long, default_value = "30", value_parser = crate::ttl)]
    ttl: Duration,
    /// Seconds measured while every lease is held (default 1.15 × ttl/3: each lease is
    /// renewed about once inside it).
    #[arg(long, value_parser = crate::seconds)]
    window: Option<Duration>,
    /// Acquires (and releases) in flight per manager while it takes (and lets go of)
    /// its leases.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    in_flight: u32,
    /// (Internal) be one manager of a scale run: take the leases, then follow the
    /// parent's `go` and `stop` on stdin.
    #[arg(long, hide = true, value_name = "RUN")]
    child_of: Option<String>,
}

/// One child: its process, the line it will read, the lines it prints.
struct Manager {
    process: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

fn failed(what: impl std::fmt::Display) -> CliError {
    CliError::new(exit::FAILURE, format!("bench scale: {what}"))
}

impl Manager {
    fn spawn(g: &Global, a: &ScaleArgs, run: &str) -> Result<Manager, CliError> {
        let exe =
            std::env::current_exe().map_err(|e| failed(format!("cannot find this binary: {e}")))?;
        let mut args = g.to_child_args();
        args.extend([
            "--json".to_owned(),
            "bench".to_owned(),
            "scale".to_owned(),
            "--leases".to_owned(),
            a.leases.to_string(),
            "--ttl".to_owned(),
            a.ttl.as_secs_f64().to_string(),
            "--in-flight".to_owned(),
            a.in_flight.to_string(),
            "--child-of".to_owned(),
            run.to_owned(),
        ]);
        let mut process = tokio::process::Command::new(exe)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot start a manager: {e}")))?;
        let (Some(stdin), Some(stdout)) = (process.stdin.take(), process.stdout.take()) else {
            return Err(failed("a manager's stdio is missing"));
        };
        Ok(Manager {
            process,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next JSON line the child prints, within [`CHILD_LIMIT`].
    async fn next(&mut self, what: &str) -> Result<Value, CliError> {
        let line = tokio::time::timeout(CHILD_LIMIT, self.lines.next_line())
            .await
            .map_err(|_| {
                failed(format!(
                    "a manager did not report {what} within {CHILD_LIMIT:?}"
                ))
            })?
            .map_err(|e| failed(format!("reading a manager: {e}")))?
            .ok_or_else(|| failed(format!("a manager ended before it reported {what}")))?;
        serde_json::from_str(&line).map_err(|e| failed(format!("a manager printed {line:?}: {e}")))
    }

    async fn tell(&mut self, word: &str) -> Result<(), CliError> {
        self.stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .map_err(|e| failed(format!("cannot tell a manager {word}: {e}")))
    }
}

/// Runs the scale workload (or, with `--child-of`, one manager of it).
pub(crate) async fn run(g: &Global, m: &BidLockManager, a: &ScaleArgs) -> Result<Value, CliError> {
    if let Some(run) = &a.child_of {
        let plan = scale_child::Plan {
            leases: a.leases,
            ttl: a.ttl,
            in_flight: a.in_flight,
        };
        return scale_child::run(m, &plan, run).await;
    }
    if m.topology() != Topology::Single {
        return Err(CliError::usage(
            "bench scale measures one Redis server: give one redis:// URL (and --backend redis)",
        ));
    }
    let window = a.window.unwrap_or(a.ttl.mul_f64(1.15 / 3.0));
    let mut probe = raw_connection(g).await?;
    let empty = ServerStats::read(&mut probe).await?;
    let run = format!("{:08x}", rand::random::<u32>());
    let started = Instant::now();
    let mut managers = (0..a.managers)
        .map(|_| Manager::spawn(g, a, &run))
        .collect::<Result<Vec<_>, _>>()?;
    let mut held = Vec::new();
    for c in &mut managers {
        held.push(c.next("its leases held").await?);
    }
    let all_held_s = started.elapsed().as_secs_f64();
    let before = ServerStats::read(&mut probe).await?;
    for c in &mut managers {
        c.tell("go").await?;
    }
    let opened = Instant::now();
    tokio::time::sleep(window).await;
    let after = ServerStats::read(&mut probe).await?;
    for c in &mut managers {
        c.tell("stop").await?;
    }
    let window_s = opened.elapsed().as_secs_f64();
    let mut done = Vec::new();
    for c in &mut managers {
        done.push(c.next("its figures").await?);
        let _ = c.process.wait().await;
    }
    let released = ServerStats::read(&mut probe).await?;
    let mut out = figures(&held, &done, [&empty, &before, &after, &released], window_s);
    out["leases_per_manager"] = json!(a.leases);
    out["managers"] = json!(a.managers);
    out["ttl_s"] = json!(a.ttl.as_secs_f64());
    out["all_held_after_s"] = json!(all_held_s);
    Ok(out)
}

fn sum(v: &[Value], field: &str) -> f64 {
    v.iter().filter_map(|x| x[field].as_f64()).sum()
}

/// A sum of counts, as a count.
fn count(v: &[Value], field: &str) -> u64 {
    v.iter().filter_map(|x| x[field].as_u64()).sum()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `a / b`, or null when `b` is zero.
fn per(a: f64, b: f64) -> Value {
    if b > 0.0 {
        json!(a / b)
    } else {
        Value::Null
    }
}

/// The run's figures from the managers' reports and the server's four snapshots: empty,
/// all held (window opens), window closes, all released.
fn figures(held: &[Value], done: &[Value], s: [&ServerStats; 4], window_s: f64) -> Value {
    let [empty, before, after, released] = s;
    let leases = sum(done, "held");
    let renewals = sum(done, "window_renewals");
    let cmds = after.commands_since(before) as f64;
    let server_cpu = after.cpu_s - before.cpu_s;
    let rss_per_lease = done
        .iter()
        .filter_map(|d| d["rss_bytes_per_lease"].as_f64())
        .collect();
    let slowest_acquire = held
        .iter()
        .filter_map(|h| h["acquire_s"].as_f64())
        .fold(0.0, f64::max);
    let slowest_release = done
        .iter()
        .filter_map(|d| d["release_s"].as_f64())
        .fold(0.0, f64::max);
    json!({
        "workload": "scale",
        "backend": "redis",
        "leases": count(done, "held"),
        "acquire_errors": count(done, "acquire_errors"),
        "window_s": window_s,
        "acquires_per_sec": per(leases, slowest_acquire),
        "client_cpu_us_per_lease_acquired": per(sum(done, "acquire_cpu_s") * 1e6, leases),
        "client_rss_bytes_per_lease": median(rss_per_lease),
        "client_rss_mib_total": sum(done, "rss_kib_held") / 1024.0,
        "client_cpu_pct_window": json!(sum(done, "window_cpu_s") / window_s * 100.0),
        "client_cpu_us_per_renewal": per(sum(done, "window_cpu_s") * 1e6, renewals),
        "client_csw_per_renewal": per(sum(done, "window_csw"), renewals),
        "renewals": count(done, "window_renewals"),
        "renewals_per_lease": per(renewals, leases),
        "renewals_per_sec": json!(renewals / window_s),
        "renewals_per_round_trip": per(renewals, sum(done, "window_round_trips")),
        "lost": count(done, "lost_by_window_end"),
        "lost_in_window": count(done, "window_lost"),
        "redis_errors": count(done, "redis_errors"),
        "redis_cmds_per_sec": json!(cmds / window_s),
        "redis_script_calls_per_sec": json!(after.script_calls_since(before) as f64 / window_s),
        "redis_cmds_per_renewal": per(cmds, renewals),
        "redis_cpu_pct_window": json!(server_cpu / window_s * 100.0),
        "redis_cpu_us_per_renewal": per(server_cpu * 1e6, renewals),
        "redis_bytes_per_lock": per(before.used_memory as f64 - empty.used_memory as f64, leases),
        "redis_keys_per_lock": per(before.keys as f64 - empty.keys as f64, leases),
        "redis_keys_left": i128::from(released.keys) - i128::from(empty.keys),
        "release_s": slowest_release,
        "released": count(done, "released"),
    })
}
