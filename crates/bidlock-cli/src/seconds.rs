//! Durations an operator writes in seconds (`--wait`, `--grace`, the agent's `--seconds`):
//! decimals allowed, 0 to 30 days, refused in one wording that says what was given and
//! what is accepted (the wording of the library's ttl rule, `bidlock::Ttl::parse_secs`).
//!
//! Shared by the CLI and the agent (which includes this file): one parser for both.

use std::time::Duration;

/// The range accepted, in words.
const ACCEPTED: &str = "seconds from 0 to 2592000 (30 days), decimals allowed";

/// Parses a number of seconds, decimals allowed (`2.5`): zero or more, at most 30 days
/// (`bidlock::Ttl::MAX`).
pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    let max = bidlock::Ttl::MAX.as_secs_f64();
    let problem = match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=max).contains(&x) => {
            return Ok(Duration::from_secs_f64(x))
        }
        Err(_) => format!("{s:?} is not a number"),
        Ok(x) if x.is_nan() => format!("{s:?} is not a number"),
        Ok(x) if x.is_infinite() => format!("{s:?} is not a finite number"),
        Ok(x) if x < 0.0 => format!("{} is negative", s.trim()),
        Ok(_) => format!("{} is more than 30 days", s.trim()),
    };
    Err(format!("expected {ACCEPTED}: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_says_what_was_given_and_what_is_accepted() {
        assert_eq!(seconds(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("0"), Ok(Duration::ZERO));
        assert_eq!(seconds("2592000"), Ok(bidlock::Ttl::MAX));
        for (input, says) in [
            ("inf", "\"inf\" is not a finite number"),
            ("NaN", "\"NaN\" is not a number"),
            ("-1", "-1 is negative"),
            ("soon", "\"soon\" is not a number"),
            ("9999999", "9999999 is more than 30 days"),
        ] {
            let e = seconds(input).unwrap_err();
            assert!(e.starts_with("expected seconds from 0 to "), "{e}");
            assert!(e.ends_with(says), "{input}: {e}");
        }
    }
}
