//! The locks taken through the guide's `acquire_lock` and held until `release_lock`,
//! `close()` or their ttl: one table per manager.

use std::collections::HashMap;

use bidlock::{Holder, LockGuard, LockKey};

/// Guards of `acquire_lock`, by key (one live holder per key; expired ones linger until
/// `release_lock` or a prune).
#[derive(Default)]
pub(crate) struct HeldLocks {
    by_key: HashMap<LockKey, Vec<LockGuard>>,
    count: usize,
    prune_at: usize,
}

const PRUNE_FLOOR: usize = 64;

impl HeldLocks {
    pub(crate) fn insert(&mut self, guard: LockGuard, dropped: &mut Vec<LockGuard>) {
        let slot = self.by_key.entry(guard.key().clone()).or_default();
        // Someone acquired this key, so any other guard of it has lost it.
        self.count -= slot.len();
        dropped.append(slot);
        slot.push(guard);
        self.count += 1;
        if self.count > self.prune_at.max(PRUNE_FLOOR) {
            self.prune(dropped);
            self.prune_at = self.count * 2;
        }
    }

    fn prune(&mut self, dropped: &mut Vec<LockGuard>) {
        self.by_key.retain(|_, guards| {
            let (lost, live): (Vec<_>, Vec<_>) = guards.drain(..).partition(|g| g.is_lost());
            dropped.extend(lost);
            *guards = live;
            !guards.is_empty()
        });
        self.count = self.by_key.values().map(Vec::len).sum();
    }

    /// Removes the guard of `key` held by `holder`, or by anyone when `holder` is None.
    pub(crate) fn take(&mut self, key: &LockKey, holder: Option<&Holder>) -> Option<LockGuard> {
        let guards = self.by_key.get_mut(key)?;
        let i = match holder {
            Some(h) => guards.iter().position(|g| g.holder() == h)?,
            None => guards.iter().position(|g| !g.is_lost()).unwrap_or(0),
        };
        let g = guards.swap_remove(i);
        if guards.is_empty() {
            self.by_key.remove(key);
        }
        self.count -= 1;
        Some(g)
    }

    pub(crate) fn drain(&mut self) -> Vec<LockGuard> {
        self.count = 0;
        self.by_key.drain().flat_map(|(_, g)| g).collect()
    }
}
