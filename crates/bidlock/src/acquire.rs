//! Taking a lock: try, and on conflict wait in the local queue for a release signal,
//! the holder's ttl, the next backoff step or the deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{AcquireRequest, Attempt};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::guard::{LockGuard, ReleaseOnDrop};
use crate::key::LockKey;
use crate::lease::{Lease, Validity};
use crate::manager::{BidLockManager, Inner};
use crate::metrics::Counter;
use crate::options::{check_ttl, AcquireOptions};
use crate::waiters::Ticket;

impl BidLockManager {
    /// Takes the lock of `key`, waiting up to `opts` timeout while another holder has it.
    ///
    /// Waiting costs no polling while someone holds the lock: a release wakes the first
    /// local waiter within about one round trip (pub/sub in Redis), and waiters in one
    /// process are served first come, first served. Backoff (50 ms ×1.5 up to 1 s, with
    /// jitter) and the holder's remaining ttl are only the safety net.
    ///
    /// A lock whose reply arrives after its ttl has run out is not returned: it may already
    /// be someone else's. It is released and the acquire tries again until its deadline.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves nothing behind. If it is dropped while a
    /// try is in flight, that try's lock is released in the background (with a holder id
    /// of your own it is left to expire after its ttl instead; see
    /// [`AcquireOptions::holder`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotAcquired`] when the wait ran out, [`Error::AlreadyDone`] when the
    /// posting has a completion record, [`Error::Config`] for a ttl under 10 ms, a
    /// backend error when Redis fails (never reported as acquired), [`Error::Closed`]
    /// after [`close`](Self::close).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), bidlock::Error> {
    /// use bidlock::{AcquireOptions, BidLockManager, LockKey};
    /// let manager = BidLockManager::memory();
    /// let key = LockKey::new("upwork", "job_123")?;
    /// let guard = manager.acquire(&key, &AcquireOptions::new()).await?;
    /// // place the bid with guard.fencing_token() ...
    /// assert!(guard.release().await?);
    /// # Ok(()) }
    /// ```
    pub async fn acquire(&self, key: &LockKey, opts: &AcquireOptions) -> Result<LockGuard, Error> {
        use tracing::Instrument as _;
        let span = tracing::debug_span!(target: "bidlock::manager", "acquire", %key, holder = tracing::field::Empty, token = tracing::field::Empty);
        acquire(&self.inner, key, opts).instrument(span).await
    }

    /// Tries once to take the lock, without waiting.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire); [`Error::NotAcquired`] when the lock is held.
    pub async fn try_acquire(
        &self,
        key: &LockKey,
        opts: &AcquireOptions,
    ) -> Result<LockGuard, Error> {
        self.acquire(key, &opts.clone().no_wait()).await
    }
}

async fn acquire(
    inner: &Arc<Inner>,
    key: &LockKey,
    opts: &AcquireOptions,
) -> Result<LockGuard, Error> {
    inner.check_open()?;
    let ttl = check_ttl(opts.ttl.unwrap_or(inner.config.ttl))?;
    inner
        .metrics
        .count(Counter::LockAttempts, Some(key.marketplace()));
    let mut a = Acquiring::new(inner, key, opts, ttl);
    loop {
        if a.may_try {
            if let Some(guard) = a.try_once().await? {
                return Ok(guard);
            }
        }
        if !a.wait().await {
            return Err(a.not_acquired());
        }
    }
}

/// One acquire in progress.
struct Acquiring<'a> {
    inner: &'a Arc<Inner>,
    key: &'a LockKey,
    opts: &'a AcquireOptions,
    ttl: Duration,
    validity: Validity,
    start: Instant,
    deadline: Instant,
    /// Our place in the local queue (none when not waiting at all).
    ticket: Option<Ticket>,
    may_try: bool,
    tries: u32,
    backoff: Backoff,
    /// What the last busy try said: who holds it, and for how much longer.
    last_holder: Option<String>,
    hint: Option<Duration>,
    conflicted: bool,
}

