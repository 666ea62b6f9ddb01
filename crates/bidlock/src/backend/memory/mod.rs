//! The in-process store: locks of one process only, for development, tests and
//! single-instance deployments. Same semantics as Redis: ttl, holder-checked release,
//! fencing tokens, completion records, and instant wake-up of waiters.

mod shard;
mod stats;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use foldhash::fast::RandomState;
use tokio::time::Instant;

use shard::{Done, Entry, Shard};

use super::{
    AdminStore, Attempt, Complete, Completed, Extend, ExtendLock, LockInfo, LockStatus, LockStore,
    Probe, Release, Topology, TryAcquire,
};
use crate::error::Error;
use crate::key::LockKey;
use crate::keyspace::KeySpace;
use crate::lease::Holder;
use crate::notices::Notices;
use crate::stats::Census;
use crate::waiters::WaitQueues;

const SHARDS: usize = 64;

/// The locks of one prefix in this process. Every manager of that prefix shares it, so
/// two managers of one process exclude each other, as two clients of one Redis do.
struct Core {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    fence: Arc<AtomicU64>,
    keys: KeySpace,
    queues: Arc<WaitQueues>,
    /// The managers using this store, told of every removal another may care about (a
    /// force release, cleanup), as Redis tells them by pub/sub.
    managers: Mutex<Vec<Weak<Notices>>>,
}

/// The process-wide stores, by prefix; an entry lives while a manager uses it.
static CORES: LazyLock<Mutex<HashMap<String, Weak<Core>>>> = LazyLock::new(Mutex::default);
/// The fencing counters, by prefix, for the life of the process: a store recreated after
/// its last manager went away must not issue tokens below those issued before (the
/// counter can run ahead of the clock when more than one token a µs is issued).
static FENCES: LazyLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = LazyLock::new(Mutex::default);
/// One manager's handle on the in-process store of its prefix.
pub(crate) struct MemoryStore {
    core: Arc<Core>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("prefix", &self.core.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// The next fencing token: a hybrid logical clock, above the last token and above the
/// wall clock in µs, as the Redis acquire script computes it. Tokens then keep increasing
/// across restarts of the process, as long as the clock does not step back further than
/// the time between two acquires.
fn next_token(fence: &AtomicU64) -> u64 {
    let now = crate::clock::wall_micros();
    let prev = fence
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            Some(c.saturating_add(1).max(now))
        })
        .unwrap_or_else(|c| c);
    prev.saturating_add(1).max(now)
}

fn lock_shard(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Shard critical sections do not panic; recover from poisoning regardless.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    /// Joins the process-wide store of `keys`' prefix, creating it if no manager uses it.
    pub(crate) fn shared(keys: KeySpace) -> MemoryStore {
        let mut cores = CORES.lock().unwrap_or_else(|e| e.into_inner());
        cores.retain(|_, c| c.strong_count() > 0);
        let core = match cores.get(keys.prefix()).and_then(Weak::upgrade) {
            Some(core) => core,
            None => {
                let core = Arc::new(Core {
                    shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                    hasher: RandomState::default(),
                    fence: FENCES
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(keys.prefix().to_owned())
                        .or_default()
                        .clone(),
                    queues: Arc::default(),
                    keys: keys.clone(),
                    managers: Mutex::default(),
                });
                cores.insert(keys.prefix().to_owned(), Arc::downgrade(&core));
                core
            }
        };
        MemoryStore { core }
    }

    /// Tells `notices` (one manager's) of removals from now on.
    pub(crate) fn subscribe(&self, notices: &Arc<Notices>) {
        let mut managers = self.core.managers.lock().unwrap_or_else(|e| e.into_inner());
        managers.retain(|m| m.strong_count() > 0);
        managers.push(Arc::downgrade(notices));
    }

    /// A removal someone else may care about: waiters look, holders check their leases.
    fn announce(&self, key: Option<&LockKey>) {
        let managers: Vec<Arc<Notices>> = {
            let m = self.core.managers.lock().unwrap_or_else(|e| e.into_inner());
            m.iter().filter_map(Weak::upgrade).collect()
        };
        match key {
            Some(k) => {
                self.core.queues.signal(k);
                managers.iter().for_each(|n| n.check(k));
            }
            None => {
                self.core.queues.signal_all();
                managers.iter().for_each(|n| n.check_all());
            }
        }
    }

    /// The wait queues of this store: shared by the managers of the prefix, so a release
    /// through one wakes the waiters of all, first come first served.
    pub(crate) fn queues(&self) -> Arc<WaitQueues> {
        self.core.queues.clone()
    }

    fn shard(&self, key: &LockKey) -> MutexGuard<'_, Shard> {
        let i = (self.core.hasher.hash_one(key) as usize) % SHARDS;
        lock_shard(&self.core.shards[i])
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.core.shards.iter().map(lock_shard)
    }

    fn try_acquire_sync(&self, req: &TryAcquire<'_>) -> Attempt {
        let now = req.now;
        let mut shard = self.shard(req.key);
        if req.check_done && shard.done_live(req.key, now) {
            return Attempt::Done;
        }
        if let Some(e) = shard.locks.get(req.key).filter(|e| e.live(now)) {
            return Attempt::Held {
                holder: Some(e.holder.to_string()),
                ttl_left: Some(e.ttl_left(now)),
                queued: false,
            };
        }
        let token = next_token(&self.core.fence);
        shard
            .locks
            .insert(req.key.clone(), Entry::new(req.holder, req.ttl, now));
        shard.maybe_sweep(now);
        Attempt::Acquired { token }
    }

    /// Removes every lock, telling waiters and holders.
    fn remove_all(&self) -> u64 {
        let now = Instant::now();
        let mut removed = 0u64;
        for mut shard in self.shards() {
            removed += shard.locks.values().filter(|e| e.live(now)).count() as u64;
            shard.locks.clear();
        }
        self.announce(None);
        removed
    }

    /// Entries currently stored (held or expired but not yet swept).
    #[cfg(test)]
    pub(crate) fn stored(&self) -> usize {
        self.shards().map(|s| s.locks.len()).sum()
    }

    /// Sweeps every shard now (tests).
    #[cfg(test)]
    pub(crate) fn sweep_all(&self) {
        let now = Instant::now();
        for mut s in self.shards() {
            s.sweep(now);
        }
    }
}

