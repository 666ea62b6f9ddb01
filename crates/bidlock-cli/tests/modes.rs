//! Every command works the same in every mode (docs/GUARANTEES.md, "What each mode
//! survives"; docs/REDIS.md): over Redlock (`--redis-url` three times or `REDIS_URLS`),
//! Sentinel (`redis+sentinel://`) and a real six-node Redis Cluster on loopback
//! (`redis+cluster://`): run, locks, stats, status, release, cleanup, health, simulate
//! and bench; `health` exits 69 while a shard is down; a URL of the wrong kind exits 2
//! and says which to use.

mod common;

use std::sync::{Arc, Mutex, Weak};

use bidlock_testkit::{RedisCluster, RedisServer};

use common::{json, stderr, stdout, TestCommand};

/// The cluster of this test binary: started by the first test that needs it, stopped
/// when the last one running lets go of it.
fn cluster() -> Arc<RedisCluster> {
    static SHARED: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = shared.upgrade() {
        return c;
    }
    let c = Arc::new(RedisCluster::start());
    *shared = Arc::downgrade(&c);
    c
}

fn on(c: &RedisCluster, args: &[&str]) -> TestCommand {
    TestCommand::with_url(Some(&c.url()), args)
}

/// The CLI works unchanged over Redlock (`--redis-url` three times, or REDIS_URLS) and
/// over Sentinel (`redis+sentinel://`).
#[test]
fn simulate_and_run_over_redlock_and_sentinel() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let mut t = TestCommand::new(&["simulate", "--agents", "12", "--postings", "150", "--json"]);
    for n in &nodes {
        t.cmd.arg("--redis-url").arg(n.url());
    }
    let out = t.assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["bids"], 150);
    assert_eq!(v["duplicates"], 0);
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let mut t = TestCommand::new(&[
        "run",
        "upwork",
        "rl",
        "--",
        "sh",
        "-c",
        "echo $BIDLOCK_FENCE",
    ]);
    t.cmd.env("REDIS_URLS", urls.join(","));
    let out = t.assert_exit_code(0);
    assert!(stdout(&out).trim().parse::<u64>().unwrap() > 0);
    let mut t = TestCommand::new(&["health"]);
    t.cmd.env("REDIS_URLS", urls.join(","));
    let out = t.assert_exit_code(0);
    assert!(stdout(&out).contains("redlock["), "{}", stdout(&out));

    let cluster = bidlock_testkit::SentinelCluster::start();
    let out = TestCommand::with_url(
        Some(&cluster.url()),
        &["simulate", "--agents", "8", "--postings", "100", "--json"],
    )
    .assert_exit_code(0);
    assert_eq!(json(&out)["duplicates"], 0);
    TestCommand::with_url(Some(&cluster.url()), &["run", "upwork", "s1", "--", "true"])
        .assert_exit_code(0);
    let out = TestCommand::with_url(Some(&cluster.url()), &["health"]).assert_exit_code(0);
    assert!(stdout(&out).contains("redis+sentinel://"));
}

