//! Taking, leaving and waiting for a lock in Redis, with direct handoff: a try that finds
//! the lock held joins the key's wait queue (when the caller waits), a release hands the
//! lock to the first live queued waiter and tells its manager on its grant channel, and a
//! queued waiter tries again now and then, staying queued, so a dead one is skipped.

use std::time::Duration;

use redis::{ErrorKind, RedisError};

use super::calls::{send_let_gos, send_takes};
use super::protocol::{LetGo, LetGoAnswer, Mode, Take, TakeAnswer};
use super::{RedisStore, FENCE_KEPT};
use crate::backend::memory::ms;
use crate::backend::{Attempt, Queue, TryAcquire};
use crate::error::Error;
use crate::key::LockKey;
use crate::lease::Holder;
use crate::metrics::Counter;

impl RedisStore {
    pub(super) async fn take(&self, req: &TryAcquire<'_>) -> Result<Attempt, Error> {
        let grants = self.grants.as_deref().unwrap_or("");
        let handoff = req.queue.handoff().filter(|_| !grants.is_empty());
        let mode = match (handoff, req.queue) {
            (Some(_), Queue::Join(_)) => Mode::Join,
            (Some(_), Queue::Stay(_)) => Mode::Stay,
            _ => Mode::No,
        };
        let item = Take {
            key: req.key.clone(),
            holder: req.holder.clone(),
            given: req.given,
            ttl_ms: ms(req.ttl).max(1),
            check_done: req.check_done,
            waiters_behind: req.waiters_behind,
            mode,
            entry_ms: handoff.map_or(0, |h| ms(h.entry_ttl).max(1)),
            grant_ms: handoff.map_or(0, |h| ms(h.grant_ttl).max(1)),
        };
        let answer = match (&self.batches, self.cluster()) {
            (Some(b), _) => b.takes.call(item).await,
            (None, cluster) => {
                if let (Some(c), true) = (cluster, req.waiters_behind) {
                    // Local waiters queue behind this try: its release will announce
                    // itself on the posting's channel, and they need to hear it.
                    c.shards.waiting(req.key);
                }
                // A counter per posting: kept a day beyond the lock, then the clock does.
                let keep = ms(req.ttl.saturating_add(FENCE_KEPT)).to_string();
                let mut conn = self.call();
                let item = std::slice::from_ref(&item);
                send_takes(&mut conn, &self.keys, item, grants, &keep)
                    .await
                    .and_then(|mut a| a.pop().ok_or_else(short))
            }
        };
        let answer = answer.map_err(|e| self.err("acquire", &self.keys.lock_key(req.key), e))?;
        let attempt = match answer {
            TakeAnswer::Acquired { token } => Attempt::Acquired { token },
            TakeAnswer::Granted { token } => Attempt::Granted { token },
            TakeAnswer::Done => Attempt::Done,
            TakeAnswer::Held {
                pttl,
                holder,
                queued,
            } => {
                self.held_on_cluster(req, &holder)?;
                // A waiter queued on a master that was demoted while it stays writable
                // would be answered "held" there until its deadline: ask the sentinels.
                self.look_for_a_new_master();
                Attempt::Held {
                    holder: Some(holder),
                    // -1: no ttl (never expires); -2: gone since the try looked (free now).
                    ttl_left: (pttl != -1)
                        .then(|| Duration::from_millis(pttl.max(0).unsigned_abs())),
                    queued,
                }
            }
            TakeAnswer::Junk { key, found } => {
                self.metrics.count(Counter::RedisErrors, None);
                return Err(Error::WrongType { key, found });
            }
        };
        if matches!(attempt, Attempt::Acquired { .. } | Attempt::Granted { .. }) {
            // Through Sentinel, a lock counts only on the master the sentinels name.
            let lock = self.keys.lock_key(req.key);
            if !self.confirm_master(&lock).await? {
                return Err(self.moved_away(&lock));
            }
        }
        Ok(attempt)
    }

    /// Releases (handing over to the first live queued waiter), or, for a holder that
    /// does not hold the lock, takes its entry out of the queue.
    pub(super) async fn let_go(
        &self,
        key: &LockKey,
        holder: &Holder,
        tell: bool,
    ) -> Result<bool, Error> {
        let item = LetGo {
            key: key.clone(),
            holder: holder.clone(),
            tell,
        };
        let answer = match &self.batches {
            Some(b) => b.let_gos.call(item).await,
            None => {
                let mut conn = self.call();
                let item = std::slice::from_ref(&item);
                send_let_gos(&mut conn, &self.keys, item, self.publish, "")
                    .await
                    .and_then(|mut a| a.pop().ok_or_else(short))
            }
        };
        let answer = answer.map_err(|e| self.err("release", &self.keys.lock_key(key), e))?;
        // Waiters, here and in other processes alike, learn of the release from Redis:
        // waking local waiters first would let one process keep a hot lock among its own
        // tasks while others starve.
        match answer {
            LetGoAnswer::NotHeld => Ok(false),
            LetGoAnswer::Released | LetGoAnswer::HandedOver => Ok(true),
            LetGoAnswer::Junk { key, found } => {
                self.metrics.count(Counter::RedisErrors, None);
                Err(Error::WrongType { key, found })
            }
        }
    }
}

/// The error for a script's "key<TAB>what is wrong" about junk in one of its keys (a key
/// it could not name falls back to `lock`).
pub(super) fn junk(text: &[u8], lock: impl FnOnce() -> String) -> Error {
    let (key, found) = super::protocol::junk(text);
    if key.is_empty() {
        return Error::WrongType {
            key: lock(),
            found: format!("holds {found}"),
        };
    }
    Error::WrongType { key, found }
}

fn short() -> RedisError {
    RedisError::from((ErrorKind::Parse, "the script answered no item"))
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
