//! Taking a lock: try, and on conflict wait in the local queue for a release signal,
//! the holder's ttl, the next backoff step or the deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{AcquireRequest, Attempt, Handoff, Queue, Waiting};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::guard::{LockGuard, ReleaseOnDrop};
use crate::inner::Inner;
use crate::keeper::Keeping;
use crate::key::LockKey;
use crate::lease::{Lease, Validity};
use crate::manager::BidLockManager;
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
    /// With Redis, a waiter with a generated holder id also joins the key's queue in
    /// Redis, and a release hands the lock straight to the first live waiter of the whole
    /// fleet: first come, first served across processes, and the new holder starts one
    /// message after the release, without a try of its own.
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
        let mut held = None;
        if let Some(token) = a.grant.take() {
            held = a.accept_grant(token)?;
        }
        if held.is_none() {
            if a.refresh_due() {
                a.refresh().await?;
                continue;
            }
            if a.may_try {
                held = a.try_once().await?;
            }
        }
        if let Some(guard) = held {
            if let Some(guard) = a.settle(guard).await? {
                return Ok(guard);
            }
            // The handed-over lock was gone before it could be made whole: try again.
            a.may_try = true;
            continue;
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
    /// The lease of the last try, kept for the next one while that try's answer was a
    /// definite "held" (so the holder id stays the one queued in the store).
    lease: Option<Lease>,
    /// The store's handoff rules, when this waiter queues in the store.
    handoff: Option<Handoff>,
    /// When the last request that found this waiter queued was sent: a grant came after.
    queued: Option<Instant>,
    /// This waiter's entry may be in the store's queue (it joined, and has not left).
    in_queue: bool,
    /// A token handed to this waiter, not yet taken up.
    grant: Option<u64>,
    /// The guard about to be returned came by a handoff (held for the grant ttl only).
    handed_over: bool,
}

