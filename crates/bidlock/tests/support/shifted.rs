//! A redis-server whose wall clock is shifted: `clockshift.c` (next to this file) is
//! compiled once per test binary with `cc` and loaded with `LD_PRELOAD` into that one
//! server only. The test kit's servers take no environment of their own, so this one is
//! started here, the same way (loopback, a free port, no persistence, killed on drop).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bidlock_testkit::{free_port, redis_server_bin};

/// The shim, built once per test binary into Cargo's temp dir for integration tests.
fn shim() -> &'static Path {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/clockshift.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join(format!("clockshift-{}.so", std::process::id()));
        let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .status()
            .unwrap_or_else(|e| panic!("run cc (a C compiler is needed for this test): {e}"));
        assert!(status.success(), "cc failed to build {}", src.display());
        out
    })
}

/// A redis-server on 127.0.0.1 whose clock reads `shift` µs ahead (negative: behind).
pub struct ShiftedServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl ShiftedServer {
    pub fn start(shift_us: i64) -> ShiftedServer {
        let port = free_port();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shifted-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(redis_server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .env("LD_PRELOAD", shim())
            .env("CLOCKSHIFT_US", shift_us.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", redis_server_bin()));
        let server = ShiftedServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.try_ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "shifted redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn try_ping(&self) -> redis::RedisResult<String> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query(&mut c)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs one command.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap()
    }

    /// The server's clock (its `TIME`) in µs.
    pub fn time_us(&self) -> u64 {
        let (s, us): (u64, u64) = self.cmd(&["TIME"]);
        s * 1_000_000 + us
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.child.id());
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for ShiftedServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
