//! Runs the built `bidlock-agent` binary as an operator would: a clean environment, the
//! metrics endpoint on a free loopback port (the agent prints which), signals, and a
//! deadline on everything that waits.

#![allow(dead_code)] // each test file uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long anything that should happen soon may take on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running agent.
pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    stdout: mpsc::Receiver<String>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

/// The agent command with a clean environment: no Redis unless `redis_url` is given.
pub fn command(redis_url: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bidlock-agent"));
    for var in bidlock::ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.env_remove("RUST_LOG");
    match redis_url {
        Some(url) => cmd.env("REDIS_URL", url).env("USE_REDIS_LOCKS", "true"),
        None => cmd.env("USE_REDIS_LOCKS", "false"),
    };
    cmd.stdin(Stdio::null());
    cmd
}

impl Agent {
    /// Starts the agent with `--metrics-addr 127.0.0.1:0` and waits for the address it
    /// prints.
    pub fn start(redis_url: Option<&str>, args: &[&str]) -> Agent {
        Agent::start_with_env(redis_url, args, &[])
    }

    /// [`Agent::start`] with more environment variables (`RUST_LOG`, `REDIS_PASSWORD`, ...).
    pub fn start_with_env(redis_url: Option<&str>, args: &[&str], env: &[(&str, String)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("agent.stderr");
        let mut child = command(redis_url)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start bidlock-agent");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = rx.recv_timeout(PATIENCE).unwrap_or_else(|e| {
            panic!(
                "no address line: {e}\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        Agent {
            child,
            addr,
            stdout: rx,
            stderr,
            _dir: dir,
        }
    }

    /// GET `path`: the status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    /// Waits until GET `path` answers `code`.
    pub fn wait_for(&self, path: &str, code: u16) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (got, body) = self.get(path);
            if got == code {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} still answers {got} ({body:?}), not {code}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the exit; `None` if it did not come within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The lines printed on stdout after the address line (call after the exit).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.try_iter().collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on loopback (status code, body); 0 when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if s.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The value of the first sample of `series` (a name with its labels, as printed).
pub fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// `promtool` is installed, or the test is skipped unless scripts/test.sh asked for it.
pub fn promtool_available() -> bool {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("BIDLOCK_REQUIRE_PROMTOOL").is_none(),
        "promtool is required (apt-get install prometheus; scripts/test.sh does it)"
    );
    eprintln!("promtool not installed: skipped (scripts/test.sh installs it)");
    false
}

/// Runs `promtool check metrics` on `page`; panics with its complaint.
pub fn promtool_check_metrics(page: &str) {
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let result = check.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "promtool: {}{}\n{page}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// The keys matching `pattern`, by SCAN (as an operator would, never KEYS).
pub fn scan(server: &bidlock_testkit::RedisServer, pattern: &str) -> Vec<String> {
    let mut conn = server.client();
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}
