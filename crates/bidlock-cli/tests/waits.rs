//! A `run`'s wait bounds it, and it says what it waits for (docs/CLI.md, `run`): once, who
//! holds the lock and for how long; no longer than `--wait` connecting to a server that
//! never answers; "did not wait" for `--wait 0`; waits rounded for people.

mod common;

use std::time::{Duration, Instant};

use bidlock_testkit::RedisServer;

use common::{stderr, TestCommand};

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
fn a_busy_run_with_wait_says_once_who_holds_it() {
    let s = RedisServer::start();
    let _: () = s.cmd(&[
        "SET",
        "bid_lock:upwork:busy",
        "python-instance",
        "PX",
        "1500",
    ]);
    let out = TestCommand::on(&s, &["run", "upwork", "busy", "--wait", "20", "--", "true"])
        .assert_exit_code(0);
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("bidlock: bid_lock:upwork:busy is held by python-instance, "),
        "{err}"
    );
    assert!(
        lines[0].contains(" s left on its ttl; waiting up to 20.0 s"),
        "{err}"
    );

    let _: () = s.cmd(&[
        "SET",
        "bid_lock:upwork:busy",
        "python-instance",
        "PX",
        "500",
    ]);
    let out = TestCommand::on(
        &s,
        &[
            "run", "upwork", "busy", "--wait", "20", "--quiet", "--", "true",
        ],
    )
    .assert_exit_code(0);
    assert_eq!(stderr(&out), "", "--quiet");
    // A free lock: nothing to say.
    let out = TestCommand::on(&s, &["run", "upwork", "free", "--wait", "5", "--", "true"])
        .assert_exit_code(0);
    assert_eq!(stderr(&out), "");
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
