//! The shared state of one manager (`Inner`, behind every handle, guard and task), and
//! the one path each for releasing and extending a lease.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Extend, ExtendLock, Release, Store};
use crate::config::{Backend, Config};
use crate::error::Error;
use crate::keeper::LeaseKeeper;
use crate::key::LockKey;
use crate::keyspace::KeySpace;
use crate::lease::{Extended, Holder, Lease};
use crate::metrics::{Counter, Metrics};
use crate::waiters::WaitQueues;

pub(crate) struct Inner {
    pub(crate) store: Box<dyn Store>,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) queues: Arc<WaitQueues>,
    pub(crate) holder_base: String,
    pub(crate) seq: AtomicU64,
    pub(crate) backend: Backend,
    /// `Backend::Auto` found no Redis and fell back to memory.
    pub(crate) fallback: bool,
    /// Whether the store queues waiters for direct handoff, learnt from its answers
    /// ([`StoreQueues`]): unless it said it does not, every waiter that takes handoffs
    /// joins its queue on arrival, not only the first local one.
    pub(crate) store_queues: StoreQueues,
    pub(crate) closed: AtomicBool,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) keeper: Arc<LeaseKeeper>,
    /// What the store tells this manager, kept alive here: the in-process store holds it
    /// weakly (it outlives its managers), so without this its removals reach no one.
    pub(crate) notices: Option<Arc<crate::notices::Notices>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the keeper task notice that the manager is gone.
        self.keeper.poke();
    }
}

impl Inner {
    pub(crate) fn keys(&self) -> &KeySpace {
        &self.config.keys
    }

    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// A fresh holder id: `host:pid:random:sequence`, unique per call.
    pub(crate) fn new_holder(&self) -> Holder {
        use std::fmt::Write as _;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let base = &self.holder_base;
        let mut id = String::with_capacity(base.len() + 21);
        id.push_str(base);
        let _ = write!(id, ":{n}");
        Holder::from(id.as_str())
    }

    /// Releases exactly `lease`'s lock (holder-checked): the one release path of guards,
    /// background releases and close. Counts and logs.
    pub(crate) async fn release_lease(&self, lease: &Lease) -> Result<bool, Error> {
        let req = Release {
            key: lease.key(),
            holder: lease.holder(),
            given: lease.holder_given(),
            // Only a lease's own release of a generated id can go unannounced when nobody
            // waits: no one else can hold a lock under that id.
            tell: lease.holder_given(),
            ttl: Some(lease.ttl()),
        };
        let released = self.store.release(&req).await?;
        if released {
            self.metrics
                .count(Counter::Releases, Some(lease.key().marketplace()));
            tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(), "released");
        }
        Ok(released)
    }

    /// Releases `lease` without a caller waiting (`Drop` cannot await), in a spawned task:
    /// the one path of every release without a caller (a dropped guard, a cancelled or
    /// unanswered try, an answer whose caller left, a queue place given up).
    ///
    /// The one rule: never a holder id the caller chose. That id may be in use by a later
    /// acquisition by then, which the release would remove; the lock expires after its ttl.
    pub(crate) fn release_detached(self: &Arc<Self>, lease: Lease) {
        if !lets_go_unattended(lease.holder_given()) {
            tracing::debug!(target: "bidlock::manager", key = %lease.key(), holder = %lease.holder(),
                "not released in the background (a holder id of your own may be reused); the lock expires after its ttl");
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(target: "bidlock::manager", key = %lease.key(), "guard dropped outside a tokio runtime; the lock expires after its ttl");
            return;
        };
        let inner = self.clone();
        handle.spawn(async move {
            if let Err(e) = inner.release_lease(&lease).await {
                tracing::warn!(target: "bidlock::manager", key = %lease.key(), error = %e, "background release failed; the lock expires after its ttl");
            }
        });
    }

    /// Extends `lease` to `ttl` from now: the one path of renewals ([`Extend::Renew`])
    /// and `LockGuard::extend` ([`Extend::Exact`]).
    ///
    /// Extends of one lease may overlap (a renewal and a user's extend) and may reach the
    /// store out of order; the lease's bookkeeping keeps its deadline at or before the
    /// store's expiry whatever the order (see [`Lease::begin_extend`]), and the keeper
    /// follows the deadline at once. `Ok(false)`: the lock was gone (the lease is marked
    /// lost). If the future is dropped half-way, the extend counts as unknown.
    pub(crate) async fn extend_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        how: Extend,
    ) -> Result<bool, Error> {
        // A lost lease of a caller-given id may share that id with a later acquisition:
        // a holder-checked extend would act on that one's lock (cut it short, even).
        if !lease.owns_its_id() {
            return Ok(false);
        }
        let validity = self.store.validity(ttl);
        let sent = Instant::now();
        let n = lease.begin_extend(sent, ttl, validity, how);
        // The deadline may have dropped: renewals follow it at once.
        self.keeper.reschedule(lease);
        let unanswered = Unanswered { lease, n: Some(n) };
        let req = ExtendLock {
            key: lease.key(),
            holder: lease.holder(),
            ttl,
            how,
            token: lease.fencing_token().get(),
        };
        let result = self.store.extend(&req).await;
        unanswered.answered();
        match result {
            Ok(true) => {
                self.metrics
                    .count(Counter::Extensions, Some(lease.key().marketplace()));
                match lease.finish_extend(n, sent, validity) {
                    Extended::Applied => self.keeper.reschedule(lease),
                    Extended::Older => {}
                    Extended::TooLate => return Ok(false),
                }
                Ok(true)
            }
            Ok(false) => {
                lease.extend_refused(n);
                if !lease.is_released() {
                    lease.mark_lost("lock was gone or held by another holder when extending");
                }
                Ok(false)
            }
            Err(e) => {
                lease.extend_unknown(n);
                Err(e)
            }
        }
    }
}

