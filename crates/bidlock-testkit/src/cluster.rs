//! A Redis Cluster on loopback: six `redis-server --cluster-enabled yes` nodes (three
//! masters, three replicas) joined with `redis-cli --cluster create`, and the faults a
//! cluster test needs: moving a slot that holds live keys, and killing a master with
//! SIGKILL until its replica takes over.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::redis_server_bin;

/// Cluster node ports are drawn from here: the bus port (port + 10000) then stays below
/// the kernel's ephemeral range (32768 and up), so no outgoing connection can take it.
const PORTS: std::ops::Range<u16> = 20000..22700;

/// How long a node may be silent before the others count it as failing. Short, so that a
/// killed master's replica takes over within a few seconds; not so short that a loaded
/// machine fails a master over by itself.
const NODE_TIMEOUT_MS: u32 = 2000;

/// One `redis-server` of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl ClusterNode {
    /// The node's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as the cluster names the node.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT` (a plain, non-cluster URL of this node).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn connection(&self) -> Option<redis::Connection> {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
        let client = redis::Client::open(self.url()).ok()?;
        client
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()
    }

    /// Runs one command on this node; `None` when the node does not answer or refuses.
    pub fn try_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> Option<T> {
        let mut c = self.connection()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).ok()
    }

    /// Runs one command on this node and returns its reply (panics on an error).
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self
            .connection()
            .unwrap_or_else(|| panic!("node {} does not answer", self.port));
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("{args:?} on node {}: {e}", self.port))
    }

    /// This node's cluster id.
    pub fn id(&self) -> String {
        self.cmd(&["CLUSTER", "MYID"])
    }

    /// Stops the process (SIGSTOP): it neither answers nor replicates until resumed.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Resumes a paused node (SIGCONT).
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = kill(
                Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX)),
                sig,
            );
        }
    }

    /// Kills the node with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn start(port: u16, dir: &Path) -> Result<ClusterNode, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("node dir: {e}"))?;
        let child = Command::new(redis_server_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // A replica may always take over, however long it was cut off.
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--repl-diskless-sync", "yes"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "spawn {}: {e} (apt-get install redis-server)",
                    redis_server_bin()
                )
            })?;
        let mut node = ClusterNode {
            port,
            child: Some(child),
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !node.is_running() {
                return Err(format!("node {port} exited: {}", node.log()));
            }
            if node.try_cmd::<String>(&["PING"]).as_deref() == Some("PONG") {
                return Ok(node);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        node.kill();
        Err(format!("node {port} did not answer PING in 10 s"))
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Both the port and its cluster bus port are free on 127.0.0.1 right now.
fn port_pair_free(port: u16) -> bool {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    free(port) && free(port + 10000)
}

fn pick_ports(n: usize, taken: &[u16]) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::new();
    for _ in 0..10_000 {
        if out.len() == n {
            break;
        }
        let p = PORTS.start + rand_u16() % (PORTS.end - PORTS.start);
        if !out.contains(&p) && !taken.contains(&p) && port_pair_free(p) {
            out.push(p);
        }
    }
    assert_eq!(out.len(), n, "no free cluster ports in {PORTS:?}");
    out
}

/// A pseudo-random number from the clock and the pid (no extra dependency).
fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    (h.finish() % u64::from(u16::MAX)) as u16
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// The node's port.
    pub port: u16,
    /// `master` or `slave` (after `fail` flags are taken off).
    pub master: bool,
    /// Flagged `fail` or `fail?`.
    pub failing: bool,
    /// The slot ranges it serves (masters).
    pub slots: Vec<(u16, u16)>,
    /// The id of the master it replicates (replicas).
    pub replica_of: Option<String>,
}

