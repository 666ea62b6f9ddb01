//! The names bidlock uses in Redis for one key prefix, in the single-node layout or the
//! cluster layout, and the rule that keeps two prefixes from ever reaching each other's
//! keys.

use crate::key::{is_id_char, InvalidKey, LockKey};

/// The default key prefix, compatible with the original Python system.
pub(crate) const DEFAULT_PREFIX: &str = "bid_lock";

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

/// How the names of one posting are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub(crate) enum Layout {
    /// One Redis server (incl. Sentinel and each Redlock node): the original system's
    /// names, one fencing counter per prefix, one release channel per prefix.
    #[default]
    Classic,
    /// Redis Cluster: every name of a posting carries the hash tag `{marketplace:posting}`,
    /// so everything one script touches for a posting lives in one hash slot; the fencing
    /// counter and the release channel are per posting.
    Cluster,
}

/// The names bidlock uses in Redis for one prefix.
///
/// With the default prefix `bid_lock` (the original system's layout, [`Layout::Classic`]):
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
/// On a Redis Cluster ([`Layout::Cluster`]) the same heads carry the hash tag
/// `{marketplace:posting}`, and the counter and channel are per posting:
///
/// | what | name |
/// | --- | --- |
/// | lock | `bid_lock:{upwork:job_123}` |
/// | completion record | `bid_done:{upwork:job_123}` |
/// | fencing counter | `bid_lock_fence:{upwork:job_123}` |
/// | release channel (sharded) | `bid_lock_released:{upwork:job_123}` |
/// | wait marker | `bid_lock_wait:{upwork:job_123}` |
/// | wait queue, waiters | `bid_lock_queue:{upwork:job_123}`, `bid_lock_waiters:{upwork:job_123}` (unused: waiters do not queue on a cluster) |
///
/// Redis hashes the text after the *first* `{` up to the next `}`. The prefix and the
/// marketplace contain no braces, so every name of a posting has the same hash tag (and
/// slot) even when the posting id contains `{` or `}`: the names differ only before their
/// first `{`, and the text after it is the same.
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
/// property tests check it for arbitrary pairs of prefixes, in both layouts. The two
/// layouts cannot alias either: after its head, a cluster name goes on with `{`, which no
/// marketplace id (and so no classic name) starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeySpace {
    prefix: String,
    done_prefix: String,
    layout: Layout,
}

