//! Process holders: real `bidlock run` processes on the same keys as the library
//! clients, with commands that print a line when they start, every 50 ms while they
//! work, and when they end (with the lock key, holder, fencing token and a wall-clock
//! stamp). `run --once` processes bid on the same postings as `bid_once`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bidlock_testkit::process::{signal_with_children, Signal};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::history::{BidRun, Kind, Section, Verdict, Who};
use super::round::Round;

/// The command `run` starts: prints `start|tick|end KEY HOLDER FENCE WALL_US` lines.
const SCRIPT: &str = r#"t() { echo "$1 $BIDLOCK_KEY $BIDLOCK_HOLDER $BIDLOCK_FENCE ${EPOCHREALTIME/./}"; }
t start; n=$1; while [ "$n" -gt 0 ]; do sleep 0.05; t tick; n=$((n-1)); done; t end"#;

const PROC_TTLS: [&str; 3] = ["1", "2", "4.5"];

/// A process holder running now, for the nemesis to freeze.
#[derive(Debug, Clone)]
pub struct Running {
    pub pid: u32,
    pub key: String,
    /// Its command printed `start`: it holds the lock.
    pub started: bool,
    pub ended: bool,
}

/// The process holders running now.
#[derive(Debug, Default)]
pub struct Board {
    pub running: Mutex<HashMap<u32, Running>>,
    next: AtomicU32,
}

impl Board {
    /// A holder that holds its lock now and has not finished, if any.
    pub fn holding(&self) -> Option<(u32, Running)> {
        let r = self.running.lock().unwrap();
        r.iter()
            .find(|(_, p)| p.started && !p.ended)
            .map(|(n, p)| (*n, p.clone()))
    }
}

fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The `bidlock` binary: `$BIDLOCK_BIN`, else the one `cargo build -p bidlock-cli` (or
/// `cargo test --workspace`) put next to this test's own directory. Refuses a binary
/// older than the library or CLI sources: it would test old code.
pub fn bidlock_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BIDLOCK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("bidlock"))
        .expect("target directory");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build -p bidlock-cli` first (scripts/test.sh builds it)",
                bin.display()
            )
        });
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = newest_mtime(&crates.join("bidlock/src"))
        .max(newest_mtime(&crates.join("bidlock-cli/src")));
    assert!(
        sources.is_none_or(|s| s <= built),
        "{} is older than the sources: run `cargo build -p bidlock-cli` first",
        bin.display()
    );
    bin
}

/// Starts `drivers` loops that each run one process holder after another.
pub fn spawn(round: &Arc<Round>, drivers: u8, bin: &Path) -> Vec<tokio::task::JoinHandle<()>> {
    (0..drivers)
        .map(|d| {
            let (r, bin) = (round.clone(), bin.to_owned());
            let seed = round.seed ^ (0xd00d_u64 << 32) ^ u64::from(d);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                while Instant::now() < r.stop_at {
                    one(&r, &bin, &mut rng).await;
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
                }
            })
        })
        .collect()
}

struct Spec {
    n: u32,
    once: bool,
    key: String,
    ttl: &'static str,
    given: Option<String>,
    args: Vec<String>,
}

fn draw(r: &Round, rng: &mut StdRng) -> Spec {
    let n = r.board.next.fetch_add(1, Ordering::Relaxed);
    let once = rng.random_bool(0.35);
    let keys = if once { &r.postings } else { &r.hot };
    let k = &keys[rng.random_range(0..keys.len())];
    let ttl = PROC_TTLS[rng.random_range(0..PROC_TTLS.len())];
    let given = rng
        .random_bool(0.2)
        .then(|| r.given[rng.random_range(0..r.given.len())].clone());
    let wait = format!("{:.2}", rng.random_range(0.0..2.0));
    let ticks = rng.random_range(2..50).to_string();
    let mut args: Vec<String> = ["--redis-url", &r.url, "run", k.marketplace(), k.posting()]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.extend([
        "--wait".into(),
        wait,
        "--ttl".into(),
        ttl.into(),
        "--grace".into(),
        "1".into(),
    ]);
    if once {
        args.push("--once".into());
    }
    if let Some(h) = &given {
        args.extend(["--holder".into(), h.clone()]);
    }
    args.extend([
        "--".into(),
        "bash".into(),
        "-c".into(),
        SCRIPT.into(),
        "bash".into(),
        ticks,
    ]);
    Spec {
        n,
        once,
        key: r.redis_key(k),
        ttl,
        given,
        args,
    }
}

async fn one(r: &Round, bin: &Path, rng: &mut StdRng) {
    let spec = draw(r, rng);
    let mut cmd = tokio::process::Command::new(bin);
    for var in bidlock::ENV_VARS.iter().chain(&["RUST_LOG"]) {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C")
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    r.hist.clock.anchor();
    let spawned_at = Instant::now();
    let Ok(mut child) = cmd.spawn() else {
        return r.hist.error("proc", &"spawn failed");
    };
    let pid = child.id().unwrap_or(0);
    r.board.running.lock().unwrap().insert(
        spec.n,
        Running {
            pid,
            key: spec.key.clone(),
            started: false,
            ended: false,
        },
    );
    let lines = read_lines(r, spec.n, child.stdout.take());
    let mut stderr = child.stderr.take();
    let err_text = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });
    let code = wait_or_stop(r, &mut child, pid, spawned_at).await;
    r.board.running.lock().unwrap().remove(&spec.n);
    let lines = lines.await.unwrap_or_default();
    let err = err_text.await.unwrap_or_default();
    record(r, &spec, spawned_at, &lines, code, &err);
}

fn read_lines(
    r: &Round,
    n: u32,
    out: Option<tokio::process::ChildStdout>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let board = r.board.clone();
    tokio::spawn(async move {
        let mut v = Vec::new();
        let Some(out) = out else { return v };
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(p) = board.running.lock().unwrap().get_mut(&n) {
                p.started |= l.starts_with("start ");
                p.ended |= l.starts_with("end ");
            }
            v.push(l);
        }
        v
    })
}

/// Waits for the process; at the round's end (or after 15 s) stops it: SIGTERM (which
/// `run` forwards to its command), then SIGKILL to all of it after 3 s.
async fn wait_or_stop(
    r: &Round,
    child: &mut tokio::process::Child,
    pid: u32,
    spawned: Instant,
) -> Option<i32> {
    let stop = (r.stop_at + Duration::from_millis(300)).min(spawned + Duration::from_secs(15));
    tokio::select! {
        s = child.wait() => return s.ok().and_then(|s| s.code()),
        _ = tokio::time::sleep_until(stop.max(Instant::now()).into()) => {}
    }
    signal_with_children(pid, Signal::SIGCONT);
    signal_with_children(pid, Signal::SIGTERM);
    if let Ok(s) = tokio::time::timeout(Duration::from_secs(3), child.wait()).await {
        return s.ok().and_then(|s| s.code());
    }
    signal_with_children(pid, Signal::SIGKILL);
    let _ = child.kill().await;
    r.hist.count("proc.killed");
    None
}

/// One parsed output line: what, holder, token, when.
fn parse(r: &Round, line: &str) -> Option<(String, String, u64, Instant)> {
    let f: Vec<&str> = line.split(' ').collect();
    let [what, _key, holder, token, us] = f[..] else {
        return None;
    };
    let at = r.hist.clock.to_instant(us.parse().ok()?)?;
    Some((what.to_owned(), holder.to_owned(), token.parse().ok()?, at))
}

fn record(
    r: &Round,
    spec: &Spec,
    spawned_at: Instant,
    lines: &[String],
    code: Option<i32>,
    err: &str,
) {
    let exit = code.map_or("killed".to_owned(), |c| c.to_string());
    r.hist.count(&format!("proc.exit.{exit}"));
    if code == Some(69) {
        r.hist
            .error("proc", &err.lines().next().unwrap_or("exit 69"));
    }
    let parsed: Vec<_> = lines.iter().filter_map(|l| parse(r, l)).collect();
    let start = parsed.iter().find(|p| p.0 == "start");
    let end_seen = parsed.iter().any(|p| p.0 == "end");
    let last = parsed.iter().map(|p| p.3).max();
    let mut section_id = None;
    if let (Some((_, holder, token, at)), Some(last)) = (start, last) {
        let id = r.hist.next_id();
        section_id = Some(id);
        r.hist.section(Section {
            id,
            who: Who::Proc { n: spec.n },
            kind: Kind::Proc,
            key: spec.key.clone(),
            holder: holder.clone(),
            given: spec.given.is_some(),
            token: *token,
            ttl: Duration::from_secs_f64(spec.ttl.parse().unwrap_or(1.0)),
            renew_ttl: Duration::from_secs_f64(spec.ttl.parse().unwrap_or(1.0)),
            renew: true,
            called_at: spawned_at,
            acquired_at: *at,
            expires_at_start: None,
            work_end: last,
            final_expires: None,
            lost_at: None,
            lost_flag_at_end: matches!(code, Some(77 | 78)),
            notes: vec![(
                last,
                format!("exit {exit}; {}", err.trim().replace('\n', " | ")),
            )],
            ending: format!("exit {exit}"),
        });
    }
    if spec.once {
        let verdict = match (start.is_some(), end_seen, code) {
            (_, true, c) => super::adapter::once_exit(c, err),
            (true, false, _) => Verdict::Failed,
            (false, _, _) => Verdict::NotRun {
                why: format!("exit {exit}"),
            },
        };
        r.hist.bid(BidRun {
            who: Who::Proc { n: spec.n },
            key: spec.key.clone(),
            returned_at: Instant::now(),
            ran: start.map(|s| (s.3, last.unwrap_or(s.3), end_seen)),
            verdict,
            section: section_id,
        });
    }
}
