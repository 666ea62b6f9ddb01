//! Taking, leaving and waiting for a lock in Redis, with direct handoff: a try that finds
//! the lock held joins the key's wait queue (when the caller waits), a release hands the
//! lock to the first live queued waiter and tells its manager on its grant channel, and a
//! queued waiter refreshes its entry so a dead one is skipped.

use std::time::Duration;

use super::scripts::{ACQUIRE, REFRESH, RELEASE};
use super::{RedisStore, FENCE_KEPT};
use crate::backend::memory::ms;
use crate::backend::{AcquireRequest, Attempt, Handoff, Queue, Waiting};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::{Holder, Lease};
use crate::metrics::Counter;

impl RedisStore {
    pub(super) async fn take(&self, req: &AcquireRequest<'_>) -> Result<Attempt, Error> {
        let lock = self.keys.lock_key(req.key);
        let mut inv = ACQUIRE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.fence_key_of(req.key))
            .key(self.keys.done_key(req.key))
            .key(self.keys.wait_key(req.key))
            .key(self.keys.queue_key(req.key))
            .key(self.keys.waiters_key(req.key))
            .arg(req.holder().as_str())
            .arg(ms(req.ttl).max(1))
            .arg(if req.check_done { "1" } else { "0" })
            .arg(if req.waiters_behind { "1" } else { "0" });
        let channel = self.grants.as_deref().unwrap_or("");
        let queued = match req.queue {
            Queue::OnConflict { again, handoff } if !channel.is_empty() => {
                inv.arg(if again { "2" } else { "1" })
                    .arg(ms(handoff.entry_ttl).max(1))
                    .arg(ms(handoff.grant_ttl).max(1))
                    .arg(channel);
                true
            }
            _ => {
                inv.arg("0").arg(0).arg(0).arg("");
                false
            }
        };
        if let Some(c) = self.cluster() {
            // A counter per posting: kept a day beyond the lock, then the clock suffices.
            inv.arg(ms(req.ttl.saturating_add(FENCE_KEPT)));
            if req.waiters_behind {
                // Local waiters queue behind this try: its release will announce itself
                // on the posting's channel, and they need to hear it.
                c.shards.waiting(req.key);
            }
        }
        let (code, n, text): (i64, i64, Vec<u8>) = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("acquire", &lock, e))?;
        let token = || u64::try_from(n).unwrap_or(0);
        match code {
            1 => Ok(Attempt::Acquired { token: token() }),
            0 => {
                let holder = String::from_utf8_lossy(&text).into_owned();
                self.held_on_cluster(req, &holder)?;
                Ok(Attempt::Held {
                    holder: Some(holder),
                    ttl_left: u64::try_from(n).ok().map(Duration::from_millis),
                    queued,
                })
            }
            2 => Ok(Attempt::Done),
            4 => Ok(Attempt::Granted { token: token() }),
            _ => {
                self.metrics.count(Counter::RedisErrors, None);
                Err(Error::WrongType {
                    key: lock,
                    found: String::from_utf8_lossy(&text).into_owned(),
                })
            }
        }
    }

    pub(super) async fn stay_queued(
        &self,
        lease: &Lease,
        handoff: Handoff,
    ) -> Result<Waiting, Error> {
        let Some(channel) = &self.grants else {
            return Ok(Waiting::Gone);
        };
        let lock = self.keys.lock_key(lease.key());
        let mut inv = REFRESH.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.queue_key(lease.key()))
            .key(self.keys.waiters_key(lease.key()))
            .arg(lease.holder().as_str())
            .arg(ms(handoff.entry_ttl).max(1))
            .arg(ms(handoff.grant_ttl).max(1))
            .arg(channel);
        let (code, token): (i64, i64) = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("refresh", &lock, e))?;
        Ok(match code {
            1 => Waiting::Queued,
            2 => Waiting::Granted {
                token: u64::try_from(token).unwrap_or(0),
            },
            _ => Waiting::Gone,
        })
    }

    /// Releases (handing over to the first live queued waiter), or, for a holder that
    /// does not hold the lock, takes its entry out of the queue.
    pub(super) async fn let_go(&self, key: &LockKey, holder: &Holder) -> Result<bool, Error> {
        let lock = self.keys.lock_key(key);
        let mut inv = RELEASE.prepare_invoke();
        inv.key(&lock)
            .key(self.keys.wait_key(key))
            .key(self.keys.queue_key(key))
            .key(self.keys.waiters_key(key))
            .key(self.keys.fence_key_of(key))
            .key(self.keys.done_key(key))
            .arg(holder.as_str())
            .arg(self.keys.release_channel_of(key))
            .arg(self.publish);
        let n: i64 = inv
            .invoke_async(&mut self.call())
            .await
            .map_err(|e| self.err("release", &lock, e))?;
        // Waiters, here and in other processes alike, learn of the release from Redis:
        // waking local waiters first would let one process keep a hot lock among its own
        // tasks while others starve.
        Ok(n >= 1)
    }
}

/// Parses a grant message: `"{token} {holder length} {holder}{lock key}"` (a holder id
/// may hold spaces; a lock key is the rest).
pub(crate) fn parse_grant(payload: &str) -> Option<(u64, &str, &str)> {
    let (token, rest) = payload.split_once(' ')?;
    let (len, rest) = rest.split_once(' ')?;
    let len: usize = len.parse().ok()?;
    let holder = rest.get(..len)?;
    let key = rest.get(len..)?;
    Some((token.parse().ok()?, holder, key))
}

#[cfg(test)]
mod tests {
    use super::parse_grant;

    #[test]
    fn grant_messages_parse_back() {
        assert_eq!(
            parse_grant("17 7 a b c:dbid_lock:m:p q"),
            Some((17, "a b c:d", "bid_lock:m:p q"))
        );
        assert_eq!(parse_grant("x 1 ab"), None);
        assert_eq!(parse_grant("1 9 ab"), None);
    }
}
