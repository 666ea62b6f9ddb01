//! The CLI tests' helpers: run the built `bidlock` binary with a clean environment.

#![allow(dead_code)]

pub mod doc_commands;
pub mod netns;

use std::process::{Command, Output, Stdio};

use bidlock_testkit::{dead_port, RedisServer};

/// A `bidlock` invocation with a clean environment.
pub struct TestCommand {
    pub cmd: Command,
}

impl TestCommand {
    pub fn new(args: &[&str]) -> TestCommand {
        TestCommand::with_url(None, args)
    }

    /// Global flags go first: anything after `--` belongs to the command `run` starts.
    pub fn with_url(url: Option<&str>, args: &[&str]) -> TestCommand {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock"));
        for var in bidlock::ENV_VARS {
            cmd.env_remove(var);
        }
        // Point the default at a dead port so no stray local Redis is ever used.
        cmd.env("REDIS_URL", format!("redis://127.0.0.1:{}/0", dead_port()));
        if let Some(url) = url {
            cmd.arg("--redis-url").arg(url);
        }
        cmd.env_remove("RUST_LOG").args(args).stdin(Stdio::null());
        TestCommand { cmd }
    }

    pub fn on(server: &RedisServer, args: &[&str]) -> TestCommand {
        TestCommand::with_url(Some(&server.url()), args)
    }

    pub fn output(mut self) -> Output {
        self.cmd.output().expect("run bidlock")
    }

    pub fn assert_exit_code(self, code: i32) -> Output {
        let out = self.output();
        assert_eq!(
            out.status.code(),
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// Whether the default prefix holds a completion record for `upwork`'s `posting`.
#[allow(dead_code)]
pub fn recorded(s: &bidlock_testkit::RedisServer, posting: &str) -> bool {
    s.cmd::<i64>(&["EXISTS", &format!("bid_done:upwork:{posting}")]) == 1
}

/// Polls `f` every 10 ms until it holds; fails the test after `limit`.
#[allow(dead_code)]
pub fn wait_for(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
