//! [`FleetStats`]: the fleet's picture as the backend holds it — held locks, postings
//! with waiters, completion records and the fencing counter, per marketplace — and the
//! [`Census`] each store takes to build it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::key::LockKey;

/// What [`BidLockManager::stats`](crate::BidLockManager::stats) found: the locks of this
/// prefix as the backend holds them, read in one pass (SCAN in batches on Redis, never
/// `KEYS`).
///
/// A picture taken over a moment, not an atomic snapshot: on a busy Redis, a lock taken
/// or released during the scan may or may not be counted. Serializes (serde) with
/// exactly the fields below, `by_marketplace` as `{marketplace: {locks, waiting,
/// done_records}}`.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
/// use bidlock::{AcquireOptions, BidLockManager, LockKey};
///
/// let manager = BidLockManager::memory();
/// let key = LockKey::new("upwork", "stats-doc-example")?;
/// let _guard = manager.acquire(&key, &AcquireOptions::new()).await?;
/// let stats = manager.stats().await?;
/// assert!(stats.locks >= 1);
/// assert!(stats.by_marketplace["upwork"].locks >= 1);
/// println!("{}", serde_json::to_string(&stats).unwrap());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FleetStats {
    /// Locks held now.
    pub locks: u64,
    /// Postings with waiters. In Redis: postings with a wait marker or a wait queue,
    /// counted once if they have both. A marker outlives its waiter by up to the lock's
    /// ttl plus 5 s, and a queue may still list a waiter that just gave up, so this counts
    /// postings someone waited for very recently. In memory: postings with waiters in
    /// this process.
    pub waiting: u64,
    /// Completion records kept: postings already handled, within their retention.
    pub done_records: u64,
    /// The last fencing token issued for this prefix (`None`: none issued yet, or the
    /// counter was deleted). The next acquire gets a greater one. Always `None` on a Redis
    /// Cluster, where each posting has a counter of its own.
    pub fence: Option<u64>,
    /// The prefix's handover keys in Redis: wait markers, wait queues and the queued
    /// waiters' entries (each expires by itself, seconds after its last waiter; `cleanup`
    /// deletes them). With the locks, the records and the counter, every kind of key
    /// bidlock writes is counted. Always 0 in memory.
    pub handoff_keys: u64,
    /// The counts per marketplace; a marketplace with nothing to count is absent.
    pub by_marketplace: BTreeMap<String, MarketplaceStats>,
}

/// The counts of one marketplace in [`FleetStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MarketplaceStats {
    /// Locks held now.
    pub locks: u64,
    /// Postings with waiters.
    pub waiting: u64,
    /// Completion records kept.
    pub done_records: u64,
}

/// What one store (or one Redlock node) holds, posting by posting, so that several
/// views can be combined before anything is counted.
#[derive(Debug, Default)]
pub(crate) struct Census {
    /// Held locks and their holders.
    pub(crate) locks: HashMap<LockKey, String>,
    /// Postings with waiters.
    pub(crate) waiting: HashSet<LockKey>,
    /// Postings with a completion record.
    pub(crate) done: HashSet<LockKey>,
    /// The fencing counter.
    pub(crate) fence: Option<u64>,
    /// How many handover keys (markers, queues, waiters' entries) there are.
    pub(crate) handoff_keys: u64,
}

impl Census {
    /// The view of a majority of nodes (Redlock): a lock counts when `quorum` views have
    /// the same holder for it (as `locks` lists them); a waiter or a completion record
    /// when any view has it (an acquire treats a record on any node as "done"); the
    /// fence is the highest counter, the handover keys the most any node has.
    pub(crate) fn agreed(views: Vec<Census>, quorum: usize) -> Census {
        let mut seen: HashMap<(LockKey, String), usize> = HashMap::new();
        let mut out = Census::default();
        for view in views {
            for lock in view.locks {
                *seen.entry(lock).or_default() += 1;
            }
            out.waiting.extend(view.waiting);
            out.done.extend(view.done);
            out.fence = out.fence.max(view.fence);
            out.handoff_keys = out.handoff_keys.max(view.handoff_keys);
        }
        out.locks = seen
            .into_iter()
            .filter(|(_, n)| *n >= quorum)
            .map(|(lock, _)| lock)
            .collect();
        out
    }

