//! `bidlock bench`: the workloads users feel, each printing one JSON line. Redis runs
//! also time the same loop done with raw redis-rs calls in the same process against the
//! same server, and report bidlock / raw.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bidlock::{AcquireOptions, BidLockManager, Histogram, LockKey};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::exit::{self, CliError};
use crate::output::print;
use crate::Global;

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
struct Common {
    /// Concurrent tasks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    workers: u32,
    /// Seconds per measured run.
    #[arg(long, default_value = "5", value_parser = crate::seconds)]
    duration: Duration,
    /// Skip the raw redis-rs baseline.
    #[arg(long)]
    no_baseline: bool,
}

fn progress(label: &str, deadline: Instant) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let label = label.to_owned();
    Some(tokio::spawn(async move {
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).as_secs();
            eprint!("\r{label}: {left:>3} s left ");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprint!("\r{:60}\r", "");
    }))
}

pub(crate) async fn bench(g: &Global, args: BenchArgs) -> Result<u8, CliError> {
    let m = g.manager(false).await?;
    let backend = m.backend();
    let location = m.location();
    let label = if location.starts_with("redlock[") {
        "redlock".to_owned()
    } else if location.starts_with("redis+sentinel") {
        "sentinel".to_owned()
    } else {
        backend.to_string()
    };
    let line = match args.workload {
        Workload::Uncontended { common } => {
            let lib = uncontended_lib(&m, &common).await;
            let mut out = json!({ "workload": "uncontended", "backend": label, "workers": common.workers, "duration_s": common.duration.as_secs_f64() });
            merge(&mut out, &lib);
            if label == "redis" && !common.no_baseline {
                let raw = uncontended_raw(g, &common).await?;
                out["raw_pairs_per_sec"] = raw["pairs_per_sec"].clone();
                out["raw_acquire_p50_us"] = raw["acquire_p50_us"].clone();
                out["raw_acquire_p99_us"] = raw["acquire_p99_us"].clone();
                out["ratio"] = ratio(&lib["pairs_per_sec"], &raw["pairs_per_sec"]);
            }
            out
        }
        Workload::HotKey { common, hold_us } => {
            let stats = if label == "redis" {
                Some(redis_stats(g).await?)
            } else {
                None
            };
            let lib = hot_key_lib(&m, &common, hold_us).await?;
            let mut out = json!({ "workload": "hot-key", "backend": label, "workers": common.workers, "hold_us": hold_us, "duration_s": common.duration.as_secs_f64() });
            merge(&mut out, &lib);
            if let Some(before) = stats {
                let after = redis_stats(g).await?;
                let cs = lib["cs"].as_f64().unwrap_or(0.0).max(1.0);
                out["redis_cmds_per_cs"] = json!(round2(m.metrics().backend_calls as f64 / cs));
                out["redis_server_calls_per_cs"] =
                    json!(round2(after.saturating_sub(before) as f64 / cs));
                if !common.no_baseline {
                    let raw = hot_key_raw(g, &common, hold_us).await?;
                    out["raw_cs_per_sec"] = raw["cs_per_sec"].clone();
                    out["raw_gap_p50_us"] = raw["gap_p50_us"].clone();
                    out["raw_gap_p99_us"] = raw["gap_p99_us"].clone();
                    out["raw_same_holder_frac"] = raw["same_holder_frac"].clone();
                    out["raw_poll_us"] = raw["poll_us"].clone();
                    out["ratio"] = ratio(&lib["cs_per_sec"], &raw["cs_per_sec"]);
                }
            }
            out
        }
        Workload::Footprint { locks } => footprint(&m, locks).await?,
    };
    m.close().await;
    print(&format!(
        "{}\n",
        serde_json::to_string(&line).unwrap_or_default()
    ));
    Ok(exit::OK)
}

/// What an uncontended loop counts, bidlock's and the raw baseline's alike.
#[derive(Default)]
struct PairStats {
    acquire: Histogram,
    pairs: AtomicU64,
    errors: AtomicU64,
}

impl PairStats {
    fn pair(&self) {
        self.pairs.fetch_add(1, Relaxed);
    }

