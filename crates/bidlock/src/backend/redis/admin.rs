//! The Redis store's side of the admin contract ([`AdminStore`]): reads and operators'
//! changes, by script or by SCAN in batches.

use async_trait::async_trait;

use super::client::{describe, maxmemory_policy};
use super::scripts::{FORCE_RELEASE, STATUS};
use super::{acl, handoff, RedisStore};
use crate::backend::{
    AdminStore, ClusterProbe, LockInfo, LockStatus, Permissions, Probe, Topology,
};
use crate::error::Error;
use crate::key::LockKey;
use crate::stats::Census;

#[async_trait]
impl AdminStore for RedisStore {
    fn location(&self) -> String {
        self.target.redacted().to_owned()
    }

    fn topology(&self) -> Topology {
        if let Some(c) = self.cluster() {
            Topology::Cluster {
                masters: c.master_count(),
            }
        } else if self.failover.is_some() {
            Topology::Sentinel
        } else {
            Topology::Single
        }
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        let mut inv = FORCE_RELEASE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(key))
            .arg(self.keys.release_channel_of(key))
            .arg(self.publish);
        let (n, text): (i64, Vec<u8>) = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("force_release", &lock, e))?;
        if n == 3 {
            return Err(handoff::junk(&text, || lock.clone()));
        }
        Ok(n == 1)
    }

    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        let done = self.keys.done_key(key);
        let n: i64 = redis::cmd("DEL")
            .arg(&done)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("clear_done", &done, e))?;
        Ok(n == 1)
    }

    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        let lock = self.keys.lock_key(key);
        let done = self.keys.done_key(key);
        let mut inv = STATUS.prepare_invoke();
        inv.key(&lock).key(&done);
        let (kind, holder, pttl, record, done_pttl): (String, Vec<u8>, i64, Vec<u8>, i64) = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("status", &lock, e))?;
        if kind != "string" && kind != "none" {
            return Err(Error::WrongType {
                key: lock,
                found: format!("holds a Redis {kind}, not a lock"),
            });
        }
        let held = kind == "string";
        let has_done = !record.is_empty();
        Ok(LockStatus {
            redis_key: lock,
            holder: held.then(|| String::from_utf8_lossy(&holder).into_owned()),
            ttl_left_ms: if held { u64::try_from(pttl).ok() } else { None },
            done: has_done.then(|| String::from_utf8_lossy(&record).into_owned()),
            done_ttl_left_ms: if has_done {
                u64::try_from(done_pttl).ok()
            } else {
                None
            },
        })
    }

    async fn ping(&self) -> Result<(), Error> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("ping", "", e))?;
        Ok(())
    }

    /// The eviction policy (`None` when neither `INFO` nor `CONFIG GET` may be read); on a
    /// cluster, an evicting one if any master evicts. The permissions bidlock needs that
    /// the Redis user lacks (on a cluster, on any master).
    async fn probe(&self) -> Probe {
        let (maxmemory_policy, permissions) = match self.cluster() {
            None => {
                let db = self.target.info.redis_settings().db();
                let grants = self.grants.as_deref();
                let mut conn = self.call();
                let permissions = acl::check_server(&mut conn, &self.keys, grants, db).await;
                (maxmemory_policy(&mut conn).await, permissions)
            }
            Some(c) => match c.masters().await {
                Ok(m) => (
                    c.maxmemory_policy(&m).await,
                    acl::check_cluster(c, &m, &self.keys).await,
                ),
                Err(e) => (None, Permissions::Unchecked(describe(&e))),
            },
        };
        Probe {
            maxmemory_policy,
            permissions: Some(permissions),
        }
    }

    async fn cluster_probe(&self) -> Option<ClusterProbe> {
        let c = self.cluster()?;
        let masters = c.masters().await.ok();
        Some(ClusterProbe {
            state: match &masters {
                Some(m) => c.state(m).await,
                None => None,
            },
            masters: masters.map(|m| m.len()),
        })
    }

    async fn close(&self) {
        self.background.stop(self.response_timeout).await;
    }

    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        self.list_locks(marketplace).await
    }

    async fn cleanup_all(&self) -> Result<u64, Error> {
        self.delete_locks().await
    }

    async fn census(&self) -> Result<Census, Error> {
        self.take_census().await
    }
}
