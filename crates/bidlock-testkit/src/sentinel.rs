//! A Sentinel setup on loopback: one master, one replica, three sentinels watching them.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, RedisServer, ServerOptions};

/// The name the sentinels know the master by.
pub const SERVICE: &str = "bidmaster";

/// One master, one replica, three sentinels. Dropping it stops them all.
#[derive(Debug)]
pub struct SentinelCluster {
    /// The servers: index 0 starts as master, 1 as its replica.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<(u16, Child)>,
    dir: tempfile::TempDir,
}

impl SentinelCluster {
    /// Starts the servers and sentinels and waits until the sentinels see the replica.
    pub fn start() -> SentinelCluster {
        // No delay before the first (diskless) sync: the replica must hold the data
        // before a test kills the master.
        let master = RedisServer::start_with(ServerOptions {
            extra: vec!["--repl-diskless-sync-delay".into(), "0".into()],
            ..Default::default()
        });
        let replica = RedisServer::start_with(ServerOptions {
            extra: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port().to_string(),
            ],
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel{i}.log\n\
                     sentinel monitor {SERVICE} 127.0.0.1 {mport} 2\n\
                     sentinel down-after-milliseconds {SERVICE} 1000\n\
                     sentinel failover-timeout {SERVICE} 4000\n\
                     sentinel parallel-syncs {SERVICE} 1\n",
                    dir = dir.path().display(),
                    mport = master.port()
                ),
            )
            .unwrap_or_else(|e| panic!("write sentinel config: {e}"));
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("start redis-sentinel: {e} (apt-get install redis-sentinel)")
                });
            sentinels.push((port, child));
        }
        let cluster = SentinelCluster {
            servers: vec![master, replica],
            sentinels,
            dir,
        };
        cluster.wait_for(Duration::from_secs(15), |c| {
            c.servers[1]
                .cmd::<String>(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        cluster.wait_for(Duration::from_secs(15), |c| {
            c.sentinel_ports().iter().all(|p| {
                c.ask(*p, &["SENTINEL", "replicas", SERVICE])
                    .is_some_and(|v: Vec<redis::Value>| !v.is_empty())
            })
        });
        cluster
    }

    fn wait_for(&self, limit: Duration, ok: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "sentinel cluster not ready in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ask<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> Option<T> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).ok()
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(p, _)| *p).collect()
    }

    /// `redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/bidmaster/0`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}/0", hosts.join(","))
    }

    /// The master's port as the sentinels report it now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinel_ports().iter().find_map(|p| {
            self.ask::<(String, String)>(*p, &["SENTINEL", "get-master-addr-by-name", SERVICE])
                .and_then(|(_, port)| port.parse().ok())
        })
    }

    /// The server currently reported as master.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port().unwrap_or(0);
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .unwrap_or(&self.servers[0])
    }

    /// Kills the current master and waits until the sentinels promote the replica.
    /// Returns how long the failover took.
    pub fn fail_over(&mut self) -> Duration {
        let old = self.master_port().unwrap_or(0);
        let start = Instant::now();
        if let Some(s) = self.servers.iter_mut().find(|s| s.port() == old) {
            s.kill();
        }
        self.wait_for(Duration::from_secs(30), |c| {
            c.master_port().is_some_and(|p| p != old)
        });
        start.elapsed()
    }

    /// The directory with the sentinels' logs.
    pub fn log_dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SentinelCluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
