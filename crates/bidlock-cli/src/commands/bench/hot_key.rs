//! The hot-key workload: W tasks fight for one key, hold it H µs (a real blocking
//! sleep), release, ask again. Records handover gaps, fairness and overlaps. With
//! `--processes N`, N child processes of W tasks each contend for the same key (as a fleet
//! does), each records its sections on the machine's monotonic clock, and the parent
//! computes the figures over all of them.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::contender::{BenchKey, Contender};
use super::cost::{Meter, Probes};
use super::stats::{finish, hot_key_summary, merge, monotonic_ns, progress, HotKeyLog, Section};
use super::Common;
use crate::exit::{self, CliError};
use crate::Global;

/// How long a worker waits for the key before counting a timeout.
const WAIT: Duration = Duration::from_secs(5);

async fn hold(us: u64) {
    // Real work: a blocking sleep on a blocking thread, so the hold is not a timer.
    let _ =
        tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_micros(us))).await;
}

/// A fresh key for one run.
pub(crate) fn fresh_key() -> String {
    format!("hot-{:08x}", rand::random::<u32>())
}

/// Runs the loop with `who` on `posting` for the configured duration; returns the
/// sections and the number of waits that gave up.
pub(crate) async fn sections(
    who: &Contender,
    (workers, duration): (u32, Duration),
    hold_us: u64,
    posting: &str,
    label: &str,
) -> Result<(Vec<Section>, u64), CliError> {
    let log = Arc::new(HotKeyLog::default());
    let key = BenchKey::new(posting.to_owned())?;
    let deadline = Instant::now() + duration;
    // Children of a multi-process run keep the terminal to the parent.
    let bar = (!label.is_empty())
        .then(|| progress(&format!("hot-key ({label})"), deadline))
        .flatten();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (who, log, key) = (who.clone(), log.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match who.take(&key, w, Some(WAIT)).await {
                    Some(held) => {
                        let enter = monotonic_ns();
                        hold(hold_us).await;
                        log.record(w, enter, monotonic_ns());
                        who.put(held).await;
                    }
                    None => {
                        log.timeouts.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    finish(tasks, bar).await;
    Ok((log.take(), log.timeouts.load(Relaxed)))
}

/// One process's run, summarised: first a short warm-up on a key of its own, then
/// measured, with the client's and (given a connection to it) the server's cost per
/// critical section.
pub(crate) async fn measured(
    who: &Contender,
    c: &Common,
    hold_us: u64,
    label: &str,
    server: Probes,
) -> Result<Value, CliError> {
    sections(who, (c.workers, c.warmup()), hold_us, &fresh_key(), "").await?;
    let trips = who.round_trips();
    let meter = Meter::start(server).await?;
    let start = Instant::now();
    let (s, timeouts) =
        sections(who, (c.workers, c.duration), hold_us, &fresh_key(), label).await?;
    let mut out = hot_key_summary(s, timeouts, start.elapsed().as_secs_f64(), c.workers);
    let cs = out["cs"].as_f64().unwrap_or(0.0);
    merge(&mut out, &meter.finish(cs, "cs").await?, "");
    out["round_trips_per_cs"] = json!(who.round_trips().saturating_sub(trips) as f64 / cs.max(1.0));
    Ok(out)
}

/// The arguments that make a child contend on `posting`, on the parent's Redis.
fn child_args(g: &Global, posting: &str, c: &Common, hold_us: u64) -> Vec<String> {
    let mut args = g.to_child_args();
    args.extend([
        "bench".to_owned(),
        "hot-key".to_owned(),
        "--workers".to_owned(),
        c.workers.to_string(),
        "--duration".to_owned(),
        c.duration.as_secs_f64().to_string(),
        "--hold-us".to_owned(),
        hold_us.to_string(),
        "--child-of".to_owned(),
        posting.to_owned(),
    ]);
    args
}

/// Runs `processes` children of `c.workers` tasks each on one key and summarises all.
pub(crate) async fn across_processes(
    g: &Global,
    processes: u32,
    c: &Common,
    hold_us: u64,
) -> Result<Value, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(exit::FAILURE, format!("cannot find this binary: {e}")))?;
    let posting = fresh_key();
    let start = Instant::now();
    let children: Vec<_> = (0..processes)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(child_args(g, &posting, c, hold_us))
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
        })
        .collect();
    let mut all = Vec::new();
    let (mut timeouts, mut calls) = (0, 0);
    for (p, out) in futures_util::future::join_all(children)
        .await
        .into_iter()
        .enumerate()
    {
        let out = out.map_err(|e| CliError::new(exit::FAILURE, format!("child: {e}")))?;
        let child: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            CliError::new(exit::FAILURE, format!("child {p} printed no figures: {e}"))
        })?;
        let sections: Vec<Section> = serde_json::from_value(child["sections"].clone())
            .map_err(|e| CliError::new(exit::FAILURE, format!("child {p}: {e}")))?;
        let base = u32::try_from(p).unwrap_or(0) * c.workers;
        all.extend(sections.into_iter().map(|s| Section {
            worker: base + s.worker,
            ..s
        }));
        timeouts += child["timeouts"].as_u64().unwrap_or(0);
        calls += child["backend_calls"].as_u64().unwrap_or(0);
    }
    let mut out = hot_key_summary(
        all,
        timeouts,
        start.elapsed().as_secs_f64(),
        processes * c.workers,
    );
    out["processes"] = json!(processes);
    let cs = out["cs"].as_f64().unwrap_or(0.0).max(1.0);
    out["round_trips_per_cs"] = json!(calls as f64 / cs);
    Ok(out)
}
