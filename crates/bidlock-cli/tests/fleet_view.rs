//! The fleet view (docs/OPERATING.md, docs/CLI.md): `locks`, `status`, `release`,
//! `cleanup` and `stats` show and change what Redis holds; `stats` matches what real
//! `bidlock run` processes set up, and `--watch` refreshes and ends cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bidlock_testkit::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{json, stdout, TestCommand};

/// A `bidlock run` holding `marketplace/posting` until it is stopped; returns once the
/// command runs (its first line, the fencing token, is the readiness signal).
fn holder(s: &RedisServer, marketplace: &str, posting: &str) -> (Child, u64) {
    let mut t = TestCommand::on(
        s,
        &[
            "run",
            marketplace,
            posting,
            "--ttl",
            "30",
            "--",
            "sh",
            "-c",
            "echo $BIDLOCK_FENCE; exec sleep 60",
        ],
    );
    t.cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = t.cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let fence = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
    (child, fence)
}

/// A `bidlock run --wait` on a held posting; returns once it said it is waiting (its
/// first try, which marks the posting as waited for, is done by then).
fn waiter(s: &RedisServer, marketplace: &str, posting: &str) -> Child {
    let mut t = TestCommand::on(
        s,
        &["run", marketplace, posting, "--wait", "60", "--", "true"],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = t.cmd.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("is held by"), "{line:?}");
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap()
}

fn stats_json(s: &RedisServer) -> serde_json::Value {
    json(&TestCommand::on(s, &["stats", "--json"]).assert_exit_code(0))
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
fn stats_json_matches_what_the_fleet_set_up() {
    let s = RedisServer::start();
    // Names that look like ours but are not: another prefix, a foreign key.
    let _: () = s.cmd(&["SET", "other:upwork:x", "h", "PX", "60000"]);
    let _: () = s.cmd(&["SET", "unrelated", "x"]);
    let before = stats_json(&s);
    assert_eq!(before["locks"], 0);
    assert_eq!(
        before["fence"],
        serde_json::Value::Null,
        "no token issued yet"
    );

    let (a, fence_a) = holder(&s, "upwork", "a");
    let (b, fence_b) = holder(&s, "upwork", "b");
    let (c, fence_c) = holder(&s, "fiverr", "c");
    TestCommand::on(&s, &["run", "upwork", "handled", "--once", "--", "true"]).assert_exit_code(0);
    let w = waiter(&s, "fiverr", "c");

    let v = stats_json(&s);
    let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "by_marketplace",
            "done_records",
            "fence",
            "handoff_keys",
            "locks",
            "waiting"
        ]
    );
    assert_eq!(v["locks"], 3, "{v:#}");
    assert_eq!(v["waiting"], 1, "{v:#}");
    assert_eq!(v["done_records"], 1, "{v:#}");
    assert_eq!(
        v["by_marketplace"],
        serde_json::json!({
            "upwork": {"locks": 2, "waiting": 0, "done_records": 1},
            "fiverr": {"locks": 1, "waiting": 1, "done_records": 0},
        })
    );
    // The fence is Redis' counter: the last token issued (the --once run's, after the
    // holders').
    let counter: String = s.cmd(&["GET", "bid_lock_fence"]);
    let fence = v["fence"].as_u64().unwrap();
    assert_eq!(fence, counter.parse::<u64>().unwrap());
    assert!(fence > fence_a.max(fence_b).max(fence_c));

    let out = TestCommand::on(&s, &["stats"]).assert_exit_code(0);
    let text = stdout(&out);
    assert!(text.contains("locks held     3"), "{text}");
    let row = |m: &str| {
        text.lines()
            .find(|l| l.starts_with(m))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(row("fiverr"), Some(vec!["fiverr", "1", "1", "0"]), "{text}");
    assert_eq!(row("upwork"), Some(vec!["upwork", "2", "0", "1"]), "{text}");

    // The holders stop: the waiter gets its posting, runs and releases; only the
    // completion record stays.
    for h in [a, b, c] {
        assert!(!stop(h).success(), "stopped by SIGTERM");
    }
    let w = w.wait_with_output().unwrap();
    assert_eq!(w.status.code(), Some(0));
    let v = stats_json(&s);
    assert_eq!(
        (&v["locks"], &v["waiting"], &v["done_records"]),
        (&0.into(), &0.into(), &1.into()),
        "{v:#}"
    );
    assert_eq!(
        v["by_marketplace"],
        serde_json::json!({"upwork": {"locks": 0, "waiting": 0, "done_records": 1}})
    );
}

#[test]
fn watch_prints_snapshots_and_ends_on_ctrl_c() {
    let s = RedisServer::start();
    let out = TestCommand::on(&s, &["stats", "--watch", "0.1", "--count", "3", "--json"])
        .assert_exit_code(0);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["locks"] == 0));

    // Not a terminal: one snapshot after another, until SIGINT ends it with exit 0.
    let mut t = TestCommand::on(&s, &["stats", "--watch", "30"]);
    t.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = t.cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("fleet on redis://127.0.0.1:"), "{first}");
    let sent = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
}

/// On a terminal the picture is redrawn in place. `script` (util-linux, in every Debian)
/// gives the command a terminal.
#[test]
fn watch_refreshes_in_place_on_a_terminal() {
    let s = RedisServer::start();
    let bin = env!("CARGO_BIN_EXE_bidlock");
    let command = format!("{bin} --redis-url {} stats --watch 0.1 --count 2", s.url());
    let mut script = std::process::Command::new("script");
    for var in bidlock::ENV_VARS {
        script.env_remove(var);
    }
    let out = script
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text:?}");
    assert_eq!(text.matches("\x1b[H\x1b[2J").count(), 2, "{text:?}");
    assert!(
        text.contains("refreshed every 100 ms (Ctrl-C to stop)"),
        "{text:?}"
    );
}
