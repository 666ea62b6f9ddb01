//! The agent as a service, against real redis-server processes: a stop signal drains
//! and releases, /metrics is valid Prometheus text, /ready follows Redis while /live
//! does not, and the command line behaves as clap promises.

mod support;

use std::time::{Duration, Instant};

use bidlock_testkit::{RedisServer, ServerOptions};
use nix::sys::signal::Signal;
use support::{command, promtool_available, promtool_check_metrics, sample, scan, Agent, PATIENCE};

/// SIGTERM while bids hold locks: exit 0 within 5 s, every running bid finished and
/// recorded, no lock left in Redis.
#[test]
fn sigterm_drains_bids_releases_locks_and_exits_0_within_5s() {
    let server = RedisServer::start();
    // Slow bids (300 ms at the marketplace) so that locks are surely held at the signal.
    let mut agent = Agent::start(
        Some(&server.url()),
        &[
            "--instances",
            "2",
            "--tasks",
            "3",
            "--rate",
            "50",
            "--bid-latency-ms",
            "300",
            "--json",
        ],
    );
    let deadline = Instant::now() + PATIENCE;
    while scan(&server, "bid_lock:*").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no lock was ever taken\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM\n{}", agent.stderr()));
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert_eq!(
        scan(&server, "bid_lock:*"),
        Vec::<String>::new(),
        "locks left behind"
    );

    let lines = agent.stdout_lines();
    let summary: serde_json::Value = serde_json::from_str(lines.last().expect("a summary line"))
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {lines:?}"));
    let accepted = summary["marketplace"]["accepted"].as_u64().unwrap();
    assert!(accepted > 0, "{summary}");
    assert_eq!(summary["marketplace"]["duplicates"], 0);
    // A bid under way at the signal was seen through: each bid the marketplace took has
    // its completion record.
    let records = scan(&server, "bid_done:fakemarket:*").len() as u64;
    assert_eq!(records, accepted, "{summary}");
    eprintln!("stopped {took:?} after SIGTERM: {summary}");
}

/// /metrics passes promtool and counts real work; /ready is 200 with Redis up and 503
/// while it is down (also before the first connection), and /live stays 200 throughout.
#[test]
fn metrics_are_valid_and_readiness_follows_redis_but_liveness_does_not() {
    // With AOF, a restart keeps locks and completion records: the outage must not cause a
    // duplicate bid (without persistence it may, as the README's guarantees say).
    let mut server = RedisServer::start_with(ServerOptions {
        aof: true,
        ..ServerOptions::default()
    });
    let url = server.url();
    server.kill(); // the agent starts before its Redis, as a pod may
    assert!(!server.is_running());
    let mut agent = Agent::start(Some(&url), &["--instances", "2", "--rate", "200"]);
    let (code, body) = agent.get("/ready");
    assert_eq!(code, 503, "{body}");
    assert_eq!(agent.get("/live").0, 200);

    server.restart();
    agent.wait_for("/ready", 200);
    let deadline = Instant::now() + PATIENCE;
    let page = loop {
        let (code, page) = agent.get("/metrics");
        assert_eq!(code, 200);
        let done = sample(
            &page,
            "bidlock_completions_total{backend=\"redis\",agent=\"1\"}",
        );
        if done.is_some_and(|n| n > 0.0) {
            break page;
        }
        assert!(Instant::now() < deadline, "no completions yet:\n{page}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(sample(&page, "bidlock_agent_bids_total{outcome=\"placed\"}").unwrap() > 0.0);
    assert_eq!(
        sample(&page, "bidlock_agent_duplicate_bids_total"),
        Some(0.0)
    );
    if promtool_available() {
        promtool_check_metrics(&page);
    }

    server.kill();
    assert!(!server.is_running());
    let body = agent.wait_for("/ready", 503);
    assert!(body.contains("not ready"), "{body}");
    assert_eq!(
        agent.get("/live").0,
        200,
        "liveness must not depend on Redis"
    );
    assert_eq!(agent.get("/metrics").0, 200);

    server.restart();
    agent.wait_for("/ready", 200);
    agent.signal(Signal::SIGINT);
    let status = agent.wait_exit(PATIENCE).expect("exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
}

/// A stop before the backend ever answered is still a clean stop; a bounded run that
/// never reached its backend says so with 69.
#[test]
fn stopping_while_redis_never_came_up() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.kill();
    let mut agent = Agent::start(Some(&url), &[]);
    let body = agent.wait_for("/ready", 503);
    assert!(body.contains("connecting"), "{body}");
    agent.signal(Signal::SIGTERM);
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());

    let out = command(Some(&url))
        .args(["--seconds", "1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("never answered"));
}

/// A bounded run on in-memory locks (the default without Redis): several instances,
/// no duplicate, exit 0.
#[test]
fn bounded_run_on_memory_has_no_duplicates() {
    let out = command(None)
        .args([
            "--instances",
            "3",
            "--tasks",
            "4",
            "--seconds",
            "1",
            "--rate",
            "500",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["backend"], "memory");
    assert!(
        summary["marketplace"]["accepted"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["marketplace"]["duplicates"], 0);
}

#[test]
fn help_exits_0_and_bad_flags_exit_2() {
    let out = command(None).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--instances",
        "--tasks",
        "--seconds",
        "--metrics-addr",
        "--grace",
        "--rate",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for bad in [
        &["--no-such-flag"][..],
        &["--instances", "0"],
        &["--grace", "soon"],
        &["--metrics-addr", "9464"],
        &["--seconds"],
    ] {
        let out = command(None).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty(), "{bad:?} printed no reason");
    }
    // A malformed environment is bad input too, named in the message.
    let out = command(None)
        .env("BID_LOCK_TTL", "soon")
        .arg("--seconds")
        .arg("1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BID_LOCK_TTL"));
}
