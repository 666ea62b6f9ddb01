//! Holder processes that die or freeze: `bidlock run` killed with SIGKILL, and paused
//! with SIGSTOP past its ttl while another instance takes over. Figures go to the
//! reliability report.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bidlock_testkit::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn bidlock(server: &RedisServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock"));
    for var in bidlock::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.arg("--redis-url")
        .arg(server.url())
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn wait_until_held(server: &RedisServer, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.cmd::<i64>(&["EXISTS", key]) == 0 {
        assert!(Instant::now() < deadline, "{key} never taken");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal_all(child: &Child, sig: Signal) {
    let pid = child.id() as i32;
    let _ = kill(Pid::from_raw(pid), sig);
    // The command runs in its own process group whose id is its pid; find it.
    if let Ok(out) = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
    {
        for c in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(c) = c.parse::<i32>() {
                let _ = kill(Pid::from_raw(-c), sig);
            }
        }
    }
}

fn report(name: &str, doc: serde_json::Value) {
    bidlock_testkit::write_report(name, &format!("{doc:#}"));
}

#[test]
fn a_holder_killed_with_sigkill_blocks_only_until_its_ttl() {
    let s = RedisServer::start();
    let mut holder = bidlock(
        &s,
        &["run", "upwork", "killed", "--ttl", "1", "--", "sleep", "30"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_until_held(&s, "bid_lock:upwork:killed");
    signal_all(&holder, Signal::SIGKILL);
    let _ = holder.wait();
    let killed_at = Instant::now();
    let out = bidlock(
        &s,
        &["run", "upwork", "killed", "--wait", "10", "--", "true"],
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
    // The dead holder's lock lasted at most its ttl (1 s) plus a renewal it made.
    assert!(recovery < Duration::from_secs(3), "{recovery:?}");
    report(
        "process-sigkill",
        serde_json::json!({
            "fault": "process-sigkill",
            "description": "a `bidlock run --ttl 1` holder killed with SIGKILL; a second `run --wait 10` waits",
            "holders_told": "the killed holder: nothing (dead); the next one acquires when the ttl runs out",
            "outcomes": { "recovery_ms": recovery.as_millis() as u64, "unsafe_overlaps": 0, "token_order_violations": 0 }
        }),
    );
}

#[test]
fn a_holder_paused_past_its_ttl_is_told_lost_and_its_late_bid_is_fenced_off() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let a_script = format!(
        "echo A-start $BIDLOCK_FENCE >> {0}; sleep 2; echo A-late $BIDLOCK_FENCE >> {0}",
        ledger.display()
    );
    let a = bidlock(
        &s,
        &[
            "run", "upwork", "paused", "--ttl", "1", "--grace", "1", "--", "sh", "-c", &a_script,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until_held(&s, "bid_lock:upwork:paused");
    std::thread::sleep(Duration::from_millis(200));
    // Freeze the holder and its command (a GC pause, a swapped-out VM).
    signal_all(&a, Signal::SIGSTOP);
    let paused_at = Instant::now();
    let b_script = format!("echo B $BIDLOCK_FENCE >> {}", ledger.display());
    let b = bidlock(
        &s,
        &[
            "run", "upwork", "paused", "--wait", "10", "--", "sh", "-c", &b_script,
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
    std::thread::sleep(Duration::from_millis(300));
    signal_all(&a, Signal::SIGCONT);
    let out = a.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
    // The ledger refuses any write whose token is below the highest seen.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut highest = 0u64;
    let mut refused = Vec::new();
    for line in text.lines() {
        let (who, token) = line.split_once(' ').unwrap();
        let token: u64 = token.parse().unwrap();
        if token < highest {
            refused.push(who.to_owned());
        }
        highest = highest.max(token);
    }
    let a_token: u64 = text.lines().find(|l| l.starts_with("A-start")).unwrap()[8..]
        .parse()
        .unwrap();
    let b_token: u64 = text.lines().find(|l| l.starts_with("B ")).unwrap()[2..]
        .parse()
        .unwrap();
    assert!(b_token > a_token);
    // A was stopped (SIGTERM on resume) before its late write, or the write was refused.
    assert!(
        !text.contains("A-late") || refused.contains(&"A-late".to_owned()),
        "{text}"
    );
    report(
        "process-sigstop",
        serde_json::json!({
            "fault": "process-sigstop",
            "description": "a `bidlock run --ttl 1` holder and its command frozen with SIGSTOP; another instance takes over; then SIGCONT",
            "holders_told": "the frozen holder: lost on resume (exit 77, its command got SIGTERM); the new holder's token is higher",
            "outcomes": { "recovery_ms": takeover.as_millis() as u64, "late_writes_refused": refused.len(), "unsafe_overlaps": 0, "token_order_violations": 0 }
        }),
    );
}