/// Six nodes: three masters, each with one replica. Dropping it kills them all.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order they were given to `redis-cli --cluster create`.
    pub nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts six nodes, joins them (`--cluster-replicas 1`) and waits until every node
    /// reports `cluster_state:ok` and knows all six. Tries fresh ports when one was taken.
    pub fn start() -> RedisCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match RedisCluster::try_start() {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("could not start a Redis Cluster: {last}");
    }

    fn try_start() -> Result<RedisCluster, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let mut nodes = Vec::new();
        for port in pick_ports(6, &[]) {
            nodes.push(ClusterNode::start(
                port,
                &dir.path().join(port.to_string()),
            )?);
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes.iter().map(ClusterNode::addr))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.wait_until(Duration::from_secs(30), "all nodes ok", |c| c.settled(6))?;
        // A replica's link can be up before its master's table lists it (the master learns
        // by gossip): tests that kill a master need every master to know its replica.
        cluster.wait_until(
            Duration::from_secs(30),
            "every master listed with a replica by every node",
            RedisCluster::replicas_known,
        )?;
        Ok(cluster)
    }

    /// Every running node says `cluster_state:ok`, knows `known` nodes, and has a
    /// replication link up when it is a replica.
    fn settled(&self, known: usize) -> bool {
        self.nodes.iter().all(|n| {
            let Some(info) = n.try_cmd::<String>(&["CLUSTER", "INFO"]) else {
                return n.child.is_none();
            };
            let ok = info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{known}"));
            let repl: String = n.try_cmd(&["INFO", "replication"]).unwrap_or_default();
            ok && (repl.contains("role:master") || repl.contains("master_link_status:up"))
        })
    }

    /// Every running node lists three masters serving slots, each with a replica.
    fn replicas_known(&self) -> bool {
        self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
            let Some(text) = n.try_cmd::<String>(&["CLUSTER", "NODES"]) else {
                return false;
            };
            let nodes: Vec<NodeInfo> = text.lines().filter_map(parse_node_line).collect();
            let masters: Vec<&NodeInfo> = nodes
                .iter()
                .filter(|m| m.master && !m.failing && !m.slots.is_empty())
                .collect();
            masters.len() == 3
                && masters.iter().all(|m| {
                    nodes
                        .iter()
                        .any(|r| r.replica_of.as_deref() == Some(m.id.as_str()))
                })
        })
    }

    fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        ok: impl Fn(&Self) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            if Instant::now() > deadline {
                return Err(format!("cluster: {what} not reached in {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// `redis+cluster://127.0.0.1:P1,...` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(ClusterNode::addr).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis+cluster://127.0.0.1:P` with one seed (the client discovers the rest).
    pub fn seed_url(&self) -> String {
        format!("redis+cluster://{}", self.nodes[0].addr())
    }

    /// Any running node that answers.
    pub fn any_node(&self) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.try_cmd::<String>(&["PING"]).is_some())
            .unwrap_or_else(|| panic!("no cluster node answers"))
    }

    /// The cluster as a running node sees it (`CLUSTER NODES`).
    pub fn topology(&self) -> Vec<NodeInfo> {
        let text: String = self.any_node().cmd(&["CLUSTER", "NODES"]);
        text.lines().filter_map(parse_node_line).collect()
    }

    /// The node with this port.
    pub fn node(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// The ports of the masters that serve slots and are not failing.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .topology()
            .into_iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .map(|n| n.port)
            .collect();
        v.sort_unstable();
        v
    }

    /// The hash slot of `key`, as the server computes it (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        self.any_node().cmd(&["CLUSTER", "KEYSLOT", key])
    }

    /// The port of the master that serves `slot`.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.topology()
            .into_iter()
            .find(|n| {
                n.master && !n.failing && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The port of the master that serves `key`.
    pub fn master_of_key(&self, key: &str) -> u16 {
        self.master_of_slot(self.slot_of(key))
    }

    /// Runs a command on the master that serves `key`.
    pub fn cmd_for_key<T: redis::FromRedisValue>(&self, key: &str, args: &[&str]) -> T {
        self.node(self.master_of_key(key)).cmd(args)
    }

    /// Moves `slot`, with every key in it, to the master on port `to`, the way
    /// `redis-cli --cluster reshard` does: `SETSLOT IMPORTING` / `MIGRATING`, `MIGRATE`
    /// the keys one at a time (waiting `pause` after each, so clients meet the slot half
    /// moved and get `ASK` / `TRYAGAIN`), then `SETSLOT NODE` everywhere. Returns how many
    /// keys moved.
    pub fn migrate_slot(&self, slot: u16, to: u16, pause: Duration) -> usize {
        let from = self.master_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (src, dst) = (self.node(from), self.node(to));
        let (src_id, dst_id) = (src.id(), dst.id());
        let s = slot.to_string();
        let _: String = dst.cmd(&["CLUSTER", "SETSLOT", &s, "IMPORTING", &src_id]);
        let _: String = src.cmd(&["CLUSTER", "SETSLOT", &s, "MIGRATING", &dst_id]);
        let mut moved = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(
                Instant::now() < deadline,
                "slot {slot} did not drain in 30 s"
            );
            let keys: Vec<String> = src.cmd(&["CLUSTER", "GETKEYSINSLOT", &s, "1"]);
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            let _: redis::Value = src.cmd(&args);
            moved += keys.len();
            std::thread::sleep(pause);
        }
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            let _: Option<String> = n.try_cmd(&["CLUSTER", "SETSLOT", &s, "NODE", &dst_id]);
        }
        moved
    }

    /// Waits until every replica of the master on `port` has what the master had when
    /// this was called (replication is asynchronous).
    pub fn wait_replicated(&self, port: u16) {
        let master = self.node(port);
        let info: String = master.cmd(&["INFO", "replication"]);
        let field = |text: &str, name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let target = field(&info, "master_repl_offset:").unwrap_or(0);
        self.wait_until(Duration::from_secs(10), "replicas caught up", |_| {
            let info: String = master.try_cmd(&["INFO", "replication"]).unwrap_or_default();
            let offsets: Vec<u64> = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("offset="))
                .filter_map(|l| {
                    l.split(',')
                        .find_map(|kv| kv.strip_prefix("offset="))
                        .and_then(|v| v.parse().ok())
                })
                .collect();
            !offsets.is_empty() && offsets.iter().all(|o| *o >= target)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The ports of the replicas of the master on `port`, as that master sees them.
    pub fn replicas_of(&self, port: u16) -> Vec<u16> {
        let master = self.node(port);
        let id = master.id();
        let text: String = master.cmd(&["CLUSTER", "NODES"]);
        text.lines()
            .filter(|l| l.split(' ').nth(3) == Some(id.as_str()))
            .filter_map(parse_node_line)
            .map(|n| n.port)
            .collect()
    }

    /// Kills the node on `port` with SIGKILL (nothing is promoted in its place unless it
    /// was a master with a live replica).
    pub fn kill_node(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.kill();
        }
    }

    /// Kills the master on port `port` with SIGKILL, resumes its replicas (a test may
    /// have paused one to keep a write from it), and waits until one of them is promoted
    /// and every other node reports `cluster_state:ok`. Returns the new master's port.
    pub fn kill_master(&mut self, port: u16) -> u16 {
        // The master learns of its replica by gossip: wait for it rather than fail.
        self.wait_until(Duration::from_secs(30), "master lists a replica", |c| {
            !c.replicas_of(port).is_empty()
        })
        .unwrap_or_else(|e| panic!("master {port} has no replica: {e}"));
        let replicas = self.replicas_of(port);
        self.kill_node(port);
        for r in &replicas {
            self.node(*r).resume();
        }
        let promoted = |c: &Self| {
            replicas.iter().copied().find(|r| {
                c.node(*r)
                    .try_cmd::<String>(&["INFO", "replication"])
                    .is_some_and(|i| i.contains("role:master"))
            })
        };
        self.wait_until(Duration::from_secs(30), "replica promoted", |c| {
            promoted(c).is_some() && c.settled(6)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        promoted(self).unwrap_or_else(|| panic!("no replica of {port} promoted"))
    }
}

/// `id addr@bus flags master-id ping pong epoch link slot...`.
fn parse_node_line(line: &str) -> Option<NodeInfo> {
    let f: Vec<&str> = line.split(' ').collect();
    let port = f
        .get(1)?
        .split('@')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    let flags = f.get(2)?;
    let slots = f
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|x| (x, x)),
        })
        .collect();
    let replica_of = f.get(3).filter(|m| **m != "-").map(|m| (*m).to_owned());
    Some(NodeInfo {
        replica_of,
        id: (*f.first()?).to_owned(),
        port,
        master: flags.split(',').any(|x| x == "master"),
        failing: flags.split(',').any(|x| x == "fail" || x == "fail?"),
        slots,
    })
}
