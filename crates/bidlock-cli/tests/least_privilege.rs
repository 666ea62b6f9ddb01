//! Least privilege: every `bidlock` command works under the Redis user of
//! `deploy/redis/bidlock.acl` (the file itself is loaded), on one server (watched by
//! MONITOR: nothing outside the ACL is sent), through Sentinel and on a cluster; `health`
//! names what a user lacks; a user without what locks need is refused, naming it, with
//! exit 69 and nothing changed.

mod common;

use std::collections::BTreeSet;

use bidlock_testkit::acl::{self, assert_unchanged, snapshot, Monitor};
use bidlock_testkit::{RedisCluster, RedisServer, SentinelCluster};
use common::{json, stderr, stdout, TestCommand};

const PASSWORD: &str = "cli-acl-pw";

fn load(rules: &[String], cmd: impl Fn(&[&str])) {
    let args = acl::setuser_args("bidlock", rules, PASSWORD);
    cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn ok(url: &str, args: &[&str]) -> std::process::Output {
    TestCommand::with_url(Some(url), args).assert_exit_code(0)
}

/// Every command, each checked for its answer. `bench` only where it measures Redis
/// alone (`cluster`: false skips the raw baseline, which needs one server).
fn every_command(url: &str, one_server: bool) {
    let run = [
        "run", "lp", "p1", "--once", "--ttl", "2", "--", "sleep", "0.8",
    ];
    ok(url, &run);
    TestCommand::with_url(Some(url), &run).assert_exit_code(76);
    // A lock held in the background by `run`, seen, then released by holder and forced.
    let hold = |holder: &str| {
        let mut t = TestCommand::with_url(
            Some(url),
            &[
                "run", "lp", "held", "--holder", holder, "--ttl", "3", "--", "sleep", "30",
            ],
        );
        t.cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        t.cmd.spawn().expect("spawn run")
    };
    let mut bg = hold("h1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while json(&ok(url, &["locks", "--json"]))["count"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(stdout(&ok(url, &["status", "lp", "held"])).contains("h1"));
    assert!(json(&ok(url, &["stats", "--json"]))
        .to_string()
        .contains("lp"));
    ok(url, &["release", "lp", "held", "--holder", "h1"]);
    let _ = bg.wait();
    let mut bg = hold("h2");
    while json(&ok(url, &["locks", "--json"]))["count"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ok(url, &["release", "lp", "held", "--force"]);
    let _ = bg.wait();
    ok(url, &["cleanup", "--yes"]);
    let h = json(&ok(url, &["health", "--json"]));
    assert_eq!(h["missing_permissions"], serde_json::json!([]), "{h}");
    let sim = [
        "simulate",
        "--backend",
        "redis",
        "--agents",
        "8",
        "--postings",
        "40",
        "--json",
    ];
    assert_eq!(json(&ok(url, &sim))["duplicates"], 0);
    let baseline: &[&str] = if one_server { &[] } else { &["--no-baseline"] };
    for bench in [
        &["bench", "uncontended", "--workers", "2", "--duration", "1"][..],
        &[
            "bench",
            "hot-key",
            "--workers",
            "2",
            "--duration",
            "1",
            "--hold-us",
            "100",
        ],
    ] {
        let args: Vec<&str> = bench.iter().chain(baseline).copied().collect();
        ok(url, &[&["--backend", "redis"][..], &args].concat());
    }
    ok(
        url,
        &["bench", "footprint", "--locks", "50", "--backend", "redis"],
    );
}

#[test]
fn every_command_on_one_server_sends_only_what_the_acl_allows() {
    let s = RedisServer::start();
    load(&acl::bidlock_rules(), |a| {
        let _: String = s.cmd(a);
    });
    let monitor = Monitor::start(s.port());
    every_command(&acl::with_credentials(&s.url(), "bidlock", PASSWORD), true);
    let mut allowed = acl::allowed_commands(&acl::bidlock_rules());
    allowed.extend(["auth".to_owned(), "hello".to_owned()]);
    let seen = monitor.commands();
    let outside: BTreeSet<_> = seen.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "the CLI sent {outside:?}, which the ACL does not allow"
    );
}

#[test]
fn every_command_through_sentinel() {
    let c = SentinelCluster::start();
    for s in &c.servers {
        load(&acl::bidlock_rules(), |a| {
            let _: String = s.cmd(a);
        });
    }
    every_command(&acl::with_credentials(&c.url(), "bidlock", PASSWORD), true);
}

#[test]
fn every_command_on_a_cluster() {
    let c = RedisCluster::start();
    for n in &c.nodes {
        load(&acl::bidlock_rules(), |a| {
            let _: String = n.cmd(a);
        });
    }
    every_command(&acl::with_credentials(&c.url(), "bidlock", PASSWORD), false);
}

/// `health` names what only operator commands need, and the command that needs it fails
/// naming it; a user without what locks need is refused by every command, naming it.
#[test]
fn a_missing_permission_is_named_with_exit_69_and_nothing_changes() {
    let s = RedisServer::start();
    let url = acl::with_credentials(&s.url(), "bidlock", PASSWORD);
    let without = |token: &str| -> Vec<String> {
        acl::bidlock_rules()
            .into_iter()
            .filter(|r| r != token)
            .collect()
    };
    load(&without("+scan"), |a| {
        let _: String = s.cmd(a);
    });
    let out = ok(&url, &["health"]);
    assert!(stderr(&out).contains("command 'scan'"), "{}", stderr(&out));
    let h = json(&ok(&url, &["health", "--json"]));
    assert!(
        h["missing_permissions"].to_string().contains("'scan'"),
        "{h}"
    );
    let out = TestCommand::with_url(Some(&url), &["locks"]).assert_exit_code(69);
    assert!(
        stderr(&out).contains("NOPERM") && stderr(&out).contains("'scan'"),
        "{}",
        stderr(&out)
    );
    load(&without("+zadd"), |a| {
        let _: String = s.cmd(a);
    });
    let _: String = s.cmd(&["SET", "bid_lock:lp:busy", "someone", "PX", "600000"]);
    let before = snapshot(s.port());
    for args in [
        &["run", "lp", "busy", "--wait", "1", "--", "true"][..],
        &["run", "lp", "free", "--", "true"],
        &["health"],
        &["release", "lp", "busy", "--force"],
    ] {
        let out = TestCommand::with_url(Some(&url), args).assert_exit_code(69);
        let err = stderr(&out);
        assert!(
            err.contains("NOPERM") && err.contains("command 'zadd'"),
            "{args:?}: {err}"
        );
    }
    assert_unchanged("commands without zadd", &before, &snapshot(s.port()));
}
