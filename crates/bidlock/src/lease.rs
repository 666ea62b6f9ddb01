//! The state shared by a guard, its watchdog and the store: who holds which lock with
//! which fencing token, until when, and whether it was lost.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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

fn base() -> Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    Instant::from_std(*BASE.get_or_init(std::time::Instant::now))
}

const FOREVER: u64 = u64::MAX;

pub(crate) struct LeaseShared {
    pub(crate) key: LockKey,
    pub(crate) holder: Holder,
    pub(crate) token: AtomicU64,
    ttl_ms: AtomicU64,
    renew: std::sync::atomic::AtomicBool,
    keeper_id: AtomicU64,
    released: std::sync::atomic::AtomicBool,
    lost: std::sync::atomic::AtomicBool,
    lost_notify: Notify,
    reason: OnceLock<&'static str>,
    /// Microseconds after `base()` until which the lease is known valid; FOREVER while a
    /// store renews it implicitly.
    valid_until: AtomicU64,
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
    pub(crate) fn new(key: LockKey, holder: Holder, metrics: Arc<Metrics>) -> Lease {
        Lease(Arc::new(LeaseShared {
            key,
            holder,
            token: AtomicU64::new(0),
            ttl_ms: AtomicU64::new(0),
            renew: std::sync::atomic::AtomicBool::new(true),
            keeper_id: AtomicU64::new(0),
            released: std::sync::atomic::AtomicBool::new(false),
            lost: std::sync::atomic::AtomicBool::new(false),
            lost_notify: Notify::new(),
            reason: OnceLock::new(),
            valid_until: AtomicU64::new(FOREVER),
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
        if self.is_cancelled() {
            return true;
        }
        let until = self.0.valid_until.load(Ordering::Acquire);
        until != FOREVER && micros_since_base(Instant::now()) >= until
    }

    /// Resolves when the lease is found lost. Use it in `tokio::select!` to stop the
    /// critical section.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; it only observes.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.0.clone();
        async move {
            loop {
                let notified = shared.lost_notify.notified();
                tokio::pin!(notified);
                // Register before checking, so a loss in between is not missed.
                notified.as_mut().enable();
                if shared.lost.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        }
    }

    /// Until when the lease is confirmed valid: the start of the last successful acquire
    /// or extension plus the ttl (measured before the request was sent, so it is never
    /// later than the expiry in Redis). `None` while the store keeps it valid for as long
    /// as the guard lives (memory with renewal).
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
        self.0.lost_notify.notify_waiters();
        self.0
            .metrics
            .count(Counter::LocksLost, Some(self.0.key.marketplace()));
        tracing::warn!(target: "bidlock::lease", key = %self.0.key, holder = %self.0.holder, %reason, "lock lost");
    }

    /// The lease is valid until `deadline` unless extended again.
    pub(crate) fn valid_until(&self, deadline: Instant) {
        self.0
            .valid_until
            .store(micros_since_base(deadline), Ordering::Release);
    }

    /// The lease is renewed implicitly by its store for as long as it lives.
    pub(crate) fn valid_while_alive(&self) {
        self.0.valid_until.store(FOREVER, Ordering::Release);
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        let until = self.0.valid_until.load(Ordering::Acquire);
        (until != FOREVER).then(|| base() + Duration::from_micros(until))
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.0.ttl_ms.store(ms, Ordering::Release);
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.0.ttl_ms.load(Ordering::Acquire))
    }

    pub(crate) fn set_renews(&self, renew: bool) {
        self.0.renew.store(renew, Ordering::Release);
    }

    pub(crate) fn renews(&self) -> bool {
        self.0.renew.load(Ordering::Acquire)
    }

    pub(crate) fn keeper_id(&self) -> u64 {
        self.0.keeper_id.load(Ordering::Acquire)
    }

    pub(crate) fn set_keeper_id(&self, id: u64) {
        self.0.keeper_id.store(id, Ordering::Release);
    }

    /// The guard let go of the lock (released, completed or dropped): no more renewals,
    /// and a failure seen after this is not a loss.
    pub(crate) fn set_released(&self) {
        self.0.released.store(true, Ordering::Release);
    }

    pub(crate) fn is_released(&self) -> bool {
        self.0.released.load(Ordering::Acquire)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.lost.load(Ordering::Acquire)
    }
}

fn micros_since_base(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(base()).as_micros()).unwrap_or(FOREVER - 1)
}
