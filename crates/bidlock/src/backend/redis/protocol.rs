//! The hot scripts' protocol as Rust types: what one acquire ([`Take`]) or one release
//! ([`LetGo`]) sends as an item of `acquire.lua` / `release.lua`, and what each answers
//! ([`TakeAnswer`], [`LetGoAnswer`]), decoded in one place. The argument layout is
//! written once on each side: here, and in the script's `item(i)` reader.

use redis::{FromRedisValue, ParsingError, Value};

use crate::key::LockKey;
use crate::lease::Holder;

/// One acquire try, as `acquire.lua` takes it.
pub(super) struct Take {
    pub(super) key: LockKey,
    pub(super) holder: Holder,
    /// The caller chose the holder id: an answer whose caller left is never let go in the
    /// background (the one rule: see `Notices::unclaimed`).
    pub(super) given: bool,
    pub(super) ttl_ms: u64,
    pub(super) check_done: bool,
    pub(super) waiters_behind: bool,
    pub(super) mode: Mode,
    pub(super) entry_ms: u64,
    pub(super) grant_ms: u64,
}

/// One renewal, as `renew.lua` takes it: the lock at least `ttl_ms` more, if `holder`
/// holds it under the tenure whose fencing token is `token` (`None`: a store that never
/// hands locks over, where an id has one tenure). Answered by a code: 1 renewed, 0 not
/// held, -1 the key holds another kind.
pub(super) struct Renewal {
    pub(super) key: LockKey,
    pub(super) holder: Holder,
    pub(super) ttl_ms: u64,
    pub(super) token: Option<u64>,
}

/// How a try treats the key's queue (`acquire.lua`'s `mode`; docs/HANDOVER.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Do not queue.
    No,
    /// Join the queue on conflict (a holder id never queued before).
    Join,
    /// Stay queued if still queued (a tenure going on).
    Stay,
}

impl Mode {
    pub(super) fn as_arg(self) -> &'static str {
        match self {
            Mode::No => "no",
            Mode::Join => "join",
            Mode::Stay => "stay",
        }
    }
}

/// What `acquire.lua` answers for one item (`{code, n, text}`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TakeAnswer {
    /// `{1, token, ''}`: taken.
    Acquired { token: u64 },
    /// `{0, pttl, holder}` held by another, not queued; `{5, pttl, holder}` queued.
    Held {
        pttl: i64,
        holder: String,
        queued: bool,
    },
    /// `{2, 0, ''}`: the posting has a completion record.
    Done,
    /// `{4, token, ''}`: a release already handed the lock to this tenure.
    Granted { token: u64 },
    /// `{3, 0, "key<TAB>what is wrong"}`: junk in one of the keys; nothing was written.
    Junk { key: String, found: String },
}

impl FromRedisValue for TakeAnswer {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (code, n, text): (i64, i64, Vec<u8>) = FromRedisValue::from_redis_value(v)?;
        let token = || u64::try_from(n).map_err(|_| ParsingError::from(format!("token {n}")));
        Ok(match code {
            1 => TakeAnswer::Acquired { token: token()? },
            4 => TakeAnswer::Granted { token: token()? },
            0 | 5 => TakeAnswer::Held {
                pttl: n,
                holder: String::from_utf8_lossy(&text).into_owned(),
                queued: code == 5,
            },
            2 => TakeAnswer::Done,
            3 => {
                let (key, found) = junk(&text);
                TakeAnswer::Junk { key, found }
            }
            _ => return Err(format!("acquire.lua answered code {code}").into()),
        })
    }
}

/// One release (or a waiter leaving the queue), as `release.lua` takes it.
pub(super) struct LetGo {
    pub(super) key: LockKey,
    pub(super) holder: Holder,
    /// Publish the release even when nobody waits: a release by holder id, or of a holder
    /// id the caller chose (another manager may hold the lock under it).
    pub(super) tell: bool,
}

/// What `release.lua` answers for one item (`{code, text}`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LetGoAnswer {
    /// `{0, ''}`: not this holder's (its queue entry, if any, was taken out).
    NotHeld,
    /// `{1, ''}` released, nobody waited; `{2, ''}` released and published.
    Released,
    /// `{3, ''}`: handed to the first live queued waiter.
    HandedOver,
    /// `{4, "key<TAB>what is wrong"}`: the lock's key holds junk; nothing was written.
    Junk { key: String, found: String },
}

impl FromRedisValue for LetGoAnswer {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (code, text): (i64, Vec<u8>) = FromRedisValue::from_redis_value(v)?;
        Ok(match code {
            0 => LetGoAnswer::NotHeld,
            1 | 2 => LetGoAnswer::Released,
            3 => LetGoAnswer::HandedOver,
            4 => {
                let (key, found) = junk(&text);
                LetGoAnswer::Junk { key, found }
            }
            _ => return Err(format!("release.lua answered code {code}").into()),
        })
    }
}

/// A script's "key<TAB>what is wrong" about junk in one of its keys.
pub(super) fn junk(text: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(text);
    let (key, found) = text.split_once('\t').unwrap_or(("", &text));
    (key.to_owned(), found.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(code: i64, n: i64, text: &str) -> Value {
        Value::Array(vec![
            Value::Int(code),
            Value::Int(n),
            Value::BulkString(text.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn each_acquire_answer_decodes_to_its_meaning() {
        let decode = |v| TakeAnswer::from_redis_value(v).unwrap();
        assert_eq!(decode(item(1, 7, "")), TakeAnswer::Acquired { token: 7 });
        assert_eq!(decode(item(4, 8, "")), TakeAnswer::Granted { token: 8 });
        assert_eq!(decode(item(2, 0, "")), TakeAnswer::Done);
        assert_eq!(
            decode(item(5, 1200, "h")),
            TakeAnswer::Held {
                pttl: 1200,
                holder: "h".into(),
                queued: true
            }
        );
        assert_eq!(
            decode(item(
                3,
                0,
                "bid_lock_fence\tholds a Redis hash, not a fencing counter"
            )),
            TakeAnswer::Junk {
                key: "bid_lock_fence".into(),
                found: "holds a Redis hash, not a fencing counter".into()
            }
        );
        assert!(TakeAnswer::from_redis_value(item(9, 0, "")).is_err());
        assert!(TakeAnswer::from_redis_value(item(1, -1, "")).is_err());
    }
}
