//! Taking a lock: one acquire is a state machine ([`Step`]) whose transitions each answer
//! one reply of a store script or one signal; the table is in docs/HANDOVER.md ("The
//! acquire, as a state machine"). Waiting is in `acquire/wait.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Attempt, Handoff, Queue, TryAcquire};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::guard::{LockGuard, ReleaseOnDrop};
use crate::inner::Inner;
use crate::keeper::Keeping;
use crate::key::LockKey;
use crate::lease::Lease;
use crate::manager::BidLockManager;
use crate::metrics::Counter;
use crate::options::{check_ttl, AcquireOptions};
use crate::waiters::Ticket;

mod wait;

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

/// Where one acquire is. Each transition answers one reply or one signal (the table in
/// docs/HANDOVER.md); whatever a state owns in the store (a place in its queue) is let go
/// in the background if the acquire ends while in it.
enum Step {
    /// Send a try: with a fresh holder id (`None`), or as a queued tenure's id, staying
    /// in the store's queue.
    Try(Option<Tenure>),
    /// Queued in the store: wait for a grant, a release, the next refresh or the deadline.
    Queued(Tenure),
    /// Not queued in the store: wait for a release signal, the holder's ttl, the next
    /// backoff step or the deadline.
    Watch,
    /// A release handed this tenure the lock, with this fencing token.
    Granted(Tenure, u64),
    /// Taken.
    Held(LockGuard),
    /// The deadline passed without the lock.
    TimedOut,
}

/// One holder id's time in the store's queue (docs/HANDOVER.md, rule 1). It ends when the
/// id leaves the queue, and the id never joins again.
struct Tenure {
    lease: Lease,
    /// When the last request that found this id queued was sent: a grant came after it
    /// (rule 2), so a granted lock is held at least until `since` + the grant ttl.
    since: Instant,
    /// When to refresh the entry next.
    refresh_at: Instant,
    /// Takes the id out of the store's queue (or hands on a lock granted meanwhile) in
    /// the background, unless disarmed because the tenure ended otherwise.
    leave: ReleaseOnDrop,
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
    // A waiter that queues in the store joins that queue at once (the store's order is
    // the fleet's arrival order); otherwise only the first local waiter tries.
    let first = a.ticket.as_ref().is_none_or(Ticket::is_front);
    let mut step = if first || a.joins_at_once() {
        Step::Try(None)
    } else {
        Step::Watch
    };
    loop {
        step = match step {
            Step::Try(tenure) => a.attempt(tenure).await?,
            Step::Queued(tenure) => a.wait_queued(tenure).await?,
            Step::Watch => a.watch().await,
            Step::Granted(tenure, token) => a.take_grant(tenure, token).await?,
            Step::Held(guard) => {
                // Held for good: the local queue goes on without us. On a store that
                // queues (or may: not yet known), the next local waiter is woken to join
                // it, if it has not yet; a waiter that joins learns whether it does.
                a.leave_queue(a.joins_at_once());
                return Ok(guard);
            }
            Step::TimedOut => return Err(a.not_acquired()),
        };
    }
}

/// One acquire in progress: what every state needs.
struct Acquiring<'a> {
    inner: &'a Arc<Inner>,
    key: &'a LockKey,
    opts: &'a AcquireOptions,
    ttl: Duration,
    /// How long a lock this acquire takes is held from its try's send.
    validity: Duration,
    start: Instant,
    deadline: Instant,
    /// Our place in the local queue (none when not waiting at all).
    ticket: Option<Ticket>,
    tries: u32,
    /// Whether this acquire has waited yet (then no try is sent at its start).
    waited: bool,
    /// The try about to be sent only keeps a queued place alive (not counted as busy).
    refreshing: bool,
    backoff: Backoff,
    /// What the last busy try said: who holds it, and for how much longer.
    last_holder: Option<String>,
    hint: Option<Duration>,
    /// The last busy try found a lock without a ttl (a client that is not bidlock, junk).
    never_expires: bool,
    conflicted: bool,
    /// The store's handoff rules, when this acquire queues in the store.
    handoff: Option<Handoff>,
    /// The error of the last try or refresh, when it failed (cleared by any answer): a
    /// wait that ends on one reports it, not "not acquired".
    last_error: Option<Error>,
}

