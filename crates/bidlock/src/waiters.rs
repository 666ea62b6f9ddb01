//! Local wait queues: one FIFO of waiting acquirers per key, woken one at a time by
//! release signals (pub/sub in Redis, direct calls in memory).
//!
//! Only the waiter at the front of a key's queue tries the backend, so a release costs
//! one try, not one per waiter, and a task that releases and asks again queues behind
//! those already waiting instead of barging back in. A waiter that leaves without the
//! lock (done, timed out, cancelled) passes its signal on, so no release is swallowed.
//!
//! With a store that hands locks over (Redis), a waiter whose try joined the store's
//! queue is marked with its holder id, and a grant for that holder wakes exactly it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::key::LockKey;
use crate::lease::Holder;

#[derive(Debug, Default)]
struct Slot {
    signalled: AtomicBool,
    notify: Notify,
    /// The holder id this waiter queued in the store with, if it did, and the fencing
    /// token of a lock handed to that holder, not yet taken up. One mutex for both: a
    /// grant is only ever taken by the holder it names (a grant that arrives late, after
    /// the waiter moved on to another holder id, must never confirm the new one).
    queued: Mutex<Queued>,
}

#[derive(Debug, Default)]
struct Queued {
    as_holder: Option<Holder>,
    granted: Option<(Holder, u64)>,
}

impl Slot {
    fn queued(&self) -> MutexGuard<'_, Queued> {
        // Plain assignments under this lock: poisoning cannot hide a broken invariant.
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// All local waiters of one manager, by key.
#[derive(Debug, Default)]
pub(crate) struct WaitQueues {
    map: Mutex<HashMap<LockKey, VecDeque<Arc<Slot>>>>,
    /// How many waiters are queued, all keys together: releases skip the lock when none.
    waiting: AtomicUsize,
}

impl WaitQueues {
    fn map(&self) -> MutexGuard<'_, HashMap<LockKey, VecDeque<Arc<Slot>>>> {
        // The critical sections below cannot panic, so poisoning cannot hide a broken
        // invariant; recover the map rather than failing every later acquire.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins the key's queue. Registering before the first try means a release landing
    /// between a failed try and the wait still wakes us.
    pub(crate) fn enqueue(self: &Arc<Self>, key: &LockKey) -> Ticket {
        let slot = Arc::new(Slot::default());
        let mut map = self.map();
        let queue = map.entry(key.clone()).or_default();
        queue.push_back(slot.clone());
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Ticket {
            queues: self.clone(),
            key: key.clone(),
            slot,
            left: false,
        }
    }

    /// A release of `key` happened: wake the waiter at the front of its queue.
    pub(crate) fn signal(&self, key: &LockKey) {
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(front) = self.map().get(key).and_then(|q| q.front()) {
            front.signal();
        }
    }

    /// A store handed `key` to the waiter that queued as `holder`: wake exactly it.
    pub(crate) fn grant(&self, key: &LockKey, holder: &str, token: u64) {
        let map = self.map();
        let Some(queue) = map.get(key) else {
            return;
        };
        for slot in queue {
            let mut q = slot.queued();
            if let Some(h) = q.as_holder.as_ref().filter(|h| h.as_str() == holder) {
                q.granted = Some((h.clone(), token));
                drop(q);
                slot.signal();
                return;
            }
        }
    }

    /// Wake the front waiter of every key (signals may have been missed, e.g. while the
    /// subscriber was reconnecting, or everything was released at once).
    pub(crate) fn signal_all(&self) {
        for q in self.map().values() {
            if let Some(front) = q.front() {
                front.signal();
            }
        }
    }

    /// The keys someone in this process waits for.
    pub(crate) fn waited_keys(&self) -> Vec<LockKey> {
        self.map()
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether anyone in this process waits for `key`.
    #[cfg(test)]
    pub(crate) fn has_waiters(&self, key: &LockKey) -> bool {
        self.map().get(key).is_some_and(|q| !q.is_empty())
    }

    /// How many keys have waiters (for tests and memory accounting).
    #[cfg(test)]
    pub(crate) fn keys_waited(&self) -> usize {
        self.map().len()
    }
}

/// One waiter's place in a queue. Dropping it leaves the queue.
#[derive(Debug)]
pub(crate) struct Ticket {
    queues: Arc<WaitQueues>,
    key: LockKey,
    slot: Arc<Slot>,
    left: bool,
}

impl Ticket {
    /// Whether this waiter is first in line.
    pub(crate) fn is_front(&self) -> bool {
        self.queues
            .map()
            .get(&self.key)
            .and_then(|q| q.front())
            .is_some_and(|f| Arc::ptr_eq(f, &self.slot))
    }

