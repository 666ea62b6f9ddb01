//! Bad input exits 2 with bidlock's own sentence naming what was wrong and what is
//! accepted, and touches nothing (docs/GUARANTEES.md, "Bad input"; docs/CLI.md, exit
//! codes).
//!
//! - `bad_input_exits_2_and_touches_nothing`: bad ids, URLs, ttls and waits.
//! - `negative_durations_get_bidlocks_own_message`, `ttl_and_wait_refusals_say_what_was_given_and_what_is_accepted`:
//!   `--ttl -5`, `--ttl 0`, `--wait inf` get one consistent message, not clap's tip.
//! - `release_without_holder_names_force_and_touches_nothing`.
//! - `a_database_the_server_lacks_is_bad_input_in_bidlocks_words`: `/99` and `/abc`.
//! - `a_prefix_that_would_reach_another_prefixs_keys_is_refused_with_exit_2`: the
//!   prefixes guarantee, at the command line.

mod common;

use bidlock_testkit::{free_port, RedisServer};

use common::{stderr, TestCommand};

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
    // A bad filter is refused before connecting: 2, not 69, with no Redis at all.
    let out = TestCommand::new(&[
        "--redis-url",
        &format!("redis://127.0.0.1:{}", free_port()),
        "locks",
        "--marketplace",
        "a*",
    ])
    .assert_exit_code(2);
    assert!(
        stderr(&out).contains("invalid --marketplace"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn negative_durations_get_bidlocks_own_message() {
    // (arguments, what the message says is accepted, what it says is wrong)
    let seconds = "expected seconds from 0 to 2592000 (30 days)";
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["run", "upwork", "j", "--wait", "-1", "--", "true"],
            seconds,
            "-1 is negative",
        ),
        (
            &["run", "upwork", "j", "--wait=-0.5", "--", "true"],
            seconds,
            "-0.5 is negative",
        ),
        (
            &["run", "upwork", "j", "--ttl", "-1", "--", "true"],
            "expected seconds from 0.01 to 2592000",
            "-1 is negative",
        ),
        (
            &["run", "upwork", "j", "--grace", "-2", "--", "true"],
            seconds,
            "-2 is negative",
        ),
        (&["simulate", "--wait", "-1"], seconds, "-1 is negative"),
        (
            &["simulate", "--bid-ms", "-1"],
            "expected milliseconds from 0",
            "-1 is negative",
        ),
        (
            &["bench", "uncontended", "--duration", "-1"],
            seconds,
            "-1 is negative",
        ),
        (
            &["bench", "hot-key", "--hold-us", "-1"],
            "",
            "must be zero or more",
        ),
        (&["stats", "--watch", "-1"], seconds, "-1 is negative"),
    ];
    for (args, accepted, wrong) in cases {
        let out = TestCommand::new(args).assert_exit_code(2);
        let err = stderr(&out);
        assert!(
            err.contains(accepted) && err.contains(wrong),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("tip:") && !err.contains("-- -"),
            "{args:?}: {err}"
        );
    }
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
fn release_without_holder_names_force_and_touches_nothing() {
    // The dead default Redis shows the check comes before any connection (2, not 69).
    let out = TestCommand::new(&["release", "upwork", "j"]).assert_exit_code(2);
    let err = stderr(&out);
    assert!(err.contains("--holder") && err.contains("--force"), "{err}");
}

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
