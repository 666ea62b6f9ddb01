//! The state shared by a guard, its watchdog and the store: who holds which lock with
//! which fencing token, until when, and whether it was lost.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::key::LockKey;
use crate::metrics::{Counter, Metrics};

/// Who holds a lock: the value stored in Redis under the lock key.
///
/// Generated ids are `host:pid:random:sequence`, unique per acquisition, so two tasks of
/// one process never release each other's locks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder(Arc<str>);

impl Holder {
    /// A holder id given by the caller (for example an instance name). Use a value unique
    /// to one acquisition owner: two owners sharing an id can release each other's locks.
    pub fn new(id: impl AsRef<str>) -> Holder {
        Holder(id.as_ref().into())
    }

    /// The id as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Holder({:?})", &*self.0)
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Holder {
    fn from(s: &str) -> Holder {
        Holder::new(s)
    }
}

impl From<String> for Holder {
    fn from(s: String) -> Holder {
        Holder(s.into())
    }
}

/// A fencing token: strictly greater than every token issued before it by the same
/// backend (all keys of one prefix share the counter).
///
/// Pass it with every write the critical section makes (the bid) and have the receiver
/// reject a token lower than one it has already seen for that posting: a holder that
/// paused past its ttl and woke up believing it still holds the lock is then refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct FencingToken(pub(crate) u64);

impl FencingToken {
    /// The token as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const FOREVER: u64 = u64::MAX;

use crate::clock::{duration_micros as micros, instant, micros as micros_since_base};

/// How an extend sets the lock's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extend {
    /// Exactly `ttl` from now, shorter or longer than before (`LockGuard::extend`).
    Exact,
    /// At least `ttl` from now, never shorter (the keeper's renewals): a renewal that
    /// arrives late, even on a later acquisition with the same holder id, can never cut
    /// a lock short.
    Renew,
}

/// The validity bookkeeping, changed only under its lock (readers use `valid_until`).
#[derive(Debug, Default)]
struct Extends {
    /// Extends started: only the newest one's reply may raise the deadline.
    started: u64,
    /// When the request that set the current deadline was sent (µs since the clock base, `crate::clock`).
    confirmed_at: u64,
    /// Exact extends in doubt; boxed, and absent until the first exact extend, since a
    /// lease is kept for every held lock and most never see one.
    unsure: Option<Box<Unsure>>,
}

#[derive(Debug, Default)]
struct Unsure {
    /// Exact extends sent and not answered yet: (number, validity in µs). Any of them may
    /// still reach the store after a newer one (a client library's NOSCRIPT retry, a
    /// reconnect) and shorten the lock, so no deadline counts on more than they promise.
    pending: Vec<(u64, u64)>,
    /// The shortest validity (µs) of an exact extend whose outcome is unknown: it may
    /// still reach the store after later extends and shorten the lock, so no later
    /// deadline may count on more than this from its own send.
    uncertain: Option<u64>,
}

/// What an extend's success did to the lease ([`Lease::finish_extend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extended {
    /// The deadline moved to what the extend promised.
    Applied,
    /// A newer extend was sent since: its answer decides.
    Older,
    /// The lease was lost before the answer came (it stays lost).
    TooLate,
}

pub(crate) struct LeaseShared {
    pub(crate) key: LockKey,
    pub(crate) holder: Holder,
    /// The holder id was given by the caller (not generated for this acquisition alone).
    given: bool,
    pub(crate) token: AtomicU64,
    ttl_ms: AtomicU32,
    renew: AtomicBool,
    keeper_id: AtomicU64,
    /// A notice asked for this lease to be checked at once.
    check: AtomicBool,
    released: AtomicBool,
    lost: AtomicBool,
    lost_notify: Notify,
    reason: OnceLock<&'static str>,
    /// Microseconds after the clock base until which the lease is known valid; FOREVER while
    /// its store keeps it alive. Written under `extends`.
    valid_until: AtomicU64,
    extends: Mutex<Extends>,
    metrics: Arc<Metrics>,
}

