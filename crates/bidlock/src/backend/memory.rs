//! The in-process store: locks of one process only, for development, tests and
//! single-instance deployments. Same semantics as Redis: ttl, holder-checked release,
//! fencing tokens, completion records, and instant wake-up of waiters.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::{completion_record, AcquireRequest, Attempt, Completed, LockInfo, LockStatus, Probe};
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
    /// The manager (store handle) that took it: `close` releases only its own.
    owner: u64,
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
                if !Lease(lease).is_marked_lost() {
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

    /// Whether this entry is `lease`'s acquisition (not merely the same holder id).
    fn is(&self, lease: &Lease) -> bool {
        self.lease
            .upgrade()
            .is_some_and(|shared| lease.same(&shared))
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

    /// The entry of `key` if it is `lease`'s live acquisition (or, without a lease,
    /// any live acquisition by `holder`).
    fn own(
        &mut self,
        key: &LockKey,
        holder: &Holder,
        lease: Option<&Lease>,
        now: Instant,
    ) -> Option<&mut Entry> {
        let e = self.locks.get_mut(key)?;
        let mine = match lease {
            Some(l) => e.is(l),
            None => e.holder == *holder,
        };
        (mine && e.live(now)).then_some(e)
    }
}

/// The locks of one prefix in this process. Every manager of that prefix shares it, so
/// two managers of one process exclude each other, as two clients of one Redis do.
struct Core {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    fence: AtomicU64,
    keys: KeySpace,
    queues: Arc<WaitQueues>,
}

/// The process-wide stores, by prefix; an entry lives while a manager uses it.
static CORES: LazyLock<Mutex<HashMap<String, Weak<Core>>>> = LazyLock::new(Mutex::default);
static OWNERS: AtomicU64 = AtomicU64::new(1);

/// One manager's handle on the in-process store of its prefix.
pub(crate) struct MemoryStore {
    core: Arc<Core>,
    owner: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("prefix", &self.core.keys.prefix())
            .finish_non_exhaustive()
    }
}

/// The wall clock in microseconds since the Unix epoch (0 if it is before the epoch).
pub(crate) fn clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(0)
}

/// The next fencing token: a hybrid logical clock, above the last token and above the
/// wall clock in µs, as the Redis acquire script computes it. Tokens then keep increasing
/// across restarts of the process, as long as the clock does not step back further than
/// the time between two acquires.
fn next_token(fence: &AtomicU64) -> u64 {
    let now = clock_us();
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
                    fence: AtomicU64::new(0),
                    queues: Arc::default(),
                    keys: keys.clone(),
                });
                cores.insert(keys.prefix().to_owned(), Arc::downgrade(&core));
                core
            }
        };
        MemoryStore {
            core,
            owner: OWNERS.fetch_add(1, Ordering::Relaxed),
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
        let token = next_token(&self.core.fence);
        shard.locks.insert(
            req.key.clone(),
            Entry {
                holder: req.holder().clone(),
                expires_at: now + req.ttl,
                ttl: req.ttl,
                renew: req.renew,
                owner: self.owner,
                lease: Arc::downgrade(&req.lease.0),
            },
        );
        shard.maybe_sweep(now);
        Attempt::Acquired { token }
    }

    pub(crate) async fn release(
        &self,
        key: &LockKey,
        holder: &Holder,
        lease: Option<&Lease>,
    ) -> Result<bool, Error> {
        let now = Instant::now();
        let released = {
            let mut shard = self.shard(key);
            let mine = shard.own(key, holder, lease, now).is_some();
            if mine {
                shard.locks.remove(key);
            }
            mine
        };
        if released {
            self.core.queues.signal(key);
        }
        Ok(released)
    }

    pub(crate) async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<bool, Error> {
        let now = Instant::now();
        let mut shard = self.shard(lease.key());
        Ok(
            match shard.own(lease.key(), lease.holder(), Some(lease), now) {
                Some(e) => {
                    e.expires_at = now + ttl;
                    e.ttl = ttl;
                    true
                }
                None => false,
            },
        )
    }

    pub(crate) async fn holds(&self, lease: &Lease) -> Result<bool, Error> {
        let now = Instant::now();
        let mut shard = self.shard(lease.key());
        Ok(shard
            .own(lease.key(), lease.holder(), Some(lease), now)
            .is_some())
    }

    pub(crate) async fn complete(
        &self,
        lease: &Lease,
        retention: Duration,
    ) -> Result<Completed, Error> {
        let now = Instant::now();
        let key = lease.key();
        let outcome = {
            let mut shard = self.shard(key);
            let held = shard.own(key, lease.holder(), Some(lease), now).is_some();
            if held {
                shard.locks.remove(key);
            }
            shard.done.insert(
                key.clone(),
                Done {
                    record: completion_record(lease),
                    expires_at: now + retention,
                },
            );
            if held {
                Completed::Released
            } else {
                Completed::NotHeld
            }
        };
        // Waiters wake either way: with the record present they get "already done".
        self.core.queues.signal(key);
        Ok(outcome)
    }

    pub(crate) async fn force_release(&self, key: &LockKey) -> Result<bool, Error> {
        let removed = self.shard(key).locks.remove(key);
        let released = removed.is_some();
        if let Some(e) = removed {
            e.lose("lock released by force");
            self.core.queues.signal(key);
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
            redis_key: self.core.keys.lock_key(key),
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

    /// Removes the locks for which `pick` is true, telling their holders first.
    fn remove_where(&self, reason: &'static str, pick: impl Fn(&Entry) -> bool) -> u64 {
        let mut removed = 0u64;
        for mut shard in self.shards() {
            shard.locks.retain(|_, e| {
                if !pick(e) {
                    return true;
                }
                e.lose(reason);
                removed += 1;
                false
            });
        }
        self.core.queues.signal_all();
        removed
    }

    pub(crate) async fn cleanup_all(&self) -> Result<u64, Error> {
        Ok(self.remove_where("lock removed by cleanup_all", |_| true))
    }

    pub(crate) async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }

    pub(crate) async fn probe(&self) -> Probe {
        Probe::default()
    }

    /// Releases the locks taken through this handle (other managers of the prefix keep
    /// theirs), marking each lease lost before its lock goes.
    pub(crate) async fn close(&self) {
        let owner = self.owner;
        self.remove_where("the manager was closed", |e| e.owner == owner);
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
        let lease = Lease::new(
            key.clone(),
            Holder::new("h"),
            true,
            ttl,
            false,
            metrics.clone(),
        );
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
        let store = MemoryStore::shared(KeySpace::new("sweep_test").unwrap());
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
        let k = LockKey::new("m", "renewing-guard-outlives-its-ttl").unwrap();
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
