//! The waiting states of an acquire: `Watch` (not queued in the store: a release signal,
//! the holder's ttl, backoff) and `Queued` (queued in the store: a grant, a release, the
//! next refresh of the entry).

use std::time::Duration;

use tokio::time::Instant;

use super::{Acquiring, Step, Tenure};
use crate::error::Error;
use crate::waiters::Ticket;

impl Acquiring<'_> {
    /// Waits for the earliest of a release signal, the holder's ttl, the next backoff
    /// step and the deadline; then tries if it is this waiter's turn. At the deadline, one
    /// last look if it is.
    pub(super) async fn watch(&mut self) -> Step {
        let now = Instant::now();
        let Some(ticket) = self.ticket.as_ref().filter(|_| now < self.deadline) else {
            return Step::TimedOut;
        };
        let mut sleep = self.backoff.next_delay();
        if let Some(left) = self.hint {
            // Look again right when the holder's ttl runs out.
            sleep = sleep.min(left + Duration::from_millis(1));
        }
        let wake_at = (now + sleep).min(self.deadline);
        self.waited = true;
        tracing::trace!(target: "bidlock::manager", sleep = ?(wake_at.saturating_duration_since(now)), "waiting");
        let signalled = woken(ticket, wake_at).await;
        if signalled || ticket.is_front() || self.joins_at_once() {
            Step::Try(None)
        } else {
            Step::Watch
        }
    }

    /// A queued tenure waits for its grant (or a release that freed the lock without one),
    /// keeping its entry alive meanwhile with a try that stays queued: no polling. At the deadline it gives up, and its
    /// place is let go before the acquire returns (a grant on its way is handed on).
    pub(super) async fn wait_queued(&mut self, tenure: Tenure) -> Result<Step, Error> {
        let now = Instant::now();
        let Some(ticket) = self.ticket.as_ref().filter(|_| now < self.deadline) else {
            self.leave(tenure).await;
            return Ok(Step::TimedOut);
        };
        let wake_at = tenure.refresh_at.min(self.deadline);
        self.waited = true;
        let signalled = woken(ticket, wake_at).await;
        if let Some(token) = ticket.take_grant(tenure.lease.holder()) {
            return Ok(Step::Granted(tenure, token));
        }
        if Instant::now() >= self.deadline {
            // Out of time: the place goes, and a grant on its way is handed on.
            self.leave(tenure).await;
            return Ok(Step::TimedOut);
        }
        if !signalled {
            // Time to say it is still there: a try, staying queued, which also finds a
            // grant whose message was lost, or hands a free lock to the first live waiter.
            self.refreshing = true;
        }
        // Or a release freed the lock without handing it over: try, staying queued.
        Ok(Step::Try(Some(tenure)))
    }
}

impl Acquiring<'_> {
    /// Ends a tenure the acquire gives up on: its id leaves the store's queue (or hands on
    /// a lock granted meanwhile) before the acquire returns, so that a caller who is told
    /// "not acquired" and then releases its own lock does not hand it to this departed id.
    /// Bounded like a last try (the deadline has passed); if it fails, or the future is
    /// dropped meanwhile, the tenure's own background release does it.
    pub(super) async fn leave(&self, tenure: Tenure) {
        let Tenure { lease, leave, .. } = tenure;
        let bound = super::TRY_FLOOR.min(self.inner.config.response_timeout);
        if let Ok(Ok(_)) = tokio::time::timeout(bound, self.inner.release_lease(&lease)).await {
            leave.disarm();
        }
    }
}

/// Waits until `ticket` is signalled (`true`) or `wake_at` (`false`).
async fn woken(ticket: &Ticket, wake_at: Instant) -> bool {
    tokio::select! {
        _ = ticket.signalled() => true,
        _ = tokio::time::sleep_until(wake_at) => false,
    }
}
