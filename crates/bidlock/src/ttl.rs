//! [`Ttl`]: a lock's time to live, checked once wherever it comes from (builder,
//! environment, acquire options, `extend`, the CLI), and read from seconds with one
//! wording (`BID_LOCK_TTL`, `--ttl`).

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
    /// [`ConfigError::InvalidValue`] saying what was given and what is accepted
    /// (`expected seconds from 0.01 to 2592000 (30 days), decimals allowed: -5 is
    /// negative`).
    pub fn parse_secs(s: &str) -> Result<Ttl, ConfigError> {
        let invalid = || ConfigError::InvalidValue {
            field: "ttl",
            reason: refusal(s, TTL_SECONDS, 0.01),
        };
        let d = parse_seconds(s).map_err(|_| invalid())?;
        Ttl::check(d).map_err(|_| invalid())
    }

    /// A ttl within the bounds, in whole milliseconds (what Redis keeps: a lease that
    /// counted a fraction of a millisecond more than its `PX` would outlive its lock).
    fn check(ttl: Duration) -> Result<Ttl, String> {
        if ttl < Ttl::MIN {
            Err(format!(
                "{} is too short; use at least 10 ms",
                crate::human::duration(ttl)
            ))
        } else if ttl > Ttl::MAX {
            Err(format!(
                "{} is more than 30 days",
                crate::human::duration(ttl)
            ))
        } else {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            Ok(Ttl(Duration::from_millis(ms)))
        }
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// The longest duration [`parse_seconds`] accepts: 30 days.
const MAX_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// The range of seconds [`parse_seconds`] accepts, in words.
const SECONDS: &str = "seconds from 0 to 2592000 (30 days), decimals allowed";
/// The range of a ttl, in words.
const TTL_SECONDS: &str = "seconds from 0.01 to 2592000 (30 days), decimals allowed";

/// One wording for every refusal of a number of seconds: what is accepted, then what is
/// wrong with `s` (whose smallest accepted value is `min`).
fn refusal(s: &str, accepted: &str, min: f64) -> String {
    let problem = match s.trim().parse::<f64>() {
        Err(_) => format!("{s:?} is not a number"),
        Ok(x) if x.is_nan() => format!("{s:?} is not a number"),
        Ok(x) if x.is_infinite() => format!("{s:?} is not a finite number"),
        Ok(x) if x < 0.0 => format!("{} is negative", s.trim()),
        Ok(x) if x < min => format!("{} is below {min}", s.trim()),
        Ok(_) => format!("{} is more than 30 days", s.trim()),
    };
    format!("expected {accepted}: {problem}")
}

/// Parses a duration written in seconds, decimals allowed (`2.5`): zero or more, at most
/// 30 days; the refusal says what was given and what is accepted (`expected seconds from
/// 0 to 2592000 (30 days), decimals allowed: "soon" is not a number`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(refusal(s, SECONDS, 0.0)),
    }
}

impl Default for Ttl {
    /// [`crate::DEFAULT_TTL`], as in the original system: 300 s.
    fn default() -> Self {
        Ttl(crate::DEFAULT_TTL)
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::human::duration(self.0))
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

    #[test]
    fn each_refusal_says_what_was_given_and_what_is_accepted() {
        let ttl = |s| match Ttl::parse_secs(s) {
            Err(ConfigError::InvalidValue { reason, .. }) => reason,
            other => panic!("{s}: {other:?}"),
        };
        for (input, says) in [
            ("-5", "-5 is negative"),
            ("0", "0 is below 0.01"),
            ("0.001", "0.001 is below 0.01"),
            ("inf", "\"inf\" is not a finite number"),
            ("1e300", "1e300 is more than 30 days"),
        ] {
            let e = ttl(input);
            assert!(e.starts_with("expected seconds from 0.01 to "), "{e}");
            assert!(e.ends_with(says), "{input}: {e}");
        }
        for (input, says) in [
            ("inf", "\"inf\" is not a finite number"),
            ("-1", "-1 is negative"),
            ("soon", "\"soon\" is not a number"),
            ("9999999", "9999999 is more than 30 days"),
        ] {
            let e = parse_seconds(input).unwrap_err();
            assert!(e.starts_with("expected seconds from 0 to "), "{e}");
            assert!(e.ends_with(says), "{input}: {e}");
        }
    }
}