impl<'a> Acquiring<'a> {
    fn new(
        inner: &'a Arc<Inner>,
        key: &'a LockKey,
        opts: &'a AcquireOptions,
        ttl: Duration,
    ) -> Acquiring<'a> {
        let start = Instant::now();
        // Join the queue before the first try (a release between a failed try and the
        // wait then still wakes us); when others already wait, queue behind them.
        let ticket = (!opts.timeout.is_zero()).then(|| inner.queues.enqueue(key));
        Acquiring {
            may_try: ticket.as_ref().is_none_or(Ticket::is_front),
            validity: inner.store.validity(ttl, opts.renew),
            deadline: start + opts.timeout,
            backoff: Backoff::new(inner.config.retry),
            inner,
            key,
            opts,
            ttl,
            start,
            ticket,
            tries: 0,
            last_holder: None,
            hint: None,
            conflicted: false,
        }
    }

    /// A lease for one try: a holder id of the caller's, or a fresh one per try, so that
    /// the background release of an abandoned try never touches a later one.
    fn new_lease(&self) -> Lease {
        let (holder, given) = match &self.opts.holder {
            Some(h) => (h.clone(), true),
            None => (self.inner.new_holder(), false),
        };
        tracing::Span::current().record("holder", holder.as_str());
        Lease::new(
            self.key.clone(),
            holder,
            given,
            self.ttl,
            self.opts.renew,
            self.inner.metrics.clone(),
        )
    }

    fn leave_queue(&mut self, pass_on: bool) {
        if let Some(t) = self.ticket.take() {
            t.leave(pass_on);
        }
    }

    /// One try. `Ok(Some)`: held. `Ok(None)`: busy, or taken too late to be used: wait
    /// and try again.
    async fn try_once(&mut self) -> Result<Option<LockGuard>, Error> {
        let tried_at = if self.tries == 0 {
            self.start
        } else {
            Instant::now()
        };
        self.tries += 1;
        self.hint = None;
        let lease = self.new_lease();
        let req = AcquireRequest {
            key: self.key,
            lease: &lease,
            ttl: self.ttl,
            renew: self.opts.renew,
            check_done: self.opts.check_done,
            waiters_behind: self.ticket.as_ref().is_some_and(Ticket::has_company),
            now: tried_at,
        };
        // The try can be cancelled, or fail with an unknown outcome (a reply lost or late:
        // the script may still run). Until its answer is in, its lock is released in the
        // background if we stop here, so no orphan blocks the posting for a whole ttl.
        let in_flight = ReleaseOnDrop::new(self.inner, &lease);
        let attempt = self.inner.store.try_acquire(&req).await;
        match attempt {
            Ok(Attempt::Acquired { token }) => {
                lease.set_token(token);
                lease.confirm(tried_at, self.validity);
                if lease.is_lost() {
                    tracing::debug!(target: "bidlock::manager", key = %self.key, "acquired after the ttl ran out; released, trying again");
                    drop(in_flight);
                    return Ok(None);
                }
                in_flight.disarm();
                self.leave_queue(false);
                Ok(Some(self.held(lease, tried_at)))
            }
            Ok(Attempt::Done) => {
                in_flight.disarm();
                self.leave_queue(true);
                self.inner
                    .metrics
                    .count(Counter::AlreadyDone, Some(self.key.marketplace()));
                Err(Error::AlreadyDone {
                    key: self.inner.keys().lock_key(self.key),
                })
            }
            Ok(Attempt::Held { holder, ttl_left }) => {
                in_flight.disarm();
                self.busy(holder, ttl_left);
                Ok(None)
            }
            Err(e) => {
                self.leave_queue(true);
                Err(e)
            }
        }
    }

    /// A try found the lock held. `lock_conflicts` counts acquires that met a held lock
    /// (once per acquire, as the original system's alert expects); `lock_busy_tries`
    /// every such try.
    fn busy(&mut self, holder: Option<String>, ttl_left: Option<Duration>) {
        let metrics = &self.inner.metrics;
        let marketplace = Some(self.key.marketplace());
        metrics.count(Counter::LockBusyTries, marketplace);
        if !std::mem::replace(&mut self.conflicted, true) {
            metrics.count(Counter::LockConflicts, marketplace);
        }
        self.last_holder = holder;
        self.hint = ttl_left;
    }

    fn held(&self, lease: Lease, tried_at: Instant) -> LockGuard {
        let inner = self.inner;
        inner
            .metrics
            .count(Counter::LockSuccesses, Some(self.key.marketplace()));
        let waited = if self.tries == 1 {
            Duration::ZERO
        } else {
            tried_at.saturating_duration_since(self.start)
        };
        inner.metrics.record_wait(waited, self.key.marketplace());
        tracing::Span::current().record("token", lease.fencing_token().get());
        tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(), token = %lease.fencing_token(), "acquired");
        let kept = inner.keeper.register(&lease);
        LockGuard::new(inner.clone(), lease, kept)
    }

    /// Waits for the earliest of a release signal, the holder's ttl, the next backoff
    /// step and the deadline. `false`: the deadline has passed; give up.
    async fn wait(&mut self) -> bool {
        let now = Instant::now();
        let Some(ticket) = self.ticket.as_ref().filter(|_| now < self.deadline) else {
            return false;
        };
        let mut sleep = self.backoff.next_delay();
        if let Some(left) = self.hint {
            // Look again right when the holder's ttl runs out.
            sleep = sleep.min(left + Duration::from_millis(1));
        }
        let wake_at = (now + sleep).min(self.deadline);
        tracing::trace!(target: "bidlock::manager", sleep = ?(wake_at - now), "waiting");
        let signalled = tokio::select! {
            _ = ticket.signalled() => true,
            _ = tokio::time::sleep_until(wake_at) => false,
        };
        // At the deadline, one last look if it is our turn.
        self.may_try = signalled || ticket.is_front();
        true
    }

    fn not_acquired(&mut self) -> Error {
        self.leave_queue(true);
        let waited = self.start.elapsed();
        self.inner
            .metrics
            .count(Counter::LockTimeouts, Some(self.key.marketplace()));
        tracing::debug!(target: "bidlock::manager", key = %self.key, ?waited, "not acquired");
        Error::NotAcquired {
            key: self.inner.keys().lock_key(self.key),
            waited,
            holder: self.last_holder.take(),
        }
    }
}
