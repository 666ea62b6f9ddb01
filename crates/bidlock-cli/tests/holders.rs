//! Holder processes that die or freeze: `bidlock run` killed with SIGKILL, and paused
//! with SIGSTOP past its ttl while another instance takes over. Every figure reported is
//! measured from the commands' own output (start lines with their fencing token and a
//! wall-clock stamp), and every wait is for a signal (a line printed, a process
//! stopped), not a guess.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bidlock_testkit::process::{all_stopped, signal_with_children, state, Signal};
use bidlock_testkit::RedisServer;

fn bidlock(server: &RedisServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock"));
    for var in bidlock::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C")
        .arg("--redis-url")
        .arg(server.url())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A line a command printed: `WHAT TOKEN WALL_US`.
#[derive(Debug, Clone)]
struct Mark {
    what: String,
    token: u64,
    at_us: u64,
}

fn parse(line: &str) -> Option<Mark> {
    let mut f = line.split_whitespace();
    Some(Mark {
        what: f.next()?.to_owned(),
        token: f.next()?.parse().ok()?,
        at_us: f.next()?.parse().ok()?,
    })
}

/// Prints `WHAT $BIDLOCK_FENCE <wall µs>` (bash's clock, no fork).
fn mark(what: &str) -> String {
    format!("echo {what} $BIDLOCK_FENCE ${{EPOCHREALTIME/./}}")
}

/// Reads the first line of a child's stdout (its command started: it holds the lock).
fn first_line(child: &mut Child, limit: Duration) -> Mark {
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(limit).expect("the command never started");
    parse(&line).unwrap_or_else(|| panic!("unexpected output {line:?}"))
}

/// Sections from time-ordered marks: (holder name, start, end, token). Overlaps: a
/// section starting before an earlier one ended. Token order: a later section's token
/// not above the earlier's. Refused: writes a fencing receiver (keeping the highest
/// token) would refuse. Returns (overlaps, token_order_violations, refused, accepted
/// stale writes).
fn judge(sections: &[(String, u64, u64, u64)], writes: &[Mark]) -> (u64, u64, u64, u64) {
    let mut s = sections.to_vec();
    s.sort_by_key(|x| x.1);
    let mut overlaps = 0;
    let mut order = 0;
    for (i, b) in s.iter().enumerate() {
        for a in &s[..i] {
            overlaps += u64::from(b.1 < a.2);
            order += u64::from(b.3 <= a.3);
        }
    }
    let mut w = writes.to_vec();
    w.sort_by_key(|m| m.at_us);
    let (mut highest, mut refused, mut stale_accepted) = (0, 0, 0);
    for m in &w {
        let newer_started = s.iter().any(|x| x.3 > m.token && x.1 < m.at_us);
        if m.token < highest {
            refused += 1;
        } else if newer_started {
            stale_accepted += 1;
        }
        highest = highest.max(m.token);
    }
    (overlaps, order, refused, stale_accepted)
}

fn report(name: &str, doc: serde_json::Value) {
    bidlock_testkit::write_report(name, &format!("{doc:#}"));
}

/// SIGKILL to a holder and its command; returns once both are gone (the fault took
/// effect).
fn kill_whole(holder: &mut Child) {
    let command = bidlock_testkit::process::children(holder.id());
    signal_with_children(holder.id(), Signal::SIGKILL);
    let status = holder.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while command
        .iter()
        .any(|c| state(*c).is_some_and(|st| st != 'Z'))
    {
        assert!(Instant::now() < deadline, "the command survived SIGKILL");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_holder_killed_with_sigkill_blocks_only_until_its_ttl() {
    let s = RedisServer::start();
    let a_script = format!("{}; exec sleep 30", mark("start"));
    let mut holder = bidlock(
        &s,
        &[
            "run", "upwork", "killed", "--ttl", "1", "--", "bash", "-c", &a_script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let a = first_line(&mut holder, Duration::from_secs(10));
    kill_whole(&mut holder);
    let killed_us = now_us();
    let killed_at = Instant::now();
    let out = bidlock(
        &s,
        &[
            "run",
            "upwork",
            "killed",
            "--wait",
            "10",
            "--",
            "bash",
            "-c",
            &mark("start"),
        ],
    )
    .output()
    .unwrap();
    let recovery = killed_at.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = parse(&String::from_utf8_lossy(&out.stdout)).expect("the second holder's start line");
    let sections = [
        ("A".to_owned(), a.at_us, killed_us, a.token),
        ("B".to_owned(), b.at_us, b.at_us, b.token),
    ];
    let (overlaps, order, _, _) = judge(&sections, &[a.clone(), b.clone()]);
    report(
        "process-sigkill",
        serde_json::json!({
            "fault": "process-sigkill",
            "description": "a `bidlock run --ttl 1` holder killed with SIGKILL; a second `run --wait 10` waits",
            "holders_told": "the killed holder: nothing (dead); the next one acquires when the ttl runs out",
            "outcomes": {
                "sections": 2,
                "recovery_ms": recovery.as_millis() as u64,
                "unsafe_overlaps": overlaps,
                "token_order_violations": order
            }
        }),
    );
    assert_eq!(overlaps, 0, "B started before A was killed: {sections:?}");
    assert_eq!(order, 0, "tokens out of holding order: {sections:?}");
    // The dead holder's lock lasted at most its ttl (1 s) plus a renewal it made.
    assert!(recovery < Duration::from_secs(3), "{recovery:?}");
}

/// Waits until `ledger` holds a line starting with `what`.
fn wait_for_line(ledger: &std::path::Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(what))
    {
        assert!(Instant::now() < deadline, "no {what} line in the ledger");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Freezes a holder and its command (a GC pause, a swapped-out VM) and waits until they
/// are really stopped.
fn freeze(pid: u32) -> Instant {
    signal_with_children(pid, Signal::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !all_stopped(pid) {
        assert!(Instant::now() < deadline, "SIGSTOP did not stop the holder");
        std::thread::sleep(Duration::from_millis(1));
    }
    Instant::now()
}

#[test]
fn a_holder_paused_past_its_ttl_is_told_lost_and_its_late_bid_is_fenced_off() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let l = ledger.display();
    let a_script = format!(
        "{} >> {l}; sleep 2; {} >> {l}",
        mark("A-start"),
        mark("A-late")
    );
    let a_args = [
        "run", "upwork", "paused", "--ttl", "1", "--grace", "1", "--", "bash", "-c", &a_script,
    ];
    let a = bidlock(&s, &a_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready when A's command has written its start line (it holds the lock and works).
    wait_for_line(&ledger, "A-start");
    let paused_at = freeze(a.id());
    let b_script = format!("{} >> {l}", mark("B"));
    let b = bidlock(
        &s,
        &[
            "run", "upwork", "paused", "--wait", "10", "--", "bash", "-c", &b_script,
        ],
    )
    .output()
    .unwrap();
    let takeover = paused_at.elapsed();
    assert_eq!(
        b.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&b.stderr)
    );
    signal_with_children(a.id(), Signal::SIGCONT);
    let out = a.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert!(err.contains("lost"), "{err}");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let marks: Vec<Mark> = text.lines().filter_map(parse).collect();
    let find = |w: &str| marks.iter().find(|m| m.what == w).cloned();
    let (a_start, b_mark) = (find("A-start").unwrap(), find("B").unwrap());
    let a_end = find("A-late").map_or(a_start.at_us, |m| m.at_us);
    let sections = [
        ("A".to_owned(), a_start.at_us, a_end, a_start.token),
        ("B".to_owned(), b_mark.at_us, b_mark.at_us, b_mark.token),
    ];
    let (overlaps, order, refused, accepted) = judge(&sections, &marks);
    report(
        "process-sigstop",
        serde_json::json!({
            "fault": "process-sigstop",
            "description": "a `bidlock run --ttl 1` holder and its command frozen with SIGSTOP; another instance takes over; then SIGCONT",
            "holders_told": "the frozen holder: lost on resume (exit 77, its command got SIGTERM); the new holder's token is higher",
            "outcomes": {
                "sections": 2,
                "recovery_ms": takeover.as_millis() as u64,
                "overlapping_sections": overlaps,
                "late_writes_refused": refused,
                "unsafe_overlaps": accepted,
                "token_order_violations": order
            }
        }),
    );
    assert_eq!(order, 0, "{text}");
    // A was stopped (SIGTERM on resume) before its late write, or the write was refused.
    assert_eq!(accepted, 0, "a stale write would be accepted: {text}");
}

type Sections = std::collections::HashMap<(String, u64), (u128, Option<u128>)>;

/// Six drivers, each running `bidlock run --once` over every posting in turn.
fn once_drivers(
    url: &str,
    script: &str,
    postings: usize,
    exits: &std::sync::Arc<std::sync::Mutex<Vec<(String, i32)>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..6)
        .map(|w| {
            let (url, script, exits) = (url.to_owned(), script.to_owned(), exits.clone());
            std::thread::spawn(move || {
                for i in 0..postings {
                    let p = format!("p{}", (i + w * 3) % postings);
                    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock"));
                    for var in bidlock::ENV_VARS {
                        cmd.env_remove(var);
                    }
                    let args = [
                        "--redis-url",
                        &url,
                        "run",
                        "upwork",
                        &p,
                        "--once",
                        "--wait",
                        "5",
                        "--ttl",
                        "1",
                        "--",
                        "sh",
                        "-c",
                        &script,
                    ];
                    let out = cmd.args(args).stdin(Stdio::null()).output().unwrap();
                    exits
                        .lock()
                        .unwrap()
                        .push((p, out.status.code().unwrap_or(-1)));
                }
            })
        })
        .collect()
}

fn starts(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start "))
        .count()
}

/// Waits until the commands have started `n` sections in all (the work is under way,
/// so the next fault lands on it).
fn wait_starts(log: &std::path::Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while starts(log) < n {
        assert!(
            Instant::now() < deadline,
            "only {} sections started",
            starts(log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn parse_sections(text: &str) -> Sections {
    let mut sections = Sections::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (posting, fence, at) = (
            f[1].to_owned(),
            f[2].parse::<u64>().unwrap(),
            f[3].parse::<u128>().unwrap(),
        );
        let e = sections.entry((posting, fence)).or_insert((at, None));
        if f[0] == "end" {
            e.1 = Some(at);
        }
    }
    sections
}

/// Per posting: (overlaps, token order violations, handled at all, handled twice, runs
/// twice not preceded by a run that reported its completion unrecorded).
fn judge_once(sections: &Sections, exits: &[(String, i32)], postings: usize) -> [u64; 5] {
    let mut by_posting: std::collections::HashMap<String, Vec<(u64, u128, Option<u128>)>> =
        Default::default();
    for ((p, fence), (s, e)) in sections {
        by_posting
            .entry(p.clone())
            .or_default()
            .push((*fence, *s, *e));
    }
    let mut f = [0u64; 5];
    for i in 0..postings {
        let p = format!("p{i}");
        let mut runs = by_posting.get(&p).cloned().unwrap_or_default();
        runs.sort_by_key(|r| r.1);
        f[2] += u64::from(!runs.is_empty());
        for w in runs.windows(2) {
            f[0] += u64::from(w[0].2.is_none_or(|end| end > w[1].1));
            f[1] += u64::from(w[1].0 <= w[0].0);
        }
        if runs.len() > 1 {
            f[3] += 1;
            let failed = exits
                .iter()
                .filter(|(q, c)| *q == p && ![0, 75, 76].contains(c))
                .count();
            f[4] += u64::from(failed < runs.len() - 1);
        }
    }
    f
}

/// Many `bidlock run --once` processes race over a set of postings while connections are
/// dropped and Redis (AOF) restarts, each fault once the commands are demonstrably
/// running. Checked: every posting handled; no two sections on a posting overlap; tokens
/// increase in holding order; a posting handled twice only when the earlier run said
/// (non-zero exit) that its completion was not recorded.
#[test]
fn once_processes_under_faults_tell_the_truth() {
    let mut server = RedisServer::start_with(bidlock_testkit::ServerOptions {
        aof: true,
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(bidlock_testkit::FaultProxy::start(server.port()));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sections.log");
    let postings = 20;
    let script = format!(
        "echo start $BIDLOCK_POSTING $BIDLOCK_FENCE $(date +%s%N) >> {0}; sleep 0.03; echo end $BIDLOCK_POSTING $BIDLOCK_FENCE $(date +%s%N) >> {0}",
        log.display()
    );
    let exits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers = once_drivers(&proxy.url(), &script, postings, &exits);
    wait_starts(&log, 2);
    let mut dropped = proxy.drop_connections();
    wait_starts(&log, starts(&log) + 2);
    server.kill();
    let down = std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err();
    server.restart();
    wait_starts(&log, starts(&log) + 2);
    dropped += proxy.drop_connections();
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        down,
        "redis-server still accepted connections after SIGKILL"
    );
    assert!(dropped > 0, "the proxy had no connection to drop");
    let sections = parse_sections(&std::fs::read_to_string(&log).unwrap_or_default());
    let exits = exits.lock().unwrap().clone();
    let [overlaps, order, handled, twice, untold] = judge_once(&sections, &exits, postings);
    let count = |c: i32| exits.iter().filter(|(_, x)| *x == c).count();
    report(
        "process-once-faults",
        serde_json::json!({
            "fault": "process-once-faults",
            "description": "6 drivers run `bidlock run --once` over 20 postings (120 processes) through a proxy that drops all connections twice, while Redis (AOF always) restarts",
            "holders_told": "exit 0 done, 76 already done, 75 not acquired in time, 69 Redis unreachable, 77 lock lost (not recorded), 78 recorded after the lock was lost, 79 not recorded; a posting ran twice only after a run reported that its completion was not recorded",
            "outcomes": {
                "sections": sections.len(),
                "postings_handled": handled,
                "postings_handled_twice": twice,
                "postings_twice_untold": untold,
                "connections_dropped": dropped,
                "exit_0": count(0), "exit_76": count(76), "exit_75": count(75), "exit_69": count(69), "exit_77": count(77), "exit_78": count(78), "exit_79": count(79),
                "unsafe_overlaps": overlaps, "token_order_violations": order
            }
        }),
    );
    assert_eq!(
        handled, postings as u64,
        "postings never handled; exits {exits:?}"
    );
    assert_eq!(overlaps, 0, "sections overlap: {sections:?}");
    assert_eq!(order, 0, "tokens out of order: {sections:?}");
    assert_eq!(
        untold, 0,
        "a posting ran twice without a run reporting a failure: {exits:?}"
    );
}
