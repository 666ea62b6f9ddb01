//! The lease keeper's schedule: every held lease that can run out, ordered by when it
//! next needs attention (a renewal at a third of its validity, or its end), indexed by
//! key so a release message can have a lease checked at once. The task that works
//! through it is in `renewal.rs`.
//!
//! One schedule per manager instead of one watchdog per guard: registering a lease takes
//! a short lock and wakes nobody unless it is due before everything else, so an
//! acquire/release pair costs no thread wake-ups beyond the Redis round trips themselves.
//! Leases that their store keeps alive by itself (no deadline) are not kept here at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::key::LockKey;
use crate::lease::Lease;

#[derive(Default)]
struct State {
    due: BTreeMap<(Instant, u64), Lease>,
    by_id: HashMap<u64, Instant>,
    /// Leases out for attention right now (not in `due`), by id.
    out: HashMap<u64, Lease>,
    /// Leases that a notice named while they were out: attend again as soon as back.
    recheck: HashSet<u64>,
    by_key: HashMap<LockKey, Vec<u64>>,
    /// When a notice last named each key (kept a while: see [`NOTICES_KEPT`]), and when
    /// every key was last in doubt: a lease confirmed from a moment before is checked at
    /// once when it is registered (its acquire's answer and the notice travel on
    /// different connections, so the notice may have arrived first).
    noticed: HashMap<LockKey, Instant>,
    all_noticed: Option<Instant>,
    /// The manager closed: no new leases are kept.
    closed: bool,
}

/// How long a notice is remembered for leases registered later: longer than any request
/// whose answer could still be taken up (a try bounded by the response timeout, a grant
/// counted from a refresh at most a grant ttl old).
const NOTICES_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

/// Past this many remembered notices, old ones are dropped when a new one comes.
const NOTICES_PRUNE_AT: usize = 4096;

/// The shortest idle sleep of the keeper task: a manager that once held a lease of a
/// few milliseconds does not wake that often for ever after.
const IDLE_FLOOR: std::time::Duration = std::time::Duration::from_millis(50);

/// What `register` did with a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keeping {
    /// Kept: renewed or watched until its end.
    Kept,
    /// Nothing to keep: its store keeps it alive by itself.
    Untracked,
    /// The manager closed meanwhile: the lease must not be handed out.
    Closed,
    /// A lease of another holder id on the key, with a higher token, is kept already:
    /// the store gave the key to it after this one (this answer was taken up late), so
    /// this lease must not be handed out.
    Superseded,
}

impl State {
    /// The lease kept under `id`, scheduled or out for attention.
    fn kept(&self, id: u64) -> Option<&Lease> {
        match self.by_id.get(&id) {
            Some(at) => self.due.get(&(*at, id)),
            None => self.out.get(&id),
        }
    }

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
    pub(crate) wake: Notify,
    /// When the keeper task will next wake, in µs since the clock base (u64::MAX: idle).
    pub(crate) target: AtomicU64,
    next_id: AtomicU64,
    /// Whether the keeper task runs (`renewal::start` starts one when it does not).
    pub(crate) running: AtomicBool,
    /// The shortest time from a lease's confirmation to its first attention seen so far,
    /// in µs (0: no lease yet). An idle keeper sleeps that long instead of for ever, so
    /// that the next lease (due at least about that far ahead) need not wake it: one
    /// lease at a time (acquire, release, acquire...) would otherwise wake it for each.
    shortest: AtomicU64,
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