/// However close the deadline, a try may take this long (or the response timeout, if
/// shorter): a last look at the deadline is still a look.
const TRY_FLOOR: Duration = Duration::from_millis(250);

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
        // A store that does not hand over answers as if it had not queued.
        let handoff = (ticket.is_some() && opts.holder.is_none()).then(|| Handoff::for_ttl(ttl));
        Acquiring {
            validity: inner.store.validity(ttl),
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
            waited: false,
            refreshing: false,
            last_holder: None,
            hint: None,
            never_expires: false,
            conflicted: false,
            handoff,
            last_error: None,
        }
    }

    /// Whether this waiter joins the store's queue at once, whatever its local place: on a
    /// store that queues (or not yet known not to), a waiter that takes handoffs does, so
    /// that the store's order is the fleet's arrival order.
    fn joins_at_once(&self) -> bool {
        self.handoff.is_some() && self.inner.store_queues.may_queue()
    }

    /// Until when a try may take: the deadline (at least [`TRY_FLOOR`] from now) for an
    /// acquire that waits; `None` (the store's response timeout) for one that does not.
    fn try_bound(&self, tried_at: Instant) -> Option<Instant> {
        if self.opts.timeout.is_zero() {
            return None;
        }
        let floor = TRY_FLOOR.min(self.inner.config.response_timeout);
        Some(self.deadline.max(tried_at + floor))
    }

    /// A failed try or refresh: keep waiting (and retry) when the error is transient and
    /// time is left; the wait then ends with it if nothing answers before the deadline.
    fn retry_later(&mut self, e: Error) -> Result<(), Error> {
        if !(e.is_backend() && e.is_retryable()) || Instant::now() >= self.deadline {
            return Err(e);
        }
        tracing::debug!(target: "bidlock::manager", key = %self.key, error = %e, "backend error while waiting; retrying until the deadline");
        self.last_error = Some(e);
        Ok(())
    }

    /// The error for a try cut at the deadline: the store did not answer in time.
    fn no_answer(&self) -> Error {
        Error::Unavailable {
            url: self.inner.store.location(),
            reason: format!(
                "no answer within the acquire's wait of {}",
                crate::human::duration(self.opts.timeout)
            ),
        }
    }

    /// A lease for one try, or for one tenure in the store's queue: a holder id of the
    /// caller's, or a fresh generated one (so that a grant or a background release meant
    /// for an earlier try never touches a later one).
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

    /// Grants for this holder id are routed to us from now on (`None`: no longer).
    fn expect_grants(&self, lease: Option<&Lease>) {
        if let Some(t) = &self.ticket {
            t.queued_as(lease.map(Lease::holder));
        }
    }

    /// One try: `tenure` stays queued, or a fresh holder id joins the queue on conflict.
    async fn attempt(&mut self, tenure: Option<Tenure>) -> Result<Step, Error> {
        // A waiter woken by close() must not take a lock from a closed manager.
        self.inner.check_open()?;
        // The first try, made at once, is sent when the acquire started (one clock read).
        let tried_at = if self.tries == 0 && !self.waited {
            self.start
        } else {
            Instant::now()
        };
        self.tries += 1;
        self.hint = None;
        let (lease, leave, since) = match tenure {
            Some(t) => (t.lease, t.leave, Some(t.since)),
            None => {
                let lease = self.new_lease();
                // Until its answer is in, a try may have taken the lock (or queued): it
                // is let go in the background if we stop here or the answer is lost.
                let leave = ReleaseOnDrop::new(self.inner, &lease);
                (lease, leave, None)
            }
        };
        let queue = match (self.handoff, since) {
            (None, _) => Queue::No,
            (Some(h), None) => Queue::Join(h),
            (Some(h), Some(_)) => Queue::Stay(h),
        };
        if queue != Queue::No {
            // A grant for this id may arrive before the answer to this try.
            self.expect_grants(Some(&lease));
        }
        let req = TryAcquire {
            key: self.key,
            holder: lease.holder(),
            given: lease.holder_given(),
            ttl: self.ttl,
            check_done: self.opts.check_done,
            waiters_behind: self.ticket.as_ref().is_some_and(Ticket::has_company),
            queue,
            now: tried_at,
        };
        // An error is an unknown outcome: `leave` releases this try's lock (and queue
        // entry) in the background as it drops.
        let tried = self.inner.store.try_acquire(&req);
        let answer = match self.try_bound(tried_at) {
            Some(bound) => tokio::time::timeout_at(bound, tried)
                .await
                .unwrap_or_else(|_| Err(self.no_answer())),
            None => tried.await,
        };
        let refreshing = std::mem::take(&mut self.refreshing);
        let attempt = match answer {
            Ok(attempt) => attempt,
            Err(_) if since.is_some() && Instant::now() >= self.deadline => {
                // A queued tenure's try that fails at the deadline: the last word was
                // "held by another" (the place goes in the background).
                drop(leave);
                self.expect_grants(None);
                return Ok(Step::TimedOut);
            }
            Err(e) => {
                drop(leave);
                self.expect_grants(None);
                self.retry_later(e)?;
                return Ok(Step::Watch);
            }
        };
        self.last_error = None;
        match attempt {
            Attempt::Acquired { token } => {
                lease.set_token(token);
                lease.confirm(tried_at, self.validity);
                self.take_up(lease, leave, tried_at)
            }
            Attempt::Granted { token } => match since {
                Some(since) => Ok(Step::Granted(self.tenure(lease, since, leave), token)),
                // Only a queued tenure can be handed the lock: not ours to take.
                None => Ok(Step::Try(None)),
            },
            Attempt::Held {
                holder,
                ttl_left,
                queued,
            } => {
                if matches!(queue, Queue::Join(_)) {
                    // What the store does with a try that asks to join: learnt, not
                    // configured. (A try that stays found its place gone — skipped as
                    // dead, cleared as junk — which says nothing of the store.)
                    self.inner.store_queues.learn(queued);
                }
                if !refreshing {
                    self.busy(holder, ttl_left);
                }
                if queued {
                    return Ok(Step::Queued(self.tenure(lease, tried_at, leave)));
                }
                // Not in the store's queue: this id holds nothing there.
                leave.disarm();
                self.expect_grants(None);
                Ok(match since {
                    // The tenure ended (handed over and expired, skipped, cleared): join
                    // again at once, as a fresh id.
                    Some(_) => Step::Try(None),
                    None => Step::Watch,
                })
            }
            Attempt::Done => {
                if since.is_none() {
                    // A fresh id is refused before it queues.
                    leave.disarm();
                }
                self.leave_queue(true);
                self.inner
                    .metrics
                    .count(Counter::AlreadyDone, Some(self.key.marketplace()));
                Err(Error::AlreadyDone {
                    key: self.inner.keys().lock_key(self.key),
                })
            }
        }
    }

    fn tenure(&self, lease: Lease, since: Instant, leave: ReleaseOnDrop) -> Tenure {
        let every = self.handoff.map_or(Duration::ZERO, |h| h.refresh_every);
        Tenure {
            lease,
            since,
            refresh_at: since + every,
            leave,
        }
    }

    /// A release handed `tenure` the lock with `token`. It happened after the last request
    /// that found the id queued, so the grant ttl counts from that request's send.
    async fn take_grant(&mut self, tenure: Tenure, token: u64) -> Result<Step, Error> {
        let Some(handoff) = self.handoff else {
            return Ok(Step::Try(None));
        };
        let Tenure {
            lease,
            since,
            leave,
            ..
        } = tenure;
        lease.set_token(token);
        lease.confirm(since, self.inner.store.validity(handoff.grant_ttl));
        self.inner
            .metrics
            .count(Counter::Handoffs, Some(self.key.marketplace()));
        match self.take_up(lease, leave, since)? {
            Step::Held(guard) => self.settle(guard, handoff).await,
            other => Ok(other),
        }
    }

    /// A confirmed lease becomes a guard, unless it is already worthless (the answer came
    /// after its validity ran out: let go, and wait to try again with a fresh id) or the manager
    /// closed meanwhile.
    fn take_up(
        &mut self,
        lease: Lease,
        leave: ReleaseOnDrop,
        tried_at: Instant,
    ) -> Result<Step, Error> {
        self.expect_grants(None);
        if lease.is_lost() {
            tracing::debug!(target: "bidlock::manager", key = %self.key, "acquired after the ttl ran out; released, trying again");
            drop(leave);
            // Not at once: the next try waits its turn (and the deadline) like any other.
            return Ok(Step::Watch);
        }
        crate::renewal::start(self.inner);
        let kept = match self.inner.keeper.register(&lease) {
            Keeping::Kept => true,
            Keeping::Untracked => false,
            // Closed while the try was out: let it go (`leave` releases it).
            Keeping::Closed => return Err(Error::Closed),
            // The store gave the key to a later section of this manager meanwhile: this
            // answer is stale. Let go (the lock is not ours any more) and wait as usual.
            Keeping::Superseded => {
                tracing::debug!(target: "bidlock::manager", key = %self.key, "answer taken up after a later holder of this manager got the key; trying again");
                drop(leave);
                return Ok(Step::Watch);
            }
        };
        if let Err(closed) = self.inner.check_open() {
            self.inner.keeper.unregister(&lease);
            return Err(closed);
        }
        leave.disarm();
        Ok(Step::Held(self.held(lease, tried_at, kept)))
    }

    /// A handed-over lock lives for the grant ttl only (a short one, so a waiter that died
    /// after queuing blocks nobody for long). With renewal, the keeper lengthens it at its
    /// first renewal; without, it is extended to the full ttl here, once, before the caller
    /// gets it; a lock gone by then means: try again.
    async fn settle(&mut self, guard: LockGuard, handoff: Handoff) -> Result<Step, Error> {
        if self.opts.renew || handoff.grant_ttl >= self.ttl {
            return Ok(Step::Held(guard));
        }
        match guard.extend(self.ttl).await {
            Ok(()) => Ok(Step::Held(guard)),
            Err(Error::LockLost { .. }) => Ok(Step::Try(None)),
            Err(e) => {
                // Unknown: the guard's drop lets the lock go in the background; a transient
                // error is waited out like any other.
                drop(guard);
                self.retry_later(e)?;
                Ok(Step::Watch)
            }
        }
    }

    fn leave_queue(&mut self, pass_on: bool) {
        if let Some(t) = self.ticket.take() {
            t.leave(pass_on);
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
        if ttl_left.is_none() && !self.never_expires {
            tracing::warn!(target: "bidlock::manager", key = %self.key, holder = ?holder,
                "the lock has no ttl: it never expires by itself (a client that is not bidlock, or junk); release it with bidlock release --force if no one owns it");
        }
        self.never_expires = ttl_left.is_none();
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
        tracing::Span::current().record("holder", lease.holder().as_str());
        tracing::Span::current().record("token", lease.fencing_token().get());
        tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(), token = %lease.fencing_token(), "acquired");
        LockGuard::new(inner.clone(), lease, kept)
    }

    fn not_acquired(&mut self) -> Error {
        self.leave_queue(true);
        if let Some(e) = self.last_error.take() {
            // The wait ended on a backend error, not on a lock held by someone else.
            return e;
        }
        // An acquire that does not wait tried once: it waited for nothing.
        let waited = if self.opts.timeout.is_zero() {
            Duration::ZERO
        } else {
            self.start.elapsed()
        };
        self.inner
            .metrics
            .count(Counter::LockTimeouts, Some(self.key.marketplace()));
        tracing::debug!(target: "bidlock::manager", key = %self.key, ?waited, "not acquired");
        Error::NotAcquired {
            key: self.inner.keys().lock_key(self.key),
            waited,
            never_expires: self.last_holder.is_some() && self.never_expires,
            holder: self.last_holder.take(),
        }
    }
}
