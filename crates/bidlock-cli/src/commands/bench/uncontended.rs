//! The uncontended workload: W tasks, each acquire (no wait) + release on a fresh key.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::contender::{BenchKey, Contender};
use super::stats::{finish, progress, PairStats};
use super::Common;

/// Runs the loop with `who` for the configured duration and returns its figures.
pub(crate) async fn run(who: &Contender, c: &Common, label: &str) -> Value {
    let stats = Arc::new(PairStats::default());
    let run = format!("{:08x}", rand::random::<u32>());
    let start = Instant::now();
    let deadline = start + c.duration;
    let bar = progress(&format!("uncontended ({label})"), deadline);
    let mut tasks = Vec::new();
    for w in 0..c.workers {
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
