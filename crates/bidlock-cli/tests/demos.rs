//! Demos never use a Redis they merely find, and leave nothing behind (docs/CLI.md):
//! `simulate` (and `metrics`, `bench`) run on memory unless Redis is configured or asked
//! for, even with a Redis answering at the default address; `simulate --backend redis`
//! deletes its completion records unless `--keep`; `--backend auto` help promises only
//! what each command does. `health_metrics_simulate_completions` runs the commands a new
//! user tries first.

mod common;

use std::process::Command;

use bidlock_testkit::RedisServer;

use common::{json, netns, stderr, stdout, TestCommand};

/// `bidlock simulate` with nothing configured: no REDIS_* at all.
fn bare_simulate(extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock"));
    for var in bidlock::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("RUST_LOG")
        .args(["simulate", "--agents", "2", "--postings", "20", "--json"])
        .args(extra);
    cmd
}

/// Every key of `pattern`, by SCAN.
fn scan(s: &RedisServer, pattern: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = s.cmd(&[
            "SCAN",
            &cursor.to_string(),
            "MATCH",
            pattern,
            "COUNT",
            "1000",
        ]);
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

#[test]
fn simulate_with_nothing_configured_runs_on_memory() {
    for extra in [&[][..], &["--backend", "auto"]] {
        let out = bare_simulate(extra).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(json(&out)["backend"], "memory", "{extra:?}");
    }
}

/// The rule tested where it matters: a real Redis answers at the default address, and
/// `simulate` still does not write into it unless Redis is asked for.
#[test]
fn simulate_never_writes_into_a_redis_it_merely_finds() {
    if !netns::available() {
        eprintln!("skipped: this machine cannot make a network namespace (unshare -rn)");
        return;
    }
    for extra in [&[][..], &["--backend", "auto"]] {
        let (out, keys) = netns::beside_redis_at_the_default_address(&bare_simulate(extra));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(json(&out)["backend"], "memory", "{extra:?}");
        assert_eq!(keys, 0, "{extra:?}: simulate wrote into the Redis it found");
    }
    // The control: asked for Redis, it uses the very same server (so the test could see
    // a write if the rule failed).
    let (out, keys) = netns::beside_redis_at_the_default_address(&bare_simulate(&[
        "--backend",
        "redis",
        "--keep",
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json(&out)["backend"], "redis");
    assert!(keys > 0, "the control run wrote nothing");
}

#[test]
fn backend_help_promises_only_what_each_command_does() {
    for command in [
        "run", "locks", "status", "release", "cleanup", "stats", "health", "simulate",
    ] {
        let out = TestCommand::new(&[command, "--help"]).assert_exit_code(0);
        let help = stdout(&out);
        assert!(!help.contains("Redis if reachable"), "{command}: {help}");
        assert!(
            help.contains("auto means redis (exit 69 when it cannot be reached)"),
            "{command}: {help}"
        );
        assert!(
            help.contains("use Redis only when one is configured"),
            "{command}: {help}"
        );
    }
}

#[test]
fn simulate_on_redis_deletes_its_completion_records_unless_kept() {
    let s = RedisServer::start();
    let count = |pattern: &str| scan(&s, pattern).len();
    let out = TestCommand::on(&s, &["simulate", "--agents", "4", "--postings", "120"])
        .assert_exit_code(0);
    let text = stdout(&out);
    assert!(
        text.contains("completion records    120 deleted (bid_done:simulate:"),
        "{text}"
    );
    assert_eq!(count("bid_done:simulate:*"), 0);

    let out = TestCommand::on(
        &s,
        &[
            "simulate",
            "--agents",
            "4",
            "--postings",
            "80",
            "--keep",
            "--json",
        ],
    )
    .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["records"]["fate"], "kept");
    let pattern = v["records"]["pattern"].as_str().unwrap();
    assert!(pattern.starts_with("bid_done:simulate:"), "{pattern}");
    assert_eq!(count(pattern), 80);
    let kept = scan(&s, pattern).pop().unwrap();
    assert!(
        s.cmd::<i64>(&["PTTL", &kept]) > 500_000,
        "kept for 10 minutes"
    );

    // Another prefix keeps its records elsewhere; they are found and deleted there.
    let out = TestCommand::on(
        &s,
        &[
            "--prefix",
            "staging",
            "simulate",
            "--agents",
            "4",
            "--postings",
            "50",
            "--json",
        ],
    )
    .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["records"]["fate"], "deleted");
    assert_eq!(v["records"]["deleted"], 50);
    assert!(v["records"]["pattern"]
        .as_str()
        .unwrap()
        .starts_with("staging_done:simulate:"));
    assert_eq!(count("staging_done:*"), 0);
    assert_eq!(count(pattern), 80, "the kept run's records are not touched");
}

#[test]
fn health_metrics_simulate_completions() {
    let s = RedisServer::start();
    let out = TestCommand::on(&s, &["health"]).assert_exit_code(0);
    assert!(stdout(&out).starts_with("ok redis://127.0.0.1:"));
    let out = TestCommand::on(&s, &["health", "--json"]).assert_exit_code(0);
    assert_eq!(json(&out)["ok"], true);

    let out = TestCommand::on(&s, &["metrics", "--json"]).assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["backend"], "redis");
    assert_eq!(v["metrics"]["lock_successes"], 8);
    assert_eq!(v["metrics"]["lock_conflicts"], 8);
    assert_eq!(v["metrics"]["completions"], 4);
    let out = TestCommand::on(&s, &["metrics", "--format", "prometheus"]).assert_exit_code(0);
    assert!(stdout(&out).contains("# TYPE bidlock_lock_attempts_total counter"));
    assert!(stdout(&out).contains("bidlock_lock_attempts_total{backend=\"redis\"} 16"));
    let leftover: Vec<String> = s.cmd(&["KEYS", "bid_*:bidlock-selfcheck:*"]);
    assert!(leftover.is_empty(), "{leftover:?}");

    let out = TestCommand::new(&["simulate", "--agents", "8", "--postings", "300", "--json"])
        .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["backend"], "memory");
    assert_eq!(v["bids"], 300);
    assert_eq!(v["duplicates"], 0);
    let out = TestCommand::on(
        &s,
        &["simulate", "--agents", "16", "--postings", "200", "--json"],
    )
    .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["backend"], "redis");
    assert_eq!(v["bids"], 200);
    assert_eq!(v["duplicates"], 0);

    let out = TestCommand::new(&["completions", "bash"]).assert_exit_code(0);
    assert!(stdout(&out).contains("bidlock"));
    let out = TestCommand::new(&["run", "--help"]).assert_exit_code(0);
    assert!(stdout(&out).contains("bidlock run upwork job_123 --wait 0 -- ./place_bid.sh"));
}
