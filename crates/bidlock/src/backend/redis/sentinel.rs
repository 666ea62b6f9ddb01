//! Sentinel: finding the master through the sentinels, and following it when an error
//! suggests it moved. Checks run one at a time in the store's tracked tasks, so `close()`
//! stops and waits for them; what each check found is logged, never swallowed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Client;

use super::client::{make_client, Master, RedisSettings};
use super::Background;
use crate::config::{RedisTarget, SentinelSpec};
use crate::notices::Notices;

/// After a check, the next one waits at least this long.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// Where the master is: `(host, port)`.
type Addr = (String, u16);

pub(crate) struct Failover {
    spec: SentinelSpec,
    target: RedisTarget,
    settings: RedisSettings,
    current: Mutex<Option<Addr>>,
    checking: AtomicBool,
}

impl Failover {
    pub(crate) fn new(spec: SentinelSpec, target: &RedisTarget, settings: &RedisSettings) -> Self {
        Failover {
            spec,
            target: target.clone(),
            settings: settings.clone(),
            current: Mutex::new(None),
            checking: AtomicBool::new(false),
        }
    }

    /// Asks the sentinels where the master is, and remembers the answer.
    pub(crate) async fn locate(&self) -> Result<redis::ConnectionInfo, String> {
        let addr = self.resolve().await?;
        let info = self.info_for(&addr);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
        Ok(info)
    }

    /// Asks the sentinels, in turn, where the master is.
    async fn resolve(&self) -> Result<Addr, String> {
        let mut last = String::from("no sentinel answered");
        for (host, port) in &self.spec.sentinels {
            match self.ask(host, *port).await {
                Ok(addr) => return Ok(addr),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    /// One sentinel's answer.
    async fn ask(&self, host: &str, port: u16) -> Result<Addr, String> {
        let asked = tokio::time::timeout(self.settings.connect_timeout, async {
            let client = Client::open((host.to_owned(), port))?;
            let mut c = client.get_multiplexed_async_connection().await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.spec.service)
                .query_async::<Option<(String, String)>>(&mut c)
                .await
        })
        .await;
        match asked {
            Ok(Ok(Some((h, p)))) => p
                .parse::<u16>()
                .map(|p| (h, p))
                .map_err(|_| format!("sentinel {host}:{port} gave a bad port {p:?}")),
            Ok(Ok(None)) => Err(format!(
                "sentinel {host}:{port} knows no master named {:?}",
                self.spec.service
            )),
            Ok(Err(e)) => Err(format!("sentinel {host}:{port}: {e}")),
            Err(_) => Err(format!("sentinel {host}:{port}: no answer")),
        }
    }

    fn info_for(&self, (host, port): &Addr) -> redis::ConnectionInfo {
        let addr = if self.target.is_tls() {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        };
        self.target.info.clone().set_addr(addr)
    }

    /// After an error that may mean a failover: ask again in the background and follow
    /// the master if it moved. At most one check at a time, one per 200 ms.
    pub(crate) fn check(
        self: &Arc<Self>,
        master: &Arc<Master>,
        notices: &Arc<Notices>,
        background: &Background,
    ) {
        if self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, master, notices) = (self.clone(), master.clone(), notices.clone());
        background.spawn(async move {
            this.follow(&master, &notices).await;
            tokio::time::sleep(CHECK_EVERY).await;
            this.checking.store(false, Ordering::Release);
        });
    }

    async fn follow(&self, master: &Master, notices: &Notices) {
        let url = self.target.redacted();
        let addr = match self.resolve().await {
            Ok(addr) => addr,
            Err(why) => {
                tracing::warn!(target: "bidlock::redis", url, %why, "cannot ask Sentinel where the master is");
                return;
            }
        };
        let moved = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            != Some(&addr);
        if !moved {
            return;
        }
        let info = self.info_for(&addr);
        let client = make_client(
            info,
            self.target.is_tls(),
            self.settings.tls_ca_cert.as_ref(),
        );
        let connected = client.and_then(|client| {
            ConnectionManager::new_lazy_with_config(client.clone(), self.settings.manager_config())
                .map(|conn| (conn, client))
        });
        match connected {
            Ok((conn, client)) => {
                master.replace(conn, client);
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr.clone());
                tracing::warn!(target: "bidlock::redis", url, master = %format!("{}:{}", addr.0, addr.1), "Sentinel reports a new master; following it");
                notices.all();
            }
            Err(e) => {
                tracing::warn!(target: "bidlock::redis", url, error = %e, "cannot connect to the new master Sentinel reports");
            }
        }
    }
}
