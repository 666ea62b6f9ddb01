//! Drives the built `bidlock` binary as a user would, against real redis-server
//! processes, checking output, Redis state and exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bidlock_testkit::{dead_port, RedisServer};
use common::{json, stderr, stdout, TestCommand};

#[test]
fn twelve_concurrent_runs_on_one_key_never_overlap() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sections.log");
    let script = format!(
        "echo start $(date +%s%N) $BIDLOCK_FENCE >> {0}; sleep 0.05; echo end $(date +%s%N) >> {0}",
        log.display()
    );
    let children: Vec<_> = (0..12)
        .map(|_| {
            let mut t = TestCommand::on(
                &s,
                &[
                    "run", "upwork", "job_hot", "--wait", "60", "--", "sh", "-c", &script,
                ],
            );
            t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
            t.cmd.spawn().unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 24, "{text}");
    let mut last_end = 0u128;
    let mut last_fence = 0u64;
    for pair in lines.chunks(2) {
        assert_eq!(pair[0][0], "start", "sections interleave:\n{text}");
        assert_eq!(pair[1][0], "end", "sections interleave:\n{text}");
        let (start, end): (u128, u128) = (pair[0][1].parse().unwrap(), pair[1][1].parse().unwrap());
        assert!(start >= last_end, "overlap:\n{text}");
        let fence: u64 = pair[0][2].parse().unwrap();
        assert!(fence > last_fence, "fencing tokens must increase:\n{text}");
        last_end = end;
        last_fence = fence;
    }
}

#[test]
fn run_passes_env_and_returns_the_command_code() {
    let s = RedisServer::start();
    let out = TestCommand::on(
        &s,
        &["run", "upwork", "job_1", "--holder", "cron-1", "--", "sh", "-c", "echo $BIDLOCK_KEY $BIDLOCK_HOLDER $BIDLOCK_FENCE $BIDLOCK_MARKETPLACE $BIDLOCK_POSTING; exit 3"],
    )
    .assert_exit_code(3);
    let fields: Vec<String> = stdout(&out).split_whitespace().map(str::to_owned).collect();
    assert_eq!(fields[0], "bid_lock:upwork:job_1");
    assert_eq!(fields[1], "cron-1");
    let fence: u64 = fields[2].parse().unwrap();
    assert!(fence > 0);
    assert_eq!(&fields[3..], ["upwork", "job_1"]);
    // Released after the command.
    let exists: i64 = s.cmd(&["EXISTS", "bid_lock:upwork:job_1"]);
    assert_eq!(exists, 0);
}

#[test]
fn a_lock_held_elsewhere_gives_75() {
    let s = RedisServer::start();
    let _: () = s.cmd(&[
        "SET",
        "bid_lock:upwork:busy",
        "python-instance",
        "PX",
        "30000",
    ]);
    let start = Instant::now();
    let out = TestCommand::on(&s, &["run", "upwork", "busy", "--wait", "0", "--", "true"])
        .assert_exit_code(75);
    assert!(stderr(&out).contains("python-instance"), "{}", stderr(&out));
    let out = TestCommand::on(
        &s,
        &["run", "upwork", "busy", "--wait", "0.5", "--", "true"],
    )
    .assert_exit_code(75);
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(stderr(&out).contains("not acquired"));
    // The foreign lock is untouched.
    let v: String = s.cmd(&["GET", "bid_lock:upwork:busy"]);
    assert_eq!(v, "python-instance");
}

#[test]
fn once_records_completion_only_on_success_and_then_gives_76() {
    let s = RedisServer::start();
    TestCommand::on(&s, &["run", "upwork", "j9", "--once", "--", "false"]).assert_exit_code(1);
    let done: i64 = s.cmd(&["EXISTS", "bid_done:upwork:j9"]);
    assert_eq!(done, 0, "a failed command records nothing");
    TestCommand::on(&s, &["run", "upwork", "j9", "--once", "--", "true"]).assert_exit_code(0);
    let done: i64 = s.cmd(&["EXISTS", "bid_done:upwork:j9"]);
    assert_eq!(done, 1);
    let ttl: i64 = s.cmd(&["TTL", "bid_done:upwork:j9"]);
    assert!(ttl > 6 * 24 * 3600, "retention 7 days, got {ttl}");
    let out = TestCommand::on(
        &s,
        &[
            "run",
            "upwork",
            "j9",
            "--once",
            "--",
            "touch",
            "/must-not-run",
        ],
    )
    .assert_exit_code(76);
    assert!(stderr(&out).contains("already handled"));
    assert!(!Path::new("/must-not-run").exists());
    // Without --once the completion record does not block.
    TestCommand::on(&s, &["run", "upwork", "j9", "--", "true"]).assert_exit_code(0);
}

