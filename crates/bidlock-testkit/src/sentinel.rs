//! A Sentinel setup on loopback: one master, one replica, three sentinels watching them.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, Link, RedisServer, ServerOptions};

/// The name the sentinels know the master by.
pub const SERVICE: &str = "bidmaster";

/// One master, one replica, three sentinels. Dropping it stops them all.
#[derive(Debug)]
pub struct SentinelCluster {
    /// The servers: index 0 starts as master, 1 as its replica.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<(u16, Child)>,
    dir: tempfile::TempDir,
    /// The replica's link to the master, when it goes through a relay.
    link: Option<Link>,
}

impl SentinelCluster {
    /// Starts the servers and sentinels and waits until the sentinels see the replica.
    pub fn start() -> SentinelCluster {
        SentinelCluster::start_inner(false)
    }

    /// As [`SentinelCluster::start`], with the replica's link to the master going through
    /// a relay that [`SentinelCluster::cut_replication`] cuts: the replica then falls
    /// behind while the master takes writes, and a failover promotes a replica that
    /// missed them.
    pub fn start_with_cuttable_link() -> SentinelCluster {
        SentinelCluster::start_inner(true)
    }

    fn start_inner(cuttable: bool) -> SentinelCluster {
        // No delay before the first (diskless) sync: the replica must hold the data
        // before a test kills the master.
        let master = RedisServer::start_with(ServerOptions {
            extra: vec!["--repl-diskless-sync-delay".into(), "0".into()],
            ..Default::default()
        });
        let link = cuttable.then(|| Link::start(master.port()));
        let upstream = link.as_ref().map_or(master.port(), Link::port);
        let replica = RedisServer::start_with(ServerOptions {
            extra: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                upstream.to_string(),
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
            link,
        };
        cluster.wait_for(Duration::from_secs(15), |c| {
            c.servers[1]
                .cmd::<String>(&["INFO", "replication"])
                .contains("master_link_status:up")
        });
        if !cuttable {
            // With a diskless sync the master holds the command stream back until the
            // replica's first REPLCONF ACK (once a second): a write made before it may be
            // missing on the replica a second later. Wait until a write has reached it.
            assert!(
                cluster.wait_replicated(Duration::from_secs(10)),
                "the replica never acknowledged a write"
            );
        }
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

    /// Asks a sentinel for a planned failover (`SENTINEL FAILOVER`): the replica is
    /// promoted and the old master stays up (a writable master until the sentinels demote
    /// it, seconds later). Returns at once; [`SentinelCluster::wait_new_master`] waits.
    /// A sentinel may refuse for a moment (`NOGOODSLAVE` until it has fresh word of the
    /// replica): asked again every 100 ms, for up to 10 s.
    pub fn planned_failover(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = self.sentinel_ports()[0];
        loop {
            let answer = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("FAILOVER")
                        .arg(SERVICE)
                        .query::<String>(&mut c)
                });
            match answer {
                Ok(_) => return,
                Err(e) if e.to_string().contains("INPROG") => return,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "SENTINEL FAILOVER refused for 10 s: {e}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the replica has every write made on the current master so far, up to
    /// `limit`: a probe written and deleted after them, then `WAIT` for it on the same
    /// connection (the stream is in order). False when the replica did not acknowledge.
    pub fn wait_replicated(&self, limit: Duration) -> bool {
        let mut c = self.master().client();
        let ms = limit.as_millis().to_string();
        let acked: redis::RedisResult<i64> = redis::pipe()
            .cmd("SET")
            .arg("bidlock_testkit_probe")
            .arg(1)
            .ignore()
            .cmd("DEL")
            .arg("bidlock_testkit_probe")
            .ignore()
            .cmd("WAIT")
            .arg(1)
            .arg(ms)
            .query::<(i64,)>(&mut c)
            .map(|(n,)| n);
        acked.is_ok_and(|n| n >= 1)
    }

    /// Cuts the replica's link to the master (started with
    /// [`SentinelCluster::start_with_cuttable_link`]) and waits until the replica reports
    /// the link down: from then on it misses every write. Returns false when the cluster
    /// has no cuttable link or the replica never noticed (within 10 s).
    pub fn cut_replication(&self) -> bool {
        let Some(link) = &self.link else {
            return false;
        };
        link.cut();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let info = self.ask::<String>(self.servers[1].port(), &["INFO", "replication"]);
            if info.is_some_and(|i| i.contains("master_link_status:down")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the current master with SIGKILL (no failover wait). Returns its port.
    pub fn kill_master(&mut self) -> Option<u16> {
        let old = self.master_port()?;
        let server = self.servers.iter_mut().find(|s| s.port() == old)?;
        server.kill();
        Some(old)
    }

    /// Waits up to `limit` until the sentinels report a master other than `old`, and
    /// returns its port.
    pub fn wait_new_master(&self, old: u16, limit: Duration) -> Option<u16> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(p) = self.master_port().filter(|p| *p != old) {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The server on `port`.
    pub fn server(&self, port: u16) -> Option<&RedisServer> {
        self.servers.iter().find(|s| s.port() == port)
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
