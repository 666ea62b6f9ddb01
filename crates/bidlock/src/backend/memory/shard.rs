//! One shard of the in-process store: its locks (each with the lease that holds it, so a
//! renewing lease lives as long as its guard) and completion records, swept of expired
//! entries as traffic passes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use foldhash::fast::RandomState;
use tokio::time::Instant;

use crate::key::LockKey;
use crate::lease::{Holder, Lease, LeaseShared};

/// A shard is swept of expired entries at most this often...
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// ...and only once it has seen this many inserts since the last sweep.
pub(super) const SWEEP_AFTER_INSERTS: u32 = 256;

/// A held lock. Compact (48 bytes; one per held lock): times as µs since the process's
/// clock base, the ttl in ms (at most 30 days), the owner as a 32-bit handle number.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) holder: Holder,
    expires_us: u64,
    ttl_ms: u32,
    /// The manager (store handle) that took it: `close` releases only its own.
    pub(super) owner: u32,
    renew: bool,
    lease: Weak<LeaseShared>,
}

use crate::clock::micros;

fn ms32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Entry {
    pub(super) fn new(lease: &Lease, ttl: Duration, renew: bool, owner: u32, now: Instant) -> Self {
        Entry {
            holder: lease.holder().clone(),
            expires_us: micros(now + ttl),
            ttl_ms: ms32(ttl),
            owner,
            renew,
            lease: Arc::downgrade(&lease.0),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(u64::from(self.ttl_ms))
    }

    /// Extends to `ttl` from `now`: exactly, or (`at_least`) never shorter than it was.
    pub(super) fn extend(&mut self, ttl: Duration, now: Instant, at_least: bool) {
        let until = micros(now + ttl);
        self.expires_us = if at_least {
            self.expires_us.max(until)
        } else {
            until
        };
        self.ttl_ms = ms32(ttl);
    }

    /// Whether the lock is still held at `now`. A renewing lease whose guard lives is
    /// extended here, exactly as a watchdog would have done every ttl/3.
    pub(super) fn live(&mut self, now: Instant) -> bool {
        if micros(now) < self.expires_us {
            return true;
        }
        if self.renew {
            if let Some(lease) = self.lease.upgrade() {
                if !Lease(lease).is_marked_lost() {
                    self.expires_us = micros(now + self.ttl());
                    return true;
                }
            }
        }
        false
    }

    pub(super) fn lose(&self, reason: &'static str) {
        if let Some(l) = self.lease.upgrade() {
            Lease(l).mark_lost(reason);
        }
    }

    pub(super) fn ttl_left(&self, now: Instant) -> Duration {
        Duration::from_micros(self.expires_us.saturating_sub(micros(now)))
    }

    /// Whether this entry is `lease`'s acquisition (not merely the same holder id).
    pub(super) fn is(&self, lease: &Lease) -> bool {
        self.lease
            .upgrade()
            .is_some_and(|shared| lease.same(&shared))
    }
}

#[derive(Debug)]
pub(super) struct Done {
    pub(super) record: String,
    pub(super) expires_at: Instant,
}

#[derive(Debug, Default)]
pub(super) struct Shard {
    pub(super) locks: HashMap<LockKey, Entry, RandomState>,
    pub(super) done: HashMap<LockKey, Done, RandomState>,
    inserts: u32,
    last_sweep: Option<Instant>,
}

impl Shard {
    pub(super) fn maybe_sweep(&mut self, now: Instant) {
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

    pub(super) fn sweep(&mut self, now: Instant) {
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

    pub(super) fn done_live(&mut self, key: &LockKey, now: Instant) -> bool {
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
    pub(super) fn own(
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
