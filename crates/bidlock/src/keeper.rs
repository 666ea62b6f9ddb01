//! The lease keeper: one task per manager renews every held lease at a third of its
//! validity, marks leases lost when they run out unconfirmed, and checks a lease at once
//! when a release message names its key.
//!
//! One task instead of one watchdog per guard: registering a lease takes a short lock
//! and wakes nobody unless it is due before everything else, so an acquire/release
//! pair costs no thread wake-ups beyond the Redis round trips themselves. Leases that
//! their store keeps alive by itself (no deadline) are not kept here at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::key::LockKey;
use crate::lease::Lease;
use crate::manager::Inner;

#[derive(Default)]
struct State {
    due: BTreeMap<(Instant, u64), Lease>,
    by_id: HashMap<u64, Instant>,
    /// Leases out for attention right now (not in `due`), by id.
    out: HashMap<u64, Lease>,
    /// Leases that a notice named while they were out: attend again as soon as back.
    recheck: HashSet<u64>,
    by_key: HashMap<LockKey, Vec<u64>>,
}

impl State {
    fn forget(&mut self, key: &LockKey, id: u64) {
        if let Some(at) = self.by_id.remove(&id) {
            self.due.remove(&(at, id));
        }
        self.out.remove(&id);
        self.recheck.remove(&id);
        if let Some(ids) = self.by_key.get_mut(key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

/// The schedule of held leases.
#[derive(Default)]
pub(crate) struct LeaseKeeper {
    state: Mutex<State>,
    wake: Notify,
    /// When the keeper task will next wake, in µs since it started (u64::MAX: idle).
    target: AtomicU64,
    next_id: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl std::fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseKeeper").finish_non_exhaustive()
    }
}

/// When `lease` next needs attention: a renewal at a third of its validity window, or
/// (without renewal) its end. `None`: nothing ever expires (its store keeps it alive).
fn due(lease: &Lease) -> Option<Instant> {
    let deadline = lease.deadline()?;
    Some(if lease.renews() {
        let confirmed = lease.confirmed_at();
        (confirmed + deadline.saturating_duration_since(confirmed) / 3).min(deadline)
    } else {
        deadline
    })
}

impl LeaseKeeper {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epoch(&self) -> Instant {
        *self.epoch.get_or_init(Instant::now)
    }

    fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch()).as_micros()).unwrap_or(u64::MAX - 1)
    }

    fn insert(&self, st: &mut State, lease: Lease, at: Instant) {
        let id = lease.keeper_id();
        st.by_id.insert(id, at);
        st.due.insert((at, id), lease);
        if self.micros(at) < self.target.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Starts keeping `lease` if it has a deadline to watch. Returns whether it is kept.
    pub(crate) fn register(&self, lease: &Lease) -> bool {
        let Some(at) = due(lease) else {
            return false;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lease.set_keeper_id(id);
        let mut st = self.state();
        st.by_key.entry(lease.key().clone()).or_default().push(id);
        self.insert(&mut st, lease.clone(), at);
        true
    }

    /// Stops keeping `lease` (released, completed or dropped). Attention in flight will
    /// not put it back.
    pub(crate) fn unregister(&self, lease: &Lease) {
        let mut st = self.state();
        lease.set_released();
        st.forget(lease.key(), lease.keeper_id());
    }

    /// The lease's validity changed (an extend): schedule it from its new state. A lease
    /// out for attention is scheduled when it comes back.
    pub(crate) fn reschedule(&self, lease: &Lease) {
        let id = lease.keeper_id();
        let mut st = self.state();
        let Some(old) = st.by_id.remove(&id) else {
            return;
        };
        let Some(entry) = st.due.remove(&(old, id)) else {
            return;
        };
        match due(lease) {
            Some(at) => self.insert(&mut st, entry, at),
            None => st.forget(lease.key(), id),
        }
    }

    /// A notice named `key`: check the leases held on it now.
    pub(crate) fn check(&self, key: &LockKey) {
        let mut st = self.state();
        let Some(ids) = st.by_key.get(key).cloned() else {
            return;
        };
        self.check_ids(&mut st, ids);
    }

    /// Messages may have been missed: check every lease now.
    pub(crate) fn check_all(&self) {
        let mut st = self.state();
        let ids: Vec<u64> = st.by_key.values().flatten().copied().collect();
        self.check_ids(&mut st, ids);
    }

    fn check_ids(&self, st: &mut State, ids: Vec<u64>) {
        let now = Instant::now();
        for id in ids {
            if st.out.contains_key(&id) {
                st.recheck.insert(id);
            } else if let Some(at) = st.by_id.remove(&id) {
                if let Some(lease) = st.due.remove(&(at, id)) {
                    lease.mark_check();
                    self.insert(st, lease, now);
                }
            }
        }
    }

    fn take_due(&self, now: Instant) -> (Vec<Lease>, Option<Instant>) {
        let mut st = self.state();
        let later = st.due.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut st.due, later);
        let mut out = Vec::with_capacity(due.len());
        for ((_, id), lease) in due {
            st.by_id.remove(&id);
            st.out.insert(id, lease.clone());
            out.push(lease);
        }
        let next = st.due.keys().next().map(|(t, _)| *t);
        (out, next)
    }

    /// Attention finished and the lease is still held: schedule it at `at`, or from its
    /// state; at once if a notice came meanwhile.
    fn back(&self, lease: &Lease, at: Option<Instant>) {
        let mut st = self.state();
        let id = lease.keeper_id();
        if st.out.remove(&id).is_none() || lease.is_released() {
            return;
        }
        let at = if st.recheck.remove(&id) {
            lease.mark_check();
            Some(Instant::now())
        } else {
            at.or_else(|| due(lease))
        };
        match at {
            Some(at) => self.insert(&mut st, lease.clone(), at),
            None => st.forget(lease.key(), id),
        }
    }

    /// The lease is done with (lost or ran out): forget it.
    fn finished(&self, lease: &Lease) {
        self.state().forget(lease.key(), lease.keeper_id());
    }

    fn drain(&self) -> Vec<Lease> {
        let mut st = self.state();
        let mut all: Vec<Lease> = std::mem::take(&mut st.due).into_values().collect();
        all.extend(std::mem::take(&mut st.out).into_values());
        *st = State::default();
        all
    }

    /// Wakes the keeper (to notice shutdown or a dropped manager).
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }
}

