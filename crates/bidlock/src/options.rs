//! [`AcquireOptions`]: how one acquire behaves (wait, ttl, holder id, renewal).

use std::time::Duration;

use crate::error::{ConfigError, Error};
use crate::lease::Holder;

/// The default time an acquire waits for a busy lock: 10 s.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// How one acquire behaves. Start from [`AcquireOptions::new`] (wait 10 s, the manager's
/// ttl, a generated holder id, renewal on).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bidlock::AcquireOptions;
/// let opts = AcquireOptions::new()
///     .timeout(Duration::from_secs(5))
///     .ttl(Duration::from_secs(60))
///     .holder("instance-1");
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AcquireOptions {
    pub(crate) timeout: Duration,
    pub(crate) ttl: Option<Duration>,
    pub(crate) holder: Option<Holder>,
    pub(crate) renew: bool,
    pub(crate) check_done: bool,
}

impl Default for AcquireOptions {
    fn default() -> Self {
        AcquireOptions {
            timeout: DEFAULT_WAIT,
            ttl: None,
            holder: None,
            renew: true,
            check_done: true,
        }
    }
}

impl AcquireOptions {
    /// The defaults: wait up to 10 s, the manager's ttl, a generated holder, renewal on.
    pub fn new() -> AcquireOptions {
        AcquireOptions::default()
    }

    /// How long to wait for a busy lock; zero tries once.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Try once, do not wait.
    pub fn no_wait(self) -> Self {
        self.timeout(Duration::ZERO)
    }

    /// The lock's ttl (default: the manager's, 300 s unless configured).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The holder id to store (default: generated, unique per acquisition).
    ///
    /// A holder id of your own may be shared by several acquisitions (an instance name),
    /// so bidlock never releases it in the background: a guard dropped without
    /// `release().await`, or an acquire cancelled while its request was in flight, leaves
    /// the lock to expire after its ttl. A background release by holder id could otherwise
    /// remove a later acquisition that uses the same id. Generated ids are unique to one
    /// acquisition and are released in the background.
    pub fn holder(mut self, holder: impl Into<Holder>) -> Self {
        self.holder = Some(holder.into());
        self
    }

    /// Whether a watchdog renews the lease every ttl/3 while the guard lives (default
    /// true). Without renewal the lock expires after its ttl even while held.
    pub fn renew(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// Whether a completion record makes the acquire return [`Error::AlreadyDone`]
    /// (default true).
    pub fn check_done(mut self, check: bool) -> Self {
        self.check_done = check;
        self
    }
}

pub(crate) fn check_ttl(ttl: Duration) -> Result<Duration, Error> {
    if ttl < Duration::from_millis(10) {
        return Err(ConfigError::InvalidValue {
            field: "ttl",
            reason: format!("{ttl:?} is too short; use at least 10 ms"),
        }
        .into());
    }
    Ok(ttl)
}