    fn error(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    fn summary(&self, secs: f64) -> Value {
        json!({
            "pairs_per_sec": (self.pairs.load(Relaxed) as f64 / secs).round(),
            "acquire_p50_us": self.acquire.quantile_us(0.5),
            "acquire_p99_us": self.acquire.quantile_us(0.99),
            "errors": self.errors.load(Relaxed),
        })
    }
}

fn merge(out: &mut Value, from: &Value) {
    if let (Some(o), Some(f)) = (out.as_object_mut(), from.as_object()) {
        for (k, v) in f {
            o.insert(k.clone(), v.clone());
        }
    }
}

fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round2(a / b)),
        _ => Value::Null,
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn uncontended_lib(m: &BidLockManager, c: &Common) -> Value {
    let stats = Arc::new(PairStats::default());
    let run = format!("{:08x}", rand::random::<u32>());
    let start = Instant::now();
    let deadline = start + c.duration;
    let bar = progress("uncontended (bidlock)", deadline);
    let mut tasks = Vec::new();
    for w in 0..c.workers {
        let (m, stats, run) = (m.clone(), stats.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let opts = AcquireOptions::new().no_wait();
            let mut i = 0u64;
            // Reading the clock costs as much as a memory acquire: look every 32 pairs.
            while !i.is_multiple_of(32) || Instant::now() < deadline {
                i += 1;
                let Ok(key) = LockKey::new("bench", format!("{run}-{w}-{i}")) else {
                    continue;
                };
                let t = Instant::now();
                match m.acquire(&key, &opts).await {
                    Ok(g) => {
                        stats.acquire.record(t.elapsed());
                        match g.release().await {
                            Ok(true) => stats.pair(),
                            _ => stats.error(),
                        }
                    }
                    Err(_) => stats.error(),
                }
            }
        }));
    }
    finish(tasks, bar).await;
    stats.summary(start.elapsed().as_secs_f64())
}

/// Waits for the workers and clears the progress line.
async fn finish(tasks: Vec<tokio::task::JoinHandle<()>>, bar: Option<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
    if let Some(b) = bar {
        b.abort();
    }
}

/// The baseline: SET NX PX + EVALSHA compare-and-delete on one multiplexed connection.
async fn raw_conn(
    g: &Global,
) -> Result<(redis::aio::MultiplexedConnection, redis::Script), CliError> {
    let cfg = g.config(true)?.build()?;
    let target = match cfg.redis_targets().first() {
        Some(t) => t.clone(),
        None => bidlock::RedisTarget::from_url(bidlock::DEFAULT_REDIS_URL)?,
    };
    // The same server, credentials and db as the manager: not a URL rebuilt from the
    // redacted form.
    let client = redis::Client::open(target.connection_info())
        .map_err(|e| CliError::new(exit::UNAVAILABLE, format!("{target}: {e}")))?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| CliError::new(exit::UNAVAILABLE, format!("{target}: {e}")))?;
    let script = redis::Script::new(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end",
    );
    Ok((conn, script))
}

async fn uncontended_raw(g: &Global, c: &Common) -> Result<Value, CliError> {
    let (conn, script) = raw_conn(g).await?;
    let script = Arc::new(script);
    let stats = Arc::new(PairStats::default());
    let run = format!("{:08x}", rand::random::<u32>());
    let start = Instant::now();
    let deadline = start + c.duration;
    let bar = progress("uncontended (raw redis-rs)", deadline);
    let mut tasks = Vec::new();
    for w in 0..c.workers {
        let (mut conn, script, stats, run) =
            (conn.clone(), script.clone(), stats.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let key = format!("bid_lock:raw:{run}-{w}-{i}");
                let token = format!("raw-{w}-{i}");
                let t = Instant::now();
                let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(300_000)
                    .query_async(&mut conn)
                    .await;
                if !matches!(set, Ok(Some(_))) {
                    stats.error();
                    continue;
                }
                stats.acquire.record(t.elapsed());
                let del: redis::RedisResult<i64> =
                    script.key(&key).arg(&token).invoke_async(&mut conn).await;
                match del {
                    Ok(1) => stats.pair(),
                    _ => stats.error(),
                }
            }
        }));
    }
    finish(tasks, bar).await;
    Ok(stats.summary(start.elapsed().as_secs_f64()))
}

/// Hot-key bookkeeping shared by the bidlock and the raw runs.
#[derive(Default)]
struct HotKeyLog {
    last: Mutex<Option<(Instant, u32)>>,
    sections: Mutex<Vec<u32>>,
    gaps: Histogram,
    inside: AtomicBool,
    overlaps: AtomicU64,
    timeouts: AtomicU64,
}

impl HotKeyLog {
    fn enter(&self, w: u32) {
        let now = Instant::now();
        if let Ok(last) = self.last.lock() {
            if let Some((t, who)) = *last {
                if who != w {
                    self.gaps.record(now.saturating_duration_since(t));
                }
            }
        }
        if self.inside.swap(true, Relaxed) {
            self.overlaps.fetch_add(1, Relaxed);
        }
    }

