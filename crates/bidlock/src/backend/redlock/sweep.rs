//! Releases that missed a node, sent again until the node answers.
//!
//! A release is decided by a majority, so it may return while one node has not been
//! reached (paused, partitioned, restarting). That node keeps a copy of the lock until
//! its ttl, and the next holder cannot take it there: it holds on a bare majority, and one
//! more node down costs it the lock. So each node has a queue of releases that missed it,
//! and one task per node sends them again (as one batch) with backoff until the node
//! answers, or the lock's ttl has passed (the copy expired by itself).
//!
//! Only generated holder ids are queued: each names one try, so releasing it can only ever
//! remove that try's copy, however late. A holder id the caller gave may be held by a
//! later acquisition by then, so it is never released in the background (the one rule of
//! `Inner::release_detached`); its copy expires after its ttl.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::quorum::Answer;
use super::Tasks;
use crate::backend::redis::RedisStore;
use crate::backend::{LockStore, Release};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::Holder;

/// The first wait before a missed release is sent again, doubled up to [`LAST_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const LAST_DELAY: Duration = Duration::from_secs(2);
/// How many missed releases one node keeps; beyond, they are left to expire.
const MAX_QUEUED: usize = 10_000;

/// A release one node has not answered.
struct Missed {
    key: LockKey,
    holder: Holder,
    /// After this, the copy has expired by itself.
    until: Instant,
}

#[derive(Default)]
struct Queue {
    missed: Mutex<Vec<Missed>>,
    wake: Notify,
}

impl Queue {
    fn missed(&self) -> MutexGuard<'_, Vec<Missed>> {
        // Pushes and takes only: poisoning cannot hide a broken invariant.
        self.missed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The release queues of every node, and the tasks that drain them; and the generated
/// holder ids released lately, so that a try's copy a node takes after its holder let go
/// is let go too.
pub(super) struct Sweeper {
    queues: Vec<Arc<Queue>>,
    released: Mutex<HashMap<Holder, Instant>>,
}

impl Sweeper {
    /// One queue and one task per node, in `tasks`; each try is bounded by `bound`.
    pub(super) fn start(nodes: &[Arc<RedisStore>], bound: Duration, tasks: &Tasks) -> Sweeper {
        let queues: Vec<Arc<Queue>> = nodes.iter().map(|_| Arc::default()).collect();
        for (node, queue) in nodes.iter().zip(&queues) {
            tasks.spawn(drain(node.clone(), queue.clone(), bound));
        }
        Sweeper {
            queues,
            released: Mutex::default(),
        }
    }

    /// `holder` (a generated id) let go of its lock, whose copies expire by `until`.
    pub(super) fn note_released(&self, holder: &Holder, until: Instant) {
        let mut released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if released.len() >= MAX_QUEUED {
            released.retain(|_, t| *t > now);
        }
        released.insert(holder.clone(), until);
    }

    /// Whether `holder` let go of its lock lately (and its copies may still live).
    pub(super) fn was_released(&self, holder: &Holder) -> bool {
        let released = self.released.lock().unwrap_or_else(|e| e.into_inner());
        released.get(holder).is_some_and(|t| *t > Instant::now())
    }

    /// Sends the release of `holder`'s lock of `key` to `node` again until it answers,
    /// for a generated holder id only (see the module docs); the copy there expires at
    /// the latest `ttl` from now.
    pub(super) fn release_later(
        &self,
        node: usize,
        key: &LockKey,
        holder: &Holder,
        given: bool,
        ttl: Duration,
    ) {
        if !crate::inner::lets_go_unattended(given) {
            return;
        }
        let Some(queue) = self.queues.get(node) else {
            return;
        };
        let mut missed = queue.missed();
        if missed.len() >= MAX_QUEUED {
            tracing::debug!(target: "bidlock::redlock", node, key = %key,
                "too many missed releases queued for this node; this copy expires after its ttl");
            return;
        }
        missed.push(Missed {
            key: key.clone(),
            holder: holder.clone(),
            until: Instant::now() + ttl,
        });
        drop(missed);
        queue.wake.notify_one();
    }
}

/// Whether a node's answer settles its part: a yes or no, or a key of another type.
pub(super) fn settled<T>(answer: &Answer<T>) -> bool {
    matches!(answer, Some(Ok(_)) | Some(Err(Error::WrongType { .. })))
}

/// Sends the queued releases of one node, again and again, until each is answered or
/// expired.
async fn drain(node: Arc<RedisStore>, queue: Arc<Queue>, bound: Duration) {
    let mut delay = FIRST_DELAY;
    loop {
        let now = Instant::now();
        let batch: Vec<Missed> = std::mem::take(&mut *queue.missed())
            .into_iter()
            .filter(|m| m.until > now)
            .collect();
        if batch.is_empty() {
            delay = FIRST_DELAY;
            queue.wake.notified().await;
            continue;
        }
        let answers = join_all(batch.iter().map(|m| {
            let node = &node;
            async move {
                let req = Release {
                    key: &m.key,
                    holder: &m.holder,
                    given: false,
                    tell: false,
                    ttl: None,
                };
                tokio::time::timeout(bound, node.release(&req)).await
            }
        }))
        .await;
        let left: Vec<Missed> = batch
            .into_iter()
            .zip(answers)
            .filter(|(_, a)| !matches!(a, Ok(Ok(_)) | Ok(Err(Error::WrongType { .. }))))
            .map(|(m, _)| m)
            .collect();
        if left.is_empty() {
            delay = FIRST_DELAY;
            continue;
        }
        queue.missed().extend(left);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(LAST_DELAY);
    }
}
