//! Lock keys: validation of marketplace and posting ids, and the Redis key names built
//! from them.

use std::fmt;

/// The longest marketplace id accepted, in bytes.
pub const MAX_MARKETPLACE_LEN: usize = 64;
/// The longest posting id accepted, in bytes.
pub const MAX_POSTING_LEN: usize = 512;

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
    // The split is found again when asked (a marketplace id is at most 64 bytes): keeping
    // it would cost 8 bytes per key with padding, and keys are in every held lock.
    joined: std::sync::Arc<str>,
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
    /// A key prefix is refused: not of the form `[A-Za-z0-9_.-]{1,64}`, or its names could
    /// reach another prefix's keys.
    #[error("key prefix {prefix:?} is invalid: {reason}")]
    Prefix {
        /// The rejected prefix.
        prefix: String,
        /// Why.
        reason: String,
    },
}

pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Validates a marketplace id (`[A-Za-z0-9_.-]{1,64}`), for code that filters by
/// marketplace without a posting (listing locks of one marketplace, say).
///
/// # Errors
///
/// [`InvalidKey`] naming what is wrong.
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
        })
    }

    /// Where `marketplace:` ends (a marketplace id never contains `:`).
    fn split(&self) -> usize {
        self.joined.find(':').unwrap_or(self.joined.len())
    }

    /// The marketplace id.
    pub fn marketplace(&self) -> &str {
        &self.joined[..self.split()]
    }

    /// The posting id.
    pub fn posting(&self) -> &str {
        &self.joined[self.split() + 1..]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        let k = LockKey::new("upwork", "job_123").unwrap();
        assert_eq!(k.as_str(), "upwork:job_123");
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
}
