//! [`LockGuard`]: a held lock. Dropping it releases; `release().await` reports the
//! outcome; a watchdog renews the lease while it lives.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::key::LockKey;
use crate::lease::{FencingToken, Holder, Lease};
use crate::manager::Inner;
use crate::metrics::Counter;

/// A held lock.
///
/// While the guard lives, its lease is renewed every ttl/3 (unless renewal was turned off
/// for this acquire). If a renewal finds the lock gone or taken, or cannot reach the
/// backend before the lease runs out, the guard is marked lost: [`LockGuard::is_lost`]
/// turns true and [`LockGuard::lost`] resolves.
///
/// Dropping the guard releases the lock: at once for the memory backend, in a spawned
/// task for Redis (the release needs I/O). Call [`LockGuard::release`] to wait for the
/// release and learn its outcome, or [`LockGuard::complete`] to record that the posting
/// was handled.
#[must_use = "dropping the guard releases the lock at once"]
#[clippy::has_significant_drop]
pub struct LockGuard {
    inner: Arc<Inner>,
    lease: Lease,
    kept: bool,
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// Releases in the background if the future that was releasing is dropped half-way, so
/// a cancelled release never leaves a lock that nobody will release.
pub(crate) struct ReleaseOnDrop {
    inner: Arc<Inner>,
    key: LockKey,
    holder: Holder,
    armed: bool,
}

impl ReleaseOnDrop {
    pub(crate) fn new(inner: &Arc<Inner>, key: &LockKey, holder: &Holder) -> ReleaseOnDrop {
        ReleaseOnDrop {
            inner: inner.clone(),
            key: key.clone(),
            holder: holder.clone(),
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.inner
                .release_detached(self.key.clone(), self.holder.clone());
        }
    }
}

impl LockGuard {
    pub(crate) fn new(inner: Arc<Inner>, lease: Lease, kept: bool) -> Self {
        LockGuard {
            inner,
            lease,
            kept,
            done: false,
        }
    }

    /// The locked key.
    pub fn key(&self) -> &LockKey {
        self.lease.key()
    }

    /// The holder id stored in the lock.
    pub fn holder(&self) -> &Holder {
        self.lease.holder()
    }

    /// The fencing token of this acquisition: pass it with the bid.
    pub fn fencing_token(&self) -> FencingToken {
        self.lease.fencing_token()
    }

    /// A cloneable handle on the lease, for the code inside the critical section.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether the lock may no longer be held (see [`Lease::is_lost`]).
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Resolves when the lock is found lost; use it in `tokio::select!`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.lease.lost()
    }

    /// Extends the lock to `ttl` from now (and renewals keep that ttl).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the lock is no longer held by this holder (the guard is
    /// marked lost); a backend error when Redis cannot be reached (the lease is unchanged).
    pub async fn extend(&self, ttl: Duration) -> Result<(), Error> {
        let ttl = crate::manager::check_ttl(ttl)?;
        let start = Instant::now();
        let ok = self
            .inner
            .store
            .extend(self.key(), self.holder(), ttl)
            .await?;
        if ok {
            self.inner
                .metrics
                .count(Counter::Extensions, Some(self.key().marketplace()));
            self.lease.set_ttl(ttl);
            if !self.inner.store.renews_implicitly() || !self.lease.renews() {
                self.lease
                    .valid_until(start + self.inner.store.validity(ttl));
            }
            Ok(())
        } else {
            self.lease
                .mark_lost("lock was gone or held by another holder when extending");
            Err(self.lost_error())
        }
    }

    fn lost_error(&self) -> Error {
        Error::LockLost {
            key: self.inner.keys().lock_key(self.key()),
            reason: self
                .lease
                .lost_reason()
                .unwrap_or("lock was gone or held by another holder")
                .to_owned(),
        }
    }

    fn stop_watchdog(&mut self) {
        if std::mem::take(&mut self.kept) {
            self.inner.keeper.unregister(&self.lease);
        } else {
            self.lease.set_released();
        }
    }

    /// Releases the lock and tells whether it was still held.
    ///
    /// `Ok(false)` means the lock had already expired or been taken (the guard was lost).
    ///
    /// # Cancel safety
    ///
    /// If this future is dropped before it finishes, the release goes on in a spawned
    /// task: the lock is released either way.
    ///
    /// # Errors
    ///
    /// A backend error when Redis cannot be reached; the lock then expires after its ttl.
    pub async fn release(mut self) -> Result<bool, Error> {
        use tracing::Instrument as _;
        self.stop_watchdog();
        self.done = true;
        let span = tracing::debug_span!(target: "bidlock::guard", "release", key = %self.key(), holder = %self.holder(), token = self.fencing_token().get());
        let on_drop = ReleaseOnDrop::new(&self.inner, self.key(), self.holder());
        let result = self.inner.release_held(&self.lease).instrument(span).await;
        on_drop.disarm();
        result
    }

    /// Records that the posting was handled and releases the lock, atomically: later
    /// acquirers get [`Error::AlreadyDone`] at once, for the configured retention.
    ///
    /// # Cancel safety
    ///
    /// If dropped half-way the record may or may not be written; the lock is then left
    /// to expire after its ttl (releasing it could let another instance bid again).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the lock was no longer held (nothing is written); a
    /// backend error when Redis cannot be reached (the lock then expires after its ttl).
    pub async fn complete(mut self) -> Result<(), Error> {
        self.stop_watchdog();
        self.done = true;
        let retention = self.inner.config.done_retention;
        let ok = self.inner.store.complete(&self.lease, retention).await?;
        if ok {
            self.inner
                .metrics
                .count(Counter::Completions, Some(self.key().marketplace()));
            tracing::debug!(target: "bidlock::guard", key = %self.key(), holder = %self.holder(), token = %self.fencing_token(), "completed");
            Ok(())
        } else {
            self.lease
                .mark_lost("lock was gone or held by another holder at completion");
            Err(self.lost_error())
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_watchdog();
        if !self.done {
            self.inner
                .release_detached(self.key().clone(), self.holder().clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync_static<T: Send + Sync + 'static>() {}

    #[test]
    fn guards_and_leases_cross_tasks() {
        assert_send_sync_static::<LockGuard>();
        assert_send_sync_static::<Lease>();
        assert_send_sync_static::<crate::BidLockManager>();
        assert_send_sync_static::<Error>();
    }
}
