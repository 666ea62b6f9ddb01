//! The servers of one round, shaped for its fault class: one redis-server (with AOF
//! everysec for the AOF class), behind a fault proxy for the network classes (one shared
//! proxy, or one per library instance where a fault slows one manager's own links), or a
//! Sentinel setup whose replica can be cut off for the failover class.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bidlock_testkit::{AofFsync, FaultProxy, RedisServer, SentinelCluster, ServerOptions};

use super::FaultClass;

pub enum Servers {
    Single(RedisServer),
    Sentinel(SentinelCluster),
}

/// One round's servers. The nemesis mutates them (kill, restart) from blocking tasks.
pub struct Topology {
    pub servers: Arc<Mutex<Servers>>,
    pub proxy: Option<FaultProxy>,
    /// One proxy per library instance, for the classes that fault one manager's links.
    pub links: Vec<FaultProxy>,
    /// The port the observer reads (the master's; a failover moves it).
    pub observed: Arc<AtomicU16>,
    /// What process holders connect to (and library instances without a link of their own).
    pub url: String,
    /// What operators connect to (never through the fault proxy).
    pub admin_url: String,
}

impl Topology {
    pub async fn start(class: FaultClass, instances: u8) -> Topology {
        if class == FaultClass::LaggingFailover {
            let cluster = tokio::task::spawn_blocking(SentinelCluster::start_with_cuttable_link)
                .await
                .expect("sentinel cluster");
            let port = cluster.master_port().expect("a master");
            let url = cluster.url();
            return Topology {
                servers: Arc::new(Mutex::new(Servers::Sentinel(cluster))),
                proxy: None,
                links: Vec::new(),
                observed: Arc::new(AtomicU16::new(port)),
                admin_url: url.clone(),
                url,
            };
        }
        let opts = ServerOptions {
            aof: class == FaultClass::AofEverysecCrash,
            aof_fsync: AofFsync::EverySec,
            ..Default::default()
        };
        let server = tokio::task::spawn_blocking(move || RedisServer::start_with(opts))
            .await
            .expect("redis-server");
        let port = server.port();
        let proxy = if class.uses_proxy() {
            Some(FaultProxy::start(port).await)
        } else {
            None
        };
        let url = proxy.as_ref().map_or_else(|| server.url(), FaultProxy::url);
        let mut links = Vec::new();
        if class.links_per_instance() {
            for _ in 0..instances {
                links.push(FaultProxy::start(port).await);
            }
        }
        Topology {
            admin_url: server.url(),
            servers: Arc::new(Mutex::new(Servers::Single(server))),
            proxy,
            links,
            observed: Arc::new(AtomicU16::new(port)),
            url,
        }
    }

    /// What library instance `inst` connects to: its own link, else the shared URL.
    pub fn url_for(&self, inst: u8) -> String {
        self.links
            .get(usize::from(inst))
            .map_or_else(|| self.url.clone(), FaultProxy::url)
    }

    /// A direct synchronous connection to the server the observer reads.
    pub fn direct(&self) -> Option<redis::Connection> {
        let port = self.observed.load(Ordering::Acquire);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).ok()?;
        let c = client
            .get_connection_with_timeout(Duration::from_millis(300))
            .ok()?;
        c.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        Some(c)
    }

    /// The fencing counter on the observed server (`None`: unreachable or unset).
    pub fn fence(&self) -> Option<u64> {
        let mut c = self.direct()?;
        let key = bidlock_testkit::keys::Names::default().fence();
        redis::cmd("GET").arg(key).query(&mut c).ok()?
    }

    /// Whether any of `keys` is held now, on the observed server.
    pub fn any_held(&self, keys: &[String]) -> bool {
        let Some(mut c) = self.direct() else {
            return false;
        };
        let n: redis::RedisResult<u64> = redis::cmd("EXISTS").arg(keys).query(&mut c);
        n.is_ok_and(|n| n > 0)
    }

    /// A PING straight to the server with a short timeout: whether it answers now.
    pub fn answers(&self) -> bool {
        let port = self.observed.load(Ordering::Acquire);
        ping(port, Duration::from_millis(150))
    }

    /// The servers' logs, for a failure report.
    pub fn logs(&self) -> String {
        match &*self.servers.lock().unwrap() {
            Servers::Single(s) => s.log(),
            Servers::Sentinel(c) => c.servers.iter().map(RedisServer::log).collect(),
        }
    }
}

/// A PING to `127.0.0.1:port` that gives up after `limit`.
pub fn ping(port: u16, limit: Duration) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/0")) else {
        return false;
    };
    let Ok(mut c) = client.get_connection_with_timeout(limit) else {
        return false;
    };
    if c.set_read_timeout(Some(limit)).is_err() {
        return false;
    }
    redis::cmd("PING").query::<String>(&mut c).is_ok()
}