#[async_trait]
impl LockStore for MemoryStore {
    fn validity(&self, ttl: Duration) -> Duration {
        ttl
    }

    async fn try_acquire(&self, req: &TryAcquire<'_>) -> Result<Attempt, Error> {
        Ok(self.try_acquire_sync(req))
    }

    async fn release(&self, req: &Release<'_>) -> Result<bool, Error> {
        let now = Instant::now();
        let released = {
            let mut shard = self.shard(req.key);
            let mine = shard.own(req.key, req.holder, now).is_some();
            if mine {
                shard.locks.remove(req.key);
            }
            mine
        };
        if released && req.tell {
            // Another manager of this process may hold the lock under this id.
            self.announce(Some(req.key));
        } else if released {
            self.core.queues.signal(req.key);
        }
        Ok(released)
    }

    async fn extend(&self, req: &ExtendLock<'_>) -> Result<bool, Error> {
        let now = Instant::now();
        let mut shard = self.shard(req.key);
        let Some(e) = shard.own(req.key, req.holder, now) else {
            return Ok(false);
        };
        e.extend(req.ttl, now, req.how == Extend::Renew);
        Ok(true)
    }

    async fn holds(&self, key: &LockKey, holder: &Holder, _token: u64) -> Result<bool, Error> {
        Ok(self.shard(key).own(key, holder, Instant::now()).is_some())
    }

    async fn complete(&self, req: &Complete<'_>) -> Result<Completed, Error> {
        let now = Instant::now();
        let key = req.key;
        let held = {
            let mut shard = self.shard(key);
            let held = req.may_release && shard.own(key, req.holder, now).is_some();
            if held {
                shard.locks.remove(key);
            }
            shard.done.insert(
                key.clone(),
                Done {
                    record: req.record.clone(),
                    expires_at: now + req.retention,
                },
            );
            held
        };
        // Waiters wake either way: with the record present they get "already done".
        if req.tell {
            self.announce(Some(key));
        } else {
            self.core.queues.signal(key);
        }
        Ok(if held {
            Completed::Released
        } else {
            Completed::NotHeld
        })
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    fn location(&self) -> String {
        "memory".to_owned()
    }

    fn topology(&self) -> Topology {
        Topology::Memory
    }

    async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let now = Instant::now();
        let removed = self.shard(key).locks.remove(key);
        let released = removed.is_some_and(|e| e.live(now));
        if released {
            self.announce(Some(key));
        }
        Ok(released)
    }

