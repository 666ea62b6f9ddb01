//! The names bidlock uses in Redis for one key prefix, and the rule that keeps two
//! prefixes from ever reaching each other's keys.

use crate::key::{is_id_char, InvalidKey, LockKey};

/// The default key prefix, compatible with the original Python system.
pub const DEFAULT_PREFIX: &str = "bid_lock";

/// What the names derived from a prefix end with. A prefix ending in one of them is
/// refused: its locks would be another prefix's records, markers or counters.
const DERIVED_SUFFIXES: &[&str] = &[
    "_done",
    "_wait",
    "_queue",
    "_waiters",
    "_fence",
    "_released",
    "_grants",
];

/// The names bidlock uses in Redis for one prefix.
///
/// With the default prefix `bid_lock` (the original system's layout):
///
/// | what | name |
/// | --- | --- |
/// | lock | `bid_lock:{marketplace}:{posting}` (value: holder id, `PX` ttl) |
/// | completion record | `bid_done:{marketplace}:{posting}` |
/// | fencing counter | `bid_lock_fence` (one per prefix, outside `bid_lock:*`) |
/// | release channel | `bid_lock_released` (payload: the lock key) |
/// | wait marker | `bid_lock_wait:{marketplace}:{posting}` (short-lived: someone waits) |
/// | wait queue | `bid_lock_queue:{marketplace}:{posting}` (ZSET: queued waiters by arrival) |
/// | waiters | `bid_lock_waiters:{marketplace}:{posting}` (HASH: each queued waiter's entry) |
/// | grant channel | `bid_lock_grants:{manager}` (one per manager: locks handed to its waiters) |
///
/// Any other prefix `p` uses `p:…` for locks and `p_done:…`, `p_wait:…`, `p_queue:…`,
/// `p_waiters:…`, `p_fence`, `p_released`, `p_grants:…` for the rest.
///
/// # No prefix reaches another's keys
///
/// Every name that carries a posting is `head:{marketplace}:{posting}`, and its head (the
/// part before the first `:`) is the prefix itself, or the prefix plus `_done`, `_wait`,
/// `_queue` or `_waiters`. So two prefixes could only share a name if one prefix were
/// another's head. That is refused: a prefix may not end in any of those suffixes (nor
/// `_fence`, `_released`, `_grants`), and may not be `bid` (whose records would be the
/// default prefix's `bid_done:*`). With
/// that, `cleanup`, `locks` and every script of one prefix touch only its own keys; the
/// property tests check it for arbitrary pairs of prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
    done_prefix: String,
}

impl Default for KeySpace {
    fn default() -> Self {
        KeySpace {
            prefix: DEFAULT_PREFIX.to_owned(),
            done_prefix: "bid_done".to_owned(),
        }
    }
}

/// The heads (parts before the first `:`) of the names of `prefix` that carry a posting.
fn heads(prefix: &str) -> [String; 3] {
    [
        prefix.to_owned(),
        done_head(prefix),
        format!("{prefix}_wait"),
    ]
}

fn done_head(prefix: &str) -> String {
    if prefix == DEFAULT_PREFIX {
        // The original system's name, kept for compatibility.
        "bid_done".to_owned()
    } else {
        format!("{prefix}_done")
    }
}

fn refuse(prefix: &str, reason: impl Into<String>) -> InvalidKey {
    InvalidKey::Prefix {
        prefix: prefix.to_owned(),
        reason: reason.into(),
    }
}

