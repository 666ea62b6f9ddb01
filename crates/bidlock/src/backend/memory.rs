//! The in-process store: locks of one process only, for development, tests and
//! single-instance deployments. Same semantics as Redis: ttl, holder-checked release,
//! fencing tokens, completion records, and instant wake-up of waiters.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{AcquireRequest, Attempt, LockInfo, LockStatus};
use crate::error::Error;
use crate::key::{KeySpace, LockKey};
use crate::lease::{Holder, Lease, LeaseShared};
use crate::waiters::WaitQueues;

const SHARDS: usize = 64;
/// A shard is swept of expired entries at most this often...
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// ...and only once it has seen this many inserts since the last sweep.
const SWEEP_AFTER_INSERTS: u32 = 256;

#[derive(Debug)]
struct Entry {
    holder: Holder,
    expires_at: Instant,
    ttl: Duration,
    renew: bool,
    lease: Weak<LeaseShared>,
}

impl Entry {
    /// Whether the lock is still held at `now`. A renewing lease whose guard lives is
    /// extended here, exactly as a watchdog would have done every ttl/3.
    fn live(&mut self, now: Instant) -> bool {
        if now < self.expires_at {
            return true;
        }
        if self.renew {
            if let Some(lease) = self.lease.upgrade() {
                if !Lease(lease).is_cancelled() {
                    self.expires_at = now + self.ttl;
                    return true;
                }
            }
        }
        false
    }

    fn lose(&self, reason: &'static str) {
        if let Some(l) = self.lease.upgrade() {
            Lease(l).mark_lost(reason);
        }
    }

    fn ttl_left(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

#[derive(Debug)]
struct Done {
    record: String,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    locks: HashMap<LockKey, Entry, RandomState>,
    done: HashMap<LockKey, Done, RandomState>,
    inserts: u32,
    last_sweep: Option<Instant>,
}

impl Shard {
    fn maybe_sweep(&mut self, now: Instant) {
        self.inserts += 1;
        if self.inserts < SWEEP_AFTER_INSERTS {
            return;
        }
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.sweep(now);
    }

    fn sweep(&mut self, now: Instant) {
        self.inserts = 0;
        self.last_sweep = Some(now);
        self.locks.retain(|_, e| {
            let live = e.live(now);
            if !live {
                e.lose("lock expired");
            }
            live
        });
        self.done.retain(|_, d| now < d.expires_at);
        // Keep memory proportional to what is held, not to the peak.
        if self.locks.capacity() > 64 && self.locks.len() < self.locks.capacity() / 4 {
            self.locks.shrink_to_fit();
        }
        if self.done.capacity() > 64 && self.done.len() < self.done.capacity() / 4 {
            self.done.shrink_to_fit();
        }
    }

    fn done_live(&mut self, key: &LockKey, now: Instant) -> bool {
        match self.done.get(key) {
            Some(d) if now < d.expires_at => true,
            Some(_) => {
                self.done.remove(key);
                false
            }
            None => false,
        }
    }
}

pub(crate) struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    fence: AtomicU64,
    keys: KeySpace,
    queues: Arc<WaitQueues>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

/// Seeds fencing counters from the wall clock in microseconds, so tokens keep
/// increasing across restarts of the process (as long as the clock does not go back and
/// fewer than a million tokens a second are issued on average).
pub(crate) fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

impl MemoryStore {
    pub(crate) fn new(keys: KeySpace, queues: Arc<WaitQueues>) -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::default(),
            fence: AtomicU64::new(clock_seed()),
            keys,
            queues,
        }
    }

