//! Guarantee: **exclusion** (docs/GUARANTEES.md), through the `bidlock` binary: concurrent
//! `run`s of one key never overlap, and `health` says when the server's eviction policy
//! can drop locks (which voids exclusion).
//!
//! - `twelve_concurrent_runs_on_one_key_never_overlap`: twelve processes race; each
//!   command appends its start and end to one file, and an interleaving fails the test.
//! - `health_shows_an_eviction_policy_that_can_drop_locks`: a server with
//!   `maxmemory-policy allkeys-lru`.

mod common;

use std::process::Stdio;

use bidlock_testkit::{RedisServer, ServerOptions};

use common::{json, stderr, TestCommand};

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
