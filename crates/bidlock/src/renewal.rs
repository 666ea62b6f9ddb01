//! The lease keeper's task: works through the schedule (`keeper.rs`), renewing each lease
//! at a third of its validity, marking it lost when it runs out unconfirmed, checking it
//! at once when a notice names its key, and releasing everything at close.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::Extend;
use crate::inner::Inner;
use crate::keeper::LeaseKeeper;
use crate::lease::Lease;

/// Starts the keeper task of `inner` if it is not running (called before the keeper is
/// given a lease, inside the runtime that runs the acquire). A task whose runtime shut
/// down (a manager used from a short-lived runtime first, then from another) has
/// stopped running: a new one starts here, and takes up the leases the old one had out
/// for attention (their tasks died with it).
pub(crate) fn start(inner: &Arc<Inner>) {
    if inner.keeper.running.swap(true, Ordering::AcqRel) {
        return;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        inner.keeper.running.store(false, Ordering::Release);
        tracing::error!(target: "bidlock::manager", "no tokio runtime: leases will not be renewed");
        return;
    }
    inner.keeper.take_back_out();
    let (weak, keeper, shutdown) = (
        Arc::downgrade(inner),
        inner.keeper.clone(),
        inner.shutdown.clone(),
    );
    let running = Running(keeper.clone());
    inner.tasks.spawn(async move {
        let _running = running;
        run(weak, keeper, shutdown).await;
    });
}

/// Says the keeper task stopped when it ends, or when its runtime drops it unfinished.
struct Running(Arc<LeaseKeeper>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// The keeper task. Holds the manager weakly so that dropping the manager ends it.
async fn run(inner: Weak<Inner>, keeper: Arc<LeaseKeeper>, shutdown: CancellationToken) {
    loop {
        let (due, next) = keeper.take_due(Instant::now());
        if !due.is_empty() {
            let Some(strong) = inner.upgrade() else {
                return;
            };
            for lease in due {
                let (inner2, keeper2) = (strong.clone(), keeper.clone());
                let span = tracing::debug_span!(target: "bidlock::lease", "renew", key = %lease.key(), holder = %lease.holder(), token = lease.fencing_token().get());
                strong.tasks.spawn(tracing::Instrument::instrument(
                    async move { attend(&inner2, &keeper2, lease).await },
                    span,
                ));
            }
        }
        if inner.strong_count() == 0 {
            return;
        }
        // Nothing to keep: sleep a while all the same (see `LeaseKeeper::idle_for`).
        let wake_at = next.or_else(|| keeper.idle_for().map(|d| Instant::now() + d));
        let target = wake_at.map_or(u64::MAX, crate::clock::micros);
        keeper.target.store(target, Ordering::Release);
        // A lease registered between take_due and the store above could be missed:
        // look once more before sleeping.
        if keeper.due_before(target) {
            continue;
        }
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = keeper.wake.notified() => {}
            _ = shutdown.cancelled() => {
                if let Some(strong) = inner.upgrade() {
                    release_all(&strong, keeper.drain()).await;
                }
                return;
            }
        }
    }
}

/// Closing: every lease is marked lost first, then its lock released, so no local guard
/// still says "held" once another instance can take the lock. A lease with a caller-given id that was lost before (`owns_its_id`) is not released:
/// a later acquisition may hold the lock under the same id.
pub(crate) async fn release_all(inner: &Inner, leases: Vec<Lease>) {
    let ours: Vec<bool> = leases.iter().map(Lease::owns_its_id).collect();
    for l in &leases {
        l.mark_lost("the manager was closed");
        l.set_released();
    }
    let releases = leases
        .iter()
        .zip(ours)
        .filter(|(_, ours)| *ours)
        .map(|(l, _)| inner.release_lease(l));
    let _ = futures_util::future::join_all(releases).await;
}

/// One renewal, check, or end of a lease.
async fn attend(inner: &Arc<Inner>, keeper: &LeaseKeeper, lease: Lease) {
    // Released, or found lost elsewhere (an extend, a release): nothing to keep.
    if lease.is_released() || lease.is_marked_lost() {
        keeper.finished(&lease);
        return;
    }
    let now = Instant::now();
    let Some(deadline) = lease.deadline() else {
        keeper.finished(&lease);
        return;
    };
    if now >= deadline {
        keeper.finished(&lease);
        if !lease.is_released() {
            lease.mark_lost(if lease.renews() {
                "no renewal succeeded before the lease ran out"
            } else {
                "ttl ran out without renewal"
            });
        }
        return;
    }
    let checking = lease.take_check();
    if !lease.renews() {
        if checking {
            verify(inner, keeper, &lease, deadline).await;
        } else {
            // Woken early (an extend moved the deadline): look again then.
            keeper.back(&lease, Some(deadline));
        }
        return;
    }
    let renewal = inner.extend_lease(&lease, lease.ttl(), Extend::Renew);
    match tokio::time::timeout(deadline - now, renewal).await {
        Ok(Ok(true)) => {
            tracing::trace!(target: "bidlock::lease", key = %lease.key(), "renewed");
            keeper.back(&lease, None);
        }
        Ok(Ok(false)) => keeper.finished(&lease),
        Ok(Err(e)) => {
            tracing::warn!(target: "bidlock::lease", key = %lease.key(), error = %e, "renewal failed; retrying until the lease runs out");
            let pause =
                (lease.ttl() / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
            keeper.back(&lease, Some((Instant::now() + pause).min(deadline)));
        }
        Err(_) => {
            keeper.finished(&lease);
            if !lease.is_released() {
                lease.mark_lost("no renewal succeeded before the lease ran out");
            }
        }
    }
}

/// A notice named the key of a lease that does not renew: is the lock still its own?
async fn verify(inner: &Inner, keeper: &LeaseKeeper, lease: &Lease, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(
        left,
        inner
            .store
            .holds(lease.key(), lease.holder(), lease.fencing_token().get()),
    )
    .await
    {
        Ok(Ok(false)) => {
            keeper.finished(lease);
            if !lease.is_released() {
                lease.mark_lost("lock was gone or held by another holder when checked");
            }
        }
        // Held, or no answer: the deadline still stands.
        _ => keeper.back(lease, Some(deadline)),
    }
}