    /// The counts, in total and per marketplace.
    pub(crate) fn count(self) -> FleetStats {
        fn of<'a>(
            by: &'a mut BTreeMap<String, MarketplaceStats>,
            k: &LockKey,
        ) -> &'a mut MarketplaceStats {
            by.entry(k.marketplace().to_owned()).or_default()
        }
        let mut by = BTreeMap::new();
        for k in self.locks.keys() {
            of(&mut by, k).locks += 1;
        }
        for k in &self.waiting {
            of(&mut by, k).waiting += 1;
        }
        for k in &self.done {
            of(&mut by, k).done_records += 1;
        }
        FleetStats {
            locks: self.locks.len() as u64,
            waiting: self.waiting.len() as u64,
            done_records: self.done.len() as u64,
            fence: self.fence,
            handoff_keys: self.handoff_keys,
            by_marketplace: by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(m: &str, p: &str) -> LockKey {
        LockKey::new(m, p).unwrap()
    }

    fn view(locks: &[(&str, &str)], done: &[&str], fence: u64) -> Census {
        Census {
            locks: locks
                .iter()
                .map(|(p, h)| (k("m", p), (*h).to_owned()))
                .collect(),
            waiting: HashSet::new(),
            done: done.iter().map(|p| k("m", p)).collect(),
            fence: Some(fence),
            handoff_keys: 0,
        }
    }

    /// Memory: locks on two marketplaces, one completion record, one waiter.
    #[tokio::test]
    async fn the_memory_store_counts_what_is_held_waited_for_and_done() {
        use std::time::Duration;
        let config = crate::Config::builder()
            .backend(crate::Backend::Memory)
            .prefix("stats_unit_test")
            .build()
            .unwrap();
        let m = crate::BidLockManager::new(config).await.unwrap();
        let opts = crate::AcquireOptions::new().ttl(Duration::from_secs(30));
        let (a, c) = (k("upwork", "a"), k("fiverr", "c"));
        assert_eq!(m.stats().await.unwrap().by_marketplace.len(), 0);
        let held_a = m.acquire(&a, &opts).await.unwrap();
        let _held_c = m.acquire(&c, &opts).await.unwrap();
        let b = m.acquire(&k("upwork", "b"), &opts).await.unwrap();
        let last_token = b.fencing_token().get();
        assert!(b.complete().await.unwrap());
        let waiter = tokio::spawn({
            let (m, a) = (m.clone(), a.clone());
            let opts = opts.clone().timeout(Duration::from_secs(30));
            async move { m.acquire(&a, &opts).await?.release().await }
        });
        // The count itself says when the waiter is queued.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let s = loop {
            let s = m.stats().await.unwrap();
            if s.waiting == 1 {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!((s.locks, s.done_records), (2, 1), "{s:?}");
        assert_eq!(s.fence, Some(last_token));
        let up = s.by_marketplace["upwork"];
        assert_eq!((up.locks, up.waiting, up.done_records), (1, 1, 1));
        let fi = s.by_marketplace["fiverr"];
        assert_eq!((fi.locks, fi.waiting, fi.done_records), (1, 0, 0));
        assert_eq!(s.by_marketplace.len(), 2);
        held_a.release().await.unwrap();
        assert!(
            waiter.await.unwrap().unwrap(),
            "the waiter got it and released it"
        );
        let s = m.stats().await.unwrap();
        assert_eq!((s.locks, s.waiting, s.done_records), (1, 0, 1), "{s:?}");
        assert!(
            s.fence > Some(last_token),
            "the waiter's acquire issued a token"
        );
    }

    #[test]
    fn a_majority_view_counts_locks_agreed_on_and_records_seen_anywhere() {
        let views = vec![
            view(&[("a", "h1"), ("b", "h2")], &[], 10),
            view(&[("a", "h1"), ("b", "h3")], &["x"], 30),
            view(&[("c", "h4")], &[], 20),
        ];
        let s = Census::agreed(views, 2).count();
        assert_eq!(
            s.locks, 1,
            "only a is held by the same holder on a majority"
        );
        assert_eq!(s.done_records, 1);
        assert_eq!(s.fence, Some(30));
        assert_eq!(s.by_marketplace["m"].locks, 1);
    }

    #[test]
    fn counts_split_by_marketplace_and_serialize_with_the_documented_fields() {
        let mut c = Census::default();
        c.locks.insert(k("upwork", "1"), "h".into());
        c.locks.insert(k("fiverr", "2"), "h".into());
        c.waiting.insert(k("upwork", "1"));
        c.done.insert(k("fiverr", "3"));
        let v = serde_json::to_value(c.count()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "locks": 2, "waiting": 1, "done_records": 1, "fence": null, "handoff_keys": 0,
                "by_marketplace": {
                    "fiverr": {"locks": 1, "waiting": 0, "done_records": 1},
                    "upwork": {"locks": 1, "waiting": 1, "done_records": 0},
                }
            })
        );
    }
}
