//! The `bidlock bench` workloads done with rslock (Redlock for Rust, used as its README
//! shows: one `LockManager`, `lock` then `unlock`, its default retries), printing one JSON
//! line per run with the fields of `bidlock bench`, for scripts/bench.sh.
//!
//!   bidlock-peer-rslock uncontended --workers 32 --duration 4 --redis-url redis://127.0.0.1:6379/0
//!   bidlock-peer-rslock hot-key --workers 8 --hold-us 1000 --duration 4 --redis-url ...

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rslock::LockManager;
use serde_json::json;

struct Args {
    workload: String,
    workers: u32,
    duration: f64,
    hold_us: u64,
    url: String,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let workload = it.next().ok_or("usage: uncontended|hot-key [--workers N] [--duration S] [--hold-us U] [--redis-url URL]")?;
    let mut a = Args {
        workload,
        workers: 1,
        duration: 5.0,
        hold_us: 1000,
        url: "redis://127.0.0.1:6379/0".into(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag}: {e}");
        match flag.as_str() {
            "--workers" => a.workers = value.parse().map_err(bad)?,
            "--hold-us" => a.hold_us = value.parse().map_err(bad)?,
            "--duration" => a.duration = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--redis-url" => a.url = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn quantile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

async fn uncontended(lm: LockManager, a: &Args) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let start = Instant::now();
    let (pairs, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let times = Arc::new(Mutex::new(Vec::new()));
    let run = format!("{:08x}", std::process::id());
    let mut tasks = Vec::new();
    for w in 0..a.workers {
        let (lm, pairs, errors, times, run) =
            (lm.clone(), pairs.clone(), errors.clone(), times.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let key = format!("bid_lock:rslock:{run}-{w}-{i}");
                let t = Instant::now();
                match lm.lock(key.as_bytes(), Duration::from_secs(30)).await {
                    Ok(lock) => {
                        mine.push(t.elapsed().as_micros() as u64);
                        lm.unlock(&lock).await;
                        pairs.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            times.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut times = times.lock().unwrap().clone();
    json!({
        "pairs_per_sec": pairs.load(Ordering::Relaxed) as f64 / secs,
        "acquire_p50_us": quantile(&mut times, 0.5),
        "acquire_p99_us": quantile(&mut times, 0.99),
        "errors": errors.load(Ordering::Relaxed),
    })
}

#[derive(Default)]
struct HotLog {
    last: Option<(Instant, u32)>,
    sections: Vec<u32>,
    gaps: Vec<u64>,
}

async fn hot_key(lm: LockManager, a: &Args) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let start = Instant::now();
    let log = Arc::new(Mutex::new(HotLog::default()));
    let (inside, overlaps, timeouts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let key = format!("bid_lock:rslock:hot-{:08x}", std::process::id());
    let hold = Duration::from_micros(a.hold_us);
    let mut tasks = Vec::new();
    for w in 0..a.workers {
        let (lm, log, inside, overlaps, timeouts, key) = (
            lm.clone(),
            log.clone(),
            inside.clone(),
            overlaps.clone(),
            timeouts.clone(),
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                // `lock` retries by itself (3 tries, up to 200 ms apart); ask again until
                // the run ends, as a caller that must bid would.
                let Ok(lock) = lm.lock(key.as_bytes(), Duration::from_secs(10)).await else {
                    timeouts.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                {
                    let mut l = log.lock().unwrap();
                    if let Some((t, who)) = l.last {
                        if who != w {
                            l.gaps.push(t.elapsed().as_micros() as u64);
                        }
                    }
                }
                if inside.swap(true, Ordering::AcqRel) {
                    overlaps.fetch_add(1, Ordering::Relaxed);
                }
                // A real blocking hold, as `bidlock bench hot-key` does.
                std::thread::sleep(hold);
                inside.store(false, Ordering::Release);
                {
                    let mut l = log.lock().unwrap();
                    l.sections.push(w);
                    l.last = Some((Instant::now(), w));
                }
                lm.unlock(&lock).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut l = log.lock().unwrap();
    let n = l.sections.len().max(1);
    let same = l.sections.windows(2).filter(|p| p[0] == p[1]).count();
    let most = (0..a.workers)
        .map(|w| l.sections.iter().filter(|s| **s == w).count())
        .max()
        .unwrap_or(0);
    let cs = l.sections.len();
    json!({
        "cs": cs,
        "cs_per_sec": cs as f64 / secs,
        "gap_p50_us": quantile(&mut l.gaps, 0.5),
        "gap_p99_us": quantile(&mut l.gaps, 0.99),
        "same_holder_frac": same as f64 / (n.max(2) - 1) as f64,
        "max_worker_share": most as f64 / n as f64,
        "overlaps": overlaps.load(Ordering::Relaxed),
        "timeouts": timeouts.load(Ordering::Relaxed),
    })
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bidlock-peer-rslock: {e}");
            std::process::exit(2);
        }
    };
    let lm = LockManager::new(vec![a.url.clone()]);
    let result = match a.workload.as_str() {
        "uncontended" => uncontended(lm, &a).await,
        "hot-key" => hot_key(lm, &a).await,
        other => {
            eprintln!("bidlock-peer-rslock: unknown workload {other}");
            std::process::exit(2);
        }
    };
    let mut out = json!({
        "workload": a.workload,
        "backend": "rslock",
        "workers": a.workers,
        "duration_s": a.duration,
    });
    if a.workload == "hot-key" {
        out["hold_us"] = json!(a.hold_us);
    }
    if let (Some(o), Some(r)) = (out.as_object_mut(), result.as_object()) {
        o.extend(r.clone());
    }
    println!("{out}");
}
