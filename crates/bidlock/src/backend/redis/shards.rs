//! Release messages on a cluster: sharded pub/sub (`SSUBSCRIBE`, Redis 7+). Each
//! posting has its own channel in its own slot; a manager listens only to the channels of
//! keys it has local waiters for, on the node that serves the slot.
//!
//! - A try that finds a key held, or that has local waiters queued behind it, marks the
//!   key wanted ([`Shards::waiting`]); the subscription task subscribes to its channel,
//!   then wakes the key's waiters once, so a release before the subscription is not
//!   missed.
//! - While anyone waits, the front waiter tries at least every backoff step (finding the
//!   key held, or taking it with the others still behind it), which keeps the key wanted;
//!   a key without such a try for a linger (twice the longest backoff step plus twice the
//!   response timeout) has no waiter left, and its channel is dropped.
//! - When a slot moves, the server ends its subscriptions (`sunsubscribe`); when a node
//!   goes away, its connection drops. Either way the channels are subscribed again where
//!   the slot lives now, and their waiters look again. Waiters poll meanwhile, and on a
//!   server without sharded pub/sub they always do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::key::LockKey;
use crate::keyspace::KeySpace;
use crate::notices::Notices;

/// How often wants are swept and failed subscriptions tried again.
const TICK: Duration = Duration::from_millis(250);

/// One channel this manager wants to hear.
#[derive(Debug)]
struct Want {
    key: LockKey,
    /// The last local try that found the key held or had waiters behind it.
    seen: Instant,
    subscribed: bool,
}

#[derive(Debug)]
enum Request {
    /// Subscribe to this channel (new, or ended by the server).
    Subscribe(String),
    /// A connection dropped: subscribe to everything again.
    Resync,
}

/// What the manager listens to on a cluster.
#[derive(Debug)]
pub(crate) struct Shards {
    keys: KeySpace,
    notices: Arc<Notices>,
    linger: Duration,
    wanted: Mutex<HashMap<String, Want>>,
    requests: mpsc::UnboundedSender<Request>,
    /// Cleared when the server has no `SSUBSCRIBE` (before Redis 7): waiters poll.
    supported: AtomicBool,
}

/// The receiving end of the subscription requests, for [`Shards::run_subscriptions`].
pub(crate) struct Requests(mpsc::UnboundedReceiver<Request>);