#[test]
fn run_locks_status_release_and_cleanup_on_a_cluster() {
    let c = cluster();
    // Locks on postings spread over the masters, each held by a `run` in the background.
    let mut held = Vec::new();
    for i in 0..6 {
        let p = format!("p{i}");
        let h = format!("h{i}");
        let args = [
            "--prefix", "cli", "run", "cm", &p, "--holder", &h, "--ttl", "3", "--", "sleep", "30",
        ];
        let mut t = on(&c, &args);
        t.cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        held.push(t.cmd.spawn().unwrap());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let listed = loop {
        let out = on(&c, &["--prefix", "cli", "locks", "--json"]).assert_exit_code(0);
        let v = json(&out);
        if v["count"] == 6 {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "locks never showed 6: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let masters: std::collections::BTreeSet<u16> = listed["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| c.master_of_key(l["redis_key"].as_str().unwrap()))
        .collect();
    assert!(masters.len() >= 2, "locks on one master only: {listed}");
    // `stats` counts over every master; there is no one fencing counter to show.
    let v = json(&on(&c, &["--prefix", "cli", "stats", "--json"]).assert_exit_code(0));
    assert_eq!(v["locks"], 6, "{v}");
    assert!(v["fence"].is_null(), "{v}");
    let out = on(&c, &["--prefix", "cli", "stats"]).assert_exit_code(0);
    let text = stdout(&out);
    assert!(
        text.contains("fencing token  - (one counter per posting on a cluster)"),
        "{text}"
    );
    let out = on(&c, &["--prefix", "cli", "status", "cm", "p0"]).assert_exit_code(0);
    assert!(
        stdout(&out).contains("cli:{cm:p0}") && stdout(&out).contains("h0"),
        "{}",
        stdout(&out)
    );
    on(
        &c,
        &[
            "--prefix", "cli", "release", "cm", "p1", "--holder", "nobody",
        ],
    )
    .assert_exit_code(1);
    on(&c, &["--prefix", "cli", "release", "cm", "p1", "--force"]).assert_exit_code(0);
    let out = on(&c, &["--prefix", "cli", "cleanup", "--yes", "--json"]).assert_exit_code(0);
    assert_eq!(json(&out)["removed"], 5);
    let out = on(&c, &["--prefix", "cli", "locks"]).assert_exit_code(0);
    assert_eq!(stdout(&out), "no locks held\n");
    // The `run`s learn their locks are gone (at their next renewal at the latest), stop
    // their commands and exit 77.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for mut child in held {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("a `run` did not notice its lock was removed");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(77));
    }
    // `run --once` records completion on the cluster: a second run is refused with 76.
    on(
        &c,
        &[
            "--prefix", "cli", "run", "cm", "once", "--once", "--", "true",
        ],
    )
    .assert_exit_code(0);
    on(
        &c,
        &[
            "--prefix", "cli", "run", "cm", "once", "--once", "--", "true",
        ],
    )
    .assert_exit_code(76);
    let out = on(&c, &["--prefix", "cli", "status", "cm", "once"]).assert_exit_code(1);
    assert!(stdout(&out).contains("done"), "{}", stdout(&out));
}

#[test]
fn health_prints_the_cluster_state_and_its_masters() {
    let c = cluster();
    let out = on(&c, &["health"]).assert_exit_code(0);
    let text = stdout(&out);
    assert!(text.starts_with("ok redis+cluster://127.0.0.1:"), "{text}");
    assert!(text.contains("cluster ok with 3 masters"), "{text}");
    assert!(text.contains("maxmemory-policy noeviction"), "{text}");
    let v = json(&on(&c, &["health", "--json"]).assert_exit_code(0));
    assert_eq!(v["ok"], true);
    assert_eq!(v["cluster_state"], "ok");
    assert_eq!(v["masters"], 3);
}

/// A shard down (a master and its replica killed): `health` exits 69 and says why,
/// whichever node it would have asked, at once and after the survivors mark it failed.
#[test]
fn health_exits_69_while_a_shard_is_down() {
    // A cluster of its own: the shared one stays whole for the other tests.
    let mut c = RedisCluster::start();
    on(&c, &["health"]).assert_exit_code(0);
    let master = c.master_ports()[0];
    for r in c.replicas_of(master) {
        c.kill_node(r);
    }
    c.kill_node(master);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let out = on(&c, &["health", "--json"]).assert_exit_code(69);
        let v = json(&out);
        assert_eq!(v["ok"], false, "{v}");
        // Either the probe read the state, or the ping itself failed with an error.
        let state = v["cluster_state"].as_str().map(str::to_owned);
        assert!(
            state.as_deref().is_some_and(|s| s != "ok") || v["error"].is_string(),
            "{v}"
        );
        seen.insert(state.unwrap_or_else(|| "error".to_owned()));
        if seen.contains("fail") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the survivors never reported fail: {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The message for people names where the cluster is.
    let out = on(&c, &["health"]).assert_exit_code(69);
    assert!(stderr(&out).contains("127.0.0.1:"), "{}", stderr(&out));
}

#[test]
fn simulate_and_bench_run_on_a_cluster() {
    let c = cluster();
    let out = on(
        &c,
        &[
            "simulate",
            "--backend",
            "redis",
            "--agents",
            "12",
            "--postings",
            "120",
            "--json",
        ],
    )
    .assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["bids"], 120);
    assert_eq!(v["duplicates"], 0);
    let out = on(
        &c,
        &["bench", "uncontended", "--workers", "4", "--duration", "1"],
    )
    .assert_exit_code(0);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["backend"], "cluster");
    assert!(v["pairs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    // The raw baseline talks to one server: skipped on a cluster.
    assert!(v.get("raw_pairs_per_sec").is_none(), "{v}");
    let out = on(
        &c,
        &[
            "bench",
            "hot-key",
            "--workers",
            "4",
            "--duration",
            "1",
            "--hold-us",
            "500",
        ],
    )
    .assert_exit_code(0);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["backend"], "cluster");
    assert!(v["cs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn a_url_of_the_wrong_kind_exits_2_and_says_what_to_use() {
    let c = cluster();
    let node = &c.nodes[0];
    let out = TestCommand::with_url(Some(&node.url()), &["locks"]).assert_exit_code(2);
    let err = stderr(&out);
    assert!(err.contains("cluster_enabled:1"), "{err}");
    assert!(
        err.contains(&format!("use redis+cluster://{}", node.addr())),
        "{err}"
    );
    let single = RedisServer::start();
    let url = format!("redis+cluster://127.0.0.1:{}", single.port());
    let out = TestCommand::with_url(Some(&url), &["health"]).assert_exit_code(2);
    let err = stderr(&out);
    assert!(err.contains("not a Redis Cluster node"), "{err}");
    assert!(
        err.contains(&format!("use redis://127.0.0.1:{}", single.port())),
        "{err}"
    );
    // A malformed cluster URL is refused before any connection, naming the forms.
    let out = TestCommand::with_url(Some("redis+cluster://h:1/3"), &["health"]).assert_exit_code(2);
    assert!(stderr(&out).contains("only database 0"), "{}", stderr(&out));
}
