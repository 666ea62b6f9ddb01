//! The bidding fleet: connecting the lock managers (retrying while the backend is down),
//! the bidding tasks, and their orderly stop.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bidlock::{AcquireOptions, Backend, BidLockManager, Config, Error, LockKey};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::exposition::AgentCounters;
use crate::market::{Marketplace, Posting};
use crate::outcome::{classify, Bid};

/// The marketplace id of the fake marketplace in lock keys.
pub(crate) const MARKETPLACE: &str = "fakemarket";
/// Postings under this budget are not worth a bid.
const MIN_BUDGET: u32 = 100;
/// How long a bid waits for a posting's lock held by another instance.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often a task polls the marketplace when it has seen everything.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long a task pauses after a lock error, doubling while errors go on.
const ERROR_PAUSE_MIN: Duration = Duration::from_millis(100);
const ERROR_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How long closing the managers (releasing what they hold) may take.
pub(crate) const CLOSE_WITHIN: Duration = Duration::from_millis(1500);

/// Connects one manager, retrying while the backend is unavailable (Redis not up yet, a
/// blip): a service waits for its backend instead of crash-looping. `Ok(None)` when
/// `stop` fired first; `Err` for a configuration the library refuses.
pub(crate) async fn connect(
    config: &Config,
    stop: &CancellationToken,
) -> Result<Option<BidLockManager>, Error> {
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return Ok(None),
            m = BidLockManager::new(config.clone()) => m,
        };
        match attempt {
            Ok(manager) => return Ok(Some(manager)),
            Err(e) if e.is_backend() => {
                tracing::warn!(error = %e, retry_in = ?delay, "lock backend unavailable; not ready yet");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The managers of `instances` agent instances. In-memory locks exclude only the tasks
/// of one store, so without Redis the instances share the first manager, as tasks of one
/// process would.
pub(crate) async fn connect_all(
    config: &Config,
    instances: u16,
    stop: &CancellationToken,
) -> Result<Option<Vec<BidLockManager>>, Error> {
    let mut managers: Vec<BidLockManager> = Vec::new();
    for instance in 0..instances {
        if managers
            .first()
            .is_some_and(|m| m.backend() == Backend::Memory)
        {
            break;
        }
        let Some(manager) = connect(config, stop).await? else {
            close_all(&managers).await;
            return Ok(None);
        };
        tracing::info!(instance, backend = %manager.backend(), location = %manager.location(), "instance up");
        managers.push(manager);
    }
    Ok(Some(managers))
}

/// What every bidding task shares.
#[derive(Debug, Clone)]
pub(crate) struct Crew {
    pub(crate) market: Arc<Marketplace>,
    pub(crate) counters: Arc<AgentCounters>,
    pub(crate) stop: CancellationToken,
}

/// Starts `tasks` bidding tasks per instance.
pub(crate) fn start(
    managers: &[BidLockManager],
    instances: u16,
    tasks: u16,
    crew: &Crew,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for instance in 0..usize::from(instances) {
        let manager = &managers[instance % managers.len()];
        for task in 0..tasks {
            let bidder = Bidder {
                name: format!("agent-{instance}.{task}"),
                manager: manager.clone(),
                crew: crew.clone(),
            };
            set.spawn(bidder.run());
        }
    }
    set
}

/// One bidding task of one instance.
struct Bidder {
    name: String,
    manager: BidLockManager,
    crew: Crew,
}

impl Bidder {
    async fn run(self) {
        let mut cursor = 0;
        let mut pause = Duration::ZERO;
        loop {
            let (new, missed) = self.crew.market.poll(&mut cursor);
            self.crew.counters.count_missed(missed);
            for posting in new.iter().filter(|p| p.budget >= MIN_BUDGET) {
                if self.crew.stop.is_cancelled() {
                    return;
                }
                let bid = self.bid(posting).await;
                self.crew.counters.count(&bid);
                self.log(posting, &bid);
                // While the backend fails, back off: one error a pause, not one a posting.
                pause = match bid {
                    Bid::Failed(_) => (pause * 2).clamp(ERROR_PAUSE_MIN, ERROR_PAUSE_MAX),
                    _ => Duration::ZERO,
                };
                if !pause.is_zero() && !self.sleep(pause).await {
                    return;
                }
            }
            if !self.sleep(POLL_EVERY).await {
                return;
            }
        }
    }

    /// Sleeps unless the agent stops first (then `false`).
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.crew.stop.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// Bids once per posting across the fleet. A stop while the bid still waits for its
    /// lock abandons it (the library releases a cancelled acquire); once the bid is at
    /// the marketplace it is seen through, so its completion record gets written.
    async fn bid(&self, posting: &Posting) -> Bid {
        let Ok(key) = LockKey::new(MARKETPLACE, &posting.id) else {
            return Bid::Skipped;
        };
        let opts = AcquireOptions::new().timeout(LOCK_WAIT);
        let started = AtomicBool::new(false);
        let market = &self.crew.market;
        let attempt = self.manager.bid_once(&key, &opts, |lease| {
            started.store(true, Relaxed);
            let token = lease.fencing_token().get();
            let id = posting.id.as_str();
            async move { market.bid(id, token).await }
        });
        tokio::pin!(attempt);
        let result = tokio::select! {
            biased;
            r = &mut attempt => r,
            () = self.crew.stop.cancelled() => {
                if !started.load(Relaxed) {
                    return Bid::Interrupted;
                }
                attempt.await
            }
        };
        classify(result)
    }

    fn log(&self, posting: &Posting, bid: &Bid) {
        let (name, id) = (&self.name, &posting.id);
        match bid {
            Bid::Refused(e) => {
                tracing::debug!(%name, posting = %id, error = %e, "bid refused; another instance may retry");
            }
            Bid::PlacedAfterLoss => {
                tracing::warn!(%name, posting = %id, "bid placed and recorded, but the lease had lapsed; the fencing token decides");
            }
            Bid::Unrecorded(e) => {
                tracing::warn!(%name, posting = %id, error = %e, "bid placed but not recorded; another instance may bid again");
            }
            Bid::Failed(e) => tracing::warn!(%name, posting = %id, error = %e, "lock error"),
            Bid::Placed | Bid::Skipped | Bid::Interrupted => {}
        }
    }
}

/// Lets running bids finish within `grace`, then cuts off what is left.
pub(crate) async fn drain(mut tasks: JoinSet<()>, grace: Duration) {
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            running = tasks.len(),
            ?grace,
            "bids still running after the grace period; cutting them off"
        );
        tasks.shutdown().await;
    }
}

/// Closes every manager (releasing what it holds), within [`CLOSE_WITHIN`].
pub(crate) async fn close_all(managers: &[BidLockManager]) {
    let closing = close_each(managers);
    if tokio::time::timeout(CLOSE_WITHIN, closing).await.is_err() {
        tracing::warn!(within = ?CLOSE_WITHIN, "closing the lock managers took too long; locks left expire after their ttl");
    }
}

async fn close_each(managers: &[BidLockManager]) {
    let mut set = JoinSet::new();
    for m in managers {
        let m = m.clone();
        set.spawn(async move { m.close().await });
    }
    while set.join_next().await.is_some() {}
}
