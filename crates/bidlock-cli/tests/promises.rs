//! The promises of issue 12 as an operator meets them through the CLI: a prefix that
//! would reach another's keys is refused, `run --once` records a command that finished
//! while its lease lapsed, a forced release stops `run` at once, and `health` shows an
//! eviction policy that can drop locks.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bidlock_testkit::{RedisServer, ServerOptions};
use common::{json, stderr, TestCommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_prefix_that_would_reach_another_prefixs_keys_is_refused_with_exit_2() {
    let s = RedisServer::start();
    let _: () = s.cmd(&["SET", "bid_done:upwork:job_1", "7 h", "PX", "600000"]);
    for prefix in ["bid_done", "bid", "bid_lock_wait"] {
        let out =
            TestCommand::on(&s, &["--prefix", prefix, "cleanup", "--yes"]).assert_exit_code(2);
        assert!(stderr(&out).contains(prefix), "{}", stderr(&out));
    }
    let kept: i64 = s.cmd(&["EXISTS", "bid_done:upwork:job_1"]);
    assert_eq!(
        kept, 1,
        "a completion record of the default prefix was deleted"
    );
}

#[test]
fn run_once_records_a_command_that_finished_while_the_lease_lapsed() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (started, done) = (dir.path().join("started"), dir.path().join("done"));
    let script = format!(
        "touch {}; sleep 1; touch {}",
        started.display(),
        done.display()
    );
    let mut t = TestCommand::on(
        &s,
        &[
            "run", "upwork", "lapsed", "--once", "--ttl", "0.5", "--", "sh", "-c", &script,
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let run = t.cmd.spawn().unwrap();
    wait_for("the command to start", Duration::from_secs(10), || {
        started.exists()
    });
    // Freeze `bidlock run` (not its command): renewals stop, the lease lapses, and the
    // command finishes its work meanwhile.
    let pid = Pid::from_raw(run.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    wait_for("the command to finish", Duration::from_secs(10), || {
        done.exists()
    });
    // Finished: the keeper that `run` starts its command under has ended too (it ends
    // once the command's whole tree has).
    wait_for(
        "the command's keeper to end",
        Duration::from_secs(10),
        || {
            bidlock_testkit::process::children(run.id())
                .iter()
                .all(|c| bidlock_testkit::process::state(*c).is_none_or(|s| s == 'Z'))
        },
    );
    wait_for("the lock to expire", Duration::from_secs(10), || {
        s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:lapsed"]) == 0
    });
    kill(pid, Signal::SIGCONT).unwrap();
    let out = run.wait_with_output().unwrap();
    // 78: recorded, but the lock was lost before the command finished.
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("recorded"), "{}", stderr(&out));
    // The work was done once: nobody does it again.
    let again = TestCommand::on(&s, &["run", "upwork", "lapsed", "--once", "--", "true"]);
    again.assert_exit_code(76);
}

#[test]
fn a_forced_release_stops_run_within_a_second_or_two() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let script = format!("touch {}; sleep 30 & wait", started.display());
    let mut t = TestCommand::on(
        &s,
        &[
            "run", "upwork", "forced", "--ttl", "300", "--grace", "1", "--", "sh", "-c", &script,
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let run = t.cmd.spawn().unwrap();
    wait_for("the command to start", Duration::from_secs(10), || {
        started.exists()
    });
    TestCommand::on(&s, &["release", "upwork", "forced", "--force"]).assert_exit_code(0);
    let released = Instant::now();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    // Renewal is 100 s away: only the release message can explain a quick stop.
    assert!(
        released.elapsed() < Duration::from_secs(3),
        "{:?}",
        released.elapsed()
    );
}

#[test]
fn health_shows_an_eviction_policy_that_can_drop_locks() {
    let cases: [(&[&str], &str, Option<bool>); 4] = [
        (
            &["--maxmemory-policy", "volatile-lru"],
            "volatile-lru",
            Some(true),
        ),
        (
            &["--maxmemory-policy", "noeviction"],
            "noeviction",
            Some(false),
        ),
        // Read from INFO (what a least-privilege user may run), else from CONFIG GET.
        (
            &["--rename-command", "CONFIG", ""],
            "noeviction",
            Some(false),
        ),
        (
            &[
                "--rename-command",
                "CONFIG",
                "",
                "--rename-command",
                "INFO",
                "",
            ],
            "unknown",
            None,
        ),
    ];
    for (args, policy, can_evict) in cases {
        let s = RedisServer::start_with(ServerOptions {
            extra: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        });
        let out = TestCommand::on(&s, &["--json", "health"]).assert_exit_code(0);
        let v = json(&out);
        assert_eq!(v["maxmemory_policy"], policy, "{v}");
        assert_eq!(v["can_evict"].as_bool(), can_evict, "{v}");
        assert_eq!(
            stderr(&out).contains("noeviction"),
            can_evict == Some(true),
            "{}",
            stderr(&out)
        );
        let out = TestCommand::on(&s, &["health"]).assert_exit_code(0);
        assert!(common::stdout(&out).contains(policy));
    }
}
