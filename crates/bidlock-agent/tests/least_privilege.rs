//! The agent under the Redis user of `deploy/redis/bidlock.acl` (the file itself is
//! loaded): it bids, records, serves /metrics and /ready, and stops cleanly, on one server,
//! through Sentinel and on a cluster. Under a user without what locks need it stays
//! unready, names the missing permission in its log, and writes nothing.

mod support;

use std::time::{Duration, Instant};

use bidlock_testkit::acl::{self, assert_unchanged, snapshot};
use bidlock_testkit::{RedisCluster, RedisServer, SentinelCluster};
use support::{sample, Agent, PATIENCE};

const PASSWORD: &str = "agent-acl-pw";

fn load(rules: &[String], cmd: impl Fn(&[&str])) {
    let args = acl::setuser_args("bidlock", rules, PASSWORD);
    cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Runs the agent for a few seconds against `url`: ready, bidding, then a clean stop with
/// no duplicate.
fn bids_under_the_acl(url: &str) {
    let mut agent = Agent::start(
        Some(url),
        &[
            "--instances",
            "2",
            "--tasks",
            "3",
            "--rate",
            "50",
            "--seconds",
            "4",
            "--json",
        ],
    );
    agent.wait_for("/ready", 200);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, page) = agent.get("/metrics");
        let placed = sample(&page, "bidlock_agent_bids_total{outcome=\"placed\"}").unwrap_or(0.0);
        if placed > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no bid placed\n{page}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = agent
        .wait_exit(PATIENCE)
        .expect("the agent stops after --seconds");
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert!(!agent.stderr().contains("NOPERM"), "{}", agent.stderr());
    let lines = agent.stdout_lines();
    let summary: serde_json::Value =
        serde_json::from_str(lines.last().expect("a summary")).expect("JSON summary");
    assert_eq!(summary["marketplace"]["duplicates"], 0, "{summary}");
    assert!(
        summary["marketplace"]["accepted"].as_u64() > Some(0),
        "{summary}"
    );
}

#[test]
fn one_server() {
    let s = RedisServer::start();
    load(&acl::bidlock_rules(), |a| {
        let _: String = s.cmd(a);
    });
    bids_under_the_acl(&acl::with_credentials(&s.url(), "bidlock", PASSWORD));
}

#[test]
fn sentinel() {
    let c = SentinelCluster::start();
    for s in &c.servers {
        load(&acl::bidlock_rules(), |a| {
            let _: String = s.cmd(a);
        });
    }
    bids_under_the_acl(&acl::with_credentials(&c.url(), "bidlock", PASSWORD));
}

#[test]
fn cluster() {
    let c = RedisCluster::start();
    for n in &c.nodes {
        load(&acl::bidlock_rules(), |a| {
            let _: String = n.cmd(a);
        });
    }
    bids_under_the_acl(&acl::with_credentials(&c.url(), "bidlock", PASSWORD));
}

#[test]
fn a_user_without_what_locks_need_keeps_the_agent_unready_and_named() {
    let s = RedisServer::start();
    let rules: Vec<String> = acl::bidlock_rules()
        .into_iter()
        .filter(|r| r != "+hset")
        .collect();
    load(&rules, |a| {
        let _: String = s.cmd(a);
    });
    let before = snapshot(s.port());
    let agent = Agent::start(
        Some(&acl::with_credentials(&s.url(), "bidlock", PASSWORD)),
        &["--rate", "50"],
    );
    let deadline = Instant::now() + PATIENCE;
    while !agent.stderr().contains("command 'hset'") {
        assert!(
            Instant::now() < deadline,
            "the log never named hset\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stderr().contains("NOPERM"), "{}", agent.stderr());
    let (code, body) = agent.get("/ready");
    assert_eq!(code, 503, "{body}");
    assert_eq!(agent.get("/live").0, 200);
    drop(agent);
    assert_unchanged("an agent without hset", &before, &snapshot(s.port()));
}