    fn shard(&self, key: &LockKey) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // Shard critical sections do not panic; recover from poisoning regardless.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shards(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) async fn try_acquire(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        Ok(self.try_acquire_sync(req))
    }

    fn try_acquire_sync(&self, req: &AcquireRequest<'_>) -> Attempt {
        let now = req.now;
        let mut shard = self.shard(req.key);
        if req.check_done && shard.done_live(req.key, now) {
            return Attempt::Done;
        }
        if let Some(e) = shard.locks.get_mut(req.key) {
            if e.live(now) {
                return Attempt::Held {
                    holder: Some(e.holder.to_string()),
                    ttl_left: Some(e.ttl_left(now)),
                };
            }
            e.lose("lock expired and was taken by another holder");
        }
        let token = self.fence.fetch_add(1, Ordering::AcqRel) + 1;
        shard.locks.insert(
            req.key.clone(),
            Entry {
                holder: req.holder().clone(),
                expires_at: now + req.ttl,
                ttl: req.ttl,
                renew: req.renew,
                lease: Arc::downgrade(&req.lease.0),
            },
        );
        shard.maybe_sweep(now);
        Attempt::Acquired {
            token,
            valid_for: None,
        }
    }

    pub(crate) fn release_sync(&self, key: &LockKey, holder: &Holder) -> bool {
        let now = Instant::now();
        let released = {
            let mut shard = self.shard(key);
            match shard.locks.get_mut(key) {
                Some(e) if e.holder == *holder => {
                    let live = e.live(now);
                    shard.locks.remove(key);
                    live
                }
                _ => false,
            }
        };
        if released {
            self.queues.signal(key);
        }
        released
    }

    pub(crate) async fn release(&self, key: &LockKey, holder: &Holder) -> Result<bool, Error> {
        Ok(self.release_sync(key, holder))
    }

    pub(crate) async fn extend(
        &self,
        key: &LockKey,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Ok(match shard.locks.get_mut(key) {
            Some(e) if e.holder == *holder => {
                let live = e.live(now);
                if live {
                    e.expires_at = now + ttl;
                    e.ttl = ttl;
                }
                live
            }
            _ => false,
        })
    }

    pub(crate) async fn complete(&self, lease: &Lease, retention: Duration) -> Result<bool, Error> {
        let now = Instant::now();
        let key = lease.key();
        let done = {
            let mut shard = self.shard(key);
            let held = shard
                .locks
                .get_mut(key)
                .is_some_and(|e| e.holder == *lease.holder() && e.live(now));
            match held {
                true => {
                    shard.locks.remove(key);
                    shard.done.insert(
                        key.clone(),
                        Done {
                            record: format!("{} {}", lease.fencing_token(), lease.holder()),
                            expires_at: now + retention,
                        },
                    );
                    true
                }
                false => false,
            }
        };
        if done {
            self.queues.signal(key);
        }
        Ok(done)
    }

    pub(crate) async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let removed = self.shard(key).locks.remove(key);
        let released = removed.is_some();
        if let Some(e) = removed {
            e.lose("lock released by force");
            self.queues.signal(key);
        }
        Ok(released)
    }

    pub(crate) async fn clear_done(&self, key: &LockKey) -> Result<bool, Error> {
        Ok(self.shard(key).done.remove(key).is_some())
    }

    pub(crate) async fn status(&self, key: &LockKey) -> Result<LockStatus, Error> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let (holder, ttl) = match shard.locks.get_mut(key) {
            Some(e) => match e.live(now) {
                true => (Some(e.holder.to_string()), Some(ms(e.ttl_left(now)))),
                false => (None, None),
            },
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
            redis_key: self.keys.lock_key(key),
            holder,
            ttl_left_ms: ttl,
            done,
            done_ttl_left_ms: done_ttl,
        })
    }

    pub(crate) async fn list(&self, marketplace: Option<&str>) -> Result<Vec<LockInfo>, Error> {
        let now = Instant::now();
        let mut out = Vec::new();
        for mut shard in self.shards() {
            for (k, e) in shard.locks.iter_mut() {
                if marketplace.is_some_and(|m| m != k.marketplace()) || !e.live(now) {
                    continue;
                }
                out.push(LockInfo {
                    redis_key: self.keys.lock_key(k),
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

    pub(crate) async fn cleanup_all(&self) -> Result<u64, Error> {
        let mut removed = 0u64;
        for mut shard in self.shards() {
            for (_, e) in shard.locks.drain() {
                e.lose("lock removed by cleanup_all");
                removed += 1;
            }
            shard.locks.shrink_to_fit();
        }
        self.queues.signal_all();
        Ok(removed)
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }

    pub(crate) async fn close(&self) {
        // Locks of a closed in-process store cannot be held by anyone else.
        let _ = self.cleanup_all().await;
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

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn put(store: &MemoryStore, metrics: &Arc<Metrics>, posting: String, ttl: Duration) {
        let key = LockKey::new("m", posting).unwrap();
        let lease = Lease::new(key.clone(), Holder::new("h"), metrics.clone());
        let req = AcquireRequest {
            key: &key,
            lease: &lease,
            ttl,
            renew: false,
            check_done: false,
            waiters_behind: false,
            now: Instant::now(),
        };
        assert!(matches!(
            store.try_acquire_sync(&req),
            Attempt::Acquired { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_so_memory_stays_bounded() {
        let store = MemoryStore::new(KeySpace::default(), Arc::new(WaitQueues::default()));
        let metrics = Arc::new(Metrics::default());
        for i in 0..200_000 {
            put(
                &store,
                &metrics,
                format!("old{i}"),
                Duration::from_millis(10),
            );
        }
        assert_eq!(store.stored(), 200_000);
        let peak: usize = store.shards().map(|s| s.locks.capacity()).sum();
        tokio::time::advance(Duration::from_secs(2)).await;
        // New traffic sweeps each shard it touches.
        for i in 0..(SHARDS * 2 * SWEEP_AFTER_INSERTS as usize) {
            put(&store, &metrics, format!("new{i}"), Duration::from_secs(60));
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

    #[tokio::test(start_paused = true)]
    async fn a_living_renewing_guard_outlives_its_ttl() {
        let m = crate::BidLockManager::memory();
        let k = LockKey::new("m", "p").unwrap();
        let opts = crate::AcquireOptions::new().ttl(Duration::from_secs(1));
        let g = m.acquire(&k, &opts).await.unwrap();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(m.try_acquire(&k, &opts).await.unwrap_err().is_timeout());
        assert!(!g.is_lost());
        drop(g);
        let g2 = m.try_acquire(&k, &opts).await.unwrap();
        assert!(!g2.is_lost());
    }
}
