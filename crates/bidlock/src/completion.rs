//! Writing a completion record once the bid is placed: whoever holds the lock by then,
//! with bounded retries on transient errors, and carried on in the background if the
//! caller stops waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{completion_record, Complete, Completed};
use crate::backoff::{Backoff, RetryPolicy};
use crate::error::Error;
use crate::inner::Inner;
use crate::lease::Lease;
use crate::metrics::Counter;

/// Writes the record of `lease`, retrying transient errors for up to twice the response
/// timeout. `Ok(true)`: recorded, and our lock released with it; `Ok(false)`: recorded,
/// but the lock was no longer ours (or may not have been: an earlier try's reply was
/// lost); `Err`: not recorded.
pub(crate) async fn complete(inner: &Inner, lease: &Lease) -> Result<bool, Error> {
    write(inner, lease, false).await
}

/// As [`complete`]; `unsure`: an earlier attempt may already have written the record and
/// released the lock (the caller stopped waiting for it).
async fn write(inner: &Inner, lease: &Lease, unsure: bool) -> Result<bool, Error> {
    let retention = inner.config.done_retention;
    let bound = Instant::now() + inner.config.response_timeout * 2;
    let mut backoff = Backoff::new(RetryPolicy::new(
        Duration::from_millis(50),
        2.0,
        Duration::from_secs(1),
    ));
    let mut unsure = unsure;
    loop {
        let req = Complete {
            key: lease.key(),
            holder: lease.holder(),
            record: completion_record(lease.fencing_token(), lease.holder()),
            retention,
            may_release: lease.owns_its_id(),
            given: lease.holder_given(),
            tell: lease.holder_given(),
            ttl: lease.ttl(),
        };
        match inner.store.complete(&req).await {
            Ok(done) => {
                inner
                    .metrics
                    .count(Counter::Completions, Some(lease.key().marketplace()));
                return Ok(recorded(lease, done, unsure));
            }
            Err(e) if e.is_retryable() && Instant::now() < bound => {
                unsure = true;
                tracing::warn!(target: "bidlock::guard", key = %lease.key(), error = %e, "completion record not written yet; retrying");
                let pause = backoff.next_delay();
                tokio::time::sleep_until((Instant::now() + pause).min(bound)).await;
            }
            Err(e) => {
                tracing::error!(target: "bidlock::guard", key = %lease.key(), holder = %lease.holder(), error = %e,
                    "the bid was placed but its completion could not be recorded; another instance may bid again");
                return Err(e);
            }
        }
    }
}

fn recorded(lease: &Lease, done: Completed, unsure: bool) -> bool {
    match done {
        Completed::Released => {
            tracing::debug!(target: "bidlock::guard", key = %lease.key(), holder = %lease.holder(), token = %lease.fencing_token(), "completed");
            true
        }
        Completed::NotHeld if unsure => {
            tracing::warn!(target: "bidlock::guard", key = %lease.key(),
                "completion recorded; whether the lock was still held is unknown (an earlier reply was lost)");
            false
        }
        Completed::NotHeld => {
            lease.mark_lost("lock was gone or held by another holder at completion");
            tracing::warn!(target: "bidlock::guard", key = %lease.key(), holder = %lease.holder(),
                "the lock was lost before completion; the record is written anyway, but another holder may have bid meanwhile (the fencing token tells)");
            false
        }
    }
}

/// Finishes a completion in a spawned task if the future writing it is dropped half-way:
/// the bid was placed, so its record must not depend on the caller still waiting.
pub(crate) struct CompleteOnDrop {
    inner: Arc<Inner>,
    lease: Lease,
    armed: bool,
}

impl CompleteOnDrop {
    pub(crate) fn new(inner: &Arc<Inner>, lease: &Lease) -> CompleteOnDrop {
        CompleteOnDrop {
            inner: inner.clone(),
            lease: lease.clone(),
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (inner, lease) = (self.inner.clone(), self.lease.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    let _ = write(&inner, &lease, true).await;
                });
            }
            Err(_) => {
                tracing::error!(target: "bidlock::guard", key = %self.lease.key(),
                    "completion dropped outside a tokio runtime; the record may be missing");
            }
        }
    }
}
