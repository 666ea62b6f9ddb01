//! `run --once` gives each exit code one meaning (issue 21, item 2), each forced here for
//! real: 0 recorded; 77 lock lost, not recorded; 78 recorded although the lock was lost
//! (`promises.rs::run_once_records_a_command_that_finished_while_the_lease_lapsed`); 79
//! the command succeeded but the record could not be written; a command's own exit with
//! a reserved code becomes 1.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bidlock_testkit::RedisServer;
use common::{stderr, TestCommand};

fn recorded(s: &RedisServer, posting: &str) -> bool {
    s.cmd::<i64>(&["EXISTS", &format!("bid_done:upwork:{posting}")]) == 1
}

#[test]
fn a_lock_lost_while_the_command_runs_exits_77_and_records_nothing() {
    let s = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    // The command would succeed (exit 0 on SIGTERM): the loss decides, not its code.
    let script = format!(
        "trap 'exit 0' TERM; touch {}; sleep 30 & wait",
        started.display()
    );
    let mut t = TestCommand::on(
        &s,
        &[
            "run", "upwork", "lost", "--once", "--grace", "2", "--", "sh", "-c", &script,
        ],
    );
    t.cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let run = t.cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A forced release publishes: the holder learns at once (a bare DEL would be noticed
    // only at the next renewal, and the command would finish first: exit 78).
    TestCommand::on(&s, &["release", "upwork", "lost", "--force"]).assert_exit_code(0);
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(!recorded(&s, "lost"), "77 means not recorded");
    // Not recorded, so the next --once run runs it.
    TestCommand::on(&s, &["run", "upwork", "lost", "--once", "--", "true"]).assert_exit_code(0);
    assert!(recorded(&s, "lost"));
}

#[test]
fn a_completion_that_cannot_be_written_exits_79() {
    let s = RedisServer::start();
    // The command succeeds, and on its way takes scripting away from the user bidlock
    // connects as: the completion script is refused (NOPERM), not retried.
    let port = s.port().to_string();
    let out = TestCommand::on(
        &s,
        &[
            "run",
            "upwork",
            "norecord",
            "--once",
            "--",
            "redis-cli",
            "-p",
            &port,
            "ACL",
            "SETUSER",
            "default",
            "-@scripting",
        ],
    )
    .assert_exit_code(79);
    let _: String = s.cmd(&["ACL", "SETUSER", "default", "+@all"]);
    assert!(
        stderr(&out).contains("the command succeeded but its completion could not be recorded"),
        "{}",
        stderr(&out)
    );
    assert!(!recorded(&s, "norecord"), "79 means not recorded");
}

#[test]
fn a_commands_own_reserved_code_becomes_1_under_once_and_passes_without() {
    let s = RedisServer::start();
    for code in ["69", "75", "76", "77", "78", "79"] {
        let out = TestCommand::on(
            &s,
            &[
                "run",
                "upwork",
                "own",
                "--once",
                "--",
                "sh",
                "-c",
                &format!("exit {code}"),
            ],
        )
        .assert_exit_code(1);
        assert!(
            stderr(&out).contains(&format!(
                "the command exited {code}, a code run --once reserves"
            )),
            "{}",
            stderr(&out)
        );
        assert!(!recorded(&s, "own"));
        TestCommand::on(
            &s,
            &[
                "run",
                "upwork",
                "own",
                "--",
                "sh",
                "-c",
                &format!("exit {code}"),
            ],
        )
        .assert_exit_code(code.parse().unwrap());
    }
    // Other failures keep their code; 0 records.
    TestCommand::on(
        &s,
        &["run", "upwork", "own", "--once", "--", "sh", "-c", "exit 3"],
    )
    .assert_exit_code(3);
    TestCommand::on(&s, &["run", "upwork", "own", "--once", "--", "true"]).assert_exit_code(0);
    assert!(recorded(&s, "own"));
}
