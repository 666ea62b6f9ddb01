//! What a new user ran into in their first hour (issue 23), each through the real
//! binary: a database the server lacks, a URL whose database is not a number, a wait
//! that a silent server stretched to 5 s, unrounded or misleading wait times, ttl and
//! wait refusals that disagreed, `--backend auto` help that promised what `run` does not
//! do, a recorded posting run without a word, exit 127, and which backend the demo
//! commands choose when nothing is configured.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bidlock_testkit::RedisServer;
use common::{json, netns, stderr, stdout, TestCommand};

#[test]
fn a_database_the_server_lacks_is_bad_input_in_bidlocks_words() {
    let s = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/99", s.port());
    for args in [&["health"][..], &["run", "upwork", "j", "--", "true"]] {
        let out = TestCommand::with_url(Some(&url), args).assert_exit_code(2);
        let err = stderr(&out);
        assert!(err.contains("the server has no database 99"), "{err}");
        assert!(
            !err.contains("ResponseError") && !err.contains("Server("),
            "{err}"
        );
    }
    let url = format!("redis://127.0.0.1:{}/abc", s.port());
    let out = TestCommand::with_url(Some(&url), &["health"]).assert_exit_code(2);
    let err = stderr(&out);
    assert!(
        err.contains("the database after the last / must be a whole number from 0, not \"abc\""),
        "{err}"
    );
    assert!(
        !err.contains("InvalidClientConfig") && !err.contains("1-65535"),
        "{err}"
    );
}

#[test]
fn run_spends_no_longer_than_its_wait_connecting_to_a_server_that_never_answers() {
    let s = RedisServer::start();
    // Paused: the kernel still accepts connections, nothing answers.
    assert!(s.pause());
    let started = Instant::now();
    let out = TestCommand::on(
        &s,
        &["run", "upwork", "silent", "--wait", "2", "--", "true"],
    )
    .assert_exit_code(69);
    let took = started.elapsed();
    s.resume();
    let err = stderr(&out);
    // The connect timeout was cut from 5 s to the wait.
    assert!(err.contains("no answer within 2"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}: {err}");
}

/// The figure after "within " has at most two decimals and a unit.
fn assert_rounded_wait(err: &str) {
    let after = err
        .split("within ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    let mut words = after.split_whitespace();
    let number = words.next().unwrap();
    let unit = words.next().unwrap();
    assert!(["µs", "ms", "s"].contains(&unit), "{err}");
    let decimals = number.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 2, "{err}");
}

#[test]
fn a_run_that_does_not_wait_says_so_and_waits_are_rounded() {
    let s = RedisServer::start();
    let _: () = s.cmd(&["SET", "bid_lock:upwork:busy", "other", "PX", "60000"]);
    let out = TestCommand::on(&s, &["run", "upwork", "busy", "--wait", "0", "--", "true"])
        .assert_exit_code(75);
    let err = stderr(&out);
    assert!(
        err.contains("is held by other; not acquired (--wait 0 tries once and does not wait)"),
        "{err}"
    );
    assert!(!err.contains("within"), "{err}");
    let out = TestCommand::on(
        &s,
        &[
            "run", "upwork", "busy", "--wait", "0.3", "--quiet", "--", "true",
        ],
    )
    .assert_exit_code(75);
    let err = stderr(&out);
    assert!(err.contains("not acquired within "), "{err}");
    assert_rounded_wait(&err);
}

#[test]
fn ttl_and_wait_refusals_say_what_was_given_and_what_is_accepted() {
    let ttl = "expected seconds from 0.01 to 2592000 (30 days), decimals allowed";
    let wait = "expected seconds from 0 to 2592000 (30 days), decimals allowed";
    for (args, says) in [
        (["--ttl", "-5"], format!("{ttl}: -5 is negative")),
        (["--ttl", "0"], format!("{ttl}: 0 is below 0.01")),
        (
            ["--wait", "inf"],
            format!("{wait}: \"inf\" is not a finite number"),
        ),
        (["--wait", "-1"], format!("{wait}: -1 is negative")),
    ] {
        let mut all = vec!["run", "upwork", "j"];
        all.extend(args);
        all.extend(["--", "true"]);
        let out = TestCommand::new(&all).assert_exit_code(2);
        assert!(stderr(&out).contains(&says), "{args:?}: {}", stderr(&out));
    }
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
fn run_on_a_recorded_posting_says_so_and_runs() {
    let s = RedisServer::start();
    TestCommand::on(&s, &["run", "upwork", "done", "--once", "--", "true"]).assert_exit_code(0);
    let out = TestCommand::on(&s, &["run", "upwork", "done", "--", "sh", "-c", "echo ran"])
        .assert_exit_code(0);
    assert_eq!(stdout(&out).trim(), "ran");
    let err = stderr(&out);
    assert!(
        err.contains("bid_lock:upwork:done has a completion record (token ")
            && err.contains("with --once, run would exit 76"),
        "{err}"
    );
    // A posting without a record: nothing said.
    let out = TestCommand::on(&s, &["run", "upwork", "fresh", "--", "true"]).assert_exit_code(0);
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_command_that_is_not_found_exits_127_as_the_help_says() {
    let s = RedisServer::start();
    let out = TestCommand::on(&s, &["run", "upwork", "nf", "--", "no-such-command-here"])
        .assert_exit_code(127);
    assert!(
        stderr(&out).contains("cannot run \"no-such-command-here\": No such file or directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        s.cmd::<i64>(&["EXISTS", "bid_lock:upwork:nf"]),
        0,
        "released"
    );
    let help = stdout(&TestCommand::new(&["--help"]).assert_exit_code(0));
    assert!(help.contains("127 the command was not found"), "{help}");
    let help = stdout(&TestCommand::new(&["run", "--help"]).assert_exit_code(0));
    assert!(help.contains("127 command not found"), "{help}");
}

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