impl KeySpace {
    /// A key space for `prefix`.
    ///
    /// # Errors
    ///
    /// [`InvalidKey::Prefix`] when the prefix is not `[A-Za-z0-9_.-]{1,64}` (other
    /// characters would make keys ambiguous or SCAN patterns unsafe), or when its names
    /// could reach another prefix's keys (see the type's docs).
    pub fn new(prefix: &str) -> Result<KeySpace, InvalidKey> {
        if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(is_id_char) {
            return Err(refuse(prefix, "use 1-64 of A-Z, a-z, 0-9, '_', '.', '-'"));
        }
        if let Some(suffix) = DERIVED_SUFFIXES.iter().find(|s| prefix.ends_with(*s)) {
            return Err(refuse(
                prefix,
                format!(
                    "it ends in {suffix:?}, which names another prefix's records, markers or counters"
                ),
            ));
        }
        if prefix != DEFAULT_PREFIX {
            let default = heads(DEFAULT_PREFIX);
            if let Some(shared) = heads(prefix).into_iter().find(|h| default.contains(h)) {
                return Err(refuse(
                    prefix,
                    format!("its names {shared}:* belong to the default prefix {DEFAULT_PREFIX}"),
                ));
            }
        }
        Ok(KeySpace {
            prefix: prefix.to_owned(),
            done_prefix: done_head(prefix),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lock's Redis key.
    pub fn lock_key(&self, key: &LockKey) -> String {
        format!("{}:{}", self.prefix, key.as_str())
    }

    /// The completion record's Redis key.
    pub fn done_key(&self, key: &LockKey) -> String {
        format!("{}:{}", self.done_prefix, key.as_str())
    }

    /// The wait marker's Redis key: set by a try that found the lock held, so that the
    /// release publishes; without waiters, releases publish nothing.
    pub fn wait_key(&self, key: &LockKey) -> String {
        format!("{}_wait:{}", self.prefix, key.as_str())
    }

    /// The wait queue's Redis key: a ZSET of the waiters that take handoffs, by arrival.
    pub fn queue_key(&self, key: &LockKey) -> String {
        format!("{}_queue:{}", self.prefix, key.as_str())
    }

    /// The waiters' Redis key: a HASH of each queued waiter's entry (how long it is alive,
    /// its grant ttl and channel), or of the token a release handed it.
    pub fn waiters_key(&self, key: &LockKey) -> String {
        format!("{}_waiters:{}", self.prefix, key.as_str())
    }

    /// The pub/sub channel on which releases hand locks to the waiters of manager `uid`.
    pub fn grant_channel(&self, uid: &str) -> String {
        format!("{}_grants:{uid}", self.prefix)
    }

    /// The fencing counter's Redis key.
    pub fn fence_key(&self) -> String {
        format!("{}_fence", self.prefix)
    }

    /// The pub/sub channel that release messages go to.
    pub fn release_channel(&self) -> String {
        format!("{}_released", self.prefix)
    }

    /// The SCAN pattern for locks, optionally of one marketplace. Marketplace ids cannot
    /// contain glob characters, so the pattern matches exactly what it says.
    pub fn scan_pattern(&self, marketplace: Option<&str>) -> String {
        match marketplace {
            Some(m) => format!("{}:{}:*", self.prefix, m),
            None => format!("{}:*", self.prefix),
        }
    }

    /// The SCAN pattern for completion records.
    pub fn done_pattern(&self) -> String {
        format!("{}:*", self.done_prefix)
    }

    /// The SCAN pattern for wait markers.
    pub fn wait_pattern(&self) -> String {
        format!("{}_wait:*", self.prefix)
    }

    /// The SCAN pattern for wait queues.
    pub fn queue_pattern(&self) -> String {
        format!("{}_queue:*", self.prefix)
    }

    /// Parses a lock key back into its ids; `None` when the name is not a valid lock key
    /// of this prefix.
    pub fn parse_lock_key(&self, redis_key: &str) -> Option<LockKey> {
        let rest = redis_key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let (m, p) = rest.split_once(':')?;
        LockKey::new(m, p).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous_and_parse_back() {
        let ks = KeySpace::default();
        let k = LockKey::new("a", "b:c").unwrap();
        assert_eq!(ks.parse_lock_key(&ks.lock_key(&k)), Some(k));
        assert_eq!(ks.parse_lock_key("bid_lock_fence"), None);
        assert_eq!(ks.parse_lock_key("other:a:b"), None);
    }

    #[test]
    fn the_default_layout_is_the_original_one() {
        let ks = KeySpace::new(DEFAULT_PREFIX).unwrap();
        assert_eq!(ks, KeySpace::default());
        let k = LockKey::new("upwork", "job_123").unwrap();
        assert_eq!(ks.lock_key(&k), "bid_lock:upwork:job_123");
        assert_eq!(ks.done_key(&k), "bid_done:upwork:job_123");
        assert_eq!(ks.wait_key(&k), "bid_lock_wait:upwork:job_123");
        assert_eq!(ks.fence_key(), "bid_lock_fence");
        assert_eq!(ks.release_channel(), "bid_lock_released");
    }

    #[test]
    fn other_prefixes() {
        let ks = KeySpace::new("staging_bid_lock").unwrap();
        let k = LockKey::new("m", "p").unwrap();
        assert_eq!(ks.done_key(&k), "staging_bid_lock_done:m:p");
        let ks = KeySpace::new("foo").unwrap();
        assert_eq!(ks.fence_key(), "foo_fence");
        assert_eq!(ks.done_key(&k), "foo_done:m:p");
        for bad in ["a:b", "a*", ""] {
            assert!(KeySpace::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_that_could_reach_another_prefixs_keys_are_refused() {
        for bad in [
            "bid_done",
            "bid_lock_wait",
            "x_done",
            "x_queue",
            "bid",
            "a_fence",
        ] {
            let e = KeySpace::new(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(KeySpace::new("bid")
            .unwrap_err()
            .to_string()
            .contains("bid_done:*"));
    }
}
