//! The one error type of the library, with the predicates callers branch on.

use std::time::Duration;

use crate::key::InvalidKey;

/// Everything that can go wrong in bidlock.
///
/// Branch on the predicates ([`Error::is_not_acquired`], [`Error::is_already_done`],
/// [`Error::is_lost`], [`Error::is_retryable`], [`Error::is_invalid_input`]) rather than on
/// variants: new variants may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A marketplace or posting id was rejected; nothing was sent to the backend.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),

    /// The configuration (environment, URL, builder values) is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The lock stayed held by someone else until the wait ran out.
    #[error("lock {key} not acquired {}{}", waited_phrase(*.waited), holder_suffix(.holder, *.never_expires))]
    NotAcquired {
        /// The Redis key of the lock.
        key: String,
        /// How long the caller waited.
        waited: Duration,
        /// The holder seen on the last try, when the backend told it.
        holder: Option<String>,
        /// The lock has no ttl: it never expires by itself (a client that is not
        /// bidlock, or junk). Release it by hand if no one owns it.
        never_expires: bool,
    },

    /// The posting was already handled (a completion record exists); the lock was not taken.
    #[error("posting {key} was already handled (completion record present)")]
    AlreadyDone {
        /// The Redis key of the lock.
        key: String,
    },

    /// The lock was no longer held by this holder when it tried to act on it
    /// (it expired, was released by force, or was taken by another holder).
    #[error("lock {key} was lost: {reason}")]
    LockLost {
        /// The Redis key of the lock.
        key: String,
        /// What was observed.
        reason: String,
    },

    /// One of bidlock's keys holds something bidlock did not write there (another
    /// application, a bad migration, a person with redis-cli): a lock, completion record
    /// or fencing counter of another kind or with a value that cannot be one. Nothing was
    /// changed. (Junk in a wait queue or a waiters' hash is not an error: it is deleted,
    /// and the lock goes on.)
    #[error(
        "key {key} {found}; nothing was changed (if no other application owns it, delete it: redis-cli DEL '{key}')"
    )]
    WrongType {
        /// The Redis key.
        key: String,
        /// What it holds and what it should hold (`holds a Redis hash, not a lock`).
        found: String,
    },

    /// The backend could not be reached or refused us (connect, auth, TLS).
    #[error("lock backend {url} is unavailable: {reason}")]
    Unavailable {
        /// The backend's URL with any password hidden.
        url: String,
        /// Why.
        reason: String,
    },

    /// A command failed while talking to Redis (I/O, timeout, server error).
    #[error("redis {op} failed on {url}: {source}")]
    Redis {
        /// The operation that failed (`acquire`, `release`, ...).
        op: &'static str,
        /// The backend's URL with any password hidden.
        url: String,
        /// What the client or the server said. It is the client's own error (with redis-rs,
        /// a `redis::RedisError` that `downcast_ref` on `dyn Error` finds), boxed so
        /// that bidlock's signatures name no type of its Redis client.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// Too few Redlock nodes answered for a majority.
    #[error("no quorum for {op}: {ok} of {total} nodes succeeded, {needed} needed")]
    NoQuorum {
        /// The operation.
        op: &'static str,
        /// Nodes that succeeded.
        ok: usize,
        /// Nodes needed.
        needed: usize,
        /// Nodes configured.
        total: usize,
    },

    /// The manager was closed; it takes no new work.
    #[error("the lock manager is closed")]
    Closed,
}

/// How long an acquire waited, for people: none at all (one try), or rounded.
fn waited_phrase(waited: Duration) -> String {
    if waited.is_zero() {
        "at its one try (it did not wait)".to_owned()
    } else {
        format!("within {}", crate::human::duration(waited))
    }
}

fn holder_suffix(holder: &Option<String>, never_expires: bool) -> String {
    match (holder, never_expires) {
        (Some(h), false) => format!(" (held by {h})"),
        (Some(h), true) => format!(
            " (held by {h}, with no ttl: it never expires by itself; if no one owns it, release it with bidlock release --force)"
        ),
        (None, _) => String::new(),
    }
}

impl Error {
    /// The lock was not acquired before the wait ran out (contention, not failure): the
    /// [`Error::NotAcquired`] outcome.
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::NotAcquired { .. })
    }

    /// The former name of [`Error::is_not_acquired`]. It never meant an I/O timeout (what
    /// redis-rs's `is_timeout` means); a Redis I/O timeout is [`Error::Redis`].
    #[deprecated(note = "renamed to `is_not_acquired`: it never meant an I/O timeout")]
    pub fn is_timeout(&self) -> bool {
        self.is_not_acquired()
    }

    /// The posting already has a completion record.
    pub fn is_already_done(&self) -> bool {
        matches!(self, Error::AlreadyDone { .. })
    }

    /// The lock was lost while held.
    pub fn is_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    /// Trying again later may succeed (backend unreachable, I/O error, timeout, no quorum,
    /// contention).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotAcquired { .. } | Error::Unavailable { .. } | Error::NoQuorum { .. } => true,
            // What redis-rs itself would retry (I/O, a dropped connection, TRYAGAIN,
            // CLUSTERDOWN, MASTERDOWN, LOADING, READONLY after a failover, a redirect),
            // but a refused password: waiting does not fix it.
            Error::Redis { source, .. } => {
                source.downcast_ref::<redis::RedisError>().is_some_and(|e| {
                    !matches!(e.retry_method(), redis::RetryMethod::NoRetry)
                        && e.kind() != redis::ErrorKind::AuthenticationFailed
                })
            }
            _ => false,
        }
    }

    /// The caller passed something invalid (a key or configuration); fix the input.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidKey(_) | Error::Config(_))
    }

    /// The backend failed or could not be reached (as opposed to contention or bad input).
    pub fn is_backend(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Redis { .. } | Error::NoQuorum { .. }
        )
    }
}

/// An invalid configuration value. Every variant names where the value came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable had a value that does not parse.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: String,
        /// Its value (passwords are never echoed: they cannot be invalid).
        value: String,
        /// What was expected.
        reason: String,
    },
    /// An environment variable is not valid Unicode.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: String,
    },
    /// A Redis URL does not parse. The URL is shown with its password hidden.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// A builder value is out of range.
    #[error("invalid {field}: {reason}")]
    InvalidValue {
        /// Which setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// `Backend::Redis` was asked for but no Redis address is configured.
    #[error("backend redis requested but no Redis address is configured")]
    NoRedisConfigured,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_shown_rounded_and_no_wait_as_none() {
        let not = |waited| Error::NotAcquired {
            key: "bid_lock:m:p".into(),
            waited,
            holder: Some("h".into()),
            never_expires: false,
        };
        assert_eq!(
            not(Duration::from_nanos(501_350_273)).to_string(),
            "lock bid_lock:m:p not acquired within 501 ms (held by h)"
        );
        assert_eq!(
            not(Duration::ZERO).to_string(),
            "lock bid_lock:m:p not acquired at its one try (it did not wait) (held by h)"
        );
    }
}
