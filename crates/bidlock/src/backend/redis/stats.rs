//! The census of one Redis (or every master of a cluster): what `bidlock stats` shows,
//! read with SCAN (never KEYS) over the prefix's locks, completion records, wait markers
//! and wait queues, and one GET of the fencing counter. A read only: nothing is changed.
//! On a cluster the counters are per posting, so there is no one current token.

use std::collections::HashSet;

use super::RedisStore;
use crate::error::Error;
use crate::key::LockKey;
use crate::stats::Census;

/// The posting a name of `pattern` is about: `head:{marketplace}:{posting}` for the
/// pattern `head:*`, or `head:{{marketplace}:{posting}}` for the cluster's `head:{*`.
/// `None` for a name that is not one of ours (a foreign key that happens to match).
fn posting_of(name: &str, pattern: &str) -> Option<LockKey> {
    let head = pattern.strip_suffix('*')?;
    let mut rest = name.strip_prefix(head)?;
    if head.ends_with('{') {
        rest = rest.strip_suffix('}')?;
    }
    let (marketplace, posting) = rest.split_once(':')?;
    LockKey::new(marketplace, posting).ok()
}

impl RedisStore {
    pub(super) async fn take_census(&self) -> Result<Census, Error> {
        let mut census = Census::default();
        for lock in self.list_locks(None).await? {
            if let Ok(key) = LockKey::new(&lock.marketplace, &lock.posting) {
                census.locks.insert(key, lock.holder);
            }
        }
        census.done = self.postings(self.keys.done_pattern()).await?.0;
        // A posting with a marker, a queue or both is one posting with waiters (a waiters'
        // hash alone may hold only the last grant); every handover key is counted.
        let (markers, n_markers) = self.postings(self.keys.wait_pattern()).await?;
        let (queued, n_queues) = self.postings(self.keys.queue_pattern()).await?;
        let (_, n_entries) = self.postings(self.keys.waiters_pattern()).await?;
        census.waiting = markers;
        census.waiting.extend(queued);
        census.handoff_keys = n_markers + n_queues + n_entries;
        census.fence = self.fence().await?;
        Ok(census)
    }

    /// The postings that have a name of `pattern`, and how many names of ours it matched.
    async fn postings(&self, pattern: String) -> Result<(HashSet<LockKey>, u64), Error> {
        let mut found = HashSet::new();
        let mut names = 0u64;
        for mut scan in self.scans(pattern.clone()).await? {
            while let Some(batch) = scan.next().await? {
                for key in batch.iter().filter_map(|name| posting_of(name, &pattern)) {
                    names += 1;
                    found.insert(key);
                }
            }
        }
        Ok((found, names))
    }

    /// The fencing counter: the last token issued (`None` when absent or not a number).
    async fn fence(&self) -> Result<Option<u64>, Error> {
        if self.cluster().is_some() {
            return Ok(None);
        }
        let fence_key = self.keys.fence_key();
        let value: Option<String> = redis::cmd("GET")
            .arg(&fence_key)
            .query_async(&mut self.call())
            .await
            .map_err(|e| self.err("stats", &fence_key, e))?;
        Ok(value.and_then(|v| v.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_to_their_posting() {
        let k = LockKey::new("upwork", "job:1").unwrap();
        assert_eq!(
            posting_of("bid_lock_wait:upwork:job:1", "bid_lock_wait:*"),
            Some(k)
        );
        assert_eq!(posting_of("bid_lock_wait:bad", "bid_lock_wait:*"), None);
        assert_eq!(posting_of("other:upwork:1", "bid_lock_wait:*"), None);
        assert_eq!(posting_of("bid_done:a b:1", "bid_done:*"), None);
        let k = LockKey::new("upwork", "}{").unwrap();
        assert_eq!(
            posting_of("bid_lock_queue:{upwork:}{}", "bid_lock_queue:{*"),
            Some(k)
        );
    }
}
