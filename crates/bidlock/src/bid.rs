//! Running the caller's code under a lock: [`BidLockManager::with_lock`], and
//! [`BidLockManager::bid_once`] with its [`BidOutcome`].

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use crate::error::Error;
use crate::key::LockKey;
use crate::lease::Lease;
use crate::manager::BidLockManager;
use crate::options::AcquireOptions;

/// What [`BidLockManager::bid_once`] did once it held the lock and ran the bid.
#[derive(Debug)]
#[must_use = "a bid that was placed but not recorded may be placed again by another instance"]
pub enum BidOutcome<T, E> {
    /// The bid returned `Ok` and its completion record is written: no instance runs this
    /// posting again for the retention (7 days by default). The record is written even if
    /// the lock was lost while the bid ran; then another holder may have bid meanwhile,
    /// and the fencing token tells which bid is newer.
    Placed(T),
    /// The bid returned `Ok`, but its completion record could not be written within the
    /// retries (`error` says why): another instance may run this posting again. Make the
    /// bid idempotent on the marketplace side, or check fencing tokens there.
    Unrecorded {
        /// The bid's value.
        value: T,
        /// Why the record is missing.
        error: Error,
    },
    /// The bid returned `Err`: nothing was recorded and the lock was released, so
    /// another instance may try.
    Failed(E),
}

impl<T, E> BidOutcome<T, E> {
    /// The bid's own result: `Ok` for a placed bid, recorded or not.
    pub fn into_result(self) -> Result<T, E> {
        match self {
            BidOutcome::Placed(v) | BidOutcome::Unrecorded { value: v, .. } => Ok(v),
            BidOutcome::Failed(e) => Err(e),
        }
    }

    /// Whether the bid ran and returned `Ok` (recorded or not).
    pub fn is_placed(&self) -> bool {
        !matches!(self, BidOutcome::Failed(_))
    }

    /// Whether a completion record stops every later attempt.
    pub fn is_recorded(&self) -> bool {
        matches!(self, BidOutcome::Placed(_))
    }
}

impl BidLockManager {
    /// Runs `f` while holding the lock of `key`, and releases it on every exit path:
    /// return, panic (the panic resumes after the release), and cancellation (the drop
    /// releases in the background).
    ///
    /// `f` receives the [`Lease`]: pass its fencing token with the bid, and watch
    /// `lease.lost()` if the work is long. The closure's value is returned as it is,
    /// even if the lease was lost meanwhile; check `lease.is_lost()` when that matters.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops `f` where it is and releases the lock in the background
    /// (with a holder id of your own the lock is left to expire after its ttl instead; see
    /// [`AcquireOptions::holder`]).
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire). A failing release after `f` is logged, not
    /// returned (the lock then expires after its ttl).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
    /// use bidlock::{AcquireOptions, BidLockManager, LockKey};
    /// let manager = BidLockManager::memory();
    /// let key = LockKey::new("upwork", "job_123")?;
    /// let token = manager
    ///     .with_lock(&key, &AcquireOptions::new(), |lease| async move {
    ///         // place_bid(&key, lease.fencing_token()).await
    ///         lease.fencing_token()
    ///     })
    ///     .await?;
    /// # let _ = token;
    /// # Ok(()) }
    /// ```
    pub async fn with_lock<F, Fut, T>(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
        f: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire(key, opts).await?;
        let outcome = AssertUnwindSafe(f(guard.lease().clone()))
            .catch_unwind()
            .await;
        if let Err(e) = guard.release().await {
            tracing::warn!(target: "bidlock::manager", %key, error = %e, "release after with_lock failed; the lock expires after its ttl");
        }
        match outcome {
            Ok(v) => Ok(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Runs `f` at most once per posting across the fleet: under the lock, and only if
    /// no instance completed the posting before.
    ///
    /// When `f` returns `Ok`, a completion record is written (kept for the configured
    /// retention, 7 days by default) and the lock released with it — whoever holds the
    /// lock by then, since the bid is placed. When `f` returns `Err` or panics, the lock is
    /// released without a record so another instance may retry. See [`BidOutcome`] for
    /// exactly what each outcome means.
    ///
    /// # Cancel safety
    ///
    /// - Dropped while waiting for the lock: as [`acquire`](Self::acquire).
    /// - Dropped while `f` runs: `f` stops where it is, nothing is recorded, and the lock
    ///   is released in the background. A bid already sent by then is not recorded:
    ///   another instance may bid again, so use the fencing token on the receiving side.
    /// - Dropped after `f` returned `Ok`: the record is still written, in a spawned task.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyDone`] at once when the posting was completed before (`f` is not
    /// run), and everything [`acquire`](Self::acquire) returns. Once `f` ran, the outcome
    /// is always `Ok`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
    /// use bidlock::{AcquireOptions, BidLockManager, BidOutcome, LockKey};
    /// let manager = BidLockManager::memory();
    /// let key = LockKey::new("upwork", "job_123")?;
    /// let opts = AcquireOptions::new();
    /// let first = manager
    ///     .bid_once(&key, &opts, |lease| async move { Ok::<_, std::io::Error>(lease.fencing_token()) })
    ///     .await?;
    /// assert!(matches!(first, BidOutcome::Placed(_)));
    /// let again = manager
    ///     .bid_once(&key, &opts, |_| async { Ok::<_, std::io::Error>(unreachable!()) })
    ///     .await;
    /// assert!(again.unwrap_err().is_already_done());
    /// # Ok(()) }
    /// ```
    pub async fn bid_once<F, Fut, T, E>(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
        f: F,
    ) -> Result<BidOutcome<T, E>, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let guard = self.acquire(key, &opts.clone().check_done(true)).await?;
        match AssertUnwindSafe(f(guard.lease().clone()))
            .catch_unwind()
            .await
        {
            Ok(Ok(value)) => Ok(match guard.complete().await {
                Ok(_) => BidOutcome::Placed(value),
                Err(error) => BidOutcome::Unrecorded { value, error },
            }),
            Ok(Err(e)) => {
                if let Err(re) = guard.release().await {
                    tracing::warn!(target: "bidlock::manager", %key, error = %re, "release after a failed bid failed; the lock expires after its ttl");
                }
                Ok(BidOutcome::Failed(e))
            }
            Err(panic) => {
                let _ = guard.release().await;
                std::panic::resume_unwind(panic)
            }
        }
    }
}
