//! The hot-key workload: W tasks fight for one key, hold it H µs (a real blocking
//! sleep), release, ask again. Records handover gaps, fairness and overlaps.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::contender::{BenchKey, Contender};
use super::stats::{finish, progress, HotKeyLog};
use super::Common;
use crate::exit::CliError;

/// How long a worker waits for the key before counting a timeout.
const WAIT: Duration = Duration::from_secs(5);

async fn hold(us: u64) {
    // Real work: a blocking sleep on a blocking thread, so the hold is not a timer.
    let _ =
        tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_micros(us))).await;
}

/// Runs the loop with `who` for the configured duration and returns its figures.
pub(crate) async fn run(
    who: &Contender,
    c: &Common,
    hold_us: u64,
    label: &str,
) -> Result<Value, CliError> {
    let log = Arc::new(HotKeyLog::default());
    let key = BenchKey::new(format!("hot-{:08x}", rand::random::<u32>()))?;
    let start = Instant::now();
    let deadline = start + c.duration;
    let bar = progress(&format!("hot-key ({label})"), deadline);
    let mut tasks = Vec::new();
    for w in 0..c.workers {
        let (who, log, key) = (who.clone(), log.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match who.take(&key, w, Some(WAIT)).await {
                    Some(held) => {
                        log.enter(w);
                        hold(hold_us).await;
                        log.leave(w);
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
    Ok(log.summary(start.elapsed().as_secs_f64(), c.workers))
}
