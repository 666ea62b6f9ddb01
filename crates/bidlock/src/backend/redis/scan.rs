//! Operations over every key of a pattern: SCAN in batches (never KEYS), one script per
//! batch.

use super::scripts::{CLEANUP, LIST};
use super::RedisStore;
use crate::backend::LockInfo;
use crate::error::Error;

const SCAN_BATCH: usize = 500;

/// A SCAN over one pattern, a batch at a time.
pub(crate) struct Scan<'a> {
    store: &'a RedisStore,
    pattern: String,
    cursor: Option<u64>,
}

impl Scan<'_> {
    /// The next non-empty batch of keys; `None` when the scan is complete.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<String>>, Error> {
        while let Some(cursor) = self.cursor {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH)
                .query_async(&mut self.store.call())
                .await
                .map_err(|e| self.store.err("scan", &self.pattern, e))?;
            self.cursor = (next != 0).then_some(next);
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
        }
        Ok(None)
    }
}

impl RedisStore {
    pub(crate) fn scan(&self, pattern: String) -> Scan<'_> {
        Scan {
            store: self,
            pattern,
            cursor: Some(0),
        }
    }

    pub(super) async fn list_locks(
        &self,
        marketplace: Option<&str>,
    ) -> Result<Vec<LockInfo>, Error> {
        let mut scan = self.scan(self.keys.scan_pattern(marketplace));
        let mut out = Vec::new();
        while let Some(batch) = scan.next().await? {
            let mut inv = LIST.prepare_invoke();
            for k in &batch {
                inv.key(k);
            }
            let flat: Vec<redis::Value> = inv
                .invoke_async(&mut self.call())
                .await
                .map_err(|e| self.err("list", &scan.pattern, e))?;
            out.extend(
                batch
                    .iter()
                    .zip(flat.chunks(3))
                    .filter_map(|(k, chunk)| self.lock_info(k, chunk)),
            );
        }
        out.sort_by(|a, b| a.redis_key.cmp(&b.redis_key));
        Ok(out)
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

    pub(super) async fn delete_locks(&self) -> Result<u64, Error> {
        let mut scan = self.scan(self.keys.scan_pattern(None));
        let mut removed = 0u64;
        while let Some(batch) = scan.next().await? {
            let mut inv = CLEANUP.prepare_invoke();
            for k in &batch {
                inv.key(k);
            }
            inv.arg(&self.channel);
            let n: u64 = inv
                .invoke_async(&mut self.call())
                .await
                .map_err(|e| self.err("cleanup", &scan.pattern, e))?;
            removed += n;
        }
        Ok(removed)
    }
}