/// The one rule for letting a lock go without a caller: never a holder id the caller chose.
pub(crate) fn lets_go_unattended(given: bool) -> bool {
    !given
}

impl crate::notices::LetGoUnattended for Inner {
    fn let_go(self: Arc<Self>, key: &LockKey, holder: &Holder, given: bool) {
        let lease = Lease::new(
            key.clone(),
            holder.clone(),
            given,
            self.config.ttl,
            false,
            self.metrics.clone(),
        );
        self.release_detached(lease);
    }
}

/// An extend whose answer is not in: if its future is dropped, the extend may still reach
/// the store, so it counts as unknown.
struct Unanswered<'a> {
    lease: &'a Lease,
    n: Option<u64>,
}

impl Unanswered<'_> {
    fn answered(mut self) {
        self.n = None;
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.n.take() {
            self.lease.extend_unknown(n);
        }
    }
}

/// What a manager learnt of its store's queue from the answers to tries that may queue.
/// Until the first answer it is unknown, and waiters behave as on a store that queues:
/// a try that asks to queue on a store that does not is a plain try.
#[derive(Debug)]
pub(crate) struct StoreQueues(std::sync::atomic::AtomicU8);

impl Default for StoreQueues {
    fn default() -> Self {
        StoreQueues(std::sync::atomic::AtomicU8::new(Self::UNKNOWN))
    }
}

impl StoreQueues {
    const UNKNOWN: u8 = 0;
    const QUEUES: u8 = 1;
    const DOES_NOT: u8 = 2;

    /// Whether waiters should join the store's queue on arrival: not known not to queue.
    pub(crate) fn may_queue(&self) -> bool {
        self.0.load(Ordering::Relaxed) != Self::DOES_NOT
    }

    /// An answer to a try that asked to queue: whether the store queued it.
    pub(crate) fn learn(&self, queued: bool) {
        let v = if queued { Self::QUEUES } else { Self::DOES_NOT };
        self.0.store(v, Ordering::Relaxed);
    }
}
