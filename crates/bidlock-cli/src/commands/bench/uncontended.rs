//! The uncontended workload: W tasks, each acquire (no wait) + release on a fresh key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::contender::{BenchKey, Contender};
use super::cost::{Meter, Probes};
use super::stats::{finish, merge, progress, PairStats};
use super::Common;
use crate::exit::CliError;

/// Runs the loop with `who`: first a short warm-up (connections, scripts loaded, the
/// runtime's threads started), then measured, with the client's and (given a connection
/// to it) the server's cost per pair.
pub(crate) async fn measured(
    who: &Contender,
    c: &Common,
    label: &str,
    server: Probes,
) -> Result<Value, CliError> {
    run(who, c.workers, c.warmup(), "").await;
    let trips = who.round_trips();
    let meter = Meter::start(server).await?;
    let mut out = run(who, c.workers, c.duration, label).await;
    let pairs = out["pairs"].as_f64().unwrap_or(0.0);
    merge(&mut out, &meter.finish(pairs, "pair").await?, "");
    out["round_trips_per_pair"] =
        json!(who.round_trips().saturating_sub(trips) as f64 / pairs.max(1.0));
    if let Some(calls) = out["script_calls_per_pair"].as_f64().filter(|c| *c > 0.0) {
        out["items_per_script_call"] = json!(who.scripted_per_pair() / calls);
    }
    Ok(out)
}

/// Runs the loop with `who` for `duration` and returns its figures (a progress line on
/// a terminal when `label` is not empty).
pub(crate) async fn run(who: &Contender, workers: u32, duration: Duration, label: &str) -> Value {
    let stats = Arc::new(PairStats::default());
    let run = format!("{:08x}", rand::random::<u32>());
    let start = Instant::now();
    let deadline = start + duration;
    let bar = (!label.is_empty())
        .then(|| progress(&format!("uncontended ({label})"), deadline))
        .flatten();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (who, stats, run) = (who.clone(), stats.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            // Reading the clock costs as much as a memory acquire: look every 32 pairs.
            while !i.is_multiple_of(32) || Instant::now() < deadline {
                i += 1;
                let Ok(key) = BenchKey::new(format!("{run}-{w}-{i}")) else {
                    continue;
                };
                let t = Instant::now();
                match who.take(&key, w, None).await {
                    Some(held) => {
                        stats.acquire.record(t.elapsed());
                        if who.put(held).await {
                            stats.pair();
                        } else {
                            stats.error();
                        }
                    }
                    None => stats.error(),
                }
            }
        }));
    }
    finish(tasks, bar).await;
    stats.summary(start.elapsed().as_secs_f64())
}
