//! Operations over every key of a pattern: SCAN in batches (never KEYS), one script per
//! batch. On a cluster every master is scanned, and the script runs once per key (a
//! script may only touch keys of one slot).

use futures_util::{StreamExt, TryStreamExt};

use super::cluster::Node;
use super::scripts::{CLEANUP, LIST};
use super::RedisStore;
use crate::backend::LockInfo;
use crate::error::Error;

const SCAN_BATCH: usize = 500;

/// How many per-key scripts a cluster scan runs at once.
const PER_KEY_CONCURRENCY: usize = 16;

/// A SCAN over one pattern on one server (or one cluster master), a batch at a time.
pub(crate) struct Scan<'a> {
    store: &'a RedisStore,
    pattern: String,
    cursor: Option<u64>,
    node: Option<Node>,
}

impl Scan<'_> {
    /// The next non-empty batch of keys; `None` when the scan is complete.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<String>>, Error> {
        while let Some(cursor) = self.cursor {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let reply: Result<(u64, Vec<String>), _> = match (&self.node, self.store.cluster()) {
                (Some(node), Some(c)) => c.on_node(node, cmd).await,
                _ => cmd.query_async(&mut self.store.call()).await,
            };
            let (next, batch) = reply.map_err(|e| self.store.err("scan", &self.pattern, e))?;
            self.cursor = (next != 0).then_some(next);
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }
}

impl RedisStore {
    /// One scan per server: the server, or every master of a cluster.
    pub(super) async fn scans(&self, pattern: String) -> Result<Vec<Scan<'_>>, Error> {
        let nodes: Vec<Option<Node>> = match self.cluster() {
            None => vec![None],
            Some(c) => c
                .masters()
                .await
                .map_err(|e| self.err("cluster slots", &pattern, e))?
                .into_iter()
                .map(Some)
                .collect(),
        };
        Ok(nodes
            .into_iter()
            .map(|node| Scan {
                store: self,
                pattern: pattern.clone(),
                cursor: Some(0),
                node,
            })
            .collect())
    }

    /// The keys of a batch as the scripts take them: all at once on one server, one at a
    /// time on a cluster.
    fn groups(&self, batch: Vec<String>) -> Vec<Vec<String>> {
        match self.cluster() {
            None => vec![batch],
            Some(_) => batch.into_iter().map(|k| vec![k]).collect(),
        }
    }

    pub(super) async fn list_locks(
        &self,
        marketplace: Option<&str>,
    ) -> Result<Vec<LockInfo>, Error> {
        let pattern = self.keys.scan_pattern(marketplace);
        let mut out = Vec::new();
        for mut scan in self.scans(pattern.clone()).await? {
            while let Some(batch) = scan.next().await? {
                let found: Vec<Vec<LockInfo>> = futures_util::stream::iter(self.groups(batch))
                    .map(|group| self.list_group(group, &pattern))
                    .buffer_unordered(PER_KEY_CONCURRENCY)
                    .try_collect()
                    .await?;
                out.extend(found.into_iter().flatten());
            }
        }
        out.sort_by(|a, b| a.redis_key.cmp(&b.redis_key));
        // A key that moved to another master during the scan may be seen twice.
        out.dedup_by(|a, b| a.redis_key == b.redis_key);
        Ok(out)
    }

    async fn list_group(&self, group: Vec<String>, pattern: &str) -> Result<Vec<LockInfo>, Error> {
        let mut inv = LIST.prepare_invoke();
        for k in &group {
            inv.key(k);
        }
        let flat: Vec<redis::Value> = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("list", pattern, e))?;
        Ok(group
            .iter()
            .zip(flat.chunks(3))
            .filter_map(|(k, chunk)| self.lock_info(k, chunk))
            .collect())
    }

    /// One lock from the list script's `{type, holder, pttl}`; `None` for another type,
    /// a name that is not a lock of this prefix, or a key that expired meanwhile.
    fn lock_info(&self, key: &str, chunk: &[redis::Value]) -> Option<LockInfo> {
        let [kind, holder, pttl] = chunk else {
            return None;
        };
        let kind: String = redis::from_redis_value_ref(kind).ok()?;
        let parsed = self.keys.parse_lock_key(key)?;
        let pttl: i64 = redis::from_redis_value_ref(pttl).unwrap_or(-2);
        if kind != "string" || pttl == -2 {
            return None;
        }
        let holder: Vec<u8> = redis::from_redis_value_ref(holder).unwrap_or_default();
        Some(LockInfo {
            redis_key: key.to_owned(),
            marketplace: parsed.marketplace().to_owned(),
            posting: parsed.posting().to_owned(),
            holder: String::from_utf8_lossy(&holder).into_owned(),
            ttl_left_ms: u64::try_from(pttl).ok(),
        })
    }

    /// Deletes every lock of the prefix (announcing each release), then every wait
    /// marker, queue and waiters' hash, so nothing of a lock is left behind. Completion
    /// records and the fencing counter stay. Returns how many locks were deleted.
    pub(super) async fn delete_locks(&self) -> Result<u64, Error> {
        let removed = self.delete_lock_keys().await?;
        for pattern in [
            self.keys.wait_pattern(),
            self.keys.queue_pattern(),
            self.keys.waiters_pattern(),
        ] {
            self.delete_names(pattern).await?;
        }
        Ok(removed)
    }

    /// Deletes every name of `pattern` (on a cluster, one name per command).
    async fn delete_names(&self, pattern: String) -> Result<u64, Error> {
        let mut removed = 0u64;
        let pattern = pattern.as_str();
        for mut scan in self.scans(pattern.to_owned()).await? {
            while let Some(batch) = scan.next().await? {
                let counts: Vec<u64> = futures_util::stream::iter(self.groups(batch))
                    .map(|group| async move {
                        let mut del = redis::cmd("DEL");
                        del.arg(&group);
                        del.query_async::<u64>(&mut self.call())
                            .await
                            .map_err(|e| self.err("cleanup", pattern, e))
                    })
                    .buffer_unordered(PER_KEY_CONCURRENCY)
                    .try_collect()
                    .await?;
                removed += counts.iter().sum::<u64>();
            }
        }
        Ok(removed)
    }

    async fn delete_lock_keys(&self) -> Result<u64, Error> {
        let pattern = self.keys.scan_pattern(None);
        let mut removed = 0u64;
        for mut scan in self.scans(pattern.clone()).await? {
            while let Some(batch) = scan.next().await? {
                let counts: Vec<u64> = futures_util::stream::iter(self.groups(batch))
                    .map(|group| self.delete_group(group, &pattern))
                    .buffer_unordered(PER_KEY_CONCURRENCY)
                    .try_collect()
                    .await?;
                removed += counts.iter().sum::<u64>();
            }
        }
        Ok(removed)
    }

    /// Deletes a group of locks and announces each release: on the prefix's channel, or
    /// on a cluster (one key per group) on the posting's. A cluster name that does not
    /// parse as one of our locks is left alone.
    async fn delete_group(&self, group: Vec<String>, pattern: &str) -> Result<u64, Error> {
        let channel = match self.cluster() {
            None => self.keys.release_channel(),
            Some(_) => match group.first().and_then(|k| self.keys.parse_lock_key(k)) {
                Some(key) => self.keys.release_channel_of(&key),
                None => return Ok(0),
            },
        };
        let mut inv = CLEANUP.prepare_invoke();
        for k in &group {
            inv.key(k);
        }
        inv.arg(channel).arg(self.publish);
        inv.invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("cleanup", pattern, e))
    }
}
