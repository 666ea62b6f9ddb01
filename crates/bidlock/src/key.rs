//! Lock keys: validation of marketplace and posting ids, and the Redis key names built
//! from them.

use std::fmt;

/// The longest marketplace id accepted, in bytes.
pub const MAX_MARKETPLACE_LEN: usize = 64;
/// The longest posting id accepted, in bytes.
pub const MAX_POSTING_LEN: usize = 512;
/// The default key prefix, compatible with the original Python system.
pub const DEFAULT_PREFIX: &str = "bid_lock";

/// A validated `(marketplace_id, posting_id)` pair: what one lock protects.
///
/// Marketplace ids match `[A-Za-z0-9_.-]{1,64}`; posting ids are 1–512 bytes of UTF-8
/// without control characters. Because a marketplace id can never contain `:`, the Redis
/// key `bid_lock:{marketplace}:{posting}` is unambiguous: `("a:b", "c")` is rejected, so it
/// cannot collide with `("a", "b:c")`.
///
/// # Examples
///
/// ```
/// use bidlock::LockKey;
/// let key = LockKey::new("upwork", "job_123")?;
/// assert_eq!(key.marketplace(), "upwork");
/// assert!(LockKey::new("up work", "job_123").is_err());
/// # Ok::<(), bidlock::InvalidKey>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey {
    // `marketplace:posting` in one shared allocation: clones are a reference-count bump.
    // Unambiguous because a marketplace id never contains `:`.
    joined: std::sync::Arc<str>,
    split: u8,
}

/// Why a marketplace or posting id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidKey {
    /// The marketplace id is empty.
    #[error("marketplace id is empty")]
    EmptyMarketplace,
    /// The marketplace id is longer than 64 bytes.
    #[error("marketplace id is {len} bytes long; at most 64 are allowed")]
    MarketplaceTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The marketplace id has a character outside `[A-Za-z0-9_.-]`.
    #[error(
        "marketplace id has {ch:?} at byte {index}; only A-Z, a-z, 0-9, '_', '.' and '-' are allowed"
    )]
    MarketplaceChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
    /// The posting id is empty.
    #[error("posting id is empty")]
    EmptyPosting,
    /// The posting id is longer than 512 bytes.
    #[error("posting id is {len} bytes long; at most 512 are allowed")]
    PostingTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The posting id contains a control character.
    #[error("posting id has a control character (U+{code:04X}) at byte {index}")]
    PostingControlChar {
        /// The character's code point.
        code: u32,
        /// Its byte offset.
        index: usize,
    },
    /// A key prefix is not of the form `[A-Za-z0-9_.-]{1,64}`.
    #[error("key prefix {prefix:?} is invalid: use 1-64 of A-Z, a-z, 0-9, '_', '.', '-'")]
    Prefix {
        /// The rejected prefix.
        prefix: String,
    },
}

pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Validates a marketplace id (`[A-Za-z0-9_.-]{1,64}`).
pub(crate) fn validate_marketplace(marketplace: &str) -> Result<(), InvalidKey> {
    if marketplace.is_empty() {
        return Err(InvalidKey::EmptyMarketplace);
    }
    if marketplace.len() > MAX_MARKETPLACE_LEN {
        return Err(InvalidKey::MarketplaceTooLong {
            len: marketplace.len(),
        });
    }
    if let Some((index, ch)) = marketplace.char_indices().find(|&(_, c)| !is_id_char(c)) {
        return Err(InvalidKey::MarketplaceChar { ch, index });
    }
    Ok(())
}

fn validate_posting(posting: &str) -> Result<(), InvalidKey> {
    if posting.is_empty() {
        return Err(InvalidKey::EmptyPosting);
    }
    if posting.len() > MAX_POSTING_LEN {
        return Err(InvalidKey::PostingTooLong { len: posting.len() });
    }
    if let Some((index, ch)) = posting.char_indices().find(|&(_, c)| c.is_control()) {
        return Err(InvalidKey::PostingControlChar {
            code: ch as u32,
            index,
        });
    }
    Ok(())
}

impl LockKey {
    /// Validates both ids and builds the key.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`] naming which id is wrong and why.
    pub fn new(
        marketplace: impl AsRef<str>,
        posting: impl AsRef<str>,
    ) -> Result<LockKey, InvalidKey> {
        let (m, p) = (marketplace.as_ref(), posting.as_ref());
        validate_marketplace(m)?;
        validate_posting(p)?;
        let mut joined = String::with_capacity(m.len() + 1 + p.len());
        joined.push_str(m);
        joined.push(':');
        joined.push_str(p);
        Ok(LockKey {
            joined: joined.into(),
            // Validated above: at most 64 bytes.
            split: u8::try_from(m.len()).unwrap_or(u8::MAX),
        })
    }

    /// The marketplace id.
    pub fn marketplace(&self) -> &str {
        &self.joined[..usize::from(self.split)]
    }

    /// The posting id.
    pub fn posting(&self) -> &str {
        &self.joined[usize::from(self.split) + 1..]
    }

    /// `marketplace:posting`: the lock key without its prefix.
    pub fn as_str(&self) -> &str {
        &self.joined
    }
}

