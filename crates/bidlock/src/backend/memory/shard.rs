//! One shard of the in-process store: its locks (a holder id and an expiry each, as in
//! Redis: the keeper renews them) and completion records, swept of expired entries as
//! traffic passes.

use std::collections::HashMap;
use std::time::Duration;

use foldhash::fast::RandomState;
use tokio::time::Instant;

use crate::clock::micros;
use crate::key::LockKey;
use crate::lease::Holder;

/// A shard is swept of expired entries at most this often...
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// ...and only once it has seen this many inserts since the last sweep.
pub(super) const SWEEP_AFTER_INSERTS: u32 = 256;

/// A held lock: who holds it and until when (µs since the clock base). 24 bytes.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) holder: Holder,
    expires_us: u64,
}

impl Entry {
    pub(super) fn new(holder: &Holder, ttl: Duration, now: Instant) -> Self {
        Entry {
            holder: holder.clone(),
            expires_us: micros(now + ttl),
        }
    }

    /// Extends to `ttl` from `now`: exactly, or (`at_least`) never shorter than it was.
    pub(super) fn extend(&mut self, ttl: Duration, now: Instant, at_least: bool) {
        let until = micros(now + ttl);
        self.expires_us = if at_least {
            self.expires_us.max(until)
        } else {
            until
        };
    }

    /// Whether the lock is still held at `now`.
    pub(super) fn live(&self, now: Instant) -> bool {
        micros(now) < self.expires_us
    }

    pub(super) fn ttl_left(&self, now: Instant) -> Duration {
        Duration::from_micros(self.expires_us.saturating_sub(micros(now)))
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
        self.locks.retain(|_, e| e.live(now));
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

    /// The entry of `key` if `holder` holds it live.
    pub(super) fn own(
        &mut self,
        key: &LockKey,
        holder: &Holder,
        now: Instant,
    ) -> Option<&mut Entry> {
        self.locks
            .get_mut(key)
            .filter(|e| e.holder == *holder && e.live(now))
    }
}