impl Drop for Acquiring<'_> {
    fn drop(&mut self) {
        // Leaving without the lock while queued in the store (timed out, cancelled, an
        // error): take the entry out, or hand on a lock granted meanwhile.
        if let (Some(lease), true) = (self.lease.take(), self.in_queue) {
            self.inner.release_detached(lease);
        }
    }
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
        // Handoffs go to a holder id: only one unique to this acquisition can take them.
        let handoff = (ticket.is_some() && opts.holder.is_none() && inner.store.takes_handoffs())
            .then(|| Handoff::for_ttl(ttl));
        Acquiring {
            may_try: ticket.as_ref().is_none_or(Ticket::is_front),
            validity: inner.store.validity(ttl, opts.renew),
            // "Wait forever" is a legitimate Duration::MAX: saturate, never overflow.
            deadline: start
                .checked_add(opts.timeout)
                .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600)),
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
            lease: None,
            handoff,
            queued: None,
            in_queue: false,
            grant: None,
            handed_over: false,
        }
    }

    /// A lease for one try: a holder id of the caller's, or a fresh one per try after an
    /// unknown outcome, so that the background release of an abandoned try never touches a
    /// later one.
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

    fn queue(&self) -> Queue {
        match self.handoff {
            Some(handoff) => Queue::OnConflict {
                again: self.in_queue,
                handoff,
            },
            None => Queue::No,
        }
    }

    /// One try. `Ok(Some)`: held. `Ok(None)`: busy, or taken too late to be used: wait
    /// and try again.
    async fn try_once(&mut self) -> Result<Option<LockGuard>, Error> {
        // A waiter woken by close() must not take a lock from a closed manager.
        self.inner.check_open()?;
        let tried_at = if self.tries == 0 {
            self.start
        } else {
            Instant::now()
        };
        self.tries += 1;
        self.hint = None;
        let lease = self.lease.take().unwrap_or_else(|| self.new_lease());
        let req = AcquireRequest {
            key: self.key,
            lease: &lease,
            ttl: self.ttl,
            renew: self.opts.renew,
            check_done: self.opts.check_done,
            waiters_behind: self.ticket.as_ref().is_some_and(Ticket::has_company),
            queue: self.queue(),
            now: tried_at,
        };
        // The try can be cancelled, or fail with an unknown outcome (a reply lost or late:
        // the script may still run). Until its answer is in, its lock is released in the
        // background if we stop here, so no orphan blocks the posting for a whole ttl.
        let in_flight = ReleaseOnDrop::new(self.inner, &lease);
        let attempt = self.inner.store.try_acquire(&req).await;
        match attempt {
            Ok(Attempt::Acquired { token }) => {
                // Taking the lock took our entry out of the store's queue too.
                self.queued = None;
                self.in_queue = false;
                lease.set_token(token);
                lease.confirm(tried_at, self.validity);
                self.take_up(lease, in_flight, tried_at)
            }
            Ok(Attempt::Granted { token }) => {
                in_flight.disarm();
                self.lease = Some(lease);
                self.accept_grant(token)
            }
            Ok(Attempt::Done) => {
                in_flight.disarm();
                self.queued = None;
                // Drop takes our entry out of the store's queue, if we had one.
                self.lease = Some(lease);
                self.leave_queue(true);
                self.inner
                    .metrics
                    .count(Counter::AlreadyDone, Some(self.key.marketplace()));
                Err(Error::AlreadyDone {
                    key: self.inner.keys().lock_key(self.key),
                })
            }
            Ok(Attempt::Held {
                holder,
                ttl_left,
                queued,
            }) => {
                in_flight.disarm();
                self.busy(holder, ttl_left);
                if queued {
                    self.queued = Some(tried_at);
                    self.in_queue = true;
                    if let Some(t) = &self.ticket {
                        t.queued_as(Some(lease.holder()));
                    }
                }
                self.lease = Some(lease);
                Ok(None)
            }
            Err(e) => {
                // The answer is unknown: in_flight releases this try's lock (and queue
                // entry) in the background.
                self.queued = None;
                self.in_queue = false;
                self.leave_queue(true);
                Err(e)
            }
        }
    }

    /// A confirmed lease becomes a guard, unless it is already worthless (the reply came
    /// after its validity ran out: released by `in_flight`, try again) or the manager
    /// closed meanwhile.
    fn take_up(
        &mut self,
        lease: Lease,
        in_flight: ReleaseOnDrop,
        tried_at: Instant,
    ) -> Result<Option<LockGuard>, Error> {
        if lease.is_lost() {
            tracing::debug!(target: "bidlock::manager", key = %self.key, "acquired after the ttl ran out; released, trying again");
            // The next try uses a new holder id: nothing meant for this one may count.
            if let Some(t) = &self.ticket {
                t.queued_as(None);
            }
            drop(in_flight);
            return Ok(None);
        }
        crate::renewal::start(self.inner);
        let kept = match self.inner.keeper.register(&lease) {
            Keeping::Kept => true,
            Keeping::Untracked => false,
            // Closed while the try was out: let it go (in_flight releases it).
            Keeping::Closed => return Err(Error::Closed),
        };
        if let Err(closed) = self.inner.check_open() {
            self.inner.keeper.unregister(&lease);
            return Err(closed);
        }
        in_flight.disarm();
        if let Some(t) = &self.ticket {
            t.queued_as(None);
        }
        // With handoffs, the next local waiter tries at once, to queue in the store
        // behind us.
        self.leave_queue(self.handoff.is_some());
        Ok(Some(self.held(lease, tried_at, kept)))
    }

    /// A release handed us the lock with `token`. It happened after our last request that
    /// found us queued, so the grant ttl counts from that request's send.
    fn accept_grant(&mut self, token: u64) -> Result<Option<LockGuard>, Error> {
        let (Some(lease), Some(since), Some(handoff)) =
            (self.lease.take(), self.queued.take(), self.handoff)
        else {
            return Ok(None);
        };
        // The release that handed us the lock took our entry out of the queue.
        self.in_queue = false;
        lease.set_token(token);
        let validity = self
            .inner
            .store
            .validity(handoff.grant_ttl, self.opts.renew);
        lease.confirm(since, validity);
        self.inner
            .metrics
            .count(Counter::Handoffs, Some(self.key.marketplace()));
        self.handed_over = true;
        let in_flight = ReleaseOnDrop::new(self.inner, &lease);
        self.take_up(lease, in_flight, since)
    }

    /// A handed-over lock lives for the grant ttl only (a short one, so a waiter that died
    /// after queuing blocks nobody for long). With renewal, the keeper lengthens it at its
    /// first renewal; without, it is extended to the full ttl here, once, before the caller
    /// gets it. `Ok(None)`: the lock was gone by then (try again).
    async fn settle(&mut self, guard: LockGuard) -> Result<Option<LockGuard>, Error> {
        let handed_over = std::mem::take(&mut self.handed_over);
        let short = self.handoff.is_some_and(|h| h.grant_ttl < self.ttl);
        if !handed_over || self.opts.renew || !short {
            return Ok(Some(guard));
        }
        match guard.extend(self.ttl).await {
            Ok(()) => Ok(Some(guard)),
            Err(Error::LockLost { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a queued waiter's entry needs refreshing now.
    fn refresh_due(&self) -> bool {
        match (self.handoff, self.queued) {
            (Some(h), Some(since)) => Instant::now() >= since + h.refresh_every,
            _ => false,
        }
    }

    /// Keeps our queue entry alive, or finds we were handed the lock, or that we are not
    /// queued any more (then try again).
    async fn refresh(&mut self) -> Result<(), Error> {
        let (Some(lease), Some(handoff)) = (&self.lease, self.handoff) else {
            return Ok(());
        };
        let sent = Instant::now();
        match self.inner.store.refresh(lease, handoff).await? {
            Waiting::Queued => self.queued = Some(sent),
            Waiting::Granted { token } => self.grant = Some(token),
            Waiting::Gone => {
                self.queued = None;
                self.may_try = true;
            }
        }
        Ok(())
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

    fn held(&self, lease: Lease, tried_at: Instant, kept: bool) -> LockGuard {
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
        let mut wake_at = (now + sleep).min(self.deadline);
        if let (Some(h), Some(since)) = (self.handoff, self.queued) {
            // A queued waiter only waits for its grant (or a release that freed the lock
            // without one), refreshing its entry meanwhile: no polling.
            wake_at = (since + h.refresh_every).min(self.deadline);
        }
        tracing::trace!(target: "bidlock::manager", sleep = ?(wake_at.saturating_duration_since(now)), "waiting");
        let signalled = tokio::select! {
            _ = ticket.signalled() => true,
            _ = tokio::time::sleep_until(wake_at) => false,
        };
        self.grant = self
            .lease
            .as_ref()
            .and_then(|lease| ticket.take_grant(lease.holder()));
        // At the deadline, one last look if it is our turn.
        self.may_try = self.grant.is_none() && (signalled || ticket.is_front());
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