impl fmt::Debug for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockKey({:?}, {:?})", self.marketplace(), self.posting())
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

/// The names bidlock uses in Redis for one prefix.
///
/// With the default prefix `bid_lock`:
///
/// | what | name |
/// | --- | --- |
/// | lock | `bid_lock:{marketplace}:{posting}` (value: holder id, `PX` ttl) |
/// | completion record | `bid_done:{marketplace}:{posting}` |
/// | fencing counter | `bid_lock_fence` (one per prefix, outside `bid_lock:*`) |
/// | release channel | `bid_lock_released` (payload: the lock key) |
/// | wait marker | `bid_lock_wait:{marketplace}:{posting}` (short-lived: someone waits) |
///
/// A prefix ending in `_lock` has its completion records under the same name ending in
/// `_done` (`bid_lock` → `bid_done`, `staging_bid_lock` → `staging_bid_done`); any other
/// prefix `p` uses `p_done`.
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

impl KeySpace {
    /// A key space for `prefix`.
    ///
    /// # Errors
    ///
    /// [`InvalidKey::Prefix`] when the prefix is not `[A-Za-z0-9_.-]{1,64}`: other
    /// characters (`:`, glob characters) would make keys ambiguous or SCAN patterns unsafe.
    pub fn new(prefix: &str) -> Result<KeySpace, InvalidKey> {
        if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(is_id_char) {
            return Err(InvalidKey::Prefix {
                prefix: prefix.to_owned(),
            });
        }
        let done_prefix = match prefix.strip_suffix("_lock") {
            Some(stem) if !stem.is_empty() => format!("{stem}_done"),
            _ => format!("{prefix}_done"),
        };
        Ok(KeySpace {
            prefix: prefix.to_owned(),
            done_prefix,
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lock's Redis key.
    pub fn lock_key(&self, key: &LockKey) -> String {
        format!("{}:{}", self.prefix, key.joined)
    }

    /// The completion record's Redis key.
    pub fn done_key(&self, key: &LockKey) -> String {
        format!("{}:{}", self.done_prefix, key.joined)
    }

    /// The wait marker's Redis key: set by a try that found the lock held, so that the
    /// release publishes; without waiters, releases publish nothing.
    pub fn wait_key(&self, key: &LockKey) -> String {
        format!("{}_wait:{}", self.prefix, key.joined)
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
    fn accepts_ordinary_ids() {
        let k = LockKey::new("upwork", "job_123").unwrap();
        assert_eq!(KeySpace::default().lock_key(&k), "bid_lock:upwork:job_123");
        assert_eq!(KeySpace::default().done_key(&k), "bid_done:upwork:job_123");
        // Postings may hold colons, spaces, unicode and glob characters.
        let k = LockKey::new("a.b-c_D9", "x:y *?[] ñ 日本").unwrap();
        assert_eq!(k.posting(), "x:y *?[] ñ 日本");
    }

    #[test]
    fn rejects_each_bad_class() {
        assert_eq!(LockKey::new("", "p"), Err(InvalidKey::EmptyMarketplace));
        assert_eq!(
            LockKey::new("a".repeat(65), "p"),
            Err(InvalidKey::MarketplaceTooLong { len: 65 })
        );
        assert_eq!(
            LockKey::new("a:b", "c"),
            Err(InvalidKey::MarketplaceChar { ch: ':', index: 1 })
        );
        assert!(matches!(
            LockKey::new("up*", "c"),
            Err(InvalidKey::MarketplaceChar { ch: '*', .. })
        ));
        assert_eq!(LockKey::new("m", ""), Err(InvalidKey::EmptyPosting));
        assert_eq!(
            LockKey::new("m", "p".repeat(513)),
            Err(InvalidKey::PostingTooLong { len: 513 })
        );
        assert_eq!(
            LockKey::new("m", "ab\ncd"),
            Err(InvalidKey::PostingControlChar { code: 10, index: 2 })
        );
        assert!(LockKey::new("m", "p".repeat(512)).is_ok());
        assert!(LockKey::new("m".repeat(64), "p").is_ok());
    }

    #[test]
    fn keys_are_unambiguous_and_parse_back() {
        let ks = KeySpace::default();
        let k = LockKey::new("a", "b:c").unwrap();
        assert_eq!(ks.parse_lock_key(&ks.lock_key(&k)), Some(k));
        assert_eq!(ks.parse_lock_key("bid_lock_fence"), None);
        assert_eq!(ks.parse_lock_key("other:a:b"), None);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            KeySpace::new("staging_bid_lock")
                .unwrap()
                .done_key(&LockKey::new("m", "p").unwrap()),
            "staging_bid_done:m:p"
        );
        let ks = KeySpace::new("foo").unwrap();
        assert_eq!(ks.fence_key(), "foo_fence");
        assert_eq!(
            ks.done_key(&LockKey::new("m", "p").unwrap()),
            "foo_done:m:p"
        );
        assert!(KeySpace::new("a:b").is_err());
        assert!(KeySpace::new("a*").is_err());
        assert!(KeySpace::new("").is_err());
    }
}
