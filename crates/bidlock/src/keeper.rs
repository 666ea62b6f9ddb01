//! The lease keeper: one task per Redis-backed manager renews every held lease at ttl/3
//! and marks leases lost when they run out unconfirmed.
//!
//! One task instead of one watchdog per guard: registering a lease takes a short lock
//! and wakes nobody unless it is due before everything else, so an acquire/release
//! pair costs no thread wake-ups beyond the Redis round trips themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lease::Lease;
use crate::manager::Inner;
use crate::metrics::Counter;

#[derive(Default)]
struct State {
    due: BTreeMap<(Instant, u64), Lease>,
    by_id: HashMap<u64, Instant>,
    /// Leases out for renewal right now (not in `due`), by id.
    renewing: HashMap<u64, Lease>,
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

    /// When `lease` next needs attention: its renewal, or (without renewal) its end.
    fn due(lease: &Lease, confirmed_at: Instant) -> Option<Instant> {
        let deadline = lease.deadline()?;
        Some(if lease.renews() {
            (confirmed_at + lease.ttl() / 3).min(deadline)
        } else {
            deadline
        })
    }

    fn insert(&self, st: &mut State, lease: Lease, at: Instant) {
        let id = lease.keeper_id();
        st.by_id.insert(id, at);
        st.due.insert((at, id), lease);
        if self.micros(at) < self.target.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Starts keeping `lease`, confirmed valid at `confirmed_at`.
    pub(crate) fn register(&self, lease: &Lease, confirmed_at: Instant) {
        lease.set_keeper_id(self.next_id.fetch_add(1, Ordering::Relaxed));
        if let Some(at) = Self::due(lease, confirmed_at) {
            let mut st = self.state();
            self.insert(&mut st, lease.clone(), at);
        }
    }

    /// Stops keeping `lease` (released, completed or dropped). A renewal in flight will
    /// not put it back.
    pub(crate) fn unregister(&self, lease: &Lease) {
        let id = lease.keeper_id();
        let mut st = self.state();
        lease.set_released();
        if let Some(at) = st.by_id.remove(&id) {
            st.due.remove(&(at, id));
        }
        st.renewing.remove(&id);
    }

    fn take_due(&self, now: Instant) -> (Vec<Lease>, Option<Instant>) {
        let mut st = self.state();
        let later = st.due.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut st.due, later);
        let mut out = Vec::with_capacity(due.len());
        for ((_, id), lease) in due {
            st.by_id.remove(&id);
            st.renewing.insert(id, lease.clone());
            out.push(lease);
        }
        let next = st.due.keys().next().map(|(t, _)| *t);
        (out, next)
    }

    /// A renewal finished: schedule the next one unless the lease was released meanwhile.
    fn renewed(&self, lease: &Lease, confirmed_at: Instant) {
        let mut st = self.state();
        let id = lease.keeper_id();
        if st.renewing.remove(&id).is_none() || lease.is_released() {
            return;
        }
        if let Some(at) = Self::due(lease, confirmed_at) {
            self.insert(&mut st, lease.clone(), at);
        }
    }

    fn retry(&self, lease: &Lease, at: Instant) {
        let mut st = self.state();
        let id = lease.keeper_id();
        if st.renewing.remove(&id).is_none() || lease.is_released() {
            return;
        }
        self.insert(&mut st, lease.clone(), at);
    }

    fn finished(&self, lease: &Lease) {
        self.state().renewing.remove(&lease.keeper_id());
    }

    fn drain(&self) -> Vec<Lease> {
        let mut st = self.state();
        let mut all: Vec<Lease> = std::mem::take(&mut st.due).into_values().collect();
        all.extend(std::mem::take(&mut st.renewing).into_values());
        st.by_id.clear();
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
                let inner2 = strong.clone();
                let keeper2 = keeper.clone();
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
                let Some(strong) = inner.upgrade() else { return };
                let leases = keeper.drain();
                let releases = leases.iter().map(|l| strong.release_held(l));
                let _ = futures_util::future::join_all(releases).await;
                for l in &leases {
                    l.mark_lost("the manager was closed");
                }
                return;
            }
        }
    }
}

/// One renewal (or, without renewal, the end of the lease).
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
    if !lease.renews() {
        // A manual extend moved the deadline: look again then.
        keeper.retry(&lease, deadline);
        return;
    }
    let ttl = lease.ttl();
    let extend = inner.store.extend(lease.key(), lease.holder(), ttl);
    match tokio::time::timeout(deadline - now, extend).await {
        Ok(Ok(true)) => {
            inner
                .metrics
                .count(Counter::Extensions, Some(lease.key().marketplace()));
            lease.valid_until(now + inner.store.validity(ttl));
            tracing::trace!(target: "bidlock::lease", key = %lease.key(), "renewed");
            keeper.renewed(&lease, now);
        }
        Ok(Ok(false)) => {
            keeper.finished(&lease);
            if !lease.is_released() {
                lease.mark_lost("lock was gone or held by another holder when renewing");
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(target: "bidlock::lease", key = %lease.key(), error = %e, "renewal failed; retrying until the lease runs out");
            let pause = (ttl / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
            keeper.retry(&lease, (Instant::now() + pause).min(deadline));
        }
        Err(_) => {
            keeper.finished(&lease);
            if !lease.is_released() {
                lease.mark_lost("no renewal succeeded before the lease ran out");
            }
        }
    }
}
