//! Sentinel: finding the master through the sentinels, following it when an error
//! suggests it moved, and confirming after each renewal that the sentinels still name the
//! master the lock was renewed on. Checks run one at a time in the store's tracked tasks,
//! so `close()` stops and waits for them; what each check found is logged, never
//! swallowed.
//!
//! Why confirm: after a failover the old master can stay a writable master for seconds
//! (a planned failover demotes it only once it is reachable; a master cut off from the
//! sentinels but not from its clients is not demoted at all), so renewals there keep
//! succeeding while the lock's copy on the new master runs out. A renewal therefore
//! counts only when every sentinel that answers names the master it went to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionManager, MultiplexedConnection};
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
    /// One connection per sentinel, kept between questions (dropped on an error).
    conns: Mutex<HashMap<Addr, MultiplexedConnection>>,
}

/// What the sentinels said about the master a renewal went to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// Every sentinel that answered names it.
    Confirmed,
    /// A sentinel names another master: the lock there no longer counts.
    Moved,
}

impl Failover {
    pub(crate) fn new(spec: SentinelSpec, target: &RedisTarget, settings: &RedisSettings) -> Self {
        Failover {
            spec,
            target: target.clone(),
            settings: settings.clone(),
            current: Mutex::new(None),
            checking: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// Asks every sentinel at once which master they name, and compares with the one this
    /// store talks to. `Err`: no sentinel answered (the renewal then counts as unknown).
    pub(crate) async fn confirm(&self) -> Result<Confirmation, String> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let answers = join_all(self.spec.sentinels.iter().map(|(h, p)| self.ask(h, *p))).await;
        let named: Vec<Addr> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .cloned()
            .collect();
        if named.is_empty() {
            let why = answers.into_iter().find_map(Result::err);
            return Err(why.unwrap_or_else(|| "no sentinel configured".to_owned()));
        }
        if named.iter().all(|a| Some(a) == current.as_ref()) {
            Ok(Confirmation::Confirmed)
        } else {
            Ok(Confirmation::Moved)
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

    /// One sentinel's answer, over a connection kept for the next question.
    async fn ask(&self, host: &str, port: u16) -> Result<Addr, String> {
        let addr = (host.to_owned(), port);
        let asked = tokio::time::timeout(self.settings.connect_timeout, async {
            let kept = self
                .conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&addr)
                .cloned();
            let mut c = match kept {
                Some(c) => c,
                None => {
                    let client = Client::open(addr.clone())?;
                    let c = client.get_multiplexed_async_connection().await?;
                    self.conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(addr.clone(), c.clone());
                    c
                }
            };
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.spec.service)
                .query_async::<Option<(String, String)>>(&mut c)
                .await
        })
        .await;
        if !matches!(asked, Ok(Ok(_))) {
            self.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&addr);
        }
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
