//! Test support for bidlock: real `redis-server` processes on free loopback ports.
//!
//! A [`RedisServer`] is started with no persistence (unless asked), a log file in a temp
//! dir, and is killed and reaped on drop. Tests can kill it, restart it on the same port,
//! pause it with `SIGSTOP`, and read its log when they fail. Shared by the library's and
//! the CLI's tests; never a mock.

#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub mod acl;
mod cluster;
pub mod keys;
mod link;
mod persistence;
pub mod process;
mod proxy;
mod sentinel;
mod tls;

pub use cluster::{ClusterNode, NodeInfo, RedisCluster};
pub use link::Link;
pub use persistence::Snapshot;
pub use sentinel::SentinelCluster;

pub use proxy::{Direction, Fault, FaultProxy, Role, Traffic};
pub use tls::{self_signed, TlsFiles};

/// How an append-only server flushes its file to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AofFsync {
    /// `appendfsync always`: every write is on disk before the reply.
    #[default]
    Always,
    /// `appendfsync everysec`: the default of many deployments (and of
    /// `deploy/compose.yaml`); a machine crash loses up to about a second of writes,
    /// which [`RedisServer::crash_losing_aof_tail`] reproduces.
    EverySec,
}

/// Options for a server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// An ACL user: (name, password) with all permissions.
    pub acl_user: Option<(String, String)>,
    /// Append-only file, synced as `aof_fsync` says.
    pub aof: bool,
    /// How the append-only file is synced (when `aof` is set).
    pub aof_fsync: AofFsync,
    /// Extra command-line arguments, as given (`["--replicaof", "127.0.0.1", "6379"]`).
    pub extra: Vec<String>,
    /// Serve TLS only (the plain port is closed), with a self-signed certificate.
    pub tls: bool,
}

/// A running `redis-server` on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    opts: ServerOptions,
}

/// A free TCP port on 127.0.0.1 (bound then released; start servers right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// The `redis-server` binary: `$REDIS_SERVER` or `redis-server` on the PATH.
pub fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl RedisServer {
    /// Starts a plain server.
    pub fn start() -> RedisServer {
        RedisServer::start_with(ServerOptions::default())
    }

    /// Starts a server with options, retrying on another port if the chosen one was taken.
    pub fn start_with(opts: ServerOptions) -> RedisServer {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                child: None,
                port,
                dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
                opts: opts.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        drop(dir);
        panic!("could not start redis-server: {last_err}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(redis_server_bin());
        if self.opts.tls {
            let files = if self.ca_cert().exists() {
                TlsFiles {
                    cert: self.ca_cert(),
                    key: self.dir.path().join("redis.key"),
                }
            } else {
                self_signed(self.dir.path())
            };
            cmd.args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(&files.cert)
                .arg("--tls-key-file")
                .arg(&files.key)
                .arg("--tls-ca-cert-file")
                .arg(&files.cert)
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--daemonize")
            .arg("no")
            .arg("--enable-debug-command")
            .arg("local");
        if self.opts.aof {
            let fsync = match self.opts.aof_fsync {
                AofFsync::Always => "always",
                AofFsync::EverySec => "everysec",
            };
            cmd.args(["--appendonly", "yes", "--appendfsync", fsync]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(pw) = &self.opts.password {
            cmd.arg("--requirepass").arg(pw);
        }
        if let Some((user, pw)) = &self.opts.acl_user {
            cmd.arg("--user")
                .arg(user)
                .arg("on")
                .arg(format!(">{pw}"))
                .args(["~*", "&*", "+@all"]);
        }
        cmd.args(&self.opts.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| {
            format!(
                "spawn {}: {e} (install redis-server: apt-get install -y redis-server)",
                redis_server_bin()
            )
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(e) = child.stderr.take() {
                        for line in BufReader::new(e).lines().map_while(Result::ok) {
                            err.push_str(&line);
                            err.push('\n');
                        }
                    }
                    self.child = None;
                    return Err(format!(
                        "redis-server exited with {status}: {err}{}",
                        self.log()
                    ));
                }
            }
            if self.ping_raw() || (self.opts.tls && self.port_open()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server did not answer PING in 10 s\n{}",
            self.log()
        ))
    }

    fn port_open(&self) -> bool {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    }

    /// Sends a raw PING (any reply — PONG or NOAUTH — means it is up).
    fn ping_raw(&self) -> bool {
        use std::io::{Read, Write};
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        // Any answer but "still loading the dataset" (an error such as NOAUTH means it
        // is up; LOADING means commands would fail for a while yet).
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-')
            && !buf.starts_with(b"-LOADING"))
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0` (without credentials).
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The URL with the server's password (and ACL user, when set).
    pub fn url_with_auth(&self) -> String {
        match (&self.opts.acl_user, &self.opts.password) {
            (Some((u, p)), _) => format!("redis://{u}:{p}@127.0.0.1:{}/0", self.port),
            (None, Some(p)) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            (None, None) => self.url(),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The self-signed certificate of a TLS server (its own CA).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("redis.crt")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A synchronous client connection (authenticated as the URL says).
    pub fn client(&self) -> redis::Connection {
        let url = self.url_with_auth();
        let client = if self.opts.tls {
            // Trust the test's own self-signed certificate.
            let ca = std::fs::read(self.ca_cert()).unwrap_or_else(|e| panic!("read CA: {e}"));
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca),
            };
            redis::Client::build_with_tls(url, certs)
        } else {
            redis::Client::open(url)
        }
        .unwrap_or_else(|e| panic!("client for {}: {e}", self.url()));
        client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {}: {e}\n{}", self.url(), self.log()))
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.client();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.url()))
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .map(|c| Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX)))
    }

    /// The server's process id, while it runs.
    pub fn process_id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server is stopped by a signal (SIGSTOP) right now, from `/proc`.
    pub fn is_paused(&self) -> bool {
        self.process_id()
            .and_then(process::state)
            .is_some_and(|s| s == 'T')
    }

    /// Kills the server with SIGKILL (no goodbye to clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The port must be free before a restart.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ping_raw() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("restart on port {} failed: {last}", self.port);
    }

    /// Pauses the server (SIGSTOP): connections stay open, nothing answers. Waits (up
    /// to 1 s) until the process is really stopped and returns whether it is.
    pub fn pause(&self) -> bool {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGSTOP);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.is_paused() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.is_paused()
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGCONT);
        }
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            if !log.is_empty() {
                eprintln!("--- redis-server log (port {}) ---\n{log}", self.port);
            }
        }
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the reliability figures go: `$BIDLOCK_REPORT_DIR`, else `target/reliability`.
pub fn report_dir() -> PathBuf {
    std::env::var_os("BIDLOCK_REPORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/reliability"))
}

/// Writes one test's figures (a JSON document) for RELIABILITY.md, and echoes them.
pub fn write_report(name: &str, json: &str) {
    let dir = report_dir();
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.json")), format!("{json}\n"));
    eprintln!("{name}: {json}");
}

/// A port nothing listens on (for "Redis is down" tests).
pub fn dead_port() -> u16 {
    free_port()
}