    fn insert(&self, st: &mut State, lease: Lease, at: Instant) {
        let id = lease.keeper_id();
        st.by_id.insert(id, at);
        st.due.insert((at, id), lease);
        if crate::clock::micros(at) < self.target.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Starts keeping `lease` if it has a deadline to watch.
    pub(crate) fn register(&self, lease: &Lease) -> Keeping {
        let Some(at) = due(lease) else {
            return Keeping::Untracked;
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lease.set_keeper_id(id);
        let ahead = crate::clock::micros(at)
            .saturating_sub(crate::clock::micros(lease.confirmed_at()))
            .max(1);
        let _ = self
            .shortest
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s == 0 || ahead < s).then_some(ahead)
            });
        let mut st = self.state();
        if st.closed {
            return Keeping::Closed;
        }
        if Self::is_superseded(&st, lease) {
            return Keeping::Superseded;
        }
        let superseded = Self::supersede(&mut st, lease);
        st.by_key.entry(lease.key().clone()).or_default().push(id);
        let since = lease.confirmed_at();
        let doubted = st.noticed.get(lease.key()).is_some_and(|t| *t >= since)
            || st.all_noticed.is_some_and(|t| t >= since);
        let at = if doubted {
            lease.mark_check();
            Instant::now()
        } else {
            at
        };
        self.insert(&mut st, lease.clone(), at);
        drop(st);
        for other in superseded {
            other.mark_lost("the store gave the lock to another holder of this manager");
        }
        Keeping::Kept
    }

    /// The kept leases of other holder ids on `lease`'s key (the same holder id twice is
    /// one holder to the store: never a rival).
    fn rivals<'a>(st: &'a State, lease: &'a Lease) -> impl Iterator<Item = &'a Lease> + 'a {
        st.by_key
            .get(lease.key())
            .into_iter()
            .flatten()
            .filter_map(|id| st.kept(*id))
            .filter(|o| o.holder() != lease.holder())
    }

    /// The store gave `lease`'s key to its holder with a higher token than a rival kept
    /// here: that one cannot hold the key any more. It is forgotten here and (by
    /// `register`) said lost before `lease` is handed out, so that within one manager no
    /// section is told held while an earlier one still runs on the key. (A release
    /// message races the grant it leads to: the check the message asks for is a round
    /// trip, the waiter's try is one too.)
    fn supersede(st: &mut State, lease: &Lease) -> Vec<Lease> {
        let superseded: Vec<Lease> = Self::rivals(st, lease)
            .filter(|o| o.fencing_token() < lease.fencing_token() && !o.is_released())
            .cloned()
            .collect();
        for other in &superseded {
            st.forget(other.key(), other.keeper_id());
        }
        superseded
    }

    /// Whether a rival with a higher token is kept (the other half of [`Self::supersede`]:
    /// whichever answer is taken up first). The store gave the key to that one after this
    /// one, which cannot hold it any more. (One released meanwhile is not kept: then the
    /// notice of the removal that let it in, if any, has this lease checked at once, as
    /// for any other manager.)
    fn is_superseded(st: &State, lease: &Lease) -> bool {
        Self::rivals(st, lease).any(|o| o.fencing_token() > lease.fencing_token())
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

    /// How long the keeper task sleeps with nothing to keep (`None`: until woken), at
    /// least [`IDLE_FLOOR`]. Safe whatever it is: a lease due before the keeper's target
    /// wakes it on registering.
    pub(crate) fn idle_for(&self) -> Option<std::time::Duration> {
        match self.shortest.load(Ordering::Relaxed) {
            0 => None,
            us => Some(std::time::Duration::from_micros(us).max(IDLE_FLOOR)),
        }
    }

    /// Whether a lease is due before the keeper task's current wake-up target (one
    /// registered between its last look and its sleep).
    pub(crate) fn due_before(&self, target: u64) -> bool {
        self.state()
            .due
            .keys()
            .next()
            .is_some_and(|(t, _)| crate::clock::micros(*t) < target)
    }

    /// A notice named `key`: check the leases held on it now.
    pub(crate) fn check(&self, key: &LockKey) {
        let now = Instant::now();
        let mut st = self.state();
        if st.noticed.len() >= NOTICES_PRUNE_AT {
            st.noticed
                .retain(|_, t| now.saturating_duration_since(*t) < NOTICES_KEPT);
        }
        st.noticed.insert(key.clone(), now);
        let Some(ids) = st.by_key.get(key).cloned() else {
            return;
        };
        self.check_ids(&mut st, ids);
    }

    /// Messages may have been missed: check every lease now.
    pub(crate) fn check_all(&self) {
        let mut st = self.state();
        st.all_noticed = Some(Instant::now());
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

    pub(crate) fn take_due(&self, now: Instant) -> (Vec<Lease>, Option<Instant>) {
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
    pub(crate) fn back(&self, lease: &Lease, at: Option<Instant>) {
        let mut st = self.state();
        let id = lease.keeper_id();
        if st.out.remove(&id).is_none() || lease.is_released() {
            return;
        }
        let at = if st.recheck.remove(&id) {
            lease.mark_check();
            Some(Instant::now())
        } else {
            // A time asked for (a retry after a failed renewal) stands, unless an extend
            // meanwhile moved the deadline before it; not the renewal point, which after a
            // failed renewal has passed already (a retry at once, over and over).
            match (at, lease.deadline()) {
                (Some(a), Some(d)) => Some(a.min(d)),
                (Some(a), None) => Some(a),
                (None, _) => due(lease),
            }
        };
        match at {
            Some(at) => self.insert(&mut st, lease.clone(), at),
            None => st.forget(lease.key(), id),
        }
    }

    /// The lease is done with (lost or ran out): forget it.
    pub(crate) fn finished(&self, lease: &Lease) {
        self.state().forget(lease.key(), lease.keeper_id());
    }

    /// A new keeper task starts: leases the last one had out for attention (their tasks
    /// ended with its runtime) are due at once.
    pub(crate) fn take_back_out(&self) {
        let mut st = self.state();
        let now = Instant::now();
        let out: Vec<Lease> = std::mem::take(&mut st.out).into_values().collect();
        for lease in out {
            st.recheck.remove(&lease.keeper_id());
            self.insert(&mut st, lease, now);
        }
    }

    pub(crate) fn drain(&self) -> Vec<Lease> {
        let mut st = self.state();
        let mut all: Vec<Lease> = std::mem::take(&mut st.due).into_values().collect();
        all.extend(std::mem::take(&mut st.out).into_values());
        *st = State {
            closed: true,
            ..State::default()
        };
        all
    }

    /// Wakes the keeper (to notice shutdown or a dropped manager).
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }
}