    async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        Ok(self.shard(key).done.remove(key).is_some())
    }

    async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        let now = Instant::now();
        let shard = self.shard(key);
        let (holder, ttl) = match shard.locks.get(key).filter(|e| e.live(now)) {
            Some(e) => (Some(e.holder.to_string()), Some(ms(e.ttl_left(now)))),
            None => (None, None),
        };
        let (done, done_ttl) = match shard.done.get(key) {
            Some(d) if now < d.expires_at => (
                Some(d.record.clone()),
                Some(ms(d.expires_at.saturating_duration_since(now))),
            ),
            _ => (None, None),
        };
        Ok(LockStatus {
            redis_key: self.core.keys.lock_key(key),
            holder,
            ttl_left_ms: ttl,
            done,
            done_ttl_left_ms: done_ttl,
        })
    }

    async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        let now = Instant::now();
        let mut out = Vec::new();
        for shard in self.shards() {
            for (k, e) in shard.locks.iter() {
                if marketplace.is_some_and(|m| m != k.marketplace()) || !e.live(now) {
                    continue;
                }
                out.push(LockInfo {
                    redis_key: self.core.keys.lock_key(k),
                    marketplace: k.marketplace().to_owned(),
                    posting: k.posting().to_owned(),
                    holder: e.holder.to_string(),
                    ttl_left_ms: Some(ms(e.ttl_left(now))),
                });
            }
        }
        out.sort_by(|a, b| a.redis_key.cmp(&b.redis_key));
        Ok(out)
    }

    async fn cleanup_all(&self) -> Result<u64, Error> {
        Ok(self.remove_all())
    }

    async fn census(&self) -> Result<Census, Error> {
        Ok(self.take_census())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn probe(&self) -> Probe {
        Probe::default()
    }

    /// Nothing to stop: the manager's keeper releases the locks it took.
    async fn close(&self) {}
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::shard::SWEEP_AFTER_INSERTS;
    use super::*;

    fn put(store: &MemoryStore, posting: String, ttl: Duration) {
        let key = LockKey::new("m", posting).unwrap();
        let req = TryAcquire {
            key: &key,
            holder: &Holder::new("h"),
            given: true,
            ttl,
            check_done: false,
            waiters_behind: false,
            queue: crate::backend::Queue::No,
            now: Instant::now(),
        };
        assert!(matches!(
            store.try_acquire_sync(&req),
            Attempt::Acquired { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_so_memory_stays_bounded() {
        let store = MemoryStore::shared(KeySpace::new("sweep_test").unwrap());
        for i in 0..200_000 {
            put(&store, format!("old{i}"), Duration::from_millis(10));
        }
        assert_eq!(store.stored(), 200_000);
        let peak: usize = store.shards().map(|s| s.locks.capacity()).sum();
        tokio::time::advance(Duration::from_secs(2)).await;
        // New traffic sweeps each shard it touches.
        for i in 0..(SHARDS * 2 * SWEEP_AFTER_INSERTS as usize) {
            put(&store, format!("new{i}"), Duration::from_secs(60));
        }
        assert!(
            store.stored() <= SHARDS * 2 * SWEEP_AFTER_INSERTS as usize,
            "{}",
            store.stored()
        );
        let after: usize = store.shards().map(|s| s.locks.capacity()).sum();
        assert!(after < peak / 3, "capacity {after} vs peak {peak}");
        tokio::time::advance(Duration::from_secs(120)).await;
        store.sweep_all();
        assert_eq!(store.stored(), 0);
    }

    #[test]
    fn tokens_keep_increasing_when_a_prefixs_store_is_recreated() {
        let keys = KeySpace::new("fence_test").unwrap();
        let mut last = 0;
        for round in 0..3 {
            // The last handle goes away at the end of each round: the store is rebuilt.
            let store = MemoryStore::shared(keys.clone());
            for i in 0..1000 {
                let key = LockKey::new("m", format!("r{round}-{i}")).unwrap();
                let req = TryAcquire {
                    key: &key,
                    holder: &Holder::new("h"),
                    given: true,
                    ttl: Duration::from_secs(1),
                    check_done: false,
                    waiters_behind: false,
                    queue: crate::backend::Queue::No,
                    now: Instant::now(),
                };
                let Attempt::Acquired { token } = store.try_acquire_sync(&req) else {
                    panic!("not acquired");
                };
                assert!(token > last, "round {round}: {token} after {last}");
                last = token;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_living_renewing_guard_outlives_its_ttl() {
        let m = crate::BidLockManager::memory();
        let k = LockKey::new("m", "renewing-guard-outlives-its-ttl").unwrap();
        let opts = crate::AcquireOptions::new().ttl(Duration::from_secs(1));
        let g = m.acquire(&k, &opts).await.unwrap();
        // Ten ttls go by; the keeper renews the lease at a third of each.
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(100)).await;
            tokio::task::yield_now().await;
        }
        assert!(m
            .try_acquire(&k, &opts)
            .await
            .unwrap_err()
            .is_not_acquired());
        assert!(!g.is_lost());
        // A dropped guard's lock is released in a spawned task.
        drop(g);
        tokio::task::yield_now().await;
        let g2 = m.try_acquire(&k, &opts).await.unwrap();
        assert!(!g2.is_lost());
    }
}
