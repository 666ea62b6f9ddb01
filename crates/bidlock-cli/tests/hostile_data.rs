//! Junk in bidlock's keys, seen from the command line: one exit code (65, sysexits
//! EX_DATAERR) and a message that names the key and says what is in it; nothing is
//! changed, and junk in the handover keys does not keep a posting locked.

mod common;

use bidlock_testkit::RedisServer;
use common::{stderr, TestCommand};

#[test]
fn a_lock_key_of_another_kind_exits_65_naming_it_and_changes_nothing() {
    let s = RedisServer::start();
    let _: () = s.cmd(&["HSET", "bid_lock:m:p", "f", "v"]);
    for args in [
        &["run", "m", "p", "--", "true"][..],
        &["status", "m", "p"],
        &["release", "m", "p", "--force"],
    ] {
        let out = TestCommand::on(&s, args).assert_exit_code(65);
        let err = stderr(&out);
        assert!(
            err.contains("bid_lock:m:p holds a Redis hash, not a lock"),
            "{args:?}: {err}"
        );
        let kind: String = s.cmd(&["TYPE", "bid_lock:m:p"]);
        assert_eq!(kind, "hash", "{args:?} changed the key");
    }
}

#[test]
fn junk_in_the_fencing_counter_exits_65_naming_it() {
    let s = RedisServer::start();
    let _: () = s.cmd(&["SET", "bid_lock_fence", "not a number"]);
    let out = TestCommand::on(&s, &["run", "m", "p", "--", "true"]).assert_exit_code(65);
    assert!(
        stderr(&out).contains("bid_lock_fence holds \"not a number\", not a fencing counter"),
        "{}",
        stderr(&out)
    );
    let locks: Vec<String> = s.cmd(&["KEYS", "bid_lock:*"]);
    assert!(locks.is_empty(), "{locks:?}");
}

#[test]
fn a_string_in_the_waiters_hash_leaves_run_and_the_posting_alone() {
    let s = RedisServer::start();
    let _: () = s.cmd(&["SET", "bid_lock_waiters:m:p4", "junk"]);
    let _: () = s.cmd(&["SET", "bid_lock_queue:m:p4", "junk"]);
    TestCommand::on(&s, &["run", "m", "p4", "--", "true"]).assert_exit_code(0);
    let left: Option<String> = s.cmd(&["GET", "bid_lock:m:p4"]);
    assert_eq!(left, None, "the posting stayed locked");
}