/// The keeper task. Holds the manager weakly so that dropping the manager ends it.
pub(crate) async fn run(inner: Weak<Inner>, keeper: Arc<LeaseKeeper>, shutdown: CancellationToken) {
    loop {
        let (due, next) = keeper.take_due(Instant::now());
        if !due.is_empty() {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            for lease in due {
                let (inner2, keeper2) = (strong.clone(), keeper.clone());
                let span = tracing::debug_span!(target: "bidlock::lease", "renew", key = %lease.key(), holder = %lease.holder(), token = lease.fencing_token().get());
                strong.tasks.spawn(tracing::Instrument::instrument(
                    async move { attend(&inner2, &keeper2, lease).await },
                    span,
                ));
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        let target = next.map_or(u64::MAX, |t| keeper.micros(t));
        keeper.target.store(target, Ordering::Release);
        // A lease registered between take_due and the store above could be missed:
        // look once more before sleeping.
        if keeper
            .state()
            .due
            .keys()
            .next()
            .is_some_and(|(t, _)| keeper.micros(*t) < target)
        {
            continue;
        }
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = keeper.wake.notified() => {}
            _ = shutdown.cancelled() => {
                if let Some(strong) = inner.upgrade() {
                    release_all(&strong, keeper.drain()).await;
                }
                return;
            }
        }
    }
}

/// Closing: every lease is marked lost first, then its lock released, so no local guard
/// still says "held" once another instance can take the lock.
async fn release_all(inner: &Inner, leases: Vec<Lease>) {
    for l in &leases {
        l.mark_lost("the manager was closed");
        l.set_released();
    }
    let releases = leases.iter().map(|l| inner.release_lease(l));
    let _ = futures_util::future::join_all(releases).await;
}

/// One renewal, check, or end of a lease.
async fn attend(inner: &Arc<Inner>, keeper: &LeaseKeeper, lease: Lease) {
    let now = Instant::now();
    let Some(deadline) = lease.deadline() else {
        keeper.finished(&lease);
        return;
    };
    if now >= deadline {
        keeper.finished(&lease);
        if !lease.is_released() {
            lease.mark_lost(if lease.renews() {
                "no renewal succeeded before the lease ran out"
            } else {
                "ttl ran out without renewal"
            });
        }
        return;
    }
    let checking = lease.take_check();
    if !lease.renews() {
        if checking {
            verify(inner, keeper, &lease, deadline).await;
        } else {
            // Woken early (an extend moved the deadline): look again then.
            keeper.back(&lease, Some(deadline));
        }
        return;
    }
    match tokio::time::timeout(deadline - now, inner.extend_lease(&lease, lease.ttl())).await {
        Ok(Ok(true)) => {
            tracing::trace!(target: "bidlock::lease", key = %lease.key(), "renewed");
            keeper.back(&lease, None);
        }
        Ok(Ok(false)) => keeper.finished(&lease),
        Ok(Err(e)) => {
            tracing::warn!(target: "bidlock::lease", key = %lease.key(), error = %e, "renewal failed; retrying until the lease runs out");
            let pause =
                (lease.ttl() / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
            keeper.back(&lease, Some((Instant::now() + pause).min(deadline)));
        }
        Err(_) => {
            keeper.finished(&lease);
            if !lease.is_released() {
                lease.mark_lost("no renewal succeeded before the lease ran out");
            }
        }
    }
}

/// A notice named the key of a lease that does not renew: is the lock still its own?
async fn verify(inner: &Inner, keeper: &LeaseKeeper, lease: &Lease, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, inner.store.holds(lease)).await {
        Ok(Ok(false)) => {
            keeper.finished(lease);
            if !lease.is_released() {
                lease.mark_lost("lock was gone or held by another holder when checked");
            }
        }
        // Held, or no answer: the deadline still stands.
        _ => keeper.back(lease, Some(deadline)),
    }
}