    /// Whether other waiters are queued behind this one.
    pub(crate) fn has_company(&self) -> bool {
        self.queues
            .map()
            .get(&self.key)
            .is_some_and(|q| q.len() > 1)
    }

    /// This waiter's try joined the store's queue as `holder` (`None`: it no longer is).
    /// A pending grant for any other holder id is dropped.
    pub(crate) fn queued_as(&self, holder: Option<&Holder>) {
        let mut q = self.slot.queued();
        if q.granted.as_ref().map(|(h, _)| Some(h)) != Some(holder) {
            q.granted = None;
        }
        q.as_holder = holder.cloned();
    }

    /// The token of a lock handed to `holder`, if one was (taken once). A grant for
    /// another holder id (an earlier try of this waiter) is dropped, never returned.
    pub(crate) fn take_grant(&self, holder: &Holder) -> Option<u64> {
        match self.slot.queued().granted.take() {
            Some((h, token)) if &h == holder => Some(token),
            _ => None,
        }
    }

    /// Consumes a pending signal, if any.
    pub(crate) fn take_signal(&self) -> bool {
        self.slot.signalled.swap(false, Ordering::AcqRel)
    }

    /// Waits until signalled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a signal that arrives while not polled stays pending in the slot.
    pub(crate) async fn signalled(&self) {
        loop {
            if self.take_signal() {
                return;
            }
            self.slot.notify.notified().await;
        }
    }

    /// Leaves the queue. With `pass_on`, the next waiter is woken (we leave without the
    /// lock after a release, so someone else should look).
    pub(crate) fn leave(mut self, pass_on: bool) {
        self.remove(pass_on);
    }

    fn remove(&mut self, pass_on: bool) {
        if self.left {
            return;
        }
        self.left = true;
        let mut map = self.queues.map();
        let Some(queue) = map.get_mut(&self.key) else {
            return;
        };
        let was_front = queue.front().is_some_and(|f| Arc::ptr_eq(f, &self.slot));
        let before = queue.len();
        queue.retain(|s| !Arc::ptr_eq(s, &self.slot));
        if queue.len() < before {
            self.queues.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        let pending = self.slot.signalled.load(Ordering::Acquire);
        match queue.front() {
            Some(next) if was_front && (pass_on || pending) => next.signal(),
            Some(_) => {}
            None => {
                map.remove(&self.key);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Cancelled mid-wait or mid-try: we cannot know whether a signal was meant for us,
        // so the next waiter looks (one spare try at most).
        self.remove(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LockKey {
        LockKey::new("m", "p").unwrap()
    }

    #[tokio::test]
    async fn fifo_and_pass_on() {
        let q = Arc::new(WaitQueues::default());
        let a = q.enqueue(&key());
        let b = q.enqueue(&key());
        assert!(a.is_front() && !b.is_front());
        q.signal(&key());
        a.signalled().await;
        assert!(!b.take_signal());
        // a leaves without the lock after its signal: b is woken.
        a.leave(true);
        assert!(b.is_front());
        b.signalled().await;
        drop(b);
        assert_eq!(q.keys_waited(), 0);
    }

    #[test]
    fn a_grant_is_routed_only_to_the_waiter_queued_as_its_holder_id() {
        let q = Arc::new(WaitQueues::default());
        let a = q.enqueue(&key());
        let (first, second) = (Holder::new("try-1"), Holder::new("try-2"));
        a.queued_as(Some(&first));
        q.grant(&key(), "try-1", 7);
        assert!(a.take_signal());
        assert_eq!(
            a.take_grant(&second),
            None,
            "another holder id never takes it"
        );
        // A late grant for the first try, after the waiter queued again as the second.
        q.grant(&key(), "try-1", 7);
        a.queued_as(Some(&second));
        assert_eq!(a.take_grant(&second), None);
        q.grant(&key(), "try-1", 8);
        assert_eq!(
            a.take_grant(&second),
            None,
            "not routed to a waiter of another id"
        );
        q.grant(&key(), "try-2", 9);
        assert_eq!(a.take_grant(&second), Some(9));
        assert_eq!(a.take_grant(&second), None, "taken once");
    }

    #[tokio::test]
    async fn leaving_with_the_lock_wakes_nobody() {
        let q = Arc::new(WaitQueues::default());
        let a = q.enqueue(&key());
        let b = q.enqueue(&key());
        a.leave(false);
        assert!(!b.take_signal());
        assert!(q.has_waiters(&key()));
        q.signal_all();
        assert!(b.take_signal());
    }
}
