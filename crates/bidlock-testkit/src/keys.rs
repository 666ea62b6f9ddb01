//! The names bidlock keeps in Redis, written down from the documented layout (the key
//! table of docs/REDIS.md) rather than asked of the library: a test that names keys
//! through [`Names`] checks that the library still writes where redis-cli, ACL files and
//! the original Python system look.
//!
//! | what | classic (one server, Sentinel, Redlock) | cluster |
//! | --- | --- | --- |
//! | lock | `p:{m}:{posting}` | `p:{m:posting}` |
//! | completion record | `p_done:…` (`bid_done:…` for `bid_lock`) | same head, tagged |
//! | wait marker, queue, waiters | `p_wait:…`, `p_queue:…`, `p_waiters:…` | same heads, tagged |
//! | fencing counter | `p_fence` | `p_fence:{m:posting}` |
//! | release channel | `p_released` | `p_released:{m:posting}` |
//!
//! Every method that names a posting's key takes the key as `marketplace:posting` (what
//! a `bidlock::LockKey` displays as).

use std::fmt::Display;

/// The default prefix: the original Python system's.
pub const DEFAULT_PREFIX: &str = "bid_lock";

/// The names of one prefix in one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The key prefix.
    pub prefix: String,
    /// The Redis Cluster layout (hash-tagged names, per-posting counter and channel).
    pub cluster: bool,
}

impl Default for Names {
    /// The default prefix in the classic layout.
    fn default() -> Self {
        Names::classic(DEFAULT_PREFIX)
    }
}

impl Names {
    /// `prefix` on one server (also Sentinel and each Redlock node).
    pub fn classic(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
            cluster: false,
        }
    }

    /// `prefix` on a Redis Cluster.
    pub fn cluster(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
            cluster: true,
        }
    }

    /// `head:marketplace:posting`, or `head:{marketplace:posting}` on a cluster.
    fn name(&self, head: &str, key: impl Display) -> String {
        if self.cluster {
            format!("{head}:{{{key}}}")
        } else {
            format!("{head}:{key}")
        }
    }

    /// The head of the completion records: `bid_done` for the default prefix (the
    /// original system's name), else `{prefix}_done`.
    pub fn done_head(&self) -> String {
        if self.prefix == DEFAULT_PREFIX {
            "bid_done".to_owned()
        } else {
            format!("{}_done", self.prefix)
        }
    }

    /// The lock (value: the holder id, with a `PX` ttl).
    pub fn lock(&self, key: impl Display) -> String {
        self.name(&self.prefix, key)
    }

    /// The completion record.
    pub fn done(&self, key: impl Display) -> String {
        self.name(&self.done_head(), key)
    }

    /// The wait marker.
    pub fn wait(&self, key: impl Display) -> String {
        self.name(&format!("{}_wait", self.prefix), key)
    }

    /// The wait queue (a ZSET).
    pub fn queue(&self, key: impl Display) -> String {
        self.name(&format!("{}_queue", self.prefix), key)
    }

    /// The queued waiters' entries (a HASH).
    pub fn waiters(&self, key: impl Display) -> String {
        self.name(&format!("{}_waiters", self.prefix), key)
    }

    /// The prefix-wide fencing counter of the classic layout.
    pub fn fence(&self) -> String {
        format!("{}_fence", self.prefix)
    }

    /// The fencing counter an acquire of `key` raises: the prefix's, or on a cluster the
    /// posting's own.
    pub fn fence_of(&self, key: impl Display) -> String {
        if self.cluster {
            self.name(&self.fence(), key)
        } else {
            self.fence()
        }
    }

    /// The prefix-wide release channel of the classic layout (payload: the lock key).
    pub fn release_channel(&self) -> String {
        format!("{}_released", self.prefix)
    }

    /// The channel a release of `key` is published on: the prefix's, or on a cluster the
    /// posting's sharded channel.
    pub fn release_channel_of(&self, key: impl Display) -> String {
        if self.cluster {
            self.name(&self.release_channel(), key)
        } else {
            self.release_channel()
        }
    }

    /// `head:` (`head:{` on a cluster) followed by `*`.
    fn pattern(&self, head: &str) -> String {
        if self.cluster {
            format!("{head}:{{*")
        } else {
            format!("{head}:*")
        }
    }

    /// The SCAN pattern of the locks.
    pub fn lock_pattern(&self) -> String {
        self.pattern(&self.prefix)
    }

    /// The SCAN pattern of the completion records.
    pub fn done_pattern(&self) -> String {
        self.pattern(&self.done_head())
    }

    /// The SCAN pattern of the wait markers.
    pub fn wait_pattern(&self) -> String {
        self.pattern(&format!("{}_wait", self.prefix))
    }

    /// `(marketplace, posting)` of a lock's name of this prefix and layout; `None` for
    /// any other name. (A marketplace id never contains `:`, `{` or `}`.)
    pub fn parse_lock(&self, name: &str) -> Option<(String, String)> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let rest = if self.cluster {
            rest.strip_prefix('{')?.strip_suffix('}')?
        } else {
            rest
        };
        let (m, p) = rest.split_once(':')?;
        let id = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        if m.is_empty() || p.is_empty() || !m.chars().all(id) {
            return None;
        }
        Some((m.to_owned(), p.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples() {
        let n = Names::default();
        assert_eq!(n.lock("upwork:job_123"), "bid_lock:upwork:job_123");
        assert_eq!(n.done("upwork:job_123"), "bid_done:upwork:job_123");
        assert_eq!(n.wait("upwork:job_123"), "bid_lock_wait:upwork:job_123");
        assert_eq!(n.fence_of("upwork:job_123"), "bid_lock_fence");
        assert_eq!(n.release_channel_of("u:j"), "bid_lock_released");
        assert_eq!(Names::classic("foo").done("m:p"), "foo_done:m:p");
        let c = Names::cluster(DEFAULT_PREFIX);
        assert_eq!(c.lock("upwork:job_123"), "bid_lock:{upwork:job_123}");
        assert_eq!(c.done("upwork:job_123"), "bid_done:{upwork:job_123}");
        assert_eq!(
            c.fence_of("upwork:job_123"),
            "bid_lock_fence:{upwork:job_123}"
        );
        assert_eq!(
            c.release_channel_of("upwork:job_123"),
            "bid_lock_released:{upwork:job_123}"
        );
        assert_eq!(c.lock_pattern(), "bid_lock:{*");
        assert_eq!(
            c.parse_lock("bid_lock:{a:b}c}"),
            Some(("a".into(), "b}c".into()))
        );
        assert_eq!(n.parse_lock("bid_lock_fence"), None);
        assert_eq!(c.parse_lock(&n.lock("a:b")), None);
    }
}
