//! [`LockGuard`]: a held lock. Dropping it releases; `release().await` reports the
//! outcome; a watchdog renews the lease while it lives.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::Extend;
use crate::completion::CompleteOnDrop;
use crate::error::Error;
use crate::inner::Inner;
use crate::key::LockKey;
use crate::lease::{FencingToken, Holder, Lease};

/// A held lock.
///
/// While the guard lives, its lease is renewed every ttl/3 (unless renewal was turned off
/// for this acquire). If a renewal finds the lock gone or taken, or cannot reach the
/// backend before the lease runs out, the guard is marked lost: [`LockGuard::is_lost`]
/// turns true and [`LockGuard::lost`] resolves.
///
/// Dropping the guard releases the lock: at once for the memory backend, in a spawned
/// task for Redis (the release needs I/O) — except with a holder id of your own, whose
/// lock then expires after its ttl (see [`AcquireOptions::holder`]). Call
/// [`LockGuard::release`] to wait for the release and learn its outcome, or
/// [`LockGuard::complete`] to record that the posting was handled.
///
/// [`AcquireOptions::holder`]: crate::AcquireOptions::holder
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

/// Releases in the background if the future that was using the lock is dropped
/// half-way (a cancelled acquire whose try may have taken the lock, a cancelled release),
/// so no orphan blocks the posting for a whole ttl. Subject to the background-release rule
/// of [`Inner::release_detached`].
pub(crate) struct ReleaseOnDrop {
    inner: Arc<Inner>,
    lease: Option<Lease>,
}

impl ReleaseOnDrop {
    pub(crate) fn new(inner: &Arc<Inner>, lease: &Lease) -> ReleaseOnDrop {
        ReleaseOnDrop {
            inner: inner.clone(),
            lease: Some(lease.clone()),
        }
    }

    pub(crate) fn disarm(mut self) {
        self.lease = None;
    }
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.inner.release_detached(lease);
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

    /// Sets the lock's ttl to `ttl` from now, shorter or longer than before; renewals keep
    /// that ttl from then on, on the new schedule.
    ///
    /// # Cancel safety
    ///
    /// If dropped half-way the extend may or may not reach the store; the lease's deadline
    /// is then counted as if it had (the shorter of old and new), never later than what
    /// the store holds.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the lock is no longer held by this holder (the guard is
    /// marked lost); [`Error::Config`] for a ttl under 10 ms; a backend error when Redis
    /// cannot be reached (the deadline is then the shorter of old and new).
    pub async fn extend(&self, ttl: Duration) -> Result<(), Error> {
        let ttl = crate::options::check_ttl(ttl)?;
        if self
            .inner
            .extend_lease(&self.lease, ttl, Extend::Exact)
            .await?
        {
            Ok(())
        } else {
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

    /// Stops renewals and marks the guard as let go.
    fn let_go(&mut self) {
        self.done = true;
        if std::mem::take(&mut self.kept) {
            self.inner.keeper.unregister(&self.lease);
        } else {
            self.lease.set_released();
        }
    }

    /// Releases the lock and tells whether it was still held.
    ///
    /// `Ok(false)` means the lock had already expired or been taken (the guard was lost).
    /// With a holder id of your own, a lease already known lost is not released at all
    /// (the id may hold a later acquisition now).
    ///
    /// # Cancel safety
    ///
    /// If this future is dropped before it finishes, the release goes on in a spawned
    /// task (for generated holder ids; see [`AcquireOptions::holder`]).
    ///
    /// # Errors
    ///
    /// A backend error when Redis cannot be reached; the lock then expires after its ttl.
    ///
    /// [`AcquireOptions::holder`]: crate::AcquireOptions::holder
    pub async fn release(mut self) -> Result<bool, Error> {
        use tracing::Instrument as _;
        self.let_go();
        if !self.lease.owns_its_id() {
            return Ok(false);
        }
        let span = tracing::debug_span!(target: "bidlock::guard", "release", key = %self.key(), holder = %self.holder(), token = self.fencing_token().get());
        let on_drop = ReleaseOnDrop::new(&self.inner, &self.lease);
        let result = self.inner.release_lease(&self.lease).instrument(span).await;
        on_drop.disarm();
        if let Ok(false) = result {
            self.lease
                .mark_lost("lock was gone or held by another holder at release");
        }
        result
    }

    /// Records that the posting was handled and releases the lock: later acquirers get
    /// [`Error::AlreadyDone`] at once, for the configured retention.
    ///
    /// The record is written whoever holds the lock by now: once the bid is placed, no
    /// one may place it again, even if this lease lapsed meanwhile (a partition longer
    /// than the lease, renewal off). Transient errors are retried for up to twice the
    /// response timeout.
    ///
    /// `Ok(true)`: recorded, and the lock released with it. `Ok(false)`: recorded, but the
    /// lock had been lost before (another holder may have worked on the posting meanwhile:
    /// the fencing token tells which is newer), or whether it was is unknown.
    ///
    /// # Cancel safety
    ///
    /// If dropped half-way, the completion goes on in a spawned task: the record does not
    /// depend on the caller still waiting.
    ///
    /// # Errors
    ///
    /// A backend error when the record could not be written within the retries: another
    /// instance may then handle the posting again (the lock expires after its ttl).
    pub async fn complete(mut self) -> Result<bool, Error> {
        self.let_go();
        let on_drop = CompleteOnDrop::new(&self.inner, &self.lease);
        let result = crate::completion::complete(&self.inner, &self.lease).await;
        on_drop.disarm();
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.done {
            self.let_go();
            self.inner.release_detached(self.lease.clone());
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

    fn spawnable<T: Send + 'static>(_: T) {}

    /// The futures users hand to `tokio::spawn`: a refactor must not make them `!Send`.
    #[test]
    fn acquire_and_bid_futures_can_be_spawned() {
        let m = crate::BidLockManager::memory();
        let key = LockKey::new("m", "send").unwrap();
        let opts = crate::AcquireOptions::new();
        let (m1, k1, o1) = (m.clone(), key.clone(), opts.clone());
        spawnable(async move { m1.acquire(&k1, &o1).await.map(drop) });
        let (m2, k2, o2) = (m.clone(), key.clone(), opts.clone());
        spawnable(async move {
            m2.bid_once(&k2, &o2, |lease| async move { Ok::<_, ()>(lease) })
                .await
                .map(drop)
        });
        let (m3, k3, o3) = (m.clone(), key.clone(), opts.clone());
        spawnable(async move { m3.with_lock(&k3, &o3, |_| async {}).await });
        spawnable(async move {
            let g = m.acquire(&key, &opts).await?;
            g.extend(std::time::Duration::from_secs(1)).await?;
            g.complete().await
        });
    }
}
