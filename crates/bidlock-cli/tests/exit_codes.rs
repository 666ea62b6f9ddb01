//! Each exit code of `bidlock` means one thing (docs/CLI.md, exit codes): `run` returns
//! its command's code and passes it the lock's environment; 75 not acquired in time; 69
//! backend unavailable, naming the URL without its password; 127 command not found.

mod common;

use std::time::{Duration, Instant};

use bidlock_testkit::{dead_port, RedisServer};

use common::{stderr, stdout, TestCommand};

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