impl Shards {
    pub(crate) fn new(
        keys: KeySpace,
        notices: Arc<Notices>,
        linger: Duration,
    ) -> (Arc<Shards>, Requests) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shards = Shards {
            keys,
            notices,
            linger,
            wanted: Mutex::new(HashMap::new()),
            requests: tx,
            supported: AtomicBool::new(true),
        };
        (Arc::new(shards), Requests(rx))
    }

    fn wanted(&self) -> MutexGuard<'_, HashMap<String, Want>> {
        // No critical section below can panic; recover the map rather than fail.
        self.wanted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A local try found `key` held, or has local waiters behind it: they need the
    /// release message.
    pub(crate) fn waiting(&self, key: &LockKey) {
        if !self.supported.load(Ordering::Relaxed) {
            return;
        }
        let channel = self.keys.release_channel_of(key);
        let now = Instant::now();
        let mut wanted = self.wanted();
        if let Some(want) = wanted.get_mut(&channel) {
            want.seen = now;
            return;
        }
        wanted.insert(
            channel.clone(),
            Want {
                key: key.clone(),
                seen: now,
                subscribed: false,
            },
        );
        drop(wanted);
        let _ = self.requests.send(Request::Subscribe(channel));
    }

    /// Delivers what the cluster pushes: release messages wake waiters and check held
    /// leases; lost subscriptions are made again.
    pub(crate) async fn run_pushes(self: Arc<Self>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
        while let Some(push) = pushes.recv().await {
            match push.kind {
                PushKind::SMessage => {
                    let payload = push.data.get(1).and_then(text);
                    if let Some(key) = payload.and_then(|p| self.keys.parse_lock_key(&p)) {
                        self.notices.released(&key);
                    }
                }
                PushKind::SUnsubscribe => {
                    // Ours after a sweep (no longer wanted), or the server's when the slot
                    // moved away: then subscribe again where it lives now.
                    let Some(channel) = push.data.first().and_then(text) else {
                        continue;
                    };
                    let again = match self.wanted().get_mut(&channel) {
                        Some(w) => {
                            w.subscribed = false;
                            true
                        }
                        None => false,
                    };
                    if again {
                        let _ = self.requests.send(Request::Subscribe(channel));
                    }
                }
                PushKind::Disconnection => {
                    tracing::debug!(target: "bidlock::redis", "a cluster connection dropped; waiters look again");
                    self.notices.all();
                    let _ = self.requests.send(Request::Resync);
                }
                _ => {}
            }
        }
    }

    /// Subscribes and unsubscribes in the order asked (what was asked meanwhile, together).
    pub(crate) async fn run_subscriptions(
        self: Arc<Self>,
        mut conn: ClusterConnection,
        Requests(mut requests): Requests,
        timeout: Duration,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                req = requests.recv() => {
                    let Some(first) = req else { return };
                    // Everything asked meanwhile goes out together.
                    let mut batch = vec![first];
                    while let Ok(more) = requests.try_recv() {
                        batch.push(more);
                    }
                    self.handle(&conn, batch, timeout).await;
                }
                _ = tick.tick() => self.sweep(&mut conn, timeout).await,
            }
        }
    }

    async fn handle(&self, conn: &ClusterConnection, batch: Vec<Request>, timeout: Duration) {
        let mut channels: Vec<String> = Vec::new();
        for req in batch {
            match req {
                Request::Subscribe(c) if !channels.contains(&c) => channels.push(c),
                Request::Subscribe(_) => {}
                // Subscribed again at the next sweep.
                Request::Resync => {
                    for w in self.wanted().values_mut() {
                        w.subscribed = false;
                    }
                }
            }
        }
        let subscribing = channels
            .into_iter()
            .map(|channel| self.subscribe(conn.clone(), channel, timeout));
        futures_util::future::join_all(subscribing).await;
    }

    async fn subscribe(&self, mut conn: ClusterConnection, channel: String, timeout: Duration) {
        let key = match self.wanted().get(&channel) {
            Some(w) => w.key.clone(),
            None => return,
        };
        let done = tokio::time::timeout(timeout, conn.ssubscribe(&channel)).await;
        match done {
            Ok(Ok(())) => {
                if let Some(w) = self.wanted().get_mut(&channel) {
                    w.subscribed = true;
                }
                // A release may have come before the subscription: look once.
                self.notices.released(&key);
            }
            Ok(Err(e))
                if e.to_string()
                    .to_ascii_lowercase()
                    .contains("unknown command") =>
            {
                tracing::warn!(target: "bidlock::redis", error = %e,
                    "the cluster has no sharded pub/sub (Redis 7+): waiters poll for releases");
                self.supported.store(false, Ordering::Relaxed);
                self.wanted().clear();
            }
            Ok(Err(e)) => {
                tracing::debug!(target: "bidlock::redis", channel, error = %e, "SSUBSCRIBE failed; waiters poll until it succeeds");
            }
            Err(_) => {
                tracing::debug!(target: "bidlock::redis", channel, "SSUBSCRIBE timed out; waiters poll until it succeeds");
            }
        }
    }

    /// Drops the channels nobody waits on any more, and subscribes again to wanted ones
    /// whose subscription failed or was lost.
    async fn sweep(&self, conn: &mut ClusterConnection, timeout: Duration) {
        let now = Instant::now();
        let (stale, retry) = {
            let mut wanted = self.wanted();
            let stale: Vec<(String, bool)> = wanted
                .iter()
                .filter(|(_, w)| now.saturating_duration_since(w.seen) > self.linger)
                .map(|(c, w)| (c.clone(), w.subscribed))
                .collect();
            for (c, _) in &stale {
                wanted.remove(c);
            }
            let retry: Vec<String> = wanted
                .iter()
                .filter(|(_, w)| !w.subscribed)
                .map(|(c, _)| c.clone())
                .collect();
            (stale, retry)
        };
        for (channel, subscribed) in stale {
            if subscribed {
                let _ = tokio::time::timeout(timeout, conn.sunsubscribe(&channel)).await;
            }
        }
        let retries = retry
            .into_iter()
            .map(|channel| self.subscribe(conn.clone(), channel, timeout));
        futures_util::future::join_all(retries).await;
    }
}

fn text(v: &Value) -> Option<String> {
    redis::from_redis_value_ref::<String>(v).ok()
}