#[test]
fn a_lock_lost_while_running_gives_77_and_stops_the_command() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("term");
    // The background sleep is in the command's process group: it is stopped too, so the
    // pipes close and the test does not wait 30 s.
    let script = format!(
        "trap 'echo TERM > {}; exit 0' TERM; sleep 30 & wait",
        marker.display()
    );
    let mut t = TestCommand::on(
        &s,
        &[
            "run", "upwork", "lost", "--ttl", "0.6", "--grace", "5", "--", "sh", "-c", &script,
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = t.cmd.spawn().unwrap();
    // Wait until the lock is held, then delete it behind the holder's back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:lost"]) == 0 {
        assert!(Instant::now() < deadline, "lock never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let _: i64 = s.cmd(&["DEL", "bid_lock:upwork:lost"]);
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "TERM");
}

#[test]
fn a_command_ignoring_sigterm_is_killed_after_the_grace_period() {
    let s = RedisServer::start();
    let mut t = TestCommand::on(
        &s,
        &[
            "run",
            "upwork",
            "stubborn",
            "--ttl",
            "0.6",
            "--grace",
            "0.5",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 30",
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = t.cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:stubborn"]) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let _: () = s.cmd(&["SET", "bid_lock:upwork:stubborn", "thief", "PX", "60000"]);
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(77));
    assert!(start.elapsed() < Duration::from_secs(10));
    let v: String = s.cmd(&["GET", "bid_lock:upwork:stubborn"]);
    assert_eq!(v, "thief", "the thief's lock is not released by the loser");
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("got");
    let script = format!(
        "trap 'echo INT > {}; exit 5' INT; sleep 30 & wait",
        marker.display()
    );
    let mut t = TestCommand::on(&s, &["run", "upwork", "sig", "--", "sh", "-c", &script]);
    t.cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = t.cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:sig"]) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "INT");
    let exists: i64 = s.cmd(&["EXISTS", "bid_lock:upwork:sig"]);
    assert_eq!(exists, 0, "released after the command ended");
}

#[test]
fn bad_input_exits_2_and_touches_nothing() {
    let s = RedisServer::start();
    let cases: &[&[&str]] = &[
        &["run", "up:work", "j", "--", "true"],
        &["run", "upwork", "", "--", "true"],
        &["run", "upwork", "j", "--wait", "-1", "--", "true"],
        &["run", "upwork", "j", "--wait", "soon", "--", "true"],
        &["run", "upwork", "j", "--ttl", "0", "--", "true"],
        &["run", "upwork", "j"],
        &["run", "upwork", "j", "--bogus", "--", "true"],
        &["status", "bad marketplace", "j"],
        &["release", "upwork", "j"],
        &["release", "upwork", "j", "--holder", "h", "--force"],
        &["cleanup"],
        &["locks", "--marketplace", "a*"],
        &["frobnicate"],
        &["--prefix", "bad:prefix", "locks"],
    ];
    let _: () = s.cmd(&["SET", "bid_lock:upwork:j", "keeper", "PX", "60000"]);
    for args in cases {
        let out = TestCommand::on(&s, args).assert_exit_code(2);
        let err = stderr(&out);
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let v: String = s.cmd(&["GET", "bid_lock:upwork:j"]);
    assert_eq!(v, "keeper");
    let keys: Vec<String> = s.cmd(&["KEYS", "*"]);
    assert_eq!(keys, vec!["bid_lock:upwork:j".to_owned()]);
    // Malformed environment: the variable is named.
    let mut t = TestCommand::new(&["health"]);
    t.cmd
        .env("REDIS_PORT", "sixty")
        .env("REDIS_HOST", "127.0.0.1")
        .env_remove("REDIS_URL");
    let out = t.assert_exit_code(2);
    assert!(stderr(&out).contains("REDIS_PORT"), "{}", stderr(&out));
}

#[test]
fn unreachable_redis_exits_69_naming_the_url_without_password() {
    let url = format!("redis://:hunter2@127.0.0.1:{}/0", dead_port());
    for args in [
        vec!["run", "upwork", "j", "--", "true"],
        vec!["locks"],
        vec!["status", "upwork", "j"],
        vec!["release", "upwork", "j", "--force"],
        vec!["cleanup", "--yes"],
        vec!["health"],
    ] {
        let out = TestCommand::with_url(Some(&url), &args).assert_exit_code(69);
        let err = stderr(&out);
        assert!(err.contains("redis://:***@127.0.0.1:"), "{args:?}: {err}");
        assert!(!err.contains("hunter2"), "{args:?}: {err}");
    }
    // Asked for on purpose, memory works without Redis.
    TestCommand::new(&["run", "upwork", "j", "--backend", "memory", "--", "true"])
        .assert_exit_code(0);
}

#[test]
fn locks_status_release_cleanup_against_redis() {
    let s = RedisServer::start();
    let _: () = s.cmd(&["SET", "bid_lock:upwork:a", "h1", "PX", "60000"]);
    let _: () = s.cmd(&["SET", "bid_lock:upwork:b", "h2", "PX", "60000"]);
    let _: () = s.cmd(&["SET", "bid_lock:freelancer:c", "h3", "PX", "60000"]);
    let _: () = s.cmd(&["SET", "unrelated", "x"]);
    let out = TestCommand::on(&s, &["locks"]).assert_exit_code(0);
    assert!(stdout(&out).contains("bid_lock:upwork:a") && stdout(&out).contains("h3"));
    let out =
        TestCommand::on(&s, &["locks", "--marketplace", "upwork", "--json"]).assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["count"], 2);
    assert_eq!(v["locks"][0]["holder"], "h1");
    assert_eq!(v["locks"][0]["posting"], "a");
    assert!(v["locks"][0]["ttl_left_ms"].as_u64().unwrap() > 50_000);

    let out = TestCommand::on(&s, &["status", "upwork", "a", "--json"]).assert_exit_code(0);
    let v = json(&out);
    assert_eq!(v["held"], true);
    assert_eq!(v["status"]["holder"], "h1");
    TestCommand::on(&s, &["status", "upwork", "zzz"]).assert_exit_code(1);

    // Wrong holder: refused, unchanged.
    TestCommand::on(&s, &["release", "upwork", "a", "--holder", "h2"]).assert_exit_code(1);
    let v: String = s.cmd(&["GET", "bid_lock:upwork:a"]);
    assert_eq!(v, "h1");
    TestCommand::on(&s, &["release", "upwork", "a", "--holder", "h1"]).assert_exit_code(0);
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:a"]), 0);
    TestCommand::on(&s, &["release", "upwork", "b", "--force"]).assert_exit_code(0);
    assert_eq!(s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:b"]), 0);
    TestCommand::on(&s, &["release", "upwork", "b", "--force"]).assert_exit_code(1);

    let out = TestCommand::on(&s, &["cleanup", "--yes", "--json"]).assert_exit_code(0);
    assert_eq!(json(&out)["removed"], 1);
    let keys: Vec<String> = s.cmd(&["KEYS", "*"]);
    assert_eq!(keys, vec!["unrelated".to_owned()]);
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

/// `bidlock metrics --format prometheus` is valid exposition text for promtool.
/// scripts/test.sh installs promtool and sets BIDLOCK_REQUIRE_PROMTOOL=1.
#[test]
fn prometheus_output_passes_promtool() {
    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.is_err() {
        assert!(
            std::env::var_os("BIDLOCK_REQUIRE_PROMTOOL").is_none(),
            "promtool is required (apt-get install prometheus; scripts/test.sh does it)"
        );
        eprintln!("promtool not installed: skipped (scripts/test.sh installs it)");
        return;
    }
    let out = TestCommand::new(&["metrics", "--format", "prometheus", "--backend", "memory"])
        .assert_exit_code(0);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let result = check.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "promtool: {}{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr),
        stdout(&out)
    );
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
