//! [`Ttl`]: a lock's time to live, checked once wherever it comes from (builder,
//! environment, acquire options, `extend`, the CLI), and [`parse_seconds`], the one way
//! durations are read from operators (`BID_LOCK_TTL`, `--wait`, `--ttl`, `--grace`).

use std::fmt;
use std::time::Duration;

use crate::error::ConfigError;

/// A lock's time to live: at least 10 ms (a shorter lease could not be renewed in time),
/// at most 30 days.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use bidlock::Ttl;
/// assert_eq!(Ttl::new(Duration::from_secs(300))?.get(), Duration::from_secs(300));
/// assert_eq!(Ttl::parse_secs("2.5")?.get(), Duration::from_millis(2500));
/// assert!(Ttl::new(Duration::from_millis(5)).is_err());
/// assert!(Ttl::parse_secs("soon").is_err());
/// # Ok::<(), bidlock::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// The shortest ttl accepted.
    pub const MIN: Duration = Duration::from_millis(10);
    /// The longest ttl accepted.
    pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);
    /// The default, as in the original system: 300 s.
    pub const DEFAULT: Ttl = Ttl(Duration::from_secs(300));

    /// Checks `ttl`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidValue`] (field `ttl`) below 10 ms or above 30 days.
    pub fn new(ttl: Duration) -> Result<Ttl, ConfigError> {
        Ttl::check(ttl).map_err(|reason| ConfigError::InvalidValue {
            field: "ttl",
            reason,
        })
    }

    /// Parses a number of seconds, decimals allowed (`BID_LOCK_TTL`, `--ttl`).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidValue`] saying what was expected.
    pub fn parse_secs(s: &str) -> Result<Ttl, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidValue {
            field: "ttl",
            reason,
        };
        let d = parse_seconds(s).map_err(invalid)?;
        if d.is_zero() {
            return Err(invalid(format!("{s:?} must be more than 0 seconds")));
        }
        Ttl::check(d).map_err(invalid)
    }

    fn check(ttl: Duration) -> Result<Ttl, String> {
        if ttl < Ttl::MIN {
            Err(format!("{ttl:?} is too short; use at least 10 ms"))
        } else if ttl > Ttl::MAX {
            Err(format!("{ttl:?} is more than 30 days"))
        } else {
            Ok(Ttl(ttl))
        }
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// The longest duration [`parse_seconds`] accepts: 30 days.
const MAX_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// Parses a duration written in seconds, decimals allowed (`2.5`): zero or more, at most
/// 30 days.
///
/// # Errors
///
/// A message saying what was expected.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// assert_eq!(bidlock::parse_seconds("0.25"), Ok(Duration::from_millis(250)));
/// assert!(bidlock::parse_seconds("-1").is_err());
/// ```
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} must be zero or more seconds"));
    }
    if secs > MAX_SECONDS {
        return Err(format!("{s:?} is more than 30 days"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Default for Ttl {
    fn default() -> Self {
        Ttl::DEFAULT
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Ttl> for Duration {
    fn from(t: Ttl) -> Duration {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_parsing() {
        assert!(Ttl::new(Duration::from_millis(10)).is_ok());
        assert!(Ttl::new(Duration::from_millis(9)).is_err());
        assert!(Ttl::new(Ttl::MAX).is_ok());
        assert!(Ttl::new(Ttl::MAX + Duration::from_millis(1)).is_err());
        assert!(Ttl::new(Duration::MAX).is_err());
        for bad in ["0", "-5", "five", "NaN", "inf", "1e300", "0.001"] {
            let e = Ttl::parse_secs(bad).unwrap_err().to_string();
            assert!(e.contains("ttl"), "{bad}: {e}");
        }
        assert_eq!(
            Ttl::parse_secs(" 1.5 ").unwrap().get(),
            Duration::from_millis(1500)
        );
    }
}
