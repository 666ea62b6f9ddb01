//! The release subscriber: one pub/sub connection per store listens on the release
//! channel and passes each released key to the manager (local waiters wake, a lease held
//! on the key is checked). It follows the master through failovers and reconnects with
//! backoff; while it is away, waiters poll, and when it is back everything is looked at
//! again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::client::Master;
use super::handoff::parse_grant;
use super::sentinel::Failover;
use super::Background;
use crate::backoff::{Backoff, RetryPolicy};
use crate::keyspace::KeySpace;
use crate::notices::Notices;

/// Why a subscription ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The connection closed or failed.
    Dropped,
    /// The store now points at another master.
    Moved,
}

/// What the subscriber listens to, and whom it tells.
pub(crate) struct Subscriber {
    pub(crate) master: Arc<Master>,
    pub(crate) channel: String,
    /// This manager's grant channel, when releases may hand it locks.
    pub(crate) grants: Option<String>,
    pub(crate) keys: KeySpace,
    pub(crate) notices: Arc<Notices>,
    pub(crate) connect_timeout: Duration,
    /// The server's URL (password hidden), for logs.
    pub(crate) url: String,
    /// Through Sentinel: whom to ask where the master went when it cannot be reached
    /// (a store with only waiters sends no command that would fail and ask).
    pub(crate) failover: Option<(Arc<Failover>, Background)>,
}

impl Subscriber {
    /// Runs until the task is cancelled; `ready` fires after the first subscription.
    pub(crate) async fn run(self, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let policy = RetryPolicy::new(Duration::from_millis(100), 2.0, Duration::from_secs(2));
        let mut backoff = Backoff::new(policy);
        loop {
            match self.subscribe().await {
                Ok(stream) => {
                    tracing::debug!(target: "bidlock::redis", url = self.url, channel = self.channel, "release subscriber connected");
                    backoff = Backoff::new(policy);
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    // Releases may have happened while we were away.
                    self.notices.all();
                    let ended = self.listen(stream).await;
                    tracing::debug!(target: "bidlock::redis", url = self.url, ?ended, "release subscriber disconnected; waiters poll until it is back");
                    self.notices.all();
                    if ended == Ended::Moved {
                        continue;
                    }
                    self.ask_where_the_master_is();
                }
                Err(why) => {
                    tracing::debug!(target: "bidlock::redis", url = self.url, %why, "release subscriber could not connect");
                    self.ask_where_the_master_is();
                }
            }
            // A failover found by a command ends the pause: the new master's grant channel
            // is listened to from the moment the store points at it.
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = self.master.moved() => backoff = Backoff::new(policy),
            }
        }
    }

    /// Through Sentinel, a lost or refused subscription may mean a failover: a check in
    /// the background (at most one per 200 ms) follows the master if it moved, which
    /// wakes this loop through [`Master::moved`].
    fn ask_where_the_master_is(&self) {
        if let Some((failover, background)) = &self.failover {
            failover.check(&self.master, &self.notices, background);
        }
    }

    /// Connects and subscribes, each step bounded by the connect timeout on its own (on a
    /// slow link a connect and two round trips in one bound never fit), both channels in
    /// one SUBSCRIBE.
    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let client = self.master.client();
        let bound = self.connect_timeout;
        let mut ps = match tokio::time::timeout(bound, client.get_async_pubsub()).await {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("connect timed out".to_owned()),
        };
        let mut channels = vec![self.channel.as_str()];
        channels.extend(self.grants.as_deref());
        match tokio::time::timeout(bound, ps.subscribe(&channels)).await {
            Ok(Ok(())) => Ok(ps),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("subscribe timed out".to_owned()),
        }
    }

    /// Passes messages on until the connection drops or the store moves to a new master
    /// (a demoted master may stay up, still serving this subscription).
    async fn listen(&self, ps: redis::aio::PubSub) -> Ended {
        let mut stream = ps.into_on_message();
        loop {
            let msg = tokio::select! {
                msg = stream.next() => msg,
                () = self.master.moved() => return Ended::Moved,
            };
            let Some(msg) = msg else {
                return Ended::Dropped;
            };
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            if self.grants.as_deref() == Some(msg.get_channel_name()) {
                self.granted(&payload);
            } else if let Some(key) = self.keys.parse_lock_key(&payload) {
                self.notices.released(&key);
            }
        }
    }

    /// A release handed a lock to one of this manager's queued waiters.
    fn granted(&self, payload: &str) {
        let Some((token, holder, key)) = parse_grant(payload) else {
            tracing::debug!(target: "bidlock::redis", payload, "malformed grant message");
            return;
        };
        if let Some(key) = self.keys.parse_lock_key(key) {
            self.notices.granted(&key, holder, token);
        }
    }
}