/// A handle on a held lock's lease: its key, holder, fencing token, and whether it is
/// still held. Cheap to clone; give it to the code inside the critical section.
#[derive(Clone)]
pub struct Lease(pub(crate) Arc<LeaseShared>);

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.0.key)
            .field("holder", &self.0.holder)
            .field("fencing_token", &self.fencing_token())
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Lease {
    pub(crate) fn new(
        key: LockKey,
        holder: Holder,
        given: bool,
        ttl: Duration,
        renew: bool,
        metrics: Arc<Metrics>,
    ) -> Lease {
        Lease(Arc::new(LeaseShared {
            key,
            holder,
            given,
            token: AtomicU64::new(0),
            ttl_ms: AtomicU32::new(ms32(ttl)),
            renew: AtomicBool::new(renew),
            keeper_id: AtomicU64::new(0),
            check: AtomicBool::new(false),
            released: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            lost_notify: Notify::new(),
            reason: OnceLock::new(),
            valid_until: AtomicU64::new(0),
            extends: Mutex::new(Extends::default()),
            metrics,
        }))
    }

    /// The locked key.
    pub fn key(&self) -> &LockKey {
        &self.0.key
    }

    /// The holder id stored in the lock.
    pub fn holder(&self) -> &Holder {
        &self.0.holder
    }

    /// The fencing token of this acquisition.
    pub fn fencing_token(&self) -> FencingToken {
        FencingToken(self.0.token.load(Ordering::Acquire))
    }

    pub(crate) fn set_token(&self, token: u64) {
        self.0.token.store(token, Ordering::Release);
    }

    /// Whether the lock may no longer be held: it was found gone or taken, or the lease
    /// ran past its last confirmed extension. On doubt this is `true`.
    pub fn is_lost(&self) -> bool {
        if self.is_marked_lost() {
            return true;
        }
        let until = self.0.valid_until.load(Ordering::Acquire);
        until != FOREVER && micros_since_base(Instant::now()) >= until
    }

    /// Resolves when the lease is found lost. Use it in `tokio::select!` to stop the
    /// critical section.
    ///
    /// It resolves when a renewal finds the lock gone or taken, when the lease runs out
    /// without a confirmed renewal (then no later than its end, give or take the
    /// scheduler: this future watches the deadline itself, so it does even when nothing
    /// renews the lease), or when the manager is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it only observes.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let lease = self.clone();
        async move {
            loop {
                let notified = lease.0.lost_notify.notified();
                tokio::pin!(notified);
                // Register before checking, so a loss in between is not missed.
                notified.as_mut().enable();
                if lease.is_lost() {
                    return;
                }
                match lease.deadline() {
                    // Renewals move the deadline: look again when it comes.
                    Some(end) => {
                        tokio::select! {
                            _ = notified => {}
                            _ = tokio::time::sleep_until(end) => {}
                        }
                    }
                    None => notified.await,
                }
            }
        }
    }

    /// Until when the lease is confirmed valid: when the last successful acquire or
    /// extension was sent, plus its ttl (less Redlock's drift allowance), so it is never
    /// later than the expiry in Redis. `None` while the store keeps the lease valid for as
    /// long as the guard lives (memory with renewal).
    pub fn expires_at(&self) -> Option<std::time::Instant> {
        self.deadline().map(Instant::into_std)
    }

    /// Why the lease was lost, once it was.
    pub fn lost_reason(&self) -> Option<&str> {
        self.0.reason.get().copied()
    }

    /// Marks the lease lost (once; later calls keep the first reason).
    pub(crate) fn mark_lost(&self, reason: &'static str) {
        let _ = self.0.reason.set(reason);
        if self.0.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        // Counted before anyone is woken: a caller that awaits `lost()` and then reads
        // the metrics must see it (lease_deadlines.rs read it first on a loaded machine).
        self.0
            .metrics
            .count(Counter::LocksLost, Some(self.0.key.marketplace()));
        self.0.lost_notify.notify_waiters();
        tracing::warn!(target: "bidlock::lease", key = %self.0.key, holder = %self.0.holder, %reason, "lock lost");
    }

    pub(crate) fn is_marked_lost(&self) -> bool {
        self.0.lost.load(Ordering::Acquire)
    }

    fn extends(&self) -> MutexGuard<'_, Extends> {
        // The critical sections below do not panic; recover from poisoning regardless.
        self.0.extends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The acquire sent at `sent` succeeded: the lock is held `validity` from then.
    pub(crate) fn confirm(&self, sent: Instant, validity: Duration) {
        let mut st = self.extends();
        st.confirmed_at = micros_since_base(sent);
        let until = st.confirmed_at.saturating_add(micros(validity));
        self.set_valid_until(until);
    }

    /// Sets the deadline; one brought forward wakes every `lost()`, which sleeps until
    /// the deadline it last read.
    fn set_valid_until(&self, until: u64) {
        let before = self.0.valid_until.swap(until, Ordering::AcqRel);
        if until < before {
            self.0.lost_notify.notify_waiters();
        }
    }

    /// An extend to `ttl`, promising `validity`, is about to be sent at `sent`. Renewals
    /// use the new ttl from now on. An exact extend first drops the deadline to what it
    /// alone would guarantee: if it shortens the lock and its reply is lost, the store
    /// still holds the lock at least that long. Returns the extend's number.
    pub(crate) fn begin_extend(
        &self,
        sent: Instant,
        ttl: Duration,
        validity: Duration,
        how: Extend,
    ) -> u64 {
        self.0.ttl_ms.store(ms32(ttl), Ordering::Release);
        let mut st = self.extends();
        st.started += 1;
        let n = st.started;
        if how == Extend::Exact {
            let d = validity;
            let floor = micros_since_base(sent).saturating_add(st.bounded(d));
            if self.0.valid_until.fetch_min(floor, Ordering::AcqRel) > floor {
                self.0.lost_notify.notify_waiters();
            }
            st.unsure
                .get_or_insert_default()
                .pending
                .push((n, micros(d)));
        }
        n
    }

    /// Extend number `n`, sent at `sent`, succeeded. Only the newest extend moves the
    /// deadline forward (an older reply says nothing about what a newer request did), and
    /// never past what an unanswered older exact extend promises; and none revives a
    /// lease that is lost, also by the clock (once told lost, a lease stays lost: with a
    /// given id, the answer may be about a later acquisition of the id).
    pub(crate) fn finish_extend(&self, n: u64, sent: Instant, validity: Duration) -> Extended {
        let mut st = self.extends();
        st.forget(n);
        if self.is_lost() {
            drop(st);
            // Released meanwhile: the lock was let go while held; a late answer after
            // that is no loss (nor counted as one).
            if !self.is_released() {
                self.mark_lost("the lease ran out before its extend was answered");
            }
            return Extended::TooLate;
        }
        if st.started != n {
            return Extended::Older;
        }
        st.confirmed_at = micros_since_base(sent);
        let until = st.confirmed_at.saturating_add(st.bounded(validity));
        self.set_valid_until(until);
        Extended::Applied
    }

    /// Extend number `n` ended without a known outcome (an error, or its future was
    /// dropped): it may still reach the store later. Only an exact one can shorten.
    pub(crate) fn extend_unknown(&self, n: u64) {
        let mut st = self.extends();
        let Some(unsure) = st.unsure.as_deref_mut() else {
            return;
        };
        let Some(i) = unsure.pending.iter().position(|(p, _)| *p == n) else {
            return;
        };
        let (_, d) = unsure.pending.swap_remove(i);
        unsure.uncertain = Some(unsure.uncertain.map_or(d, |u| u.min(d)));
    }

    /// Extend number `n` was answered "not held": nothing more can come of it.
    pub(crate) fn extend_refused(&self, n: u64) {
        self.extends().forget(n);
    }

    /// When the lease's current validity was confirmed (the send time of that request).
    pub(crate) fn confirmed_at(&self) -> Instant {
        instant(self.extends().confirmed_at)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        let until = self.0.valid_until.load(Ordering::Acquire);
        (until != FOREVER).then(|| instant(until))
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(u64::from(self.0.ttl_ms.load(Ordering::Acquire)))
    }

    pub(crate) fn renews(&self) -> bool {
        self.0.renew.load(Ordering::Acquire)
    }

    /// Whether the caller chose the holder id (it may be shared with other acquisitions).
    pub(crate) fn holder_given(&self) -> bool {
        self.0.given
    }

    /// Whether a holder-checked change by this lease's holder id can only touch this
    /// acquisition's lock: not once a lease with a caller-given id is lost, since a later
    /// acquisition may hold the lock under the same id.
    pub(crate) fn owns_its_id(&self) -> bool {
        !(self.0.given && self.is_lost())
    }

    pub(crate) fn keeper_id(&self) -> u64 {
        self.0.keeper_id.load(Ordering::Acquire)
    }

    pub(crate) fn set_keeper_id(&self, id: u64) {
        self.0.keeper_id.store(id, Ordering::Release);
    }

    /// Asks the keeper's next attention to verify the lock (not just wait for the end).
    pub(crate) fn mark_check(&self) {
        self.0.check.store(true, Ordering::Release);
    }

    /// Whether a check was asked for (and clears the request).
    pub(crate) fn take_check(&self) -> bool {
        self.0.check.swap(false, Ordering::AcqRel)
    }

    /// The guard let go of the lock (released, completed or dropped): no more renewals,
    /// and a failure seen after this is not a loss.
    pub(crate) fn set_released(&self) {
        self.0.released.store(true, Ordering::Release);
    }

    pub(crate) fn is_released(&self) -> bool {
        self.0.released.load(Ordering::Acquire)
    }
}

impl Extends {
    /// `d` (µs), or less when an exact extend that is unanswered, or whose outcome is
    /// unknown, promised less.
    fn bounded(&self, d: Duration) -> u64 {
        let Some(unsure) = &self.unsure else {
            return micros(d);
        };
        let pending = unsure.pending.iter().map(|(_, p)| *p);
        pending.chain(unsure.uncertain).fold(micros(d), u64::min)
    }

    /// Extend number `n` is answered: it promises nothing more.
    fn forget(&mut self, n: u64) {
        if let Some(unsure) = self.unsure.as_deref_mut() {
            unsure.pending.retain(|(p, _)| *p != n);
        }
    }
}

/// A ttl in ms: at most 30 days ([`crate::Ttl`]), well within 32 bits.
fn ms32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