    fn leave(&self, w: u32) {
        self.inside.store(false, Relaxed);
        if let Ok(mut s) = self.sections.lock() {
            s.push(w);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), w));
        }
    }

    fn summary(&self, secs: f64, workers: u32) -> Value {
        let s = self.sections.lock().map(|s| s.clone()).unwrap_or_default();
        let n = s.len().max(1) as f64;
        let same = s.windows(2).filter(|w| w[0] == w[1]).count() as f64;
        let mut per = vec![0u64; workers as usize];
        for w in &s {
            per[*w as usize] += 1;
        }
        let max_share = per.iter().copied().max().unwrap_or(0) as f64 / n;
        json!({
            "cs": s.len(),
            "cs_per_sec": (s.len() as f64 / secs).round(),
            "gap_p50_us": self.gaps.quantile_us(0.5),
            "gap_p99_us": self.gaps.quantile_us(0.99),
            "same_holder_frac": round2(same / (n - 1.0).max(1.0)),
            "max_worker_share": round2(max_share),
            "overlaps": self.overlaps.load(Relaxed),
            "timeouts": self.timeouts.load(Relaxed),
        })
    }
}

async fn hold(us: u64) {
    // Real work: a blocking sleep on a blocking thread, so the hold is not a timer.
    let _ =
        tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_micros(us))).await;
}

async fn hot_key_lib(m: &BidLockManager, c: &Common, hold_us: u64) -> Result<Value, CliError> {
    let log = Arc::new(HotKeyLog::default());
    let key = LockKey::new("bench", format!("hot-{:08x}", rand::random::<u32>()))?;
    let start = Instant::now();
    let deadline = start + c.duration;
    let bar = progress("hot-key (bidlock)", deadline);
    let mut tasks = Vec::new();
    for w in 0..c.workers {
        let (m, log, key) = (m.clone(), log.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let opts = AcquireOptions::new().timeout(Duration::from_secs(5));
            while Instant::now() < deadline {
                match m.acquire(&key, &opts).await {
                    Ok(g) => {
                        log.enter(w);
                        hold(hold_us).await;
                        log.leave(w);
                        let _ = g.release().await;
                    }
                    Err(_) => {
                        log.timeouts.fetch_add(1, Relaxed);
                    }
                }
            }
        }));
    }
    finish(tasks, bar).await;
    Ok(log.summary(start.elapsed().as_secs_f64(), c.workers))
}

/// The raw hot-key loop polls: SET NX PX, and on failure sleeps `poll` and tries again.
async fn hot_key_raw(g: &Global, c: &Common, hold_us: u64) -> Result<Value, CliError> {
    let (conn, script) = raw_conn(g).await?;
    let script = Arc::new(script);
    let log = Arc::new(HotKeyLog::default());
    let key = format!("bid_lock:raw:hot-{:08x}", rand::random::<u32>());
    let poll = Duration::from_micros(1000);
    let start = Instant::now();
    let deadline = start + c.duration;
    let bar = progress("hot-key (raw redis-rs)", deadline);
    let mut tasks = Vec::new();
    for w in 0..c.workers {
        let (mut conn, script, log, key) = (conn.clone(), script.clone(), log.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let token = format!("raw-{w}");
            while Instant::now() < deadline {
                let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(30_000)
                    .query_async(&mut conn)
                    .await;
                if matches!(set, Ok(Some(_))) {
                    log.enter(w);
                    hold(hold_us).await;
                    log.leave(w);
                    let _: redis::RedisResult<i64> =
                        script.key(&key).arg(&token).invoke_async(&mut conn).await;
                } else {
                    tokio::time::sleep(poll).await;
                }
            }
        }));
    }
    finish(tasks, bar).await;
    let mut v = log.summary(start.elapsed().as_secs_f64(), c.workers);
    v["poll_us"] = json!(poll.as_micros() as u64);
    Ok(v)
}

/// (total commands processed, per INFO stats) of the server.
async fn redis_stats(g: &Global) -> Result<u64, CliError> {
    let (mut conn, _) = raw_conn(g).await?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .map_err(|e| CliError::new(exit::UNAVAILABLE, e.to_string()))?;
    let total = info
        .lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok(total)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

async fn footprint(m: &BidLockManager, locks: u32) -> Result<Value, CliError> {
    let keys: Vec<LockKey> = (0..locks)
        .filter_map(|i| LockKey::new("bench", format!("posting-{i:08}")).ok())
        .collect();
    let mut guards = Vec::with_capacity(keys.len());
    let before = rss_kib();
    let start = Instant::now();
    for k in &keys {
        guards.push(m.acquire(k, &AcquireOptions::new().no_wait()).await?);
    }
    let held_secs = start.elapsed().as_secs_f64();
    let after = rss_kib();
    let bytes = (after.saturating_sub(before) * 1024) as f64 / f64::from(locks.max(1));
    drop(guards);
    Ok(json!({
        "workload": "footprint",
        "backend": m.backend().to_string(),
        "locks": locks,
        "rss_kib_before": before,
        "rss_kib_held": after,
        "bytes_per_held_lock": bytes.round(),
        "acquires_per_sec": (f64::from(locks) / held_secs).round(),
        "note": "bytes per held lock = client RSS growth / locks held, guard included (keys are allocated before the measurement)",
    }))
}