impl Default for KeySpace {
    fn default() -> Self {
        KeySpace {
            prefix: DEFAULT_PREFIX.to_owned(),
            done_prefix: "bid_done".to_owned(),
            layout: Layout::Classic,
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

/// Which of a posting's names (see [`KeySpace::name_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Name {
    Lock,
    Done,
    Wait,
    Queue,
    Waiters,
    /// The fencing counter: the prefix's (classic), or the posting's (cluster).
    Fence,
}

/// A posting's name in Redis, formatted on display.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyName<'a> {
    space: &'a KeySpace,
    kind: Name,
    key: &'a LockKey,
}

impl std::fmt::Display for KeyName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = self.space.prefix.as_str();
        let (head, suffix) = match self.kind {
            Name::Lock => (prefix, ""),
            Name::Done => (self.space.done_prefix.as_str(), ""),
            Name::Wait => (prefix, "_wait"),
            Name::Queue => (prefix, "_queue"),
            Name::Waiters => (prefix, "_waiters"),
            Name::Fence => (prefix, "_fence"),
        };
        match (self.space.layout, self.kind) {
            (Layout::Classic, Name::Fence) => write!(f, "{head}{suffix}"),
            (Layout::Classic, _) => write!(f, "{head}{suffix}:{}", self.key.as_str()),
            (Layout::Cluster, _) => write!(f, "{head}{suffix}:{{{}}}", self.key.as_str()),
        }
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
    pub(crate) fn new(prefix: &str) -> Result<KeySpace, InvalidKey> {
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
            layout: Layout::Classic,
        })
    }

    /// The same prefix in another layout.
    #[must_use]
    pub(crate) fn with_layout(mut self, layout: Layout) -> KeySpace {
        self.layout = layout;
        self
    }

    /// The layout of the names.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// The prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `head:{marketplace}:{posting}`, or `head:{marketplace:posting}` (hash-tagged) on a
    /// cluster.
    fn name(&self, head: &str, key: &LockKey) -> String {
        match self.layout {
            Layout::Classic => format!("{head}:{}", key.as_str()),
            Layout::Cluster => format!("{head}:{{{}}}", key.as_str()),
        }
    }

    /// The Redis name of `kind` for `key`, written where it is displayed (into a command's
    /// buffer on the hot path: no string of its own). The `*_key` methods are this as a
    /// `String`.
    pub(crate) fn name_of<'a>(&'a self, kind: Name, key: &'a LockKey) -> KeyName<'a> {
        KeyName {
            space: self,
            kind,
            key,
        }
    }

    /// The lock's Redis key.
    pub(crate) fn lock_key(&self, key: &LockKey) -> String {
        self.name_of(Name::Lock, key).to_string()
    }

    /// The completion record's Redis key.
    pub(crate) fn done_key(&self, key: &LockKey) -> String {
        self.name_of(Name::Done, key).to_string()
    }

    /// The wait marker's Redis key: set by a try that found the lock held, so that the
    /// release publishes; without waiters, releases publish nothing.
    pub(crate) fn wait_key(&self, key: &LockKey) -> String {
        self.name_of(Name::Wait, key).to_string()
    }

    /// The wait queue's Redis key: a ZSET of the waiters that take handoffs, by arrival.
    pub(crate) fn queue_key(&self, key: &LockKey) -> String {
        self.name_of(Name::Queue, key).to_string()
    }

    /// The waiters' Redis key: a HASH of each queued waiter's entry (how long it is alive,
    /// its grant ttl and channel), or of the token a release handed it.
    pub(crate) fn waiters_key(&self, key: &LockKey) -> String {
        self.name_of(Name::Waiters, key).to_string()
    }

    /// The pub/sub channel on which releases hand locks to the waiters of manager `uid`
    /// (classic layout only: on a cluster, waiters do not queue).
    pub(crate) fn grant_channel(&self, uid: &str) -> String {
        format!("{}_grants:{uid}", self.prefix)
    }

    /// The prefix-wide fencing counter of the classic layout (also what Redlock raises).
    pub(crate) fn fence_key(&self) -> String {
        format!("{}_fence", self.prefix)
    }

    /// The fencing counter an acquire of `key` uses: the prefix's one counter, or on a
    /// cluster the posting's own (no key can live in every slot).
    pub(crate) fn fence_key_of(&self, key: &LockKey) -> String {
        match self.layout {
            Layout::Classic => self.fence_key(),
            Layout::Cluster => self.name_of(Name::Fence, key).to_string(),
        }
    }

    /// The prefix-wide pub/sub channel of the classic layout.
    pub(crate) fn release_channel(&self) -> String {
        self.release_channel_name().to_string()
    }

    /// [`release_channel`](Self::release_channel), formatted on display.
    pub(crate) fn release_channel_name(&self) -> impl std::fmt::Display + '_ {
        struct Channel<'a>(&'a str);
        impl std::fmt::Display for Channel<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}_released", self.0)
            }
        }
        Channel(&self.prefix)
    }

    /// The channel a release of `key` is announced on: the prefix's channel, or on a
    /// cluster the posting's sharded channel, in the slot of the posting's keys.
    pub(crate) fn release_channel_of(&self, key: &LockKey) -> String {
        match self.layout {
            Layout::Classic => self.release_channel(),
            Layout::Cluster => self.name(&self.release_channel(), key),
        }
    }

    /// `head:` then `{` on a cluster: what every name of a head starts with.
    fn pattern_head(&self, head: &str) -> String {
        match self.layout {
            Layout::Classic => format!("{head}:"),
            Layout::Cluster => format!("{head}:{{"),
        }
    }

    /// The SCAN pattern for locks, optionally of one marketplace. Marketplace ids cannot
    /// contain glob characters (nor do prefixes, and `{` is not one), so the pattern
    /// matches exactly what it says.
    pub(crate) fn scan_pattern(&self, marketplace: Option<&str>) -> String {
        let head = self.pattern_head(&self.prefix);
        match marketplace {
            Some(m) => format!("{head}{m}:*"),
            None => format!("{head}*"),
        }
    }

    /// The SCAN pattern for completion records.
    pub(crate) fn done_pattern(&self) -> String {
        format!("{}*", self.pattern_head(&self.done_prefix))
    }

    /// The SCAN pattern for wait markers.
    pub(crate) fn wait_pattern(&self) -> String {
        format!("{}*", self.pattern_head(&format!("{}_wait", self.prefix)))
    }

    /// The SCAN pattern for wait queues.
    pub(crate) fn queue_pattern(&self) -> String {
        format!("{}*", self.pattern_head(&format!("{}_queue", self.prefix)))
    }

    /// The SCAN pattern for the queued waiters' entries.
    pub(crate) fn waiters_pattern(&self) -> String {
        format!(
            "{}*",
            self.pattern_head(&format!("{}_waiters", self.prefix))
        )
    }

    /// Parses a lock key (or, on a cluster, a release channel's payload, which is the
    /// lock key) back into its ids; `None` when the name is not a valid lock key of this
    /// prefix and layout.
    pub(crate) fn parse_lock_key(&self, redis_key: &str) -> Option<LockKey> {
        let rest = redis_key.strip_prefix(&self.prefix)?.strip_prefix(':')?;
        let rest = match self.layout {
            Layout::Classic => rest,
            Layout::Cluster => rest.strip_prefix('{')?.strip_suffix('}')?,
        };
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
    fn the_cluster_layout_tags_every_name_of_a_posting() {
        let ks = KeySpace::default().with_layout(Layout::Cluster);
        let k = LockKey::new("upwork", "job_123").unwrap();
        assert_eq!(ks.lock_key(&k), "bid_lock:{upwork:job_123}");
        assert_eq!(ks.done_key(&k), "bid_done:{upwork:job_123}");
        assert_eq!(ks.wait_key(&k), "bid_lock_wait:{upwork:job_123}");
        assert_eq!(ks.fence_key_of(&k), "bid_lock_fence:{upwork:job_123}");
        assert_eq!(
            ks.release_channel_of(&k),
            "bid_lock_released:{upwork:job_123}"
        );
        assert_eq!(ks.scan_pattern(None), "bid_lock:{*");
        assert_eq!(ks.scan_pattern(Some("upwork")), "bid_lock:{upwork:*");
        assert_eq!(ks.done_pattern(), "bid_done:{*");
        assert_eq!(ks.wait_pattern(), "bid_lock_wait:{*");
        // The classic layout keeps its prefix-wide counter and channel.
        let classic = KeySpace::default();
        assert_eq!(classic.fence_key_of(&k), "bid_lock_fence");
        assert_eq!(classic.release_channel_of(&k), "bid_lock_released");
    }

    /// Redis hashes the text after the first `{` up to the next `}`: postings with braces
    /// must still put every name of theirs in one slot, and parse back.
    #[test]
    fn postings_with_braces_keep_their_names_in_one_slot() {
        use redis::cluster_routing::Slot;
        let ks = KeySpace::new("p").unwrap().with_layout(Layout::Cluster);
        for posting in [
            "a}b", "}", "{", "{x}", "a{b}c", "}}{{", "job:1}{2", "{}", "é}日",
        ] {
            let k = LockKey::new("m", posting).unwrap();
            let names = [
                ks.lock_key(&k),
                ks.done_key(&k),
                ks.wait_key(&k),
                ks.fence_key_of(&k),
                ks.release_channel_of(&k),
            ];
            let slot = Slot::for_key(&names[0]);
            for n in &names {
                assert_eq!(Slot::for_key(n), slot, "{posting:?}: {n} vs {}", names[0]);
            }
            assert_eq!(ks.parse_lock_key(&names[0]), Some(k), "{posting:?}");
        }
        // A classic name is not a cluster name and the other way round.
        let k = LockKey::new("m", "x").unwrap();
        let classic = KeySpace::new("p").unwrap();
        assert_eq!(ks.parse_lock_key(&classic.lock_key(&k)), None);
        assert_eq!(classic.parse_lock_key(&ks.lock_key(&k)), None);
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
